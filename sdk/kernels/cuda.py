"""CUDA kernels on device memory.

Every function takes device arrays that expose ``__cuda_array_interface__`` (CuPy, torch,
Numba, cuda-python wrappers...) or raw pointers through :class:`DeviceArray`, plus a stream, and
enqueues exactly one kernel launch on that stream; nothing is synchronized or allocated, so the
calls compose with TensorRT bindings and CUDA graph capture. Arguments are validated on the host
exactly like the CPU kernels (:mod:`sdk.kernels`).

NaN checks on weights / logits are not done on the device (they would need a device-to-host
round trip per frame); the CPU path does them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import BackendUnavailableError, InputError
from sdk.kernels import _native
from sdk.kernels import _validate as V

__all__ = ["DeviceArray", "available", "pool_classify", "postprocess_mask", "preprocess"]


@dataclass(frozen=True)
class DeviceArray:
    """A raw device buffer: pointer, shape, numpy dtype and strides in bytes (None = C order)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    strides: tuple[int, ...] | None = None

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "data": (int(self.ptr), False),
            "shape": tuple(self.shape),
            "typestr": np.dtype(self.dtype).str,
            "strides": self.strides,
            "version": 3,
        }


def available() -> bool:
    """True when the CUDA kernels were compiled in and a device is visible."""
    k = _native()
    return bool(k.built_with_cuda()) and int(k.cuda_device_count()) > 0


