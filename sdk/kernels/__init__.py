"""The hot-path kernels: fused preprocessing, mask-guided pooling + head, mask post-processing.

Each kernel exists three ways that the tests hold equal:

* C++ on the CPU (this module; ``sdk._kernels`` compiled from ``kernels/``). On x86-64 the hot
  kernels carry baseline (SSE2), AVX2 and AVX-512 variants in one build and the best one the CPU
  runs is chosen at run time (:func:`cpu_isa`; cap it with ``SONOEDGE_CPU_ISA=baseline|avx2``
  or :func:`set_cpu_isa`). Other platforms (aarch64 / NEON) build one variant, ``native``.
* CUDA, taking device pointers and a stream (:mod:`sdk.kernels.cuda`),
* NumPy, the readable reference (:mod:`sdk.kernels.reference`).

Conventions (shared by all three):

* **Resize** -- ``interpolation="linear"`` is OpenCV's ``INTER_LINEAR`` (half-pixel centres,
  ``src = (dst + 0.5) * scale - 0.5``, clamped at the borders; identical to
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``);
  ``"area"`` is OpenCV's ``INTER_AREA`` for downscaling (box average with fractional overlaps);
  ``"auto"`` (default) takes ``"area"`` when both axes shrink, else ``"linear"``. Results equal
  ``cv2.resize`` of the float32 frame (not of the uint8 frame, which OpenCV rounds to uint8).
* **Gray** -- 3/4-channel frames are converted with BT.601 luma (``cv2.COLOR_BGR2GRAY``
  weights); ``color`` states the channel order (``"bgr"`` default, ``"rgb"``); alpha is ignored.
* **Channels** -- ``gray`` is the resized luma divided by 255 (range [0, 1]). ``image`` is
  ``gray``; ``gdx`` / ``gdy`` are ``scipy.ndimage.gaussian_filter(gray, sigma, order=(0, 1) /
  (1, 0), mode="nearest", truncate=4.0)``; ``gdm = sqrt(gdx**2 + gdy**2)`` (seed 003 eq. 6-9).
  Channel ``c`` is then ``(v - mean[c]) / std[c]``. Output planar ``(C, h, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import InputError, KernelError
from sdk.kernels import _validate as V

__all__ = [
    "CHANNELS",
    "Components",
    "MLPHead",
    "Outlines",
    "PoolResult",
    "PreprocessSpec",
    "built_with_cuda",
    "cpu_isa",
    "cuda_device_count",
    "gaussian_gradient_magnitude",
    "lesion_components",
    "lesion_outlines",
    "mask_guided_pool",
    "native",
    "pool_classify",
    "postprocess_mask",
    "preprocess",
    "preprocess_settings",
    "set_cpu_isa",
]

CHANNELS = V.CHANNELS
PreprocessSpec = V.PreprocessSpec

try:
    from sdk import _kernels as _K
except ImportError as _e:  # pragma: no cover - exercised only on a broken install
    _K = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None


_ISA_ENV = "SONOEDGE_CPU_ISA"
_isa_env_checked = False


def native() -> Any:
    """The compiled module (``sdk._kernels``) for callers that have checked every argument
    already: :class:`sdk.pipeline.FramePipeline` calls it per frame without the wrappers'
    checks (measured on the 2-core Xeon: they cost ~60 us of a ~400 us post-process); the
    bindings still refuse a wrong call. Raises :class:`~sdk.errors.KernelError` when the
    extension is not built."""
    global _isa_env_checked
    if _K is None:
        raise KernelError(
            "the compiled kernels (sdk._kernels) are not available: "
            f"{_IMPORT_ERROR}. Reinstall from source with `pip install .` (needs a C++17 "
            "compiler and CMake >= 3.18)."
        )
    if not _isa_env_checked:
        _check_isa_env(_K)
        _isa_env_checked = True
    return _K


#: The name the kernels' own wrappers call (one function: no extra call on the hot path).
_native = native


def preprocess_settings(
    size: tuple[int, int],
    channels: tuple[str, ...],
    sigma: float,
    mean: float | tuple[float, ...],
    std: float | tuple[float, ...],
    dtype: Any = np.float32,
) -> PreprocessSpec:
    """A model's preprocessing settings, checked once (each bad one an
    :class:`~sdk.errors.InputError` naming it), as the :class:`PreprocessSpec` the kernels take.
    The per-frame fields are placeholders -- ``roi`` the 1x1 frame, ``color`` "bgr", ``interp``
    for it -- for the caller to fill per frame (``dataclasses.replace``)."""
    return V._build_spec((1, 1), size, channels, sigma, None, mean, std, dtype, "bgr", "auto")


def _isa_names(k: Any) -> list[str]:
    return [str(k.cpu_isa_name(level)) for level in range(int(k.cpu_isa_supported()) + 1)]


def _check_isa_env(k: Any) -> None:
    """Refuse a ``SONOEDGE_CPU_ISA`` this CPU / build cannot honour (the C++ side would fall
    back to the best level without a word)."""
    import os

    want = os.environ.get(_ISA_ENV, "")
    if want and want not in _isa_names(k):
        raise InputError(
            f"{_ISA_ENV}={want!r} is not an instruction set this CPU and build can run; "
            f"choose one of {_isa_names(k)} or unset it"
        )


def cpu_isa() -> dict[str, Any]:
    """Which instruction-set variant of the C++ CPU kernels runs.

    ``{"active": "avx2", "supported": ["baseline", "avx2"], "build": "x86-64 run-time dispatch:
    ..."}``: ``supported`` lists the variants this CPU can run (lowest first), ``active`` the one
    in use (the best, unless capped by ``SONOEDGE_CPU_ISA`` or :func:`set_cpu_isa`).
    Single-variant builds (aarch64, ``SONOEDGE_NATIVE=ON``) report ``"native"``.
    """
    k = _native()
    return {
        "active": str(k.cpu_isa_name(int(k.cpu_isa_active()))),
        "supported": _isa_names(k),
        "build": str(k.cpu_isa_build()),
    }


def set_cpu_isa(name: str) -> None:
    """Run the CPU kernels with variant ``name`` (one of ``cpu_isa()["supported"]``) from now on,
    process-wide. Meant for tests and benchmarks that compare the variants."""
    k = _native()
    names = _isa_names(k)
    if name not in names:
        raise InputError(
            f"instruction set {name!r} is not available: this CPU and build run {names}"
        )
    k.cpu_isa_set(names.index(name))


def built_with_cuda() -> bool:
    """True when the compiled module contains the CUDA kernels (nvcc was found at build time)."""
    return bool(_native().built_with_cuda())


def cuda_device_count() -> int:
    """Number of usable CUDA devices; 0 without a driver, a GPU, or a CUDA build."""
    return int(_native().cuda_device_count())


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
    """Fused frame preprocessing, one pass: gray → ROI crop → resize → channels → normalize.

    Args:
        frame: uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; any strides.
        size: output ``(h, w)``.
        channels: names out of ``("image", "gdm", "gdx", "gdy")``, in output order.
        sigma: Gaussian scale in pixels of the resized image, in (0, 8].
        roi: ``(x, y, w, h)`` crop of the frame before resizing; None for the whole frame.
        mean, std: per channel (or one value for all), applied as ``(v - mean) / std``.
        dtype: float32 or float16 output.
        out: optional C-contiguous ``(C, h, w)`` array of ``dtype`` written in place.
        color: channel order of 3/4-channel frames, ``"bgr"`` or ``"rgb"``.
        interpolation: ``"auto"``, ``"linear"`` or ``"area"`` (see the module docstring).
        threads: CPU threads (OpenMP); 1 runs on the calling thread.

    Returns:
        ``(C, h, w)`` array of ``dtype`` (``out`` when given).

    Raises:
        sdk.errors.InputError: naming the first invalid argument.
    """
    f, s = V.preprocess_spec(
        frame, size, channels, sigma, roi, mean, std, dtype, color, interpolation
    )
    nthreads = V.check_int(threads, "threads", 1, 256)
    shape = (len(s.channels), *s.size)
    if out is None:
        out = np.empty(shape, dtype=s.dtype)
    else:
        V.check_out(out, shape, s.dtype)
    _native().preprocess_cpu(
        f,
        s.roi,
        out,
        list(s.kinds),
        list(s.mean),
        list(s.inv_std),
        s.sigma,
        V.INTERP_CODES[s.interp],
        V.COLOR_CODES[s.color],
        nthreads,
    )
    return out


def gaussian_gradient_magnitude(image: np.ndarray, sigma: float, *, threads: int = 1) -> np.ndarray:
    """Gaussian gradient magnitude of a 2-D float image, float32 out.

    Equals ``scipy.ndimage.gaussian_gradient_magnitude(image, sigma, mode="nearest",
    truncate=4.0)`` (float32 arithmetic: max abs error / max abs value below 1e-5).
    """
    img = V.check_float_array(image, "image", 2)
    sig = V.check_sigma(sigma)
    if not np.isfinite(img).all():
        raise InputError("image contains NaN or inf")
    out = np.empty_like(img)
    _native().gradient_magnitude_cpu(img, sig, out, V.check_int(threads, "threads", 1, 256))
    return out


@dataclass(frozen=True)
class MLPHead:
    """Classifier head ``softmax(w2 @ relu(w1 @ x + b1) + b2)``.

    Attributes: ``w1`` (hidden, F), ``b1`` (hidden,), ``w2`` (classes, hidden), ``b2``
    (classes,), all float32 C-contiguous (converted once here, not per frame).
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def __post_init__(self) -> None:
        w1 = V.check_float_array(self.w1, "head.w1", 2)
        b1 = V.check_float_array(self.b1, "head.b1", 1)
        w2 = V.check_float_array(self.w2, "head.w2", 2)
        b2 = V.check_float_array(self.b2, "head.b2", 1)
        if b1.shape[0] != w1.shape[0]:
            raise InputError(f"head.b1 must be ({w1.shape[0]},) to match head.w1, got {b1.shape}")
        if w2.shape[1] != w1.shape[0]:
            raise InputError(
                f"head.w2 must be (classes, {w1.shape[0]}) to match head.w1, got {w2.shape}"
            )
        if b2.shape[0] != w2.shape[0]:
            raise InputError(f"head.b2 must be ({w2.shape[0]},) to match head.w2, got {b2.shape}")
        for name, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            if not np.isfinite(a).all():
                raise InputError(f"head.{name} contains NaN or inf")
            object.__setattr__(self, name, a)

    @property
    def in_features(self) -> int:
        return int(self.w1.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.w2.shape[0])


@dataclass(frozen=True)
class PoolResult:
    """Output of :func:`pool_classify`. Row 0 is the image-level row, rows 1..K the lesions.

    ``pooled`` (K + 1, F); ``logits`` / ``probs`` (K + 1, classes) or None without a head.
    """

    pooled: np.ndarray
    logits: np.ndarray | None
    probs: np.ndarray | None


def _pool_args(
    features: Any, weights: Any, labels: Any, num_labels: Any, head: Any, eps: Any, values: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, MLPHead | None, float]:
    f = V.check_float_array(features, "features", 3)
    w = V.check_weights(weights, values=values)
    lab, k = (None, 0) if labels is None else V.check_labels(labels, w.shape, num_labels)
    if labels is None and num_labels not in (None, 0):
        raise InputError("num_labels is given but labels is None; pass the label map too")
    if head is not None:
        if not isinstance(head, MLPHead):
            raise InputError(f"head must be an sdk.kernels.MLPHead, got {type(head).__name__}")
        if head.in_features != f.shape[0]:
            raise InputError(
                f"head expects {head.in_features} features but features has F={f.shape[0]}"
            )
    e = V.check_float(eps, "eps")
    if e <= 0:
        raise InputError(f"eps must be > 0, got {e}")
    if values and not np.isfinite(f).all():
        # The compiled kernel refuses them in its own pass (values=False); a NaN would otherwise
        # pool to NaN here and to the head's bias softmax behind a ReLU.
        raise InputError("features contain NaN or inf; the model produced invalid features")
    return f, w, lab, k, head, e


def pool_classify(
    features: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray | None = None,
    num_labels: int | None = None,
    head: MLPHead | None = None,
    eps: float = 1e-6,
) -> PoolResult:
    """Mask-guided pooling of the image and of every lesion, then the classifier head.

    ``pooled[k] = Σ w·[label == k]·up(f) / (Σ w·[label == k] + eps)`` where ``up`` resamples the
    features to the mask grid bilinearly (INTER_LINEAR convention; never materialized: each mask
    pixel spreads its weight over the <= 4 feature cells it interpolates). Equal grids give plain
    weighted average pooling; a coarse feature map pools as if upsampled to the mask.

    Args:
        features: float32 ``(F, hf, wf)`` feature map.
        weights: float32 ``(hm, wm)`` mask probabilities in [0, 1].
        labels: int32 ``(hm, wm)`` connected-component ids, 0 = background, 1..K lesions; None for
            the image-level row only.
        num_labels: K (default ``labels.max()``).
        head: optional classifier head.
        eps: added to the weight sum (empty lesions pool to 0, never divide by 0).

    Returns:
        :class:`PoolResult` with K + 1 rows.
    """
    f, w, lab, k, h, e = _pool_args(features, weights, labels, num_labels, head, eps, values=False)
    args = (h.w1, h.b1, h.w2, h.b2) if h is not None else (None, None, None, None)
    pooled, logits, probs = _native().pool_classify_cpu(f, w, lab, k, e, *args)
    return PoolResult(pooled, logits, probs)


def mask_guided_pool(
    features: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray | None = None,
    num_labels: int | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Mask-guided pooling alone: ``(1, F)`` without labels, ``(K, F)`` (lesions 1..K) with.

    See :func:`pool_classify` for the definition and the resampling convention.
    """
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
    """Mask logits → sigmoid → bilinear resample onto the ROI → uint8 frame-sized mask.

    Args:
        logits: float ``(h, w)`` mask logits (``(1, 1, h, w)`` and ``(1, h, w)`` are accepted).
        frame_shape: ``(H, W)`` of the frame (a frame's ``.shape`` works too).
        roi: ``(x, y, w, h)`` the model saw; pixels outside it are 0. None = whole frame.
        threshold: probability threshold in [0, 1]; ``prob > threshold`` gives ``value``.
        value: foreground value in 1..255 (1 for label maps, 255 for viewing).
        out: optional writable uint8 ``(H, W)`` array (rows contiguous) written in place.
        threads: CPU threads.

    Returns:
        uint8 ``(H, W)`` mask.
    """
    lg = _squeeze_logits(logits)
    if not isinstance(frame_shape, tuple | list) or len(frame_shape) < 2:
        raise InputError(f"frame_shape must be (H, W), got {frame_shape!r}")
    H, W = V.check_size(tuple(frame_shape[:2]), "frame_shape")
    r = V.check_roi(roi, H, W)
    t = V.check_float(threshold, "threshold")
    if not 0.0 <= t <= 1.0:
        raise InputError(f"threshold must be a probability in [0, 1], got {t}")
    val = V.check_int(value, "value", 1, 255)
    if out is None:
        out = np.empty((H, W), dtype=np.uint8)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != (H, W)
        or out.dtype != np.uint8
        or not out.flags.writeable
        or out.strides[1] != 1
        or (H > 1 and out.strides[0] < W)
    ):
        raise InputError(
            f"out must be a writable uint8 array of shape {(H, W)} with contiguous rows one "
            f"after the other (row stride >= {W}), got "
            + (
                f"shape {out.shape} {out.dtype}, strides {out.strides}"
                if isinstance(out, np.ndarray)
                else type(out).__name__
            )
        )
    _native().mask_post_cpu(lg, out, r, t, val, V.check_int(threads, "threads", 1, 256))
    return out


@dataclass(frozen=True)
class Components:
    """Output of :func:`lesion_components`, all on the logit grid.

    ``prob`` float32 ``(h, w)`` sigmoid of the logits; ``labels`` int32 ``(h, w)``, 0 background,
    1..K the kept components; ``stats`` int32 ``(K, 5)``: x, y, w, h, area (cells) of label k in
    row k - 1; ``contours[k - 1]`` int32 ``(N, 2)`` (x, y) cells: the outer border of label k as
    ``cv2.findContours(labels == k, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)`` returns it.
    """

    prob: np.ndarray
    labels: np.ndarray
    stats: np.ndarray
    contours: list[np.ndarray]

    @property
    def count(self) -> int:
        return int(self.stats.shape[0])


def lesion_components(
    logits: np.ndarray,
    threshold: float = 0.5,
    cell_size: tuple[float, float] = (1.0, 1.0),
    min_area: float = 0.0,
) -> Components:
    """Mask logits → sigmoid → ``prob > threshold`` → 8-connected components, small ones dropped,
    and the outer border of each.

    Labels are numbered in raster order of each component's first pixel. A component is kept
    when ``area * cell_size[0] * cell_size[1] >= min_area``: with ``cell_size`` the frame pixels
    per grid cell (x, y), ``min_area`` is in frame pixels.

    Args:
        logits: float ``(h, w)`` mask logits (``(1, 1, h, w)`` and ``(1, h, w)`` are accepted).
        threshold: probability threshold in [0, 1].
        cell_size: (x, y) size of one grid cell in frame pixels, > 0.
        min_area: smallest kept component, in frame pixels (``cell_size`` units squared).

    Raises:
        sdk.errors.InputError: bad arguments, or NaN / inf logits (naming the first).
    """
    lg = _squeeze_logits(logits)
    t = V.check_float(threshold, "threshold")
    if not 0.0 <= t <= 1.0:
        raise InputError(f"threshold must be a probability in [0, 1], got {t}")
    if not isinstance(cell_size, tuple | list) or len(cell_size) != 2:
        raise InputError(f"cell_size must be (x, y), got {cell_size!r}")
    sx, sy = (V.check_float(v, f"cell_size[{i}]") for i, v in enumerate(cell_size))
    if sx <= 0 or sy <= 0:
        raise InputError(f"cell_size must be > 0, got {(sx, sy)}")
    m = V.check_float(min_area, "min_area")
    prob, labels, stats, contours = _native().components_cpu(lg, t, sx, sy, m)
    return Components(prob, labels, stats, contours)


@dataclass(frozen=True)
class Outlines:
    """Output of :func:`lesion_outlines`, in frame pixels; row / item k - 1 is lesion k.

    ``boxes`` int32 ``(K, 4)``: x, y, w, h of the lesion's region at frame resolution (all 0 when
    the region is empty); ``areas`` int64 ``(K,)``: its pixel count; ``contours[k - 1]``: a list
    of int32 ``(N, 2)`` (x, y) outer borders, one per 8-connected piece of the region, largest
    first (equal areas in raster order of their first pixels); empty when the region is.
    """

    boxes: np.ndarray
    areas: np.ndarray
    contours: list[list[np.ndarray]]

    @property
    def count(self) -> int:
        return int(self.boxes.shape[0])


def _outline_args(
    mask: Any, labels: Any, roi: Any, num_labels: Any
) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int, int, int]]:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        got = (
            type(mask).__name__
            if not isinstance(mask, np.ndarray)
            else f"{mask.dtype} {mask.shape}"
        )
        raise InputError(f"mask must be a uint8 (H, W) numpy.ndarray, got {got}")
    if mask.size == 0:
        raise InputError(f"mask is empty: shape {mask.shape}")
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.size == 0:
        raise InputError(
            "labels must be a non-empty (h, w) integer numpy.ndarray (lesion_components().labels)"
        )
    lab, k = V.check_labels(labels, labels.shape, num_labels)
    r = V.check_roi(roi, mask.shape[0], mask.shape[1])
    if mask.strides[1] != 1 or mask.strides[0] < mask.shape[1]:
        mask = np.ascontiguousarray(mask)
    return mask, lab, k, r


def lesion_outlines(
    mask: np.ndarray,
    labels: np.ndarray,
    roi: tuple[int, int, int, int] | None = None,
    num_labels: int | None = None,
) -> Outlines:
    """Split a frame-resolution mask into the lesions of a grid label map and trace each one's
    outline on that mask, so that the filled outlines are the mask.

    ``mask`` is :func:`postprocess_mask` of a logit grid through ``roi`` and ``labels`` the
    :func:`lesion_components` labels of the same grid. A mask pixel belongs to lesion k when one
    of the INTER_LINEAR taps it was blended from (the <= 2 x 2 grid cells of non-zero weight) is
    a cell of lesion k: one 2 x 2 block never holds two 8-connected components, so no pixel
    belongs to two lesions, and a pixel whose taps hold no lesion cell (a dropped component's, or
    taps at the threshold within float rounding) belongs to none. At frame resolution a lesion
    may split into several 8-connected pieces or vanish; each piece's outer border is traced as
    ``cv2.findContours(piece, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)`` traces it (holes are not).

    Args:
        mask: uint8 ``(H, W)``, non-zero = foreground.
        labels: integer ``(h, w)`` grid labels, 0 background, 1..K lesions.
        roi: ``(x, y, w, h)`` the grid was resampled onto; None = the whole frame.
        num_labels: K (default ``labels.max()``).

    Raises:
        sdk.errors.InputError: bad arguments.
    """
    m, lab, k, r = _outline_args(mask, labels, roi, num_labels)
    boxes, areas, contours = _native().lesion_outlines_cpu(m, lab, k, r)
    return Outlines(boxes, areas, contours)


def _squeeze_logits(logits: Any) -> np.ndarray:
    if not isinstance(logits, np.ndarray):
        raise InputError(f"logits must be a numpy.ndarray, got {type(logits).__name__}")
    lg = logits
    while lg.ndim > 2 and lg.shape[0] == 1:
        lg = lg[0]
    return V.check_float_array(lg, "logits", 2)
