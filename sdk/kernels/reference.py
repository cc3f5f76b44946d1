"""NumPy references of the kernels: slow, plain, float64 inside.

Written from the conventions (OpenCV's resize formulas, SciPy's Gaussian filters), not from the
C++ code, so the tests comparing the two are a real check. Same signatures and validation as
:mod:`sdk.kernels`.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from sdk.errors import InputError
from sdk.kernels import (
    Components,
    MLPHead,
    Outlines,
    PoolResult,
    _outline_args,
    _pool_args,
    _squeeze_logits,
)
from sdk.kernels import _validate as V

__all__ = [
    "gaussian_gradient_magnitude",
    "gaussian_kernels",
    "lesion_components",
    "lesion_outlines",
    "mask_guided_pool",
    "pool_classify",
    "postprocess_mask",
    "preprocess",
    "resize_matrix",
]

_LUMA = {"bgr": (0.114, 0.587, 0.299), "rgb": (0.299, 0.587, 0.114)}


def resize_matrix(dsize: int, ssize: int, mode: str) -> np.ndarray:
    """(dsize, ssize) float64 matrix M with ``dst = M @ src`` along one axis.

    ``mode="linear"``: cv2.INTER_LINEAR; ``mode="area"``: cv2.INTER_AREA (downscale).
    """
    m = np.zeros((dsize, ssize))
    scale = ssize / dsize
    for d in range(dsize):
        if mode == "linear":
            fx = np.float32((d + 0.5) * scale - 0.5)
            sx = math.floor(fx)
            fx = float(fx - np.float32(sx))
            if sx < 0:
                sx, fx = 0, 0.0
            if sx >= ssize - 1:
                sx, fx = ssize - 1, 0.0
            m[d, sx] += 1.0 - fx
            if fx:
                m[d, sx + 1] += fx
        else:
            f1, f2 = d * scale, (d + 1) * scale
            cell = min(scale, ssize - f1)
            s1, s2 = math.ceil(f1), math.floor(f2)
            s2 = min(s2, ssize - 1)
            s1 = min(s1, s2)
            if s1 - f1 > 1e-3:
                m[d, s1 - 1] += (s1 - f1) / cell
            for s in range(s1, s2):
                m[d, s] += 1.0 / cell
            if f2 - s2 > 1e-3:
                m[d, s2] += min(min(f2 - s2, 1.0), cell) / cell
    return m


def gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(g0, g1) correlation taps of radius ``int(4 sigma + 0.5)``: smoothing and d/dx."""
    r = int(4.0 * sigma + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * t * t / (sigma * sigma))
    g /= g.sum()
    return g, g * t / (sigma * sigma)