def _require_cuda() -> Any:
    k = _native()
    if not k.built_with_cuda():
        raise BackendUnavailableError(
            "sdk._kernels was built without CUDA: reinstall with nvcc on PATH "
            "(SONOEDGE_CUDA=ON pip install .) to get the CUDA kernels"
        )
    if k.cuda_device_count() == 0:
        raise BackendUnavailableError(
            "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        )
    return k


def _iface(a: Any, name: str) -> tuple[int, tuple[int, ...], np.dtype, tuple[int, ...]]:
    """(pointer, shape, dtype, byte strides) of a device array."""
    ai = getattr(a, "__cuda_array_interface__", None)
    if ai is None:
        raise InputError(
            f"{name} must be a device array exposing __cuda_array_interface__ (CuPy, torch.cuda, "
            f"sdk.kernels.cuda.DeviceArray), got {type(a).__name__}"
        )
    shape = tuple(int(s) for s in ai["shape"])
    dt = np.dtype(ai["typestr"])
    strides = ai.get("strides")
    if strides is None:  # C-contiguous
        st, acc = [], dt.itemsize
        for s in reversed(shape):
            st.append(acc)
            acc *= s
        strides = tuple(reversed(st))
    ptr = int(ai["data"][0])
    if ptr == 0 and int(np.prod(shape)) > 0:
        raise InputError(f"{name} has a null device pointer")
    return ptr, shape, dt, tuple(int(s) for s in strides)


def _stream(stream: Any) -> int:
    if stream is None:
        return 0
    if isinstance(stream, int | np.integer):
        return int(stream)
    for attr in ("cuda_stream", "ptr", "handle"):  # torch, CuPy, cuda-python
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise InputError(f"stream must be an int handle, a CuPy / torch stream or None, got {stream!r}")


def _contiguous(name: str, shape: tuple[int, ...], dt: np.dtype, strides: tuple[int, ...]) -> None:
    expect, acc = [], dt.itemsize
    for s in reversed(shape):
        expect.append(acc)
        acc *= s
    if tuple(reversed(expect)) != strides:
        raise InputError(f"{name} must be C-contiguous on the device")


def preprocess(
    frame: Any,
    out: Any,
    *,
    channels: tuple[str, ...] = ("image", "gdm"),
    sigma: float = 1.0,
    roi: tuple[int, int, int, int] | None = None,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 1.0,
    color: str = "bgr",
    interpolation: str = "auto",
    stream: Any = None,
) -> Any:
    """Preprocess a device frame into a device buffer: one launch on ``stream``.

    Args:
        frame: device uint8 ``(H, W)`` or ``(H, W, C)`` (C in 1, 3, 4), pixels interleaved and
            rows contiguous; any row pitch (pitched allocations, a crop of a larger frame).
        out: device float32 or float16 ``(C, h, w)``, C-contiguous (a TensorRT input binding);
            its shape sets the output size and its dtype the precision.
        Other arguments as :func:`sdk.kernels.preprocess`.

    Returns:
        ``out``.
    """
    k = _require_cuda()
    fptr, fshape, fdt, fstr = _iface(frame, "frame")
    if fdt != np.uint8 or len(fshape) not in (2, 3):
        raise InputError(f"frame must be a uint8 (H, W[, C]) device array, got {fdt} {fshape}")
    H, W = fshape[0], fshape[1]
    C = fshape[2] if len(fshape) == 3 else 1
    if C not in (1, 3, 4) or H == 0 or W == 0:
        raise InputError(f"frame must be non-empty with 1, 3 or 4 channels, got shape {fshape}")
    if (len(fshape) == 3 and fstr[2] != 1) or fstr[1] != C:
        raise InputError(
            "frame pixels must be interleaved and contiguous within a row on the device"
        )
    optr, oshape, odt, ostr = _iface(out, "out")
    if len(oshape) != 3:
        raise InputError(f"out must be (C, h, w), got shape {oshape}")
    _contiguous("out", oshape, odt, ostr)
    dt = V.check_dtype(odt)
    # Reuse the host validation on a stand-in frame of the same geometry.
    _, spec = V.preprocess_spec(
        _Geometry(H, W, C).frame(),
        oshape[1:],
        channels,
        sigma,
        roi,
        mean,
        std,
        dt,
        color,
        interpolation,
    )
    if len(spec.channels) != oshape[0]:
        raise InputError(
            f"out has {oshape[0]} planes but {len(spec.channels)} channels were asked for"
        )
    k.preprocess_cuda(
        fptr,
        H,
        W,
        C,
        fstr[0],
        V.COLOR_CODES[spec.color],
        list(spec.roi),
        optr,
        oshape[1],
        oshape[2],
        list(spec.kinds),
        list(spec.mean),
        list(spec.inv_std),
        spec.sigma,
        V.INTERP_CODES[spec.interp],
        0 if dt == np.float32 else 1,
        _stream(stream),
    )
    return out


class _Geometry:
    """A zero-strided uint8 host array of a device frame's shape, for the shared validators."""

    def __init__(self, h: int, w: int, c: int) -> None:
        self.shape = (h, w) if c == 1 else (h, w, c)

    def frame(self) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(
            np.zeros(1, np.uint8), shape=self.shape, strides=(0,) * len(self.shape)
        )


def pool_classify(
    features: Any,
    weights: Any,
    probs: Any,
    *,
    labels: Any = None,
    num_labels: int = 0,
    head: tuple[Any, Any, Any, Any] | None = None,
    pooled: Any = None,
    logits: Any = None,
    eps: float = 1e-6,
    stream: Any = None,
) -> None:
    """Fused mask-guided pooling + head on the device, one launch (one block per row).

    Args:
        features: float32 ``(F, hf, wf)``; weights: float32 ``(hm, wm)`` in [0, 1];
        labels: int32 ``(hm, wm)`` or None; num_labels: K.
        head: device ``(w1, b1, w2, b2)`` float32, or None (then ``probs`` may be None).
        probs, logits, pooled: device float32 outputs ``(K + 1, classes)`` / ``(K + 1, F)``
            (row 0 = image level); logits and pooled optional.
    """
    k = _require_cuda()
    fp, fs, fd, fst = _iface(features, "features")
    wp, ws, wd, wst = _iface(weights, "weights")
    if len(fs) != 3 or fd != np.float32:
        raise InputError(f"features must be float32 (F, hf, wf), got {fd} {fs}")
    if len(ws) != 2 or wd != np.float32:
        raise InputError(f"weights must be float32 (hm, wm), got {wd} {ws}")
    _contiguous("features", fs, fd, fst)
    _contiguous("weights", ws, wd, wst)
    lp, K = 0, 0
    if labels is not None:
        lp, ls, ld, lst = _iface(labels, "labels")
        if ls != ws or ld != np.int32:
            raise InputError(f"labels must be int32 of the weights' shape {ws}, got {ld} {ls}")
        _contiguous("labels", ls, ld, lst)
        K = V.check_int(num_labels, "num_labels", 0)
    rows = K + 1
    hp = [0, 0, 0, 0]
    hidden = classes = 0
    if head is not None:
        shapes = [_iface(t, n) for t, n in zip(head, ("w1", "b1", "w2", "b2"), strict=True)]
        (p1, s1, _, _), (pb1, sb1, _, _), (p2, s2, _, _), (pb2, sb2, _, _) = shapes
        if (
            len(s1) != 2
            or s1[1] != fs[0]
            or sb1 != (s1[0],)
            or len(s2) != 2
            or s2[1] != s1[0]
            or sb2 != (s2[0],)
        ):
            raise InputError("head shapes must be w1 (H, F), b1 (H,), w2 (C, H), b2 (C,)")
        if any(s[2] != np.float32 for s in shapes):
            raise InputError("head arrays must be float32")
        hp = [p1, pb1, p2, pb2]
        hidden, classes = s1[0], s2[0]
        if probs is None:
            raise InputError("probs is required with a head")
    outs = []
    for arr, name, cols in (
        (pooled, "pooled", fs[0]),
        (logits, "logits", classes),
        (probs, "probs", classes),
    ):
        if arr is None or (name != "pooled" and head is None):
            outs.append(0)
            continue
        p, s, d, _ = _iface(arr, name)
        if s != (rows, cols) or d != np.float32:
            raise InputError(f"{name} must be float32 {(rows, cols)}, got {d} {s}")
        outs.append(p)
    k.pool_classify_cuda(
        fp,
        fs[0],
        fs[1],
        fs[2],
        wp,
        ws[0],
        ws[1],
        lp,
        K,
        float(eps),
        *hp,
        hidden,
        classes,
        *outs,
        _stream(stream),
    )


def postprocess_mask(
    logits: Any,
    out: Any,
    *,
    roi: tuple[int, int, int, int] | None = None,
    threshold: float = 0.5,
    value: int = 1,
    stream: Any = None,
) -> Any:
    """Mask logits (device float32 (h, w)) → uint8 mask (device (H, W), any row pitch)."""
    k = _require_cuda()
    lp, ls, ld, lst = _iface(logits, "logits")
    _contiguous("logits", ls, ld, lst)
    ls2 = tuple(s for i, s in enumerate(ls) if not (i < len(ls) - 2 and s == 1))
    if len(ls2) != 2 or ld != np.float32:
        raise InputError(f"logits must be float32 (h, w), got {ld} {ls}")
    op, os_, od, ost = _iface(out, "out")
    if len(os_) != 2 or od != np.uint8 or ost[1] != 1:
        raise InputError(f"out must be uint8 (H, W) with contiguous rows, got {od} {os_}")
    r = V.check_roi(roi, os_[0], os_[1])
    t = V.check_float(threshold, "threshold")
    if not 0.0 <= t <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {t}")
    k.mask_post_cuda(
        lp,
        ls2[0],
        ls2[1],
        op,
        os_[0],
        os_[1],
        ost[0],
        list(r),
        t,
        V.check_int(value, "value", 1, 255),
        _stream(stream),
    )
    return out
