"""MTL-OCA: multi-task learning with object contextual attention (seed 003).

Lu, Sun, Wang, Yu, "Automatic joint segmentation and classification of breast ultrasound images
via multi-task learning with object contextual attention", Front. Oncol. 15:1567577 (2025),
doi:10.3389/fonc.2025.1567577. The OCA module follows OCRNet (Yuan, Chen, Wang, "Object-
Contextual Representations for Semantic Segmentation", ECCV 2020), which the paper cites for it.

Architecture (paper §2.1, Fig. 1-2)::

    input (B, 2, 128, 128): image + Gaussian-derivative magnitude (eq. 6-9, computed by
    │                         sdk.kernels.preprocess, channels ("image", "gdm"))
    ▼
    Res-UNet backbone, 3 levels, GroupNorm ─► backbone features X (B, w, H, W)
    │          └─ bottleneck (B, 8w, H/8, W/8)
    ├─► OCA: soft object regions D = coarse 2-class mask (aux head, supervised: L_soft)
    │        f_k   = Σ_i d_ki x_i                       (eq. 1, d softmax-normalized over pixels)
    │        w_ik  = softmax_k( l(x_i, f_k) )           (eq. 2, l = φ(x)ᵀψ(f) / √c_key)
    │        y_i   = δ( Σ_k w_ik H(f_k) )               (eq. 3)
    │        augmented = conv1×1( [y, x] )  ─► mask_logits (B, 1, H, W)      (L_aug)
    └─► classifier: two-layer MLP on pooled backbone features ─► class_logits (B, 3)

What the paper leaves open, and what this file chooses:

* **Block widths / depth.** "Three layers" of encoder and decoder blocks with residual
  connections (Res-UNet, their ref. 54): three encoder levels (each a residual block of two
  3×3 conv + GroupNorm, then 2×2 max-pool), a residual bottleneck at 1/8, and three decoder
  levels (bilinear ×2 upsample, 3×3 conv + GroupNorm, concat skip, residual block). Widths
  ``w, 2w, 4w, 8w`` with ``base_width`` w = 32 (not stated in the paper) -- small, because the
  paper's input is 128×128 grayscale. ``size_divisor`` = 8.
* **Soft regions.** K = 2 (background, lesion) as in the paper; d_k is normalized over pixels
  with a spatial softmax (OCRNet's ``SpatialGather``), so f_k is a weighted mean, not a sum
  that scales with the image area.
* **l, δ, H** ("nonlinear transformations implemented by convolutional blocks"): OCRNet's --
  φ two 1×1 conv + GN + ReLU on pixels, ψ two 1×1 conv + ReLU on regions, H one 1×1 conv +
  ReLU, δ one 1×1 conv + GN + ReLU. Region-level transforms carry no norm: a (C, K=2, 1) map
  gives GroupNorm two positions to estimate statistics from. Key width ``key_channels`` = 32,
  OCR width ``ocr_channels`` = 64 (OCRNet uses 256 / 512 on a far wider backbone).
* **Mask output.** The paper trains K = 2 soft-maxed classes with cross-entropy; the contract
  wants one lesion logit, which is the same model (softmax over two logits == sigmoid of their
  difference), so the final 1×1 conv has one output and L_aug becomes binary cross-entropy.
* **Classifier input.** "Two layers of an MLP" on "the complete feature maps from the backbone
  ... rather than solely from the encoder": global-average-pooled bottleneck (8w) concatenated
  with the pooled backbone output (w), then BatchNorm → Linear → ReLU → Dropout → Linear(3). The
  hidden width (``mlp_hidden`` = 128), dropout (0.2) and the BatchNorm (see ``__init__``: without
  it the classifier never left chance level) are not in the paper.
* **No pretrained weights** (the paper trains from scratch too: Adam 1e-3, 400 epochs, batch 16;
  loss L = α·L_soft + L_aug + L_cls with α = 0.4). :meth:`MTLOCA.forward_train` returns the
  soft-region logits L_soft needs; ``forward`` returns only the contract's outputs.

2.3 M parameters at the defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from export.models._contract import (
    CLASS_NAMES,
    LESION_PRIOR,
    EncoderDecoderModel,
    with_mask_prior,
)
from export.models._registry import register_model, with_input_normalization
from export.models._resnet import ConvNormAct

__all__ = ["MTLOCA", "ObjectContextualAttention", "ResUNet", "mtl_oca"]


# --- blocks --------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """Res-UNet block: 3×3 conv-GN-ReLU, 3×3 conv-GN, plus a (1×1-projected) shortcut, ReLU;
    ``(B, cin, H, W) → (B, cout, H, W)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(cin, cout, 3, norm="group"),
            ConvNormAct(cout, cout, 3, norm="group", act=False),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if cin == cout else ConvNormAct(cin, cout, 1, norm="group", act=False)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class UpBlock(nn.Module):
    """Decoder level: bilinear ×2 → 3×3 conv-GN-ReLU (cin → cout) → concat skip (cout) →
    ResBlock(2·cout → cout); ``(B, cin, H, W), (B, cout, 2H, 2W) → (B, cout, 2H, 2W)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = ConvNormAct(cin, cout, 3, norm="group")
        self.block = ResBlock(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.conv(self.up(x)), skip], dim=1))


class ResUNet(nn.Module):
    """Three-level residual U-Net with GroupNorm.

    ``forward(x)``: ``(B, in_chans, H, W)`` (H, W divisible by 8) → ``(features, bottleneck)``
    with features ``(B, w, H, W)`` and bottleneck ``(B, 8w, H/8, W/8)``.
    """

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList(
            [ResBlock(in_chans, w), ResBlock(w, 2 * w), ResBlock(2 * w, 4 * w)]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ResBlock(4 * w, 8 * w)
        self.dec = nn.ModuleList([UpBlock(8 * w, 4 * w), UpBlock(4 * w, 2 * w), UpBlock(2 * w, w)])
        self.out_channels = w
        self.bottleneck_channels = 8 * w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        bottleneck = self.bottleneck(x)
        x = bottleneck
        for dec, skip in zip(self.dec, reversed(skips), strict=True):
            x = dec(x, skip)
        return x, bottleneck


class ObjectContextualAttention(nn.Module):
    """The OCA module (paper eq. 1-3; OCRNet's soft object regions + object attention).

    ``forward(x)`` with backbone features ``x`` ``(B, cin, H, W)`` returns

    * ``augmented`` ``(B, ocr_channels, H, W)``: conv1×1 of [contextual y, pixel x]
      (eq. 3, then the concatenation),
    * ``region_logits`` ``(B, K, H, W)``: the soft object regions before softmax (coarse mask),
    * ``relation`` ``(B, H·W, K)``: the pixel-region relation w_ik of eq. 2 (sums to 1 over k).
    """

    def __init__(
        self, cin: int, ocr_channels: int = 64, key_channels: int = 32, num_regions: int = 2
    ) -> None:
        super().__init__()
        self.key_channels = key_channels
        # Soft object regions: a coarse K-class segmentation head (supervised by L_soft).
        self.region_head = nn.Sequential(
            ConvNormAct(cin, cin, 3, norm="group"), nn.Conv2d(cin, num_regions, 1)
        )
        # Pixel representation x_i the regions and the relation are computed on.
        self.pixel = ConvNormAct(cin, ocr_channels, 3, norm="group")
        # l(x, f) = φ(x)ᵀ ψ(f)
        self.phi = nn.Sequential(
            ConvNormAct(ocr_channels, key_channels, 1, norm="group"),
            ConvNormAct(key_channels, key_channels, 1, norm="group"),
        )
        self.psi = nn.Sequential(
            nn.Conv2d(ocr_channels, key_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(key_channels, key_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.h = nn.Sequential(nn.Conv2d(ocr_channels, key_channels, 1), nn.ReLU(inplace=True))
        self.delta = ConvNormAct(key_channels, ocr_channels, 1, norm="group")
        self.fuse = ConvNormAct(2 * ocr_channels, ocr_channels, 1, norm="group")

    @staticmethod
    def region_representations(pixels: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        """Eq. 1: f_k = Σ_i d_ki x_i with d softmax-normalized over pixels.

        ``pixels`` ``(B, C, H, W)``, ``region_logits`` ``(B, K, H, W)`` → ``(B, C, K, 1)``.
        """
        d = torch.softmax(region_logits.flatten(2), dim=2)  # (B, K, HW)
        f = torch.matmul(d, pixels.flatten(2).transpose(1, 2))  # (B, K, C)
        return f.transpose(1, 2).unsqueeze(3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        region_logits = self.region_head(x)
        pixels = self.pixel(x)  # (B, C, H, W)
        regions = self.region_representations(pixels, region_logits)  # (B, C, K, 1)

        query = self.phi(pixels).flatten(2).transpose(1, 2)  # (B, HW, c)
        key = self.psi(regions).flatten(2)  # (B, c, K)
        value = self.h(regions).flatten(2).transpose(1, 2)  # (B, K, c)
        relation = torch.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)

        context = torch.matmul(relation, value).transpose(1, 2)  # (B, c, HW)
        context = self.delta(context.reshape(x.shape[0], self.key_channels, *x.shape[2:]))
        augmented = self.fuse(torch.cat([context, pixels], dim=1))
        return augmented, region_logits, relation


# --- model ---------------------------------------------------------------------------------


class MTLOCA(EncoderDecoderModel):
    """MTL-OCA (see the module docstring).

    ``forward(x)``: ``x`` float32 ``(B, 2, H, W)`` (``image``, ``gdm``), H and W divisible by 8 →
    ``{"mask_logits": (B, 1, H, W), "class_logits": (B, num_classes)}``.
    """

    input_channels = ("image", "gdm")
    input_size = (128, 128)
    size_divisor = 8
    test_input_size = (64, 64)
    has_aux_masks = True

    def __init__(
        self,
        num_classes: int = 3,
        base_width: int = 32,
        ocr_channels: int = 64,
        key_channels: int = 32,
        num_regions: int = 2,
        mlp_hidden: int = 128,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if num_classes != len(CLASS_NAMES):
            self.class_names = tuple(f"class_{i}" for i in range(num_classes))
        self.backbone = ResUNet(len(self.input_channels), base_width)
        self.oca = ObjectContextualAttention(
            self.backbone.out_channels, ocr_channels, key_channels, num_regions
        )
        self.mask_head = nn.Conv2d(ocr_channels, 1, 1)
        pooled = self.backbone.bottleneck_channels + self.backbone.out_channels
        # BatchNorm on the pooled vector: GroupNorm normalizes each frame on its own, so the
        # global averages of its maps barely differ between frames (measured on a trained
        # checkpoint: ~10 % of their mean); the MLP then saw a near-constant input, its logits
        # varied by < 0.01 across frames and accuracy sat at 1/3 for the whole run. BN
        # standardizes across the batch what distinguishes frames (folded into the first
        # Linear at export).
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(pooled),
            nn.Linear(pooled, mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(mlp_hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Logit heads start near zero (std 0.01, as in OCRNet / detection heads): He init on a
        # 1-output conv gives logits of ±20 at step 0, i.e. saturated sigmoids and softmaxes.
        for head in (self.mask_head, self.oca.region_head[-1]):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def mask_logit_convs(self) -> list[tuple[nn.Conv2d, int]]:
        # The soft object regions: region 1 is the lesion (aux logit = region 1 - region 0).
        region = self.oca.region_head[-1]
        return [(self.mask_head, 0), *([(region, 1)] if region.out_channels == 2 else [])]

    # encoder → decoder → heads (EncoderDecoderModel): the ResUNet backbone is the encoder
    # (its own U-Net decoder included: the paper's backbone), the object-contextual attention
    # the decoder.
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(feats, bottleneck)``: the backbone's full-resolution map and its bottleneck."""
        return self.backbone(x)

    def decode(
        self, encoded: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(augmented, region_logits, relation)`` of the object-contextual attention."""
        return self.oca(encoded[0])

    def heads(
        self,
        encoded: tuple[torch.Tensor, torch.Tensor],
        decoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> dict[str, object]:
        """The contract's outputs plus ``region_logits`` ``(B, K, H, W)`` for L_soft (class 0 =
        background, 1 = lesion), ``relation`` ``(B, H·W, K)`` and ``aux_mask_logits`` (the soft
        regions as one lesion logit map, for :class:`export.losses.TrainingLoss`; the paper's
        α = 0.4 is ``aux_weight=0.4``)."""
        feats, bottleneck = encoded
        augmented, region_logits, relation = decoded
        pooled = torch.cat([bottleneck.mean(dim=(2, 3)), feats.mean(dim=(2, 3))], dim=1)
        return {
            "mask_logits": self.mask_head(augmented),
            "class_logits": self.classifier(pooled),
            "region_logits": region_logits,
            "relation": relation,
            # L_soft as the trainer's deep supervision: a 2-class softmax is the sigmoid of the
            # logit difference, so the soft regions' CE is a BCE on this one logit map.
            "aux_mask_logits": (region_logits[:, 1:2] - region_logits[:, 0:1],),
        }


# --- variants ------------------------------------------------------------------------------


@register_model("mtl_oca")
def mtl_oca(
    num_classes: int = 3,
    base_width: int = 32,
    ocr_channels: int = 64,
    key_channels: int = 32,
    num_regions: int = 2,
    mlp_hidden: int = 128,
    drop_rate: float = 0.2,
    input_mean: tuple[float, ...] | None = None,
    input_std: tuple[float, ...] | None = None,
    mask_prior: float | None = LESION_PRIOR,
) -> MTLOCA:
    """MTL-OCA at the paper's 128×128 input, image + Gaussian-derivative magnitude channels;
    the mask head and the lesion region start at ``mask_prior`` (:func:`with_mask_prior`)."""
    model = MTLOCA(
        num_classes=num_classes,
        base_width=base_width,
        ocr_channels=ocr_channels,
        key_channels=key_channels,
        num_regions=num_regions,
        mlp_hidden=mlp_hidden,
        drop_rate=drop_rate,
    )
    return with_input_normalization(with_mask_prior(model, mask_prior), input_mean, input_std)
