"""Argument checking shared by the compiled, CUDA and NumPy-reference kernels.

Every check raises :class:`sdk.errors.InputError` naming the argument and saying how to fix it,
so a bad call never reaches native code.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk._constants import (
    CHANNELS,
    COLORS,
    INTERPOLATIONS,
    MAX_MEAN,
    MAX_SIDE,
    MAX_SIGMA,
    MAX_STD,
    MIN_STD,
)
from sdk.errors import InputError

# The names and limits live in sdk._constants (shared with sdk.artifact); the codes the compiled
# kernels take are their positions (== sonoedge::Channel / ColorOrder / Interp).
CHANNEL_CODES = {name: i for i, name in enumerate(CHANNELS)}
COLOR_CODES = {name: i for i, name in enumerate(COLORS)}
INTERP_CODES = {name: i for i, name in enumerate(INTERPOLATIONS)}
MAX_ELEMENTS = 2**31 - 1  # the compiled kernels index arrays with int


def _name(x: Any) -> str:
    return type(x).__name__


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {_name(value)} {value!r}")
    v = int(value)
    if lo is not None and v < lo:
        raise InputError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise InputError(f"{name} must be <= {hi}, got {v}")
    return v


def check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a real number, got {_name(value)} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}")
    return v


def check_sigma(sigma: Any) -> float:
    s = check_float(sigma, "sigma")
    if not 0.0 < s <= MAX_SIGMA:
        raise InputError(
            f"sigma must be in (0, {MAX_SIGMA:g}] pixels of the resized image, got {s:g}; "
            "the Gaussian derivative needs a positive scale"
        )
    return s


def check_size(size: Any, name: str = "size") -> tuple[int, int]:
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise InputError(f"{name} must be (height, width), got {size!r}")
    h = check_int(size[0], f"{name}[0] (height)", 1, MAX_SIDE)
    w = check_int(size[1], f"{name}[1] (width)", 1, MAX_SIDE)
    return h, w


def check_frame(frame: Any, name: str = "frame") -> np.ndarray:
    """A uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array; returns it as (H, W[, C]) view."""
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{name} must be a numpy.ndarray, got {_name(frame)}")
    if frame.dtype != np.uint8:
        raise InputError(
            f"{name} must be uint8, got {frame.dtype}; scale 16-bit or float frames to 0..255 "
            "first (sdk.Analyzer does this for you)"
        )
    if frame.ndim not in (2, 3):
        raise InputError(f"{name} must be (H, W) or (H, W, C), got shape {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name} must have 1, 3 (BGR/RGB) or 4 (BGRA/RGBA) channels, got {frame.shape[2]}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {frame.shape}")
    if frame.shape[0] > MAX_SIDE or frame.shape[1] > MAX_SIDE:
        raise InputError(f"{name} is too large: shape {frame.shape}, max side {MAX_SIDE}")
    if any(s < 0 for s in frame.strides):
        # Flipped views: copy rather than walk backwards. Not np.ascontiguousarray: a negative
        # stride on a length-1 axis (np.zeros((5, 1), np.uint8)[:, ::-1]) is "contiguous" to
        # numpy, so it would come back unchanged and the native kernels would refuse it.
        frame = frame.copy()
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    return frame


def check_roi(roi: Any, height: int, width: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) inside a frame of (height, width); None means the whole frame."""
    if roi is None:
        return 0, 0, width, height
    if not isinstance(roi, Sequence) or isinstance(roi, str) or len(roi) != 4:
        raise InputError(f"roi must be (x, y, w, h) or None, got {roi!r}")
    x, y, w, h = (check_int(v, f"roi[{i}]") for i, v in enumerate(roi))
    if w < 1 or h < 1:
        raise InputError(f"roi width and height must be >= 1, got roi={tuple(roi)}")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise InputError(
            f"roi={(x, y, w, h)} (x, y, w, h) does not fit in the {width}x{height} frame"
        )
    return x, y, w, h


