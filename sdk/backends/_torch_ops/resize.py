"""Resampling: Resize (every ONNX mode / coordinate transform, as separable taps) and GridSample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sdk.backends._torch_ops._core import (
    Ctx,
    Node,
    Tensor,
    Unsupported,
    _axis,
    op,
)

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


# ---- resampling ---------------------------------------------------------------------------------
_CTM = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)


def _source_coords(ctm: str, n_out: int, n_in: int, scale: np.float32) -> np.ndarray:
    """Resize: input coordinate of every output index, in float32 like ONNX Runtime."""
    f32 = np.float32
    x = np.arange(n_out, dtype=f32)
    half, s, lin, lout = f32(0.5), f32(scale), f32(n_in), f32(n_out)
    if ctm == "half_pixel":
        return (x + half) / s - half
    if ctm == "half_pixel_symmetric":
        adj = lout / (s * lin)
        offset = (lin / f32(2)) * (f32(1) - adj)
        return offset + (x + half) / s - half
    if ctm == "pytorch_half_pixel":
        return (x + half) / s - half if n_out > 1 else np.zeros(n_out, f32)
    if ctm == "align_corners":
        return np.zeros(n_out, f32) if n_out == 1 else x * (lin - f32(1)) / (lout - f32(1))
    if ctm == "asymmetric":
        return x / s
    return (x + half) / s  # tf_half_pixel_for_nn


def _nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    t = np.trunc(x)
    away = np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)  # std::round: half away from 0
    if mode == "round_prefer_floor":
        return np.where(x == t + np.float32(0.5), t, away)
    if mode == "round_prefer_ceil":
        return away
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise Unsupported(f"nearest_mode={mode!r}")


def _cubic_weights(r: np.ndarray, a: float) -> np.ndarray:
    def k(s: np.ndarray) -> np.ndarray:
        s = np.abs(s)
        near = ((a + 2) * s - (a + 3)) * s * s + 1
        far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
        return np.where(s < 1, near, np.where(s < 2, far, 0.0))

    return np.stack([k(r + 1), k(r), k(1 - r), k(2 - r)], axis=1).astype(np.float32)


def _resize_taps(mode: str, ctm: str, nearest: str, a: float, exclude: bool, n_out: int,
                 n_in: int, scale: np.float32) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(indices [n_out, taps], weights [n_out, taps] or None) of one resized axis."""
    x = _source_coords(ctm, n_out, n_in, scale)
    if mode == "nearest":
        idx = np.clip(_nearest_index(x, nearest), 0, n_in - 1).astype(np.int64)
        return idx[:, None], None
    if mode == "linear":
        xc = np.clip(x, np.float32(0), np.float32(n_in - 1))
        i0 = np.minimum(np.floor(xc), n_in - 1).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = np.abs(xc - i0.astype(np.float32))
        w0 = np.abs(xc - i1.astype(np.float32))
        same = i0 == i1
        w0, w1 = np.where(same, 0.5, w0), np.where(same, 0.5, w1)
        return np.stack([i0, i1], 1), np.stack([w0, w1], 1).astype(np.float32)
    base = np.floor(x)
    w = _cubic_weights((x - base).astype(np.float32), a)
    raw = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude:
        w = np.where((raw >= 0) & (raw < n_in), w, 0.0)
        w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    return np.clip(raw, 0, n_in - 1), w


def _pow2_upscale(n_in: int, n_out: int, scale: np.float32) -> bool:
    k = n_out // n_in if n_in else 0
    return k >= 1 and n_out == k * n_in and k & (k - 1) == 0 and scale == k


