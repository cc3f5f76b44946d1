"""ACSNet: multi-task learning for segmentation and classification of breast tumors (seed 004).

ACSNet, "Multi-task learning for segmentation and classification of breast tumors from
ultrasound images" (the authors' repository README, seed 004). The title matches He, Yang, Su,
Wang, Comput. Biol. Med. 173:108319 (2024), doi:10.1016/j.compbiomed.2024.108319 (ref. 52 of
seed 003) -- presumably the same work; only the README was available here. Deformable
convolution after Dai et al., "Deformable Convolutional Networks", ICCV 2017 (DCNv1, the
implementation the README credits).

What the README states: a segmentation network whose **gate units** "allow optimal transfer of
valuable contextual information from the encoder to the decoder"; a **Deformable Spatial
Attention Module (DSAModule)** against the "limitations of conventional convolution in dealing
with morphological variations of tumors"; a classification branch that integrates **multi-scale
feature extraction and channel attention**. The ResNet18 encoder is this project's choice (the
README's figure is not available); everything below the module names is **inferred**:

* **Gate unit** (on the skips at 1/16, 1/8, 1/4, 1/2): g = σ(1×1(ReLU(norm(3×3([e, d]))))) from
  the encoder map e and the upsampled decoder map d, per pixel and channel; the decoder receives
  g ⊙ e -- the decoder decides which encoder context passes (redundant or misleading encoder
  features, the README's complaint about shared-encoder MTL, are gated out).
* **DSAModule** (on the bottleneck at 1/32 and after the 1/8 decoder stage): a 3×3 conv predicts
  DCNv1 offsets (zero-initialised, so training starts from a plain conv), a 3×3 deformable conv
  + norm + ReLU samples the feature map at the shifted positions, and a CBAM-style spatial
  attention (7×7 conv over the channel mean and max, sigmoid) weights that response, added back
  to the input (residual).
* **Deformable conv** is written with ``torch.nn.functional.grid_sample`` (bilinear, zero
  padding): all k² taps in one call, then a 1×1 conv with the k×k weights -- so the graph is
  opset-17 ``GridSample`` + ``Conv`` and runs in ONNX Runtime / TensorRT without torchvision's
  custom op. With zero offsets it equals ``nn.Conv2d`` (tested).
* **Classifier** (on the encoder, separate from the decoder): stages 2-4 (1/8, 1/16, 1/32) each
  through a 3×3 conv-norm-ReLU to ``cls_width`` channels and global average pooling
  (multi-scale), the concatenated descriptor re-weighted by squeeze-and-excitation channel
  attention, then Linear → ReLU → Dropout → Linear(3).
* **Decoder**: bilinear ×2, gated skip, concat, two 3×3 conv-norm-ReLU; widths 8w / 4w / 2w / w
  (``decoder_width`` w = 32); 1×1 head at 1/2, upsampled ×2 to the input size.
* **No pretrained weights**: none exist offline here, so the encoder trains from scratch.
  Input: one ``image`` channel at 256×256 (the input size is not in the README).

``forward(x)``: ``(B, 1, H, W)`` with H, W divisible by 32 →
``{"mask_logits": (B, 1, H, W), "class_logits": (B, 3)}``. 20.6 M parameters at the defaults
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
from export.models._resnet import ConvNormAct, Norm, ResNet18Encoder, norm_layer, up2
from sdk.errors import InputError

__all__ = ["ACSNet", "DSAModule", "DeformConv2d", "GateUnit", "acsnet", "deform_conv2d"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --- blocks --------------------------------------------------------------------------------


def _tap_positions(kh: int, kw: int, dilation: tuple[int, int]) -> torch.Tensor:
    """``(2, kh·kw)`` float32: row ``i·dh`` and column ``j·dw`` of tap ``t = i·kw + j``."""
    rows = [i * dilation[0] for i in range(kh) for _ in range(kw)]
    cols = [j * dilation[1] for _ in range(kh) for j in range(kw)]
    return torch.tensor([rows, cols], dtype=torch.float32)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    tap_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution v1 (Dai et al. 2017) via ``grid_sample``; groups = 1.

    Args:
        x: ``(B, Cin, H, W)`` input.
        offset: ``(B, 2·kh·kw, Ho, Wo)`` sampling offsets in pixels, torchvision's layout: for tap
            ``t = i·kw + j`` channel ``2t`` is the row (y) offset and ``2t + 1`` the column (x)
            offset. ``Ho, Wo`` must be the conv's output size for ``stride / padding /
            dilation``; they are read from ``offset`` so the graph has no size arithmetic.
        weight: ``(Cout, Cin, kh, kw)``; bias: ``(Cout,)`` or None.
        tap_positions: ``(2, kh·kw)`` the (row, column) of every tap, ``(i·dh, j·dw)``; computed
            when None (:class:`DeformConv2d` keeps them as a buffer, an initializer in ONNX).

    Returns:
        ``(B, Cout, Ho, Wo)``. Tap ``(i, j)`` of output ``(y, x)`` reads the input bilinearly at
        ``(y·sh − ph + i·dh + Δy, x·sw − pw + j·dw + Δx)``, zero outside -- with zero offsets,
        exactly ``F.conv2d(x, weight, bias, stride, padding, dilation)`` (up to float rounding).
    """
    cout, cin, kh, kw = weight.shape
    taps = kh * kw
    h, w = x.shape[-2:]
    ho, wo = offset.shape[-2:]
    dtype, device = x.dtype, x.device
    # Positions of every tap without offsets: (taps, Ho, 1) rows and (taps, 1, Wo) columns.
    if tap_positions is None:
        tap_positions = _tap_positions(kh, kw, dilation).to(device)
    tap_y, tap_x = tap_positions.to(dtype).unbind(0)
    rows = torch.arange(ho, dtype=dtype, device=device) * stride[0] - padding[0]
    cols = torch.arange(wo, dtype=dtype, device=device) * stride[1] - padding[1]
    base_y = rows.view(1, -1, 1) + tap_y.view(-1, 1, 1)
    base_x = cols.view(1, 1, -1) + tap_x.view(-1, 1, 1)

    off = offset.reshape(-1, taps, 2, ho, wo)
    py = base_y + off[:, :, 0]  # (B, taps, Ho, Wo)
    px = base_x + off[:, :, 1]
    # Pixel → grid_sample's [-1, 1] with align_corners=False: pixel centres at (2p + 1)/n − 1.
    # (align_corners=True would divide by n − 1, which is 0 for 1-pixel-wide maps.)
    gy = (2.0 * py + 1.0) / h - 1.0
    gx = (2.0 * px + 1.0) / w - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(-1, taps * ho, wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (B, Cin, taps·Ho, Wo) → (B, Cin·taps, Ho, Wo): channel c·taps + t, the order of
    # weight.reshape(Cout, Cin·kh·kw), so the k×k conv becomes one 1×1 conv (a GEMM).
    columns = sampled.reshape(-1, cin * taps, ho, wo)
    return F.conv2d(columns, weight.reshape(cout, cin * taps, 1, 1), bias)


class DeformConv2d(nn.Module):
    """A deformable conv layer (``nn.Conv2d``'s parameters; the offsets are a second input).

    ``forward(x, offset)``: ``(B, Cin, H, W), (B, 2·k·k, Ho, Wo) → (B, Cout, Ho, Wo)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        # Same parameters and init as nn.Conv2d, so weights can be copied across.
        ref = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias
        )
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None
        self.register_buffer(
            "tap_positions", _tap_positions(*self.kernel_size, self.dilation), persistent=False
        )

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.tap_positions,
        )


class DSAModule(nn.Module):
    """Deformable spatial attention (inferred design, see the module docstring).

    ``forward(x)``: ``(B, C, H, W) → (B, C, H, W)``; :meth:`attention` gives the ``(B, 1, H, W)``
    spatial weights and :meth:`offsets` the ``(B, 18, H, W)`` sampling offsets.
    """

    def __init__(self, channels: int, norm: Norm = "batch", kernel_size: int = 3) -> None:
        super().__init__()
        k = kernel_size
        self.offset = nn.Conv2d(channels, 2 * k * k, 3, padding=1)
        # Zero offsets at init: the module starts as an ordinary conv and learns to deform.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.dconv = DeformConv2d(channels, channels, k, padding=k // 2, bias=False)
        nn.init.kaiming_normal_(self.dconv.weight, mode="fan_out", nonlinearity="relu")
        self.norm = norm_layer(norm, channels)
        self.act = nn.ReLU(inplace=True)
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset(x)

    def deformed(self, x: torch.Tensor) -> torch.Tensor:
        """The deformable conv response, ``(B, C, H, W)``."""
        return self.act(self.norm(self.dconv(x, self.offsets(x))))

    def attention(self, feats: torch.Tensor) -> torch.Tensor:
        """CBAM spatial attention of ``feats`` ``(B, C, H, W)``: ``(B, 1, H, W)`` in (0, 1)."""
        desc = torch.cat([feats.mean(dim=1, keepdim=True), feats.amax(dim=1, keepdim=True)], 1)
        return torch.sigmoid(self.spatial(desc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.deformed(x)
        return x + feats * self.attention(feats)


class GateUnit(nn.Module):
    """Gate on a skip connection (inferred design, see the module docstring).

    ``forward(e, d)``: encoder map ``e`` ``(B, Ce, H, W)`` and upsampled decoder map ``d``
    ``(B, Cd, H, W)`` → gated ``e`` ``(B, Ce, H, W)``; :meth:`gate` gives the weights in (0, 1).
    """

    def __init__(self, enc_channels: int, dec_channels: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(enc_channels + dec_channels, enc_channels, 3, norm=norm),
            nn.Conv2d(enc_channels, enc_channels, 1),
        )
        # Gates start half open (σ(0) = 0.5) rather than at random saturations.
        nn.init.normal_(self.body[-1].weight, std=0.01)
        nn.init.zeros_(self.body[-1].bias)

    def gate(self, e: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(torch.cat([e, d], dim=1)))

    def forward(self, e: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return e * self.gate(e, d)


class GatedDecoderBlock(nn.Module):
    """Bilinear ×2 → gate the skip with it → concat → two 3×3 conv-norm-ReLU;
    ``(B, cin, H, W), (B, cskip, 2H, 2W) → (B, cout, 2H, 2W)``."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.gate = GateUnit(cskip, cin, norm)
        self.convs = nn.Sequential(
            ConvNormAct(cin + cskip, cout, 3, norm=norm), ConvNormAct(cout, cout, 3, norm=norm)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = up2(x)
        return self.convs(torch.cat([x, self.gate(skip, x)], dim=1))


class MultiScaleChannelAttentionClassifier(nn.Module):
    """``forward([c2, c3, c4], lesion)`` (encoder maps at 1/8, 1/16, 1/32; ``lesion`` the mask
    probability at 1/2) → ``(B, num_classes)``.

    ``pool="global"``: each scale averaged over the whole frame. ``pool="lesion"``: averaged over
    the predicted lesion *and* globally (the lesion probability area-pooled onto each scale's
    grid), as NMTNet's classifier does -- a lesion covers ~5 % of a frame, and the whole-frame
    average of a from-scratch encoder carried no class information (issue #15: a linear probe on
    the trained global descriptor scored 0.39, training CE stayed at ln 3 for 6 epochs). Measured
    at 256x256 with the seed recipe, the lesion pooling did not rescue it (AUC 0.556 vs 0.531 on
    300 fresh phantoms; ``benchmarks/results/seed-teachers.md``): "global" stays the default.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        width: int = 128,
        hidden: int = 256,
        num_classes: int = 3,
        drop_rate: float = 0.3,
        norm: Norm = "batch",
        pool: str = "global",
        strides: tuple[int, ...] = (8, 16, 32),
    ) -> None:
        super().__init__()
        if pool not in ("global", "lesion"):
            raise InputError(f"cls_pool must be 'global' or 'lesion', got {pool!r}")
        self.pool = pool
        # Area-pooling factors from the 1/2 mask grid onto each scale (static: no shape math in
        # the ONNX graph).
        self.factors = tuple(int(st) // 2 for st in strides)
        self.scales = nn.ModuleList([ConvNormAct(c, width, 3, norm=norm) for c in in_channels])
        total = width * len(in_channels) * (2 if pool == "lesion" else 1)
        # Squeeze-and-excitation on the pooled multi-scale descriptor: re-weights channels of
        # all three scales jointly, so the classifier can prefer one scale per lesion size.
        self.channel_attention = nn.Sequential(
            nn.Linear(total, total // 16),
            nn.ReLU(inplace=True),
            nn.Linear(total // 16, total),
            nn.Sigmoid(),
        )
        self.mlp = nn.Sequential(
            nn.Linear(total, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )

    def forward(
        self, feats: list[torch.Tensor], lesion: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = []
        for scale, f, factor in zip(self.scales, feats, self.factors, strict=True):
            g = scale(f)
            if self.pool == "lesion":
                if lesion is None:
                    raise InputError("a lesion-pooled classifier needs the lesion probability")
                w = F.avg_pool2d(lesion, factor)
                parts.append(masked_mean(g, w))
            parts.append(g.mean(dim=(2, 3)))
        desc = torch.cat(parts, 1)
        return self.mlp(desc * self.channel_attention(desc))


# --- model ---------------------------------------------------------------------------------


class ACSNet(EncoderDecoderModel):
    """ACSNet (see the module docstring for the architecture and what is inferred)."""

    input_channels = ("image",)
    input_size = (256, 256)
    size_divisor = 32
    test_input_size = (64, 64)

    def __init__(
        self,
        num_classes: int = 3,
        norm: Norm = "batch",
        decoder_width: int = 32,
        cls_width: int = 128,
        mlp_hidden: int = 256,
        drop_rate: float = 0.3,
        cls_pool: str = "global",
    ) -> None:
        super().__init__()
        if num_classes != len(CLASS_NAMES):
            self.class_names = tuple(f"class_{i}" for i in range(num_classes))
        self.encoder = ResNet18Encoder(len(self.input_channels), norm=norm)
        e0, e1, e2, e3, e4 = self.encoder.out_channels
        w = decoder_width
        d16, d8, d4, d2 = 8 * w, 4 * w, 2 * w, w
        self.dsa_bottleneck = DSAModule(e4, norm)
        self.decoder = nn.ModuleList(
            [
                GatedDecoderBlock(e4, e3, d16, norm),
                GatedDecoderBlock(d16, e2, d8, norm),
                GatedDecoderBlock(d8, e1, d4, norm),
                GatedDecoderBlock(d4, e0, d2, norm),
            ]
        )
        self.dsa_decoder = DSAModule(d8, norm)  # after the 1/8 stage: shape detail, cheap
        self.mask_head = nn.Sequential(ConvNormAct(d2, d2, 3, norm=norm), nn.Conv2d(d2, 1, 1))
        nn.init.normal_(self.mask_head[-1].weight, std=0.01)
        nn.init.zeros_(self.mask_head[-1].bias)
        self.classifier = MultiScaleChannelAttentionClassifier(
            (e2, e3, e4), cls_width, mlp_hidden, num_classes, drop_rate, norm, cls_pool
        )

    def mask_logit_convs(self) -> list[tuple[nn.Conv2d, int]]:
        return [(self.mask_head[-1], 0)]

    # encoder → decoder → heads (EncoderDecoderModel); encode is the default (the ResNet18
    # stages: stem, c1..c4).
    def decode(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        stem, c1, c2, c3, c4 = encoded
        d = self.dsa_bottleneck(c4)
        d = self.decoder[0](d, c3)
        d = self.dsa_decoder(self.decoder[1](d, c2))
        d = self.decoder[2](d, c1)
        return self.decoder[3](d, stem)

    def heads(self, encoded: list[torch.Tensor], decoded: torch.Tensor) -> dict[str, torch.Tensor]:
        mask_half = self.mask_head(decoded)  # (B, 1, H/2, W/2)
        lesion = torch.sigmoid(mask_half) if self.classifier.pool == "lesion" else None
        return {
            "mask_logits": up2(mask_half),
            "class_logits": self.classifier(encoded[2:], lesion),
        }


# --- variants ------------------------------------------------------------------------------


@register_model("acsnet")
def acsnet(
    num_classes: int = 3,
    norm: Norm = "batch",
    decoder_width: int = 32,
    cls_width: int = 128,
    mlp_hidden: int = 256,
    drop_rate: float = 0.3,
    input_mean: tuple[float, ...] | None = None,
    input_std: tuple[float, ...] | None = None,
    mask_prior: float | None = LESION_PRIOR,
    cls_pool: str = "global",
) -> ACSNet:
    """ACSNet with a ResNet18 encoder at 256×256, one ``image`` channel, trained from scratch;
    the mask head starts at ``mask_prior`` (:func:`with_mask_prior`)."""
    model = ACSNet(
        num_classes=num_classes,
        norm=norm,
        decoder_width=decoder_width,
        cls_width=cls_width,
        mlp_hidden=mlp_hidden,
        drop_rate=drop_rate,
        cls_pool=cls_pool,
    )
    return with_input_normalization(with_mask_prior(model, mask_prior), input_mean, input_std)