def check_channels(channels: Any) -> tuple[str, ...]:
    if isinstance(channels, str):
        channels = (channels,)
    if not isinstance(channels, Sequence) or not 1 <= len(channels) <= 4:
        raise InputError(f"channels must be 1 to 4 names out of {CHANNELS}, got {channels!r}")
    out = tuple(channels)
    for c in out:
        if c not in CHANNEL_CODES:
            raise InputError(f"unknown channel {c!r}; choose from {CHANNELS}")
    if len(set(out)) != len(out):
        raise InputError(f"channels must not repeat, got {out}")
    return out


def check_per_channel(value: Any, name: str, n: int, positive: bool = False) -> tuple[float, ...]:
    vals = [value] * n if isinstance(value, numbers.Real) else value
    if not isinstance(vals, Sequence) and not isinstance(vals, np.ndarray):
        raise InputError(f"{name} must be a number or one number per channel, got {value!r}")
    vals = list(vals)
    if len(vals) != n:
        raise InputError(f"{name} needs {n} values (one per channel), got {len(vals)}")
    out = tuple(check_float(v, f"{name}[{i}]") for i, v in enumerate(vals))
    if positive and any(v <= 0 for v in out):
        raise InputError(f"{name} must be > 0, got {out}")
    return out


def check_normalization(mean: Any, std: Any, n: int) -> tuple[tuple[float, ...], ...]:
    """(mean, std, inv_std) per channel: std in [1e-6, 1e6] (so 1 / std is finite in float32
    and the output keeps its precision), |mean| <= 1e6."""
    m = check_per_channel(mean, "mean", n)
    sd = check_per_channel(std, "std", n, positive=True)
    if any(not MIN_STD <= v <= MAX_STD for v in sd):
        raise InputError(
            f"std must be in [{MIN_STD:g}, {MAX_STD:g}] per channel, got {sd}; values that small "
            "make 1 / std overflow (inf output), that large erase the image"
        )
    if any(abs(v) > MAX_MEAN for v in m):
        raise InputError(f"mean must be within +-{MAX_MEAN:g} per channel, got {m}")
    return m, sd, tuple(1.0 / v for v in sd)


def check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise InputError(f"dtype must be float32 or float16, got {dtype!r}") from e
    if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise InputError(f"dtype must be float32 or float16, got {dt}")
    return dt


def check_color(color: Any) -> int:
    """The channel order of a 3/4-channel frame, as the kernels' code."""
    if color not in ("bgr", "rgb"):
        raise InputError(
            f"color must be 'bgr' or 'rgb' (order of a 3/4-channel frame), got {color!r}"
        )
    return COLOR_CODES[color]