@op("Resize", params=(1, 2, 3))
def _b_resize(n: Node, c: Ctx) -> Callable[..., Any]:
    mode = str(c.attr("mode", "nearest"))
    ctm = str(c.attr("coordinate_transformation_mode", "half_pixel"))
    nearest = str(c.attr("nearest_mode", "round_prefer_floor"))
    if mode not in ("nearest", "linear", "cubic"):
        raise Unsupported(f"mode={mode!r}")
    if ctm not in _CTM:
        raise Unsupported(f"coordinate_transformation_mode={ctm!r}")
    if int(c.attr("antialias", 0)):
        raise Unsupported("antialias=1")
    xs = c.shape(0)
    r = len(xs)
    if mode != "nearest" and not c.dtype(0).is_floating_point:
        raise Unsupported(f"{mode} resize of {c.dtype(0)} tensors")
    axes = [_axis(int(a), r) for a in c.attr("axes", range(r))]
    sizes = c.ints(3) if c.has(3) and c.const(3).numel() else None
    scales = c.floats(2) if c.has(2) and c.const(2).numel() else None
    f32 = np.float32
    out, sc = list(xs), [f32(1)] * r
    if sizes is not None:
        if str(c.attr("keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise Unsupported(f"keep_aspect_ratio_policy={c.attr('keep_aspect_ratio_policy')!r}")
        for ax, s in zip(axes, sizes, strict=True):
            out[ax], sc[ax] = int(s), f32(s) / f32(xs[ax])
    elif scales is not None:
        for ax, s in zip(axes, scales, strict=True):
            sc[ax] = f32(s)
            out[ax] = int(f32(xs[ax]) * f32(s))
    else:
        raise Unsupported("Resize without scales or sizes")
    todo = [ax for ax in range(r) if out[ax] != xs[ax] or sc[ax] != 1]
    if not todo:
        return lambda x: x
    exact = all(f32(out[ax]) / f32(xs[ax]) == sc[ax] for ax in todo)
    if (
        mode == "linear"
        and r == 4
        and set(todo) <= {2, 3}
        and exact
        and (
            ctm in ("half_pixel", "align_corners")
            or (ctm == "pytorch_half_pixel" and min(out[2:]) > 1)
        )
    ):
        size, ac = (out[2], out[3]), ctm == "align_corners"
        return lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=ac)
    if (
        mode == "nearest"
        and ctm == "asymmetric"
        and nearest == "floor"
        and r == 4
        and set(todo) <= {2, 3}
        and all(_pow2_upscale(xs[ax], out[ax], sc[ax]) for ax in (2, 3))
    ):  # floor(i / 2^k) exactly: torch's nearest computes i * 2^-k, which is exact
        size = (out[2], out[3])
        return lambda x: F.interpolate(x, size=size, mode="nearest")
    a, excl = float(c.attr("cubic_coeff_a", -0.75)), bool(int(c.attr("exclude_outside", 0)))
    plan = []
    for ax in todo:
        idx, w = _resize_taps(mode, ctm, nearest, a, excl, out[ax], xs[ax], sc[ax])
        view = [1] * r
        view[ax] = out[ax]
        cols = [
            c.to(torch.from_numpy(np.ascontiguousarray(idx[:, t]))) for t in range(idx.shape[1])
        ]
        ws = None
        if w is not None:
            dt = c.dtype(0)
            ws = [c.to(torch.from_numpy(np.ascontiguousarray(w[:, t])).to(dt).reshape(view))
                  for t in range(w.shape[1])]  # fmt: skip
        plan.append((ax, cols, ws))

    def fn(x: Tensor) -> Tensor:
        for ax, cols, ws in plan:
            if ws is None:
                x = x.index_select(ax, cols[0])
                continue
            y = x.index_select(ax, cols[0]) * ws[0]
            for col, w in zip(cols[1:], ws[1:], strict=True):
                y = y + x.index_select(ax, col) * w
            x = y
        return x

    return fn


@op("GridSample")
def _b_gridsample(n: Node, c: Ctx) -> Callable[..., Any]:
    if len(c.shape(0)) != 4:
        raise Unsupported("GridSample of a non-4-D input")
    mode = str(c.attr("mode", "linear" if c.opset >= 20 else "bilinear"))
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise Unsupported(f"mode={mode!r}")
    pad = str(c.attr("padding_mode", "zeros"))
    if pad not in ("zeros", "border", "reflection"):
        raise Unsupported(f"padding_mode={pad!r}")
    ac = bool(int(c.attr("align_corners", 0)))
    return lambda x, g: F.grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)