def _correlate(a: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    r = len(taps) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.zeros_like(a, dtype=np.float64)
    for k, c in enumerate(taps):
        sl = [slice(None), slice(None)]
        sl[axis] = slice(k, k + n)
        out += c * p[tuple(sl)]
    return out


def _gradients(gray: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    g0, g1 = gaussian_kernels(sigma)
    gx = _correlate(_correlate(gray, g0, 0), g1, 1)
    gy = _correlate(_correlate(gray, g1, 0), g0, 1)
    return gx, gy


def preprocess(
    frame: np.ndarray,
    size: tuple[int, int] = (256, 256),
    channels: tuple[str, ...] = ("image", "gdm"),
    sigma: float = 1.0,
    roi: tuple[int, int, int, int] | None = None,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 1.0,
    dtype: Any = np.float32,
    out: np.ndarray | None = None,
    *,
    color: str = "bgr",
    interpolation: str = "auto",
    threads: int = 1,
) -> np.ndarray:
    """Reference of :func:`sdk.kernels.preprocess` (same arguments; ``threads`` ignored)."""
    f, s = V.preprocess_spec(
        frame, size, channels, sigma, roi, mean, std, dtype, color, interpolation
    )
    V.check_int(threads, "threads", 1, 256)
    x, y, w, h = s.roi
    crop = f[y : y + h, x : x + w].astype(np.float64)
    gray = crop if crop.ndim == 2 else crop[..., :3] @ np.array(_LUMA[s.color])
    ay = resize_matrix(s.size[0], h, s.interp)
    ax = resize_matrix(s.size[1], w, s.interp)
    img = ay @ gray @ ax.T / 255.0
    planes = {"image": img}
    if s.needs_gradient:
        gx, gy = _gradients(img, s.sigma)
        planes.update(gdx=gx, gdy=gy, gdm=np.hypot(gx, gy))
    res = np.stack(
        [(planes[c] - m) / sd for c, m, sd in zip(s.channels, s.mean, s.std, strict=True)]
    )
    if out is None:
        return res.astype(s.dtype)
    V.check_out(out, res.shape, s.dtype)
    out[...] = res
    return out


def gaussian_gradient_magnitude(image: np.ndarray, sigma: float, *, threads: int = 1) -> np.ndarray:
    """Reference of :func:`sdk.kernels.gaussian_gradient_magnitude`."""
    img = V.check_float_array(image, "image", 2)
    gx, gy = _gradients(img.astype(np.float64), V.check_sigma(sigma))
    return np.hypot(gx, gy).astype(np.float32)


def pool_classify(
    features: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray | None = None,
    num_labels: int | None = None,
    head: MLPHead | None = None,
    eps: float = 1e-6,
) -> PoolResult:
    """Reference of :func:`sdk.kernels.pool_classify`: features really upsampled, then pooled."""
    f, w, lab, k, h, e = _pool_args(features, weights, labels, num_labels, head, eps, values=True)
    ay = resize_matrix(w.shape[0], f.shape[1], "linear")
    ax = resize_matrix(w.shape[1], f.shape[2], "linear")
    up = np.einsum("ij,cjk,lk->cil", ay, f.astype(np.float64), ax)  # (F, hm, wm)
    masks = [np.ones_like(w, dtype=bool)]
    if lab is not None:
        masks += [lab == i for i in range(1, k + 1)]
    rows = []
    for m in masks:
        wk = np.where(m, w.astype(np.float64), 0.0)
        rows.append((up * wk).sum(axis=(1, 2)) / (wk.sum() + e))
    pooled = np.stack(rows)
    if h is None:
        return PoolResult(pooled.astype(np.float32), None, None)
    hidden = np.maximum(pooled @ h.w1.T.astype(np.float64) + h.b1, 0.0)
    logits = hidden @ h.w2.T.astype(np.float64) + h.b2
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    return PoolResult(
        pooled.astype(np.float32), logits.astype(np.float32), probs.astype(np.float32)
    )


def mask_guided_pool(
    features: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray | None = None,
    num_labels: int | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Reference of :func:`sdk.kernels.mask_guided_pool`."""
    pooled = pool_classify(features, weights, labels, num_labels, None, eps).pooled
    return pooled[:1] if labels is None else pooled[1:]


def postprocess_mask(
    logits: np.ndarray,
    frame_shape: tuple[int, int],
    roi: tuple[int, int, int, int] | None = None,
    threshold: float = 0.5,
    value: int = 1,
    out: np.ndarray | None = None,
    *,
    threads: int = 1,
) -> np.ndarray:
    """Reference of :func:`sdk.kernels.postprocess_mask`; also returns nothing else."""
    return postprocess_mask_prob(logits, frame_shape, roi, threshold, value)[0]


def postprocess_mask_prob(
    logits: np.ndarray,
    frame_shape: tuple[int, int],
    roi: tuple[int, int, int, int] | None = None,
    threshold: float = 0.5,
    value: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, probability map at frame resolution): the probabilities let tests ignore pixels
    that sit within rounding of the threshold."""
    lg = _squeeze_logits(logits).astype(np.float64)
    if np.isnan(lg).any():
        raise InputError("mask logits contain NaN: the model produced invalid output")
    H, W = V.check_size(tuple(frame_shape[:2]), "frame_shape")
    x, y, w, h = V.check_roi(roi, H, W)
    t = V.check_float(threshold, "threshold")
    prob = np.zeros((H, W))
    p = 1.0 / (1.0 + np.exp(-lg))
    prob[y : y + h, x : x + w] = (
        resize_matrix(h, lg.shape[0], "linear") @ p @ resize_matrix(w, lg.shape[1], "linear").T
    )
    mask = np.where(prob > t, V.check_int(value, "value", 1, 255), 0).astype(np.uint8)
    return mask, prob


def lesion_components(
    logits: np.ndarray,
    threshold: float = 0.5,
    cell_size: tuple[float, float] = (1.0, 1.0),
    min_area: float = 0.0,
) -> Components:
    """Reference of :func:`sdk.kernels.lesion_components`: a flood fill from each unvisited
    foreground cell in raster order (so labels come in raster order of first cells); the
    borders from OpenCV's findContours."""
    lg = _squeeze_logits(logits).astype(np.float64)
    if not np.isfinite(lg).all():
        raise InputError("mask logits contain NaN or inf: the model produced invalid output")
    t = V.check_float(threshold, "threshold")
    sx, sy = (V.check_float(v, "cell_size") for v in cell_size)
    prob = 1.0 / (1.0 + np.exp(-lg))
    fg = prob > t
    h, w = fg.shape
    labels = np.zeros((h, w), np.int32)
    stats: list[list[int]] = []
    seen = np.zeros((h, w), bool)
    for y0 in range(h):
        for x0 in range(w):
            if not fg[y0, x0] or seen[y0, x0]:
                continue
            seen[y0, x0] = True
            cells, stack = [], [(y0, x0)]
            while stack:
                y, x = stack.pop()
                cells.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        v, u = y + dy, x + dx
                        if 0 <= v < h and 0 <= u < w and fg[v, u] and not seen[v, u]:
                            seen[v, u] = True
                            stack.append((v, u))
            ys, xs = np.array(cells).T
            if len(cells) * sx * sy < float(min_area):
                continue
            stats.append(
                [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, len(cells)]
            )
            labels[ys, xs] = len(stats)
    st = np.array(stats, np.int32).reshape(-1, 5)
    contours = [
        cv2.findContours(
            (labels == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )[0][0].reshape(-1, 2)
        for k in range(1, len(stats) + 1)
    ]
    return Components(prob.astype(np.float32), labels, st, contours)


def _taps(dsize: int, ssize: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) source cell of each destination position's INTER_LINEAR taps of non-zero weight
    (hi == lo when one tap carries all the weight), from :func:`resize_matrix`."""
    m = resize_matrix(dsize, ssize, "linear")
    nz = m > 0
    lo = nz.argmax(axis=1)
    hi = ssize - 1 - nz[:, ::-1].argmax(axis=1)
    return lo, hi


def lesion_outlines(
    mask: np.ndarray,
    labels: np.ndarray,
    roi: tuple[int, int, int, int] | None = None,
    num_labels: int | None = None,
) -> Outlines:
    """Reference of :func:`sdk.kernels.lesion_outlines`: an owner label per frame pixel (the
    largest label among its taps), OpenCV's 8-connected components of each lesion's pixels,
    then cv2.findContours on each piece."""
    m, lab, k, (x, y, w, h) = _outline_args(mask, labels, roi, num_labels)
    ylo, yhi = _taps(h, lab.shape[0])
    xlo, xhi = _taps(w, lab.shape[1])
    owner = np.maximum.reduce([lab[np.ix_(ys, xs)] for ys in (ylo, yhi) for xs in (xlo, xhi)])
    owner = np.where(m[y : y + h, x : x + w] > 0, owner, 0)
    boxes = np.zeros((k, 4), np.int32)
    areas = np.zeros(k, np.int64)
    contours: list[list[np.ndarray]] = []
    for i in range(1, k + 1):
        region = (owner == i).astype(np.uint8)
        n, pieces, st, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        if n == 1:
            contours.append([])
            continue
        ys, xs = np.nonzero(region)
        boxes[i - 1] = (x + xs.min(), y + ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
        areas[i - 1] = len(xs)
        flat = pieces.ravel()
        first = [int(np.argmax(flat == j)) for j in range(1, n)]
        order = sorted(range(1, n), key=lambda j: (-st[j, cv2.CC_STAT_AREA], first[j - 1]))
        cs = []
        for j in order:
            c = cv2.findContours(
                (pieces == j).astype(np.uint8),
                cv2.RETR_EXTERNAL,
                cv2.CHAIN_APPROX_SIMPLE,
                offset=(x, y),
            )[0]
            cs.append(c[0].reshape(-1, 2).astype(np.int32))
        contours.append(cs)
    return Outlines(boxes, areas, contours)