def check_interp(interpolation: str, roi_hw: tuple[int, int], size: tuple[int, int]) -> str:
    if interpolation not in ("auto", "linear", "area"):
        raise InputError(f"interpolation must be 'auto', 'linear' or 'area', got {interpolation!r}")
    shrinks = size[0] <= roi_hw[0] and size[1] <= roi_hw[1]
    if interpolation == "auto":
        return "area" if shrinks else "linear"
    if interpolation == "area" and not shrinks:
        raise InputError(
            f"interpolation='area' needs a downscale on both axes (roi {roi_hw[0]}x{roi_hw[1]} "
            f"-> {size[0]}x{size[1]}); use 'linear' or 'auto'"
        )
    return interpolation


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise InputError(f"{name} must be a numpy.ndarray, got {_name(out)}")
    if out.shape != shape or out.dtype != dtype:
        raise InputError(
            f"{name} must have shape {shape} and dtype {dtype}, got {out.shape} {out.dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError(f"{name} must be writable and C-contiguous")
    return out


def check_float_array(a: Any, name: str, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise InputError(f"{name} must be a numpy.ndarray, got {_name(a)}")
    if a.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty: shape {a.shape}")
    if a.size > MAX_ELEMENTS:
        raise InputError(f"{name} is too large: shape {a.shape}, at most {MAX_ELEMENTS} values")
    if a.dtype.kind != "f":
        raise InputError(f"{name} must be a float array, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class PreprocessSpec:
    """Normalized preprocess arguments, in the numbers the native code takes."""

    roi: tuple[int, int, int, int]
    size: tuple[int, int]
    channels: tuple[str, ...]
    kinds: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    inv_std: tuple[float, ...]
    sigma: float
    interp: str
    color: str
    dtype: np.dtype

    @property
    def needs_gradient(self) -> bool:
        return any(c != "image" for c in self.channels)


def preprocess_spec(
    frame: Any,
    size: Any,
    channels: Any,
    sigma: Any,
    roi: Any,
    mean: Any,
    std: Any,
    dtype: Any,
    color: Any,
    interpolation: Any,
) -> tuple[np.ndarray, PreprocessSpec]:
    """(checked frame, spec). The spec depends only on the frame's shape and the settings, so it
    is cached: a stream of same-sized frames pays the argument checks once (~20 us a call)."""
    f = check_frame(frame)
    args = (f.shape, size, channels, sigma, roi, mean, std, dtype, color, interpolation)
    try:
        return f, _cached_spec(*args)
    except TypeError:  # unhashable settings (lists, arrays): check them every call
        return f, _build_spec(*args)


def _build_spec(
    shape: tuple[int, ...],
    size: Any,
    channels: Any,
    sigma: Any,
    roi: Any,
    mean: Any,
    std: Any,
    dtype: Any,
    color: Any,
    interpolation: Any,
) -> PreprocessSpec:
    hw = check_size(size)
    chans = check_channels(channels)
    s = check_sigma(sigma)
    r = check_roi(roi, shape[0], shape[1])
    m, sd, inv = check_normalization(mean, std, len(chans))
    dt = check_dtype(dtype)
    check_color(color)
    interp = check_interp(interpolation, (r[3], r[2]), hw)
    return PreprocessSpec(
        roi=r,
        size=hw,
        channels=chans,
        kinds=tuple(CHANNEL_CODES[c] for c in chans),
        mean=m,
        std=sd,
        inv_std=inv,
        sigma=s,
        interp=interp,
        color=color,
        dtype=dt,
    )


_cached_spec = functools.lru_cache(maxsize=256)(_build_spec)


def check_weights(weights: Any, name: str = "weights", values: bool = True) -> np.ndarray:
    """float32 (h, w) mask probabilities. values=False leaves the NaN / range scan to the
    compiled kernel, which does it in the same pass as the pooling."""
    w = check_float_array(weights, name, 2)
    if not values:
        return w
    if not np.isfinite(w).all():
        raise InputError(f"{name} contain NaN or inf; pass mask probabilities in [0, 1]")
    if w.min() < 0.0 or w.max() > 1.0:
        raise InputError(
            f"{name} must be in [0, 1] (mask probabilities), got range [{w.min():g}, {w.max():g}]; "
            "apply a sigmoid to logits first"
        )
    return w


def check_labels(labels: Any, shape: tuple[int, int], num_labels: Any) -> tuple[np.ndarray, int]:
    if not isinstance(labels, np.ndarray):
        raise InputError(f"labels must be a numpy.ndarray or None, got {_name(labels)}")
    if labels.shape != shape:
        raise InputError(f"labels must have the weights' shape {shape}, got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be an integer array (int32), got {labels.dtype}")
    # The range is checked on the caller's values, before narrowing to int32: 2**32 + 1 as int64
    # would wrap to 1 and pool as lesion 1.
    lo, hi = int(labels.min()), int(labels.max())
    # One lesion per pixel at most: a larger K only allocates rows nothing can fill.
    pixels = int(labels.size)
    k = hi if num_labels is None else check_int(num_labels, "num_labels", 0, pixels)
    if lo < 0 or hi > k:
        raise InputError(
            f"labels must be in [0, num_labels={k}] (0 = background), got range [{lo}, {hi}]"
        )
    if k > pixels:
        raise InputError(f"labels reach {k}, more lesions than the {pixels} mask pixels")
    return np.ascontiguousarray(labels, dtype=np.int32), k
