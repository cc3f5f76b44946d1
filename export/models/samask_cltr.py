"""SAMASK-CLTR: mask-prompted CNN-transformer classifier of 3D ABUS lesions (seed 000).

Xu, Zhu, Chen, Qian, Sun, Bao, Tan, "SAMASK-CLTR: A Spatial-Aware Mask Guided Learning Model for
Benign and Malignant Tumor Classification in ABUS", MICCAI 2025 (LNCS 15960, pp. 567-577).

From the abstract (all the paper text available here):

* "ResNet-50 extracts hierarchical, multi-scale features" -> :class:`ResNet3d50`, a 3-D ResNet-50
  (bottleneck stages 3/4/6/3, widths 256/512/1024/2048);
* "refined by a Transformer encoder-decoder to capture global context" -> multi-scale tokens of
  the last two stages (c4, c5), a transformer encoder over them, a transformer decoder whose
  class query reads the result;
* "during decoding, a mask prompt enhanced with 3D positional encoding guides the network to focus
  on key tumor regions" -> :class:`MaskPrompt`, used only in the decoder.

Inferred (not in the abstract):

* 3-D convolutions throughout (ABUS volumes), anisotropic stem ``(3, 7, 7)`` stride ``(1, 2, 2)``
  (slabs are thin along the sweep), GroupNorm instead of BatchNorm (volumes train at batch 1-4),
  random init (no 3-D ResNet-50 weights offline). Overall strides: depth 16, height / width 32.
* DETR-style transformer, pre-norm, d = 256, 8 heads, FFN 1024, 3 encoder + 3 decoder layers,
  fixed sine 3-D positional encoding (a third of the channels per axis) plus a learned per-level
  embedding (Deformable DETR's multi-scale tokens, with dense attention: 144 tokens at the default
  16x128x128 slab).
* The mask prompt, at every token, is its lesion occupancy ``m`` (the mask averaged over the
  token's cell): (1) a dense prompt ``m e_fg + (1 - m) e_bg`` added to the decoder's memory, like
  SAM's dense mask embedding; (2) the 3-D positional encoding added to the keys; (3) an attention
  bias ``β_h m`` per head and decoder layer (learned, starts at 1) that tilts cross-attention
  toward the lesion; (4) a sparse prompt token, an MLP of the occupancy-weighted mean positional
  encoding -- where the lesion is -- decoded next to the class query. An empty mask (a normal
  slab) is a valid prompt: background embedding everywhere, no bias, the "no lesion" token.
* Output: 3 logits (normal, benign, malignant; the paper classifies benign vs malignant -- the
  ``normal`` logit keeps the project's contract and covers slabs without a lesion).

Frame streaming (the SDK sees one 2-D frame at a time). An ABUS sweep, or a freehand cine, is a
sequence of parallel frames, so the SDK can feed this model from a **slab buffer**: a ring of the
last ``D`` (default 16) preprocessed frames ``(1, h, w)`` and, for each, the lesion probability
map that the frame model (``sam_mtl`` / the edge student) already produced for it, resized to
``(h, w)``. Once the ring is full -- and then every ``D / 2`` frames -- the buffer is stacked into
``volume (1, 1, D, h, w)`` and ``mask (1, 1, D, h, w)`` (soft probabilities are valid prompts) and
this model runs once; its label applies to the slab's frames (overlapping slabs: average the
probabilities per frame). The 2-D model's per-frame masks are therefore the prompt: no extra
segmentation pass, and the 3-D classifier costs one call per ``D / 2`` frames. Inputs are ONNX
``input`` (volume) and ``input_1`` (mask), dynamic batch, static ``D, h, w``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from export.models._contract import MultiTaskModel
from export.models._registry import register_model
from sdk.errors import InputError

__all__ = ["MaskPrompt", "ResNet3d50", "SamaskCLTR", "samask_cltr", "sine_pe_3d"]


# --------------------------------------------------------------------------- 3-D ResNet-50


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class Bottleneck3d(nn.Module):
    """1³ reduce, 3³ (stride), 1³ expand x4, GroupNorm, residual: ``(B, cin, D, H, W)`` in."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
        self.gn1 = _gn(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.gn2 = _gn(planes)
        self.conv3 = nn.Conv3d(planes, cout, 1, bias=False)
        self.gn3 = _gn(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), _gn(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet3d50(nn.Module):
    """3-D ResNet-50 feature pyramid.

    ``forward(x)``: ``(B, in_chans, D, H, W)`` -> stage outputs ``[c2, c3, c4, c5]`` with
    256 / 512 / 1024 / 2048 channels at strides (2, 4, 4), (4, 8, 8), (8, 16, 16), (16, 32, 32)
    (depth, height, width).
    """

    channels = (256, 512, 1024, 2048)
    strides = ((2, 4, 4), (4, 8, 8), (8, 16, 16), (16, 32, 32))

    def __init__(self, in_chans: int = 1, layers: Sequence[int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_chans, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            _gn(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(3, stride=2, padding=1),
        )
        cin, stages = 64, []
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck3d(cin, planes, stride=2 if (i > 0 and j == 0) else 1))
                cin = planes * Bottleneck3d.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


# --------------------------------------------------------------------------- transformer


def sine_pe_3d(d: int, h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed sine-cosine 3-D positional encoding ``(d * h * w, dim)``, tokens in (z, y, x) order.

    Coordinates are cell centres normalized to (0, 2π) per axis (DETR's ``normalize=True``), so
    the encoding describes relative position within the slab at any grid size. Channels: x and y
    get ``2 * (dim // 6)`` each, z the rest; each axis half sine, half cosine.
    """
    nxy = 2 * (dim // 6)
    sizes = (dim - 2 * nxy, nxy, nxy)  # z, y, x
    grids = torch.meshgrid(
        *[(torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 * math.pi for n in (d, h, w)],
        indexing="ij",
    )
    parts = []
    for g, n in zip(grids, sizes, strict=True):
        half = n // 2
        freq = temperature ** (torch.arange(half, dtype=torch.float32) / half)
        arg = g.reshape(-1, 1) / freq
        parts += [arg.sin(), arg.cos()]
    return torch.cat(parts, dim=1)


class Attention(nn.Module):
    """Multi-head attention ``(B, Lq, d), (B, Lk, d), (B, Lk, d) -> (B, Lq, d)`` with an optional
    additive bias broadcastable to ``(B, heads, Lq, Lk)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        qh, kh, vh = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
        attn = (qh @ kh.transpose(-2, -1)) * qh.shape[-1] ** -0.5
        if bias is not None:
            attn = attn + bias
        out = attn.softmax(dim=-1) @ vh  # (B, heads, Lq, dh)
        return self.out(out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1))


class FFN(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention (positions added to queries and keys) + FFN."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y + pos, y + pos, y)
        return x + self.ffn(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention among queries, mask-biased cross-attention to memory, FFN.

    ``beta`` (heads,) scales the lesion-occupancy bias of the cross-attention per head.
    """

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn)
        self.beta = nn.Parameter(torch.ones(heads))

    def forward(
        self, tgt: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, occupancy: torch.Tensor
    ) -> torch.Tensor:
        """``tgt (B, Q, d)``, ``keys / values (B, N, d)``, ``occupancy (B, N)`` in [0, 1]."""
        y = self.norm1(tgt)
        tgt = tgt + self.self_attn(y, y, y)
        bias = self.beta.view(1, -1, 1, 1) * occupancy[:, None, None, :]
        tgt = tgt + self.cross_attn(self.norm2(tgt), keys, values, bias)
        return tgt + self.ffn(self.norm3(tgt))


class MaskPrompt(nn.Module):
    """The mask prompt: dense occupancy embedding and a sparse lesion-location token.

    ``forward(occupancy (B, N), pos (1, N, d))`` -> ``(dense (B, N, d), token (B, 1, d))``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fg = nn.Parameter(torch.randn(dim) * 0.02)
        self.bg = nn.Parameter(torch.randn(dim) * 0.02)
        self.loc = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(
        self, occupancy: torch.Tensor, pos: torch.Tensor, eps: float = 1e-6
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = occupancy[..., None]
        dense = m * self.fg + (1.0 - m) * self.bg
        centre = (m * pos).sum(1, keepdim=True) / (m.sum(1, keepdim=True) + eps)
        return dense, self.loc(centre)


# --------------------------------------------------------------------------- model


class SamaskCLTR(MultiTaskModel):
    """3-D ResNet-50 + transformer encoder-decoder + 3-D mask prompt -> class logits.

    ``forward(volume, mask)``: both float32 ``(B, 1, D, H, W)``; ``volume`` is the SDK's
    ``image`` channel of ``D`` consecutive frames, ``mask`` the lesion probability (or binary
    mask) of the same voxels. D divisible by 16, H and W by 32. Returns
    ``{"class_logits": (B, 3)}``.
    """

    input_size = (128, 128)
    input_depth: int = 16
    depth_divisor: int = 16
    size_divisor = 32
    #: Tiny but valid (c5 is one voxel): the 52M-parameter model still exports and checks fast.
    test_input_size = (32, 32)

    def __init__(
        self,
        dim: int = 256,
        heads: int = 8,
        ffn: int = 1024,
        enc_layers: int = 3,
        dec_layers: int = 3,
        levels: Sequence[int] = (2, 3),
        input_depth: int = 16,
        input_size: tuple[int, int] = (128, 128),
    ) -> None:
        super().__init__()
        self.input_depth = input_depth
        self.input_size = input_size
        self.backbone = ResNet3d50()
        self.levels = tuple(levels)  # indices into the backbone's [c2, c3, c4, c5]
        self.proj = nn.ModuleList(
            [
                nn.Sequential(nn.Conv3d(ResNet3d50.channels[i], dim, 1), nn.GroupNorm(32, dim))
                for i in self.levels
            ]
        )
        self.level_embed = nn.Parameter(torch.randn(len(self.levels), dim) * 0.02)
        self.encoder = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(enc_layers)])
        self.enc_norm = nn.LayerNorm(dim)
        self.prompt = MaskPrompt(dim)
        self.cls_query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.decoder = nn.ModuleList([DecoderLayer(dim, heads, ffn) for _ in range(dec_layers)])
        self.dec_norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, len(self.class_names))
        self.dim = dim

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("class_logits",)

    def example_input(
        self, batch: int = 1, size: tuple[int, int] | None = None, depth: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(volume, mask)``: random speckle-like intensities and a random ellipsoid lesion."""
        h, w = size or self.input_size
        d = depth or self.input_depth
        volume = torch.rand(batch, 1, d, h, w)
        centre = 0.3 + 0.4 * torch.rand(batch, 3)
        radii = 0.15 + 0.2 * torch.rand(batch, 3)
        axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in (d, h, w)]
        z, y, x = torch.meshgrid(*axes, indexing="ij")
        r2 = sum(
            ((g[None] - centre[:, i, None, None, None]) / radii[:, i, None, None, None]) ** 2
            for i, g in enumerate((z, y, x))
        )
        return volume, (r2 <= 1.0).float()[:, None]

    def _check(self, volume: torch.Tensor, mask: torch.Tensor) -> None:
        if volume.dim() != 5 or volume.shape[1] != 1:
            raise InputError(f"volume must be (B, 1, D, H, W), got {tuple(volume.shape)}")
        if mask.shape != volume.shape:
            raise InputError(f"mask {tuple(mask.shape)} must match volume {tuple(volume.shape)}")
        d, h, w = volume.shape[2:]
        if d % self.depth_divisor or h % self.size_divisor or w % self.size_divisor:
            raise InputError(
                f"volume (D, H, W) = {(d, h, w)}: D must be divisible by {self.depth_divisor} "
                f"and H, W by {self.size_divisor}; crop or resize the slab"
            )

    def forward(self, volume: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(volume, mask)
        feats = self.backbone(volume)
        tokens, pos, occ = [], [], []
        for j, (i, proj) in enumerate(zip(self.levels, self.proj, strict=True)):
            f = proj(feats[i])  # (B, dim, d, h, w)
            d, h, w = f.shape[2:]
            tokens.append(f.flatten(2).transpose(1, 2))
            pos.append(sine_pe_3d(d, h, w, self.dim).to(f.dtype)[None] + self.level_embed[j])
            # Lesion occupancy of each token's cell; the kernel is the level's stride.
            k = ResNet3d50.strides[i]
            occ.append(F.avg_pool3d(mask, kernel_size=k, stride=k).flatten(1))
        x = torch.cat(tokens, 1)  # (B, N, dim)
        p = torch.cat(pos, 1)  # (1, N, dim)
        m = torch.cat(occ, 1)  # (B, N)
        for layer in self.encoder:
            x = layer(x, p)
        x = self.enc_norm(x)
        dense, token = self.prompt(m, p)
        values = x + dense
        keys = values + p
        tgt = torch.cat([self.cls_query.expand(x.shape[0], -1, -1), token], 1)
        for layer in self.decoder:
            tgt = layer(tgt, keys, values, m)
        return {"class_logits": self.classifier(self.dec_norm(tgt[:, 0]))}


# --------------------------------------------------------------------------- variants


@register_model("samask_cltr")
def samask_cltr(
    input_depth: int = 16,
    input_size: tuple[int, int] = (128, 128),
    enc_layers: int = 3,
    dec_layers: int = 3,
) -> SamaskCLTR:
    """SAMASK-CLTR on ``input_depth`` x ``input_size`` slabs (random init)."""
    return SamaskCLTR(
        enc_layers=enc_layers, dec_layers=dec_layers, input_depth=input_depth, input_size=input_size
    )
