"""NMTNet: multi-task network for joint segmentation and classification of breast tumors (seed 002).

Yang, Wang, Sui, "NMTNet: A Multi-task Deep Learning Network for Joint Segmentation and
Classification of Breast Tumors", J. Imaging Inform. Med. (2025), doi:10.1007/s10278-025-01440-7.

What the abstract states: a U-shaped CNN with a shared **ResNet18 encoder**; a **multi-scale
fusion channel refinement (MFCR)** module "to enrich the feature depth and diversity"; a
segmentation branch with a **lesion region enhancement (LRE)** module between encoder and decoder
"to capture more detailed texture and edge information of irregular tumors"; a classification
branch with a **fine-grained classifier that reuses segmentation information**.

Only the abstract is available, so everything below the module names is **inferred** -- from the
abstract's wording and from the published designs these names usually denote:

* **MFCR** (at the bottleneck, 1/32): cross-level fusion of encoder stages 2-4 (average-pooled to
  1/32, projected by 1×1 conv and summed) → four parallel branches of growing receptive field
  (1×1, 3×3 dilation 1 / 2 / 3; ASPP-style "multi-scale") → concatenation → squeeze-and-excitation
  channel refinement (Hu et al., CVPR 2018) → 1×1 fuse, added to ``layer4`` (residual).
* **LRE** (on the skips at 1/16, 1/8, 1/4): a coarse lesion prior p = σ(1×1 conv of the deeper
  decoder map, upsampled) weights the skip (region enhancement), and a high-pass branch
  (skip − 3×3 local mean, i.e. a Laplacian-like detail map, then 3×3 conv) carries texture and
  edges; both are fused by a 3×3 conv and added to the skip. The priors are side outputs, so
  :meth:`NMTNet.forward_train` returns them for deep supervision.
* **Decoder**: bilinear ×2, concat skip, two 3×3 conv-norm-ReLU, widths 8w / 4w / 2w / w at
  1/16 … 1/2 (``decoder_width`` w = 32); 1×1 head at 1/2, upsampled ×2 to the input size.
* **Fine-grained classifier**: the predicted lesion probability (σ of the 1/2-scale mask logits,
  average-pooled to each level) pools the MFCR output and the 1/16, 1/8 decoder maps over the
  lesion (``Σ p·f / Σ p``), next to a global average (context); the 2·(512 + 8w + 4w) vector goes
  through Linear → ReLU → Dropout → Linear(3). The mask is not detached: the classification loss
  also shapes the mask, which is the point of "reusing" it.
* **No pretrained weights**: the paper presumably starts from ImageNet ResNet18; none exist
  offline here, so the encoder trains from scratch (He init). Input: one ``image`` channel,
  256×256 (the paper's input size is not in the abstract).

``forward(x)``: ``(B, 1, H, W)`` with H, W divisible by 32 →
``{"mask_logits": (B, 1, H, W), "class_logits": (B, 3)}``. 18.6 M parameters at the defaults
(11.2 M of them the encoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.models._contract import (
    CLASS_NAMES,
    LESION_PRIOR,
    EncoderDecoderModel,
    with_mask_prior,
)
from export.models._pool import masked_mean
from export.models._registry import register_model, with_input_normalization
from export.models._resnet import ConvNormAct, Norm, ResNet18Encoder, up2

__all__ = ["MFCR", "LesionRegionEnhancement", "NMTNet", "nmtnet"]


# --- blocks --------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Channel attention: x · σ(FC(ReLU(FC(GAP(x))))); ``(B, C, H, W) → (B, C, H, W)``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class MFCR(nn.Module):
    """Multi-scale fusion channel refinement (inferred design, see the module docstring).

    ``forward([c2, c3, c4])`` with encoder maps at 1/8, 1/16, 1/32 → ``(B, C4, H/32, W/32)``.
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int],
        mid: int = 256,
        dilations: tuple[int, ...] = (1, 2, 3),
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        self.proj = nn.ModuleList([ConvNormAct(c, mid, 1, norm=norm) for c in in_channels])
        branch = mid // 2
        self.branches = nn.ModuleList(
            [ConvNormAct(mid, branch, 1, norm=norm)]
            + [ConvNormAct(mid, branch, 3, dilation=d, norm=norm) for d in dilations]
        )
        cat = branch * len(self.branches)
        self.refine = SqueezeExcite(cat)
        self.fuse = ConvNormAct(cat, in_channels[-1], 1, norm=norm, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4 = feats
        # Fixed pooling factors (stage strides are static), so the ONNX graph has no shape math.
        fused = (
            self.proj[0](F.avg_pool2d(c2, 4)) + self.proj[1](F.avg_pool2d(c3, 2)) + self.proj[2](c4)
        )
        multi = torch.cat([b(fused) for b in self.branches], dim=1)
        return self.act(c4 + self.fuse(self.refine(multi)))


class LesionRegionEnhancement(nn.Module):
    """LRE on one skip connection (inferred design, see the module docstring).

    ``forward(skip, deep)`` with ``skip`` ``(B, C, H, W)`` and the deeper decoder map ``deep``
    ``(B, Cd, H/2, W/2)`` → ``(enhanced (B, C, H, W), prior_logits (B, 1, H, W))``.
    """

    def __init__(self, channels: int, deep_channels: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.prior = nn.Conv2d(deep_channels, 1, 1)
        self.detail = ConvNormAct(channels, channels, 3, norm=norm)
        self.fuse = ConvNormAct(2 * channels, channels, 3, norm=norm)
        nn.init.normal_(self.prior.weight, std=0.01)  # a logit head: start unsaturated
        nn.init.zeros_(self.prior.bias)

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prior_logits = up2(self.prior(deep))
        region = skip * torch.sigmoid(prior_logits)
        # skip − local mean keeps what a 3×3 neighbourhood does not explain: edges and speckle
        # texture, the cues of irregular margins.
        high = skip - F.avg_pool2d(skip, 3, 1, 1, count_include_pad=False)
        enhanced = skip + self.fuse(torch.cat([region, self.detail(high)], dim=1))
        return enhanced, prior_logits


class DecoderBlock(nn.Module):
    """Bilinear ×2 → concat skip → two 3×3 conv-norm-ReLU;
    ``(B, cin, H, W), (B, cskip, 2H, 2W) → (B, cout, 2H, 2W)``."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvNormAct(cin + cskip, cout, 3, norm=norm), ConvNormAct(cout, cout, 3, norm=norm)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([up2(x), skip], dim=1))


# --- model ---------------------------------------------------------------------------------


class NMTNet(EncoderDecoderModel):
    """NMTNet (see the module docstring for the architecture and what is inferred)."""

    input_channels = ("image",)
    input_size = (256, 256)
    size_divisor = 32
    test_input_size = (64, 64)
    has_aux_masks = True

    def __init__(
        self,
        num_classes: int = 3,
        norm: Norm = "batch",
        decoder_width: int = 32,
        mfcr_channels: int = 256,
        mlp_hidden: int = 256,
        drop_rate: float = 0.3,
    ) -> None:
        super().__init__()
        if num_classes != len(CLASS_NAMES):
            self.class_names = tuple(f"class_{i}" for i in range(num_classes))
        self.encoder = ResNet18Encoder(len(self.input_channels), norm=norm)
        e0, e1, e2, e3, e4 = self.encoder.out_channels
        w = decoder_width
        d16, d8, d4, d2 = 8 * w, 4 * w, 2 * w, w
        self.mfcr = MFCR((e2, e3, e4), mfcr_channels, norm=norm)
        self.lre = nn.ModuleList(
            [
                LesionRegionEnhancement(e3, e4, norm),  # 1/16, prior from the MFCR output
                LesionRegionEnhancement(e2, d16, norm),  # 1/8
                LesionRegionEnhancement(e1, d8, norm),  # 1/4
            ]
        )
        self.decoder = nn.ModuleList(
            [
                DecoderBlock(e4, e3, d16, norm),
                DecoderBlock(d16, e2, d8, norm),
                DecoderBlock(d8, e1, d4, norm),
                DecoderBlock(d4, e0, d2, norm),  # the stem skip: too shallow for a lesion prior
            ]
        )
        self.mask_head = nn.Sequential(ConvNormAct(d2, d2, 3, norm=norm), nn.Conv2d(d2, 1, 1))
        pooled = 2 * (e4 + d16 + d8)  # lesion-pooled + global, three levels
        self.classifier = nn.Sequential(
            nn.Linear(pooled, mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(mlp_hidden, num_classes),
        )
        nn.init.normal_(self.mask_head[-1].weight, std=0.01)
        nn.init.zeros_(self.mask_head[-1].bias)

    # encoder → decoder → heads (EncoderDecoderModel); encode is the default (the ResNet18
    # stages: stem, c1..c4).
    def decode(
        self, encoded: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """MFCR on the deep stages, then the LRE-gated decoder: ``(d2, levels, sides)`` -- the
        stride-2 map, the stride-16 / 8 / 4 decoder levels the classifier pools, and the LRE
        priors ``(B, 1, H/16 | H/8 | H/4, ...)`` for deep supervision."""
        stem, c1, c2, c3, c4 = encoded
        d = self.mfcr([c2, c3, c4])
        levels = [d]
        sides = []
        for lre, block, skip in zip(self.lre, self.decoder[:3], (c3, c2, c1), strict=True):
            skip, side = lre(skip, d)
            d = block(d, skip)
            levels.append(d)
            sides.append(side)
        return self.decoder[3](d, stem), levels[:3], sides

    def heads(
        self,
        encoded: list[torch.Tensor],
        decoded: tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]],
    ) -> dict[str, object]:
        """The contract's outputs plus the LRE priors for deep supervision: ``side_logits_16``
        ``(B, 1, H/16, W/16)``, ``side_logits_8`` and ``side_logits_4``, also as the tuple
        ``aux_mask_logits`` (:class:`export.losses.TrainingLoss` deep supervision)."""
        d, levels, sides = decoded
        mask_half = self.mask_head(d)  # (B, 1, H/2, W/2)
        # Fine-grained classifier: pool each level over the predicted lesion and globally.
        p = torch.sigmoid(mask_half)
        pooled = []
        for feats, factor in zip(levels, (16, 8, 4), strict=True):
            pooled.append(masked_mean(feats, F.avg_pool2d(p, factor)))
            pooled.append(feats.mean(dim=(2, 3)))
        return {
            "mask_logits": up2(mask_half),
            "class_logits": self.classifier(torch.cat(pooled, dim=1)),
            **{f"side_logits_{r}": s for r, s in zip((16, 8, 4), sides, strict=True)},
            "aux_mask_logits": tuple(sides),
        }

    def mask_logit_convs(self) -> list[tuple[nn.Conv2d, int]]:
        return [(self.mask_head[-1], 0), *((lre.prior, 0) for lre in self.lre)]


# --- variants ------------------------------------------------------------------------------


@register_model("nmtnet")
def nmtnet(
    num_classes: int = 3,
    norm: Norm = "batch",
    decoder_width: int = 32,
    mfcr_channels: int = 256,
    mlp_hidden: int = 256,
    drop_rate: float = 0.3,
    input_mean: tuple[float, ...] | None = None,
    input_std: tuple[float, ...] | None = None,
    mask_prior: float | None = LESION_PRIOR,
) -> NMTNet:
    """NMTNet with a ResNet18 encoder at 256×256, one ``image`` channel, trained from scratch;
    the mask head and the LRE priors start at ``mask_prior`` (:func:`with_mask_prior`)."""
    model = NMTNet(
        num_classes=num_classes,
        norm=norm,
        decoder_width=decoder_width,
        mfcr_channels=mfcr_channels,
        mlp_hidden=mlp_hidden,
        drop_rate=drop_rate,
    )
    return with_input_normalization(with_mask_prior(model, mask_prior), input_mean, input_std)
