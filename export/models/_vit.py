"""SAM's ViT image encoder (ViT-B/16 configuration), randomly initialized.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (arXiv:2010.11929); as adapted by
Kirillov et al., "Segment Anything", ICCV 2023 (arXiv:2304.02643), ``ImageEncoderViT``: 16x16
patch embedding, absolute position embedding, pre-norm blocks with decomposed relative position
biases, windowed attention in all blocks except a few global ones, and a conv neck to 256 channels.

Parameter names follow SAM's ``image_encoder`` so SAM ViT-B weights map 1:1 where a user has them.
**No weights are available offline** (SAM's ViT-B checkpoint is not in any installed wheel), so the
encoder starts from random init; ``sam_mtl`` uses the pretrained TinyViT by default for that reason.

SAM runs at 1024x1024 (64x64 tokens, 14x14 windows). Here the default is 256x256 (16x16 tokens):
the absolute position embedding is stored for ``img_size`` and resampled bicubically for other
sizes (as timm does for SAM ViTs); the global blocks' relative tables are resampled linearly by
:func:`get_rel_pos` (SAM's own rule). Windowed attention is optional (``window_size=0``: global).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from export.models._tinyvit import LayerNorm2d

__all__ = ["VIT_B16", "SamViT", "ViTConfig", "get_rel_pos", "vit_b16"]


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of a SAM ViT image encoder."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_chans: int = 256
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    use_rel_pos: bool = True


#: SAM ViT-B/16 as published (1024 input, 14x14 windows, global attention in blocks 2, 5, 8, 11).
VIT_B16 = ViTConfig()


# --------------------------------------------------------------------------- blocks


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings ``(q_size, k_size, C)`` for the given sizes (SAM).

    The ``(L, C)`` table is linearly resampled when ``L != 2 * max(q_size, k_size) - 1``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = (
            F.interpolate(
                rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                size=max_rel_dist,
                mode="linear",
            )
            .reshape(-1, max_rel_dist)
            .permute(1, 0)
        )
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


class Attention(nn.Module):
    """Multi-head attention on a ``(B', H, W, C)`` token grid with decomposed rel-pos bias."""

    def __init__(self, dim: int, num_heads: int, use_rel_pos: bool, grid: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            # Zero-init as in SAM; sized for ``grid`` (the window, or the token grid if global).
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(-1, n, 3, self.num_heads, x.shape[-1] // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B', heads, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B', heads, N, N)
        if self.use_rel_pos:
            rh = get_rel_pos(h, h, self.rel_pos_h)  # (h, h, d)
            rw = get_rel_pos(w, w, self.rel_pos_w)  # (w, w, d)
            r_q = q.reshape(-1, self.num_heads, h, w, q.shape[-1])
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
            attn = attn.reshape(-1, self.num_heads, h, w, h, w)
            attn = attn + rel_h[..., :, None] + rel_w[..., None, :]
            attn = attn.reshape(-1, self.num_heads, n, n)
        out = attn.softmax(dim=-1) @ v  # (B', heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(-1, h, w, x.shape[-1]))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Block(nn.Module):
    """Pre-norm transformer block on ``(B, H, W, C)``; windowed when ``window_size > 0``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        use_rel_pos: bool,
        window_size: int,
        grid: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, use_rel_pos, window_size or grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            _, h, w, c = x.shape
            ws = self.window_size
            pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_h or pad_w:  # static: depends on the input size only
                x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            hp, wp = h + pad_h, w + pad_w
            x = x.reshape(-1, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
            x = self.attn(x.reshape(-1, ws, ws, c))
            x = x.reshape(-1, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(-1, hp, wp, c)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- model


class SamViT(nn.Module):
    """SAM ViT encoder.

    ``forward(x)``: ``x`` float32 ``(B, 3, H, W)`` normalized by SAM's pixel mean/std, H and W
    divisible by 16. Returns ``(embedding, taps)``: the neck embedding ``(B, 256, H/16, W/16)``
    and the outputs of the global-attention blocks but the last (``(B, 768, H/16, W/16)`` each;
    UNETR-style skips), shallowest first.
    """

    def __init__(self, cfg: ViTConfig = VIT_B16) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_channels = cfg.out_chans
        self.stride = cfg.patch_size
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            [
                Block(
                    cfg.embed_dim,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    cfg.use_rel_pos,
                    0 if i in cfg.global_attn_indexes else cfg.window_size,
                    grid,
                )
                for i in range(cfg.depth)
            ]
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, 1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )
        # UNETR-style skips: the global blocks but the last (the neck covers it); evenly spaced
        # quarters when the configuration has fewer than two global blocks.
        glob = tuple(sorted(cfg.global_attn_indexes))
        quarters = tuple(cfg.depth * k // 4 - 1 for k in (1, 2, 3))
        self.taps = glob[:-1] if len(glob) >= 2 else quarters
        self.apply(_init_weights)

    @property
    def skip_specs(self) -> tuple[tuple[int, int], ...]:
        """(channels, stride) of the taps returned by ``forward``, shallowest first."""
        return tuple((self.cfg.embed_dim, self.stride) for _ in self.taps)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        pe = self.pos_embed
        if pe.shape[1:3] == (h, w):
            return pe
        # Bicubic like timm's resample_abs_pos_embed; constant-folded at export.
        pe = F.interpolate(pe.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
        return pe.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, h, w, C)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        taps = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.taps:
                taps.append(x.permute(0, 3, 1, 2))
        return self.neck(x.permute(0, 3, 1, 2)), taps


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def vit_b16(
    img_size: int = 256, window_size: int = 8, global_attn_indexes: Sequence[int] = (2, 5, 8, 11)
) -> SamViT:
    """SAM ViT-B/16 at ``img_size`` (random init)."""
    return SamViT(
        ViTConfig(
            img_size=img_size,
            window_size=window_size,
            global_attn_indexes=tuple(global_attn_indexes),
        )
    )
