"""``sdk.Analyzer``: one frame in, mask + label + lesions out.

Frame path (DESIGN.md): uint8 frame → fused preprocess kernel (straight into the backend's
input buffer) → model → mask post-process kernel (frame-resolution mask) + connected components
at model resolution → mask-guided pooling + head kernel (per-lesion labels) → :class:`Result`.

Threading: one Analyzer may be called from several threads at once; every call gets its own
frame's Result. What calls share is guarded, nothing else: the reused input buffer (a call that
finds it busy preprocesses into a buffer of its own instead of waiting), the backend call for
backends whose session is not reentrant (all but ONNX Runtime), and the temporal state (the
smoothing EMA, the frame counter: their update is the only part of post-processing under a
lock, so with smoothing the calls are folded into the EMA in the order they reach it). One
stream's frames in order, one smoothing state per stream: one Analyzer per stream; they run in
parallel since every kernel and ONNX Runtime release the GIL. ``close()`` is final: later calls
raise :class:`AnalyzerClosedError`.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk import kernels as K
from sdk.backends import Backend, choose_backend
from sdk.errors import InputError, ModelError, SDKError
from sdk.kernels import _validate as V
from sdk.result import Lesion, Result
from sdk.scope import OUT_OF_SCOPE, Scope
from sdk.sources._base import check_pixel_spacing
from sdk.stream import MAX_BATCH

if TYPE_CHECKING:  # pragma: no cover
    from sdk.stream import FrameRecord

__all__ = ["Analyzer", "AnalyzerClosedError", "default_model", "to_uint8"]

#: ``threads`` may be at most this many times the machine's logical CPUs (more only adds
#: thread start-up and memory: 100000 ONNX Runtime threads took minutes and 4.5 GB to load).
MAX_THREADS_PER_CPU = 4

#: Model strings that name a `sonoedge serve` endpoint instead of a file (sdk/remote.py).
REMOTE_SCHEMES = ("grpc://", "http://", "https://")


class AnalyzerClosedError(InputError):
    """The Analyzer was closed: ``run`` / ``run_batch`` / ``load`` / ``stream`` after ``close()``
    (or after its ``with`` block), or a stream whose Analyzer was closed under it."""


#: Where the embedded default model lives (made by `sonoedge train --preset demo`).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models"


def default_model(precision: str | None = None) -> Path:
    """Path of the embedded default model: ``"fp32"`` or ``"int8"`` (ONNX Runtime CPU QDQ).

    None (what ``sdk.Analyzer()`` uses) takes FP32: on the 2-core CPU it was measured faster
    (1.90 vs 2.35 ms per frame at 128×128: the model is small enough that Q/DQ overhead
    outweighs int8 arithmetic) and 1 accuracy point better. INT8 is there for targets whose
    int8 kernels pay off. See ``sdk/models/REPORT.md``.
    """
    if precision is None:
        precision = "fp32"
    if precision not in ("int8", "fp32"):
        raise InputError(f"precision must be 'int8' or 'fp32', got {precision!r}")
    path = DEFAULT_MODEL_DIR / f"default-{precision}.onnx"
    if not path.is_file():
        raise ModelError(
            f"the embedded default model ({path.name}) is not in this install; pass the path of "
            "an exported .onnx / .plan artifact, or make one with `sonoedge train --preset demo`"
        )
    return path


def _check_bit_depth(bit_depth: Any) -> int | None:
    """None, or an integer in [8, 32]; anything else raises :class:`InputError`."""
    if bit_depth is None:
        return None
    if (
        isinstance(bit_depth, bool | np.bool_)
        or not isinstance(bit_depth, int | np.integer)
        or not 8 <= int(bit_depth) <= 32
    ):
        raise InputError(
            f"bit_depth must be None or an integer in [8, 32] (the scanner's bits per pixel, "
            f"e.g. 12), got {bit_depth!r}"
        )
    return int(bit_depth)


def to_uint8(frame: Any, bit_depth: int | None = None) -> np.ndarray:
    """Convert a frame to the uint8 the kernels take, or raise :class:`InputError`.

    * uint8: as is.
    * uint16: shifted right by ``bit_depth - 8`` (default 16: the full 16-bit range, as 16-bit
      image files are read). Pass the scanner's bit depth (e.g. 12) so a 12-bit frame is not
      darkened 16-fold.
    * every other integer dtype (int8 / int16 / int32 / int64 -- what ``np.array`` makes of Python
      ints -- uint32 / uint64): without ``bit_depth``, values in [0, 255] are taken as they are
      (8-bit data in a wider container) and anything above 255 raises :class:`InputError` asking
      for ``bit_depth``; with ``bit_depth``, shifted right by ``bit_depth - 8`` as uint16 is.
      Never a guess from the dtype's width (which turned 8-bit int64 frames black).
    * any integer dtype: negative values, and values at or above ``2**bit_depth``, raise; never
      clipped, never wrapped.
    * float: must be finite and in [0, 1]; multiplied by 255 and rounded.
    * bool: 0 / 255.
    """
    if (  # the scanner case, checked in one expression: a plain uint8 gray or BGR image
        type(frame) is np.ndarray
        and frame.dtype == np.uint8
        and (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4)))
        and 0 < frame.shape[0] <= V.MAX_SIDE
        and 0 < frame.shape[1] <= V.MAX_SIDE
        and frame.strides[0] > 0
        and frame.strides[1] > 0
        and (frame.ndim == 2 or frame.strides[2] > 0)
        and (bit_depth is None or _check_bit_depth(bit_depth) is not None)
    ):
        return frame
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if isinstance(frame, np.ma.MaskedArray):
        raise InputError(
            "frame is a numpy.ma.MaskedArray: masked pixels have no value to analyze; pass "
            "frame.filled(0) (or np.asarray(frame) to use the data under the mask)"
        )
    bit_depth = _check_bit_depth(bit_depth)
    if frame.size == 0:
        raise InputError(f"frame is empty: shape {frame.shape}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise InputError(
            f"frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {frame.shape}"
        )
    # Before any conversion: a huge (e.g. zero-stride broadcast) view must not be materialized.
    if max(frame.shape[:2]) > V.MAX_SIDE:
        raise InputError(
            f"frame is too large: shape {frame.shape}, max side {V.MAX_SIDE}; "
            "downscale it or crop it to the image area first"
        )
    if frame.dtype == np.uint8:
        # A negative stride on a length-1 axis survives np.ascontiguousarray (numpy calls such
        # a view contiguous) and the native kernels refuse it: copy flipped views here.
        return frame.copy() if any(s < 0 for s in frame.strides) else frame
    if frame.dtype == np.bool_:
        return frame.astype(np.uint8) * 255
    if frame.dtype.kind in "ui":
        lo, hi = int(frame.min()), int(frame.max())
        if lo < 0:
            raise InputError(
                f"{frame.dtype} frame has negative values (min {lo}): pixel intensities are "
                "never negative; pass the scanner's unsigned data (uint8, or uint16 with "
                "Analyzer(bit_depth=...)), not a signed or offset copy"
            )
        if frame.dtype == np.uint16 or bit_depth is not None:
            bits = bit_depth or 16
            if hi >= 2**bits:
                raise InputError(
                    f"{frame.dtype} frame values [{lo}, {hi}] do not fit the declared {bits}-bit "
                    "depth; pass Analyzer(bit_depth=...) matching the scanner"
                )
            return (frame.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
        if hi > 255:
            raise InputError(
                f"{frame.dtype} frame values reach {hi}, above 8 bits: pass "
                "Analyzer(bit_depth=N), N in [9, 32] the scanner's bits per pixel (values must be "
                "< 2**N; e.g. 12), or convert the frame to uint8 / uint16 yourself"
            )
        return frame.astype(np.uint8)
    if frame.dtype.kind == "f":
        if not np.isfinite(frame).all():
            raise InputError("frame contains NaN or inf")
        lo, hi = frame.min(), frame.max()  # compared in the frame's own precision
        if lo < 0 or hi > 1:
            raise InputError(
                f"float frames must be scaled to [0, 1], got range [{lo:g}, {hi:g}]; "
                "or pass uint8 / uint16"
            )
        return np.rint(frame * 255.0).astype(np.uint8)
    raise InputError(f"unsupported frame dtype {frame.dtype}; pass uint8 (or uint16, float)")


class Analyzer:
    """Analyze breast-ultrasound frames with a sonoedge artifact.

    Args:
        path: ``.onnx`` artifact with sonoedge metadata (``.plan`` with the TensorRT backend);
            None for the embedded default model (:func:`default_model`: FP32, measured faster
            than its INT8 twin on CPU at this size).
        backend: ``"auto"`` (by suffix and availability) or a name from ``sdk.backends.BACKENDS``.
        device: passed to the backend (``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        threshold: mask probability threshold (default: the artifact's).
        smoothing: EMA factor in [0, 1) for image-level probabilities across ``run`` calls
            (0 = none; 0.6 keeps 60 % of the previous estimate).
        threads: CPU threads of the backend (None: its default), an integer in 1 ..
            ``MAX_THREADS_PER_CPU`` × the logical CPUs. The kernels run on the calling
            thread: at 256×256 they take well under a millisecond, and OpenMP teams that wait on
            cores the backend or the capture thread hold cost more than they save.
        bit_depth: bit depth of integer frames wider than 8 bits (see :func:`to_uint8`).
        pixel_spacing_mm: (row, col) spacing for lesion areas in mm² (per call overrides), two
            finite numbers in ``sdk.sources.SPACING_RANGE_MM``.

    Every argument is checked here (type and range): a bad one raises
    :class:`~sdk.errors.InputError` naming it and the fix. Thread-safe (see the module
    docstring); ``close()`` is final.
    """

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> Any:
        # ``Analyzer("grpc://HOST:PORT/MODEL")`` / ``http://``: a client of `sonoedge serve`
        # (sdk/remote.py) with the same run / run_batch / close API and the same Result. It is
        # not an Analyzer subclass, so Python does not call __init__ on it a second time.
        if cls is Analyzer and isinstance(path, str) and path.startswith(REMOTE_SCHEMES):
            from sdk.remote import RemoteAnalyzer

            return RemoteAnalyzer(path, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        path: str | Path | None = None,
        backend: str = "auto",
        device: str = "auto",
        threshold: float | None = None,
        smoothing: float = 0.0,
        threads: int | None = None,
        bit_depth: int | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> None:
        if path is not None and not isinstance(path, str | os.PathLike):
            raise InputError(
                f"path must be a str or pathlib.Path of a .onnx / .plan artifact, or None for "
                f"the embedded default model (sdk.default_model()); got {type(path).__name__}"
            )
        for name, value in (("backend", backend), ("device", device)):
            if not isinstance(value, str):
                raise InputError(
                    f"{name} must be a string ('auto', or a name such as 'onnxruntime' / 'cpu'), "
                    f"got {type(value).__name__} {value!r}"
                )
        if threshold is not None:
            threshold = _check_real(threshold, "threshold", 0.0, 1.0, "the mask probability cut")
        smoothing = _check_real(smoothing, "smoothing", 0.0, 1.0, "0 = off, 0.6 typical", True)
        threads = _check_threads(threads)
        self.path = default_model() if path is None else Path(path)
        self._threshold = threshold
        self.smoothing = smoothing
        self.threads = threads
        self.bit_depth = _check_bit_depth(bit_depth)
        self.pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        self._backend: Backend = choose_backend(self.path, backend)(self.path, device, threads)
        self._frame_index = 0
        self._ema: list[float] | None = None
        self._xb: np.ndarray | None = None
        # Thread safety (module docstring): what concurrent calls share, each behind its lock.
        self._ready = False  # load() finished (metadata, buffers, settings all set)
        self._closed = False
        self._load_lock = threading.Lock()  # load / close
        self._x_lock = threading.Lock()  # the batch-1 input buffer _x (try-acquired)
        self._xb_lock = threading.Lock()  # the batch input buffer _xb (try-acquired)
        self._state_lock = threading.Lock()  # the EMA and the frame counter (in _postprocess)
        # ONNX Runtime's InferenceSession.run is reentrant; the others (TensorRT contexts and
        # CUDA graphs, OpenVINO infer requests, torch's CUDA state) take one call at a time.
        self._infer_lock = (
            None if getattr(self._backend, "name", "") == "onnxruntime" else threading.Lock()
        )

    # ---- lifecycle -----------------------------------------------------------------------------
    def load(self) -> Analyzer:
        """Load the model (run / run_batch / stream call it on first use). Thread-safe: one
        thread loads, concurrent callers wait for it. Raises :class:`AnalyzerClosedError` after
        :meth:`close`."""
        if self._ready:
            return self
        with self._load_lock:
            if self._closed:
                raise AnalyzerClosedError(self._closed_message())
            if not self._ready:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        # Outputs checked against their roles at load (the backend) and on every inference:
        # present, rank, dims >= 1, the metadata's sizes, finite features -- a ModelError, never
        # a kernel's InputError or a silently wrong answer.
        self._backend.check_outputs = True
        self._backend.load()
        md = self._backend.metadata
        assert md is not None  # load() guarantees it
        self.metadata = md
        self.class_names = md.class_names
        self.threshold = md.mask_threshold if self._threshold is None else float(self._threshold)
        spec = self._backend.inputs[0]
        self._x = np.zeros((1, len(md.channels), *md.input_size), dtype=spec.dtype)
        ps = V._build_spec(
            (1, 1),
            md.input_size,
            md.channels,
            md.sigma,
            None,
            md.mean,
            md.std,
            spec.dtype,
            "bgr",
            "auto",
        )
        self._pre = (list(ps.kinds), list(ps.mean), list(ps.inv_std), ps.sigma)
        self._head = K.MLPHead(**md.head) if md.head is not None else None
        # sdk/scope.py: the fitted out-of-scope model and the probability temperature (None / 1.0
        # for artifacts without the blocks).
        self._scope = Scope.from_dict(md.scope, str(self.path)) if md.scope else None
        self._temperature = float((md.calibration or {}).get("temperature", 1.0))
        if self._head is not None and self._temperature != 1.0:
            # softmax(z / T) for every pooled row at no per-frame cost: the head's last layer
            # divided by T once here.
            h = self._head
            t = np.float32(self._temperature)
            self._head = K.MLPHead(h.w1, h.b1, h.w2 / t, h.b2 / t)
        # Backends that can preprocess on the device (TensorRT with the CUDA kernels compiled
        # in) take the raw frame; the others get the CPU kernel's tensor.
        self._device_pre = bool(getattr(self._backend, "device_preprocess", False))
        if md.outputs.get("features") and self._head is None:
            raise ModelError(f"{self.path}: a features output needs head weights in the metadata")
        self._ready = True

    def close(self) -> None:
        """Release the model. Final: ``run`` / ``run_batch`` / ``load`` / ``stream`` afterwards
        raise :class:`AnalyzerClosedError`, and a stream still running ends with it (no silent
        reload: closing is how one thread tells the others that this model is gone). Calls
        already inside the model finish first (ONNX Runtime keeps its session alive for them;
        other backends are closed after their current call). Idempotent."""
        with self._load_lock:
            self._closed = True
            self._ready = False
            if self._infer_lock is None:
                self._backend.close()
            else:
                with self._infer_lock:
                    self._backend.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _closed_message(self) -> str:
        return (
            f"{self.path.name}: this Analyzer was closed (close(), or the end of its with-block); "
            "create a new sdk.Analyzer to analyze more frames"
        )

    def __enter__(self) -> Analyzer:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the temporal state (start of a new cine / patient)."""
        with self._state_lock:
            self._ema = None
            self._frame_index = 0

    # ---- the frame path ------------------------------------------------------------------------
    def run(
        self,
        frame: np.ndarray,
        *,
        roi: tuple[int, int, int, int] | None = None,
        timestamp: float | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        color: str = "bgr",
    ) -> Result:
        """Analyze one frame (uint8 (H, W) / (H, W, 3); see :func:`to_uint8` for others).

        ``roi`` (x, y, w, h) inside the frame, ``timestamp`` a finite number (seconds),
        ``pixel_spacing_mm`` as in the constructor (overrides it), ``color`` "bgr" / "rgb":
        each checked, an :class:`~sdk.errors.InputError` naming it otherwise. Thread-safe."""
        if not self._ready:
            self.load()
        V.check_color(color)
        if timestamp is not None:
            timestamp = _check_real(timestamp, "timestamp", what="seconds")
        if pixel_spacing_mm is not None:
            pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        staged = self._front(frame, roi, color)
        return self._back(staged, timestamp, pixel_spacing_mm)

    # The frame path in two stages, so that stream() can overlap them (inference of frame n+1
    # while frame n is post-processed): _front = checks + preprocess + inference (the only
    # stage that touches the reused input buffer), _back = post-processing + lesions + the
    # temporal state (EMA, frame counter), which must see frames in order.
    def _check(
        self, frame: Any, roi: tuple[int, int, int, int] | None
    ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int, int, int]]:
        """The frame as uint8, its (H, W) and the checked ROI (the model's fixed ROI when the
        caller gives none), or :class:`InputError`."""
        md = self.metadata
        f8 = to_uint8(frame, self.bit_depth)
        H, W = f8.shape[:2]
        if roi is None and md.roi_policy == "fixed" and md.roi_box is not None:
            roi = md.roi_box
        return f8, (H, W), V.check_roi(roi, H, W)

    def _front(
        self, frame: Any, roi: tuple[int, int, int, int] | None, color: str
    ) -> tuple[dict[str, np.ndarray], tuple[int, int], tuple[int, int, int, int], float, float]:
        md = self.metadata
        t0 = time.perf_counter()
        f8, hw, roi_t = self._check(frame, roi)
        if self._device_pre:
            # The GPU path: the CUDA preprocess kernel writes straight into the engine's input
            # binding inside the backend's CUDA graph, so "preprocess" is part of "infer" here.
            pre = {
                "channels": md.channels,
                "sigma": md.sigma,
                "roi": roi_t,
                "mean": md.mean,
                "std": md.std,
                "color": color,
            }
            t1 = time.perf_counter()
            out = self._infer(f8, pre)
        else:
            t1, out = self._host_path(f8, roi_t, color)
        t2 = time.perf_counter()
        return out, hw, roi_t, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    def _front_batch(
        self, frames: list[Any], color: str
    ) -> list[
        tuple[dict[str, np.ndarray], tuple[int, int], tuple[int, int, int, int], float, float]
        | SDKError
    ]:
        """:meth:`_front` for up to the backend's ``max_batch`` frames with one model call (the
        device path and batch-1 backends go frame by frame). A frame
        that fails its checks gets its error in its slot and the others go on; a failing model
        call gives every checked frame its error. ``infer`` of each frame is its share of the
        call (call time / frames in it)."""
        if self._device_pre or self._backend.max_batch == 1 or len(frames) == 1:
            out_: list[Any] = []
            for f in frames:
                try:
                    out_.append(self._front(f, None, color))
                except SDKError as e:
                    out_.append(e)
            return out_
        if len(frames) > self._backend.max_batch:
            raise InputError(
                f"{len(frames)} frames for one model call; the backend takes at most "
                f"{self._backend.max_batch}"
            )
        res: list[Any] = [None] * len(frames)
        ok: list[tuple[int, tuple[int, int], tuple[int, int, int, int], float]] = []
        x, held = self._take_input(len(frames))
        try:
            for i, f in enumerate(frames):
                t0 = time.perf_counter()
                try:
                    f8, hw, roi_t = self._check(f, None)
                    self._preprocess_into(f8, roi_t, color, x[len(ok)])
                except SDKError as e:
                    res[i] = e
                    continue
                ok.append((i, hw, roi_t, (time.perf_counter() - t0) * 1e3))
            if ok:
                t1 = time.perf_counter()
                try:
                    out = self._infer(x[: len(ok)])
                except SDKError as e:
                    for i, *_ in ok:
                        res[i] = e
                    return res
        finally:
            if held is not None:
                held.release()
        if ok:
            share = (time.perf_counter() - t1) * 1e3 / len(ok)
            for j, (i, hw, roi_t, pre_ms) in enumerate(ok):
                try:
                    mine = {k: v[j : j + 1] for k, v in out.items()}
                    if any(len(v) != 1 for v in mine.values()):
                        raise IndexError("an output has fewer rows than the batch")
                except (IndexError, TypeError) as e:  # an output without a batch axis
                    res[i] = ModelError(
                        f"{self.path}: the model's outputs have no batch axis of {len(ok)} "
                        f"({type(e).__name__}: {e}); re-export the model"
                    )
                    continue
                res[i] = (mine, hw, roi_t, pre_ms, share)
        return res

    def _take_input(self, n: int) -> tuple[np.ndarray, threading.Lock | None]:
        """An (n, C, h, w) input buffer and the lock to release after the model call: the
        reused one (``_x`` for batch 1, ``_xb`` grown on demand) when it is free, else -- another
        thread is preprocessing into it or inferring from it -- a fresh one of this call's own
        (no waiting: the model call is the long part, and two calls may overlap in it)."""
        if n == 1:
            if self._x_lock.acquire(blocking=False):
                return self._x, self._x_lock
        elif self._xb_lock.acquire(blocking=False):
            if self._xb is None or self._xb.shape[0] < n:
                self._xb = np.zeros((n, *self._x.shape[1:]), dtype=self._x.dtype)
            return self._xb[:n], self._xb_lock
        return np.empty((n, *self._x.shape[1:]), dtype=self._x.dtype), None

    def _infer(self, x: np.ndarray, pre: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """The backend call (``infer``, or ``infer_frame`` with ``pre`` on the device path),
        one at a time for non-reentrant backends; a call that fails because the Analyzer was
        closed under it raises :class:`AnalyzerClosedError`."""
        lock = self._infer_lock
        try:
            if lock is None and pre is None:
                return self._backend.infer(x)
            with lock or threading.Lock():
                if pre is None:
                    return self._backend.infer(x)
                return self._backend.infer_frame(x, pre)  # type: ignore[attr-defined]
        except Exception as e:
            if self._closed:
                raise AnalyzerClosedError(self._closed_message()) from e
            raise

    def _back(
        self,
        staged: tuple[
            dict[str, np.ndarray], tuple[int, int], tuple[int, int, int, int], float, float
        ],
        timestamp: float | None,
        pixel_spacing_mm: tuple[float, float] | None,
    ) -> Result:
        out, hw, roi_t, pre_ms, infer_ms = staged
        spacing = self.pixel_spacing_mm if pixel_spacing_mm is None else pixel_spacing_mm
        t2 = time.perf_counter()
        try:
            res = self._postprocess(out, hw, roi_t, spacing)
        except SDKError:
            raise
        except (ArithmeticError, AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
            # Outputs the post-processing cannot read (a short class head, a missing axis, a
            # wrong role): the model's fault, named as such -- never a raw exception.
            raise ModelError(
                f"{self.path}: the model's outputs do not fit its metadata (post-processing "
                f"failed: {type(e).__name__}: {e}); check the output roles and shapes, or "
                "re-export the model"
            ) from e
        post_ms = (time.perf_counter() - t2) * 1e3
        res.timestamp = timestamp
        res.timings = {
            "preprocess": pre_ms,
            "infer": infer_ms,
            "postprocess": post_ms,
            "total": pre_ms + infer_ms + post_ms,
        }
        return res

    def _host_path(
        self, f8: np.ndarray, roi_t: tuple[int, int, int, int], color: str
    ) -> tuple[float, dict[str, np.ndarray]]:
        """CPU preprocess into the reused input tensor (or this call's own when another thread
        holds it), then the backend: (t1, outputs)."""
        lock = self._x_lock
        if lock.acquire(blocking=False):
            x = self._x
        else:
            x, lock = self._take_input(1)
        try:
            self._preprocess_into(f8, roi_t, color, x[0])
            t1 = time.perf_counter()
            return t1, self._infer(x)
        finally:
            if lock is not None:
                lock.release()

    def _preprocess_into(
        self, f8: np.ndarray, roi_t: tuple[int, int, int, int], color: str, out: np.ndarray
    ) -> None:
        """:func:`sdk.kernels.preprocess` with this model's settings, minus its per-call
        argument checks: the settings were checked once at load (``_pre``), the frame and ROI
        by ``_check`` (measured ~15 us a frame on the 2-core Xeon)."""
        kinds, mean, inv_std, sigma = self._pre
        code = V.check_color(color)
        if f8.ndim == 3 and f8.shape[2] == 1:
            f8 = f8[:, :, 0]
        interp = V.check_interp("auto", (roi_t[3], roi_t[2]), self.metadata.input_size)
        K._native().preprocess_cpu(
            f8,
            roi_t,
            out,
            kinds,
            mean,
            inv_std,
            sigma,
            V.INTERP_CODES[interp],
            code,
            1,
        )

    def stream(
        self,
        source: Any,
        drop: str = "none",
        queue_size: int = 4,
        color: str = "gray",
        max_frames: int | None = None,
        keep_frames: bool = False,
        pipeline: bool = True,
        max_batch: int = MAX_BATCH,
    ) -> Iterator[Result | FrameRecord]:
        """Analyze a video file, DICOM cine, image folder, camera index, GStreamer string, array
        stack or any iterator of frames; see :func:`sdk.stream.stream` for the guarantees."""
        from sdk.stream import stream

        return stream(
            self, source, drop, queue_size, color, max_frames, keep_frames, pipeline, max_batch
        )

    def run_batch(self, frames: Iterable[np.ndarray], color: str = "bgr") -> list[Result]:
        """Analyze frames in order, up to the backend's ``max_batch`` per model call (one call
        per frame on batch-1 backends); smoothing applies across them. Raises the first bad
        frame's error (the frames before it have updated the temporal state, as with ``run``).
        """
        if not self._ready:
            self.load()
        V.check_color(color)
        frames = list(frames)
        results: list[Result] = []
        step = self._backend.max_batch
        for k in range(0, len(frames), step):
            for staged in self._front_batch(frames[k : k + step], color):
                if isinstance(staged, SDKError):
                    raise staged
                results.append(self._back(staged, None, None))
        return results

    def _raw_probs_out_of_scope(
        self, out: dict[str, np.ndarray], cl: np.ndarray | None
    ) -> list[float]:
        """The model's own image-level probabilities of a frame the scope refused (its class
        head, else the pooled image row), after the same finiteness checks as the full path."""
        md = self.metadata
        lg = out[md.outputs["mask_logits"]][0, 0]
        if not np.isfinite(lg).all():
            raise ModelError(f"{self.path}: the model produced NaN / inf mask logits")
        if cl is not None:
            return self._image_probs(cl)
        prob = (1.0 / (1.0 + np.exp(-lg.astype(np.float64)))).astype(np.float32)
        return self._pooled_rows(out, prob, np.zeros(prob.shape, np.int32), 0)[0]

    def _image_probs(self, cl: np.ndarray) -> list[float]:
        """Calibrated image-level probabilities from the class logits, as Python floats (for 3
        classes, math on lists costs a fraction of NumPy's per-call overhead)."""
        z = cl[0].tolist()
        if not all(map(math.isfinite, z)):
            raise ModelError(f"{self.path}: the model produced NaN / inf class logits")
        return _softmax(z, self._temperature)

    def _pooled_rows(
        self, out: dict[str, np.ndarray], prob: np.ndarray, labels: np.ndarray, k: int
    ) -> list[list[float]]:
        """Mask-guided pooling + head (the compiled kernel): row 0 the image, rows 1..k the
        lesions; calibrated (the head carries 1 / T from load)."""
        h = self._head
        feats = np.ascontiguousarray(out[self.metadata.outputs["features"]][0], dtype=np.float32)
        _, _, probs = K._native().pool_classify_cpu(
            feats, prob, labels, k, 1e-6, h.w1, h.b1, h.w2, h.b2
        )
        return probs.tolist()

    def _postprocess(
        self,
        out: dict[str, np.ndarray],
        frame_hw: tuple[int, int],
        roi: tuple[int, int, int, int],
        spacing: tuple[float, float] | None,
    ) -> Result:
        # The hot path calls the compiled kernels without sdk.kernels' argument checks: every
        # argument here is either checked already (the ROI and frame size in _front, the output
        # names and head at load) or made by the model / the previous kernel (dtype and layout
        # normalized below), and the bindings still refuse a wrong call. Measured on the 2-core
        # Xeon: the checks cost ~60 us of a ~400 us post-process.
        md = self.metadata
        names = self.class_names
        cl_name = md.outputs.get("class_logits")
        cl = out.get(cl_name) if cl_name else None
        in_scope, scope_score = True, None
        if self._scope is not None:  # sdk/scope.py; no diagnosis is claimed out of scope
            # First, from the outputs alone: an out-of-scope frame skips the mask and lesion
            # work below (its Result carries an empty mask and no lesions).
            f_name = md.outputs.get("features")
            in_scope, scope_score, _ = self._scope.score(
                out[f_name][0] if f_name else None, cl[0] if cl is not None else None
            )
            if not in_scope:  # the EMA skips the frame
                raw_out = self._raw_probs_out_of_scope(out, cl)
                with self._state_lock:
                    index = self._frame_index
                    self._frame_index += 1
                return Result(
                    mask=np.zeros(frame_hw, np.uint8),
                    label=OUT_OF_SCOPE,
                    probs={},
                    lesions=[],
                    frame_index=index,
                    timestamp=None,
                    timings={},
                    roi=roi,
                    raw_probs=dict(zip(names, raw_out, strict=True)),
                    in_scope=False,
                    scope_score=scope_score,
                )
        nat = K._native()
        lg = np.ascontiguousarray(out[md.outputs["mask_logits"]][0, 0], dtype=np.float32)
        hm, wm = lg.shape
        sx, sy = roi[2] / wm, roi[3] / hm
        kept = np.empty_like(lg)
        try:
            # No grid borders (the outlines are traced on the frame mask below); `kept`: the
            # logits with the cells of components too small for a lesion at -inf, so the frame
            # mask holds the lesions only.
            prob, labels, stats, _ = nat.components_cpu(
                lg,
                self.threshold,
                sx,
                sy,
                max(float(md.min_lesion_area_px), md.min_lesion_area_frac * roi[2] * roi[3]),
                False,
                0.0,
                0.0,
                False,
                kept,
            )
        except InputError as e:
            raise ModelError(f"{self.path}: the model produced NaN / inf mask logits") from e
        mask = np.empty(frame_hw, np.uint8)
        nat.mask_post_cpu(kept, mask, roi, self.threshold, 1, 1)
        k = len(stats)
        # Each lesion's region of that mask (the pixels blended from its cells), its box, area
        # and outer borders in frame pixels: the filled outlines are the mask.
        boxes, areas, outlines = nat.lesion_outlines_cpu(mask, labels, k, roi)

        img = self._image_probs(cl) if cl is not None else None
        if md.outputs.get("features"):
            rows = self._pooled_rows(out, prob, labels, k)
            lesion_rows, per_lesion = rows[1:], True
            if img is None:
                img = rows[0]
        else:
            assert img is not None  # load() refuses a model with neither output
            lesion_rows, per_lesion = [img] * k, False

        # The label rule (sdk/result.py, Result): a lesion is never "normal" (its probabilities
        # renormalized over the other classes); the image is "normal" exactly when there is no
        # lesion, else it takes the most suspicious lesion's class and probabilities. The EMA
        # smooths that decision's probabilities; with lesions the smoothed ones are renormalized
        # over the lesion classes again. raw_probs: the model's own image-level output.
        raw = img
        nrm = names.index(NORMAL) if NORMAL in names else -1
        mal = names.index(MALIGNANT) if MALIGNANT in names else -1
        lesions = []
        for i in range(k):
            if not areas[i]:  # its cells left no pixel above the threshold at frame resolution
                continue
            pr = lesion_rows[i]
            p = _without(pr, nrm)
            x, y, w, h_ = boxes[i].tolist()
            area = float(areas[i])
            cs = outlines[i]
            lesions.append(
                Lesion(
                    id=len(lesions) + 1,
                    bbox=(x, y, w, h_),
                    area_px=area,
                    contour=cs[0],
                    label=names[p.index(max(p))],
                    probs=dict(zip(names, p, strict=True)),
                    per_lesion=per_lesion,
                    area_mm2=None if spacing is None else area * spacing[0] * spacing[1],
                    raw_probs=dict(zip(names, pr, strict=True)),
                    other_contours=cs[1:],
                )
            )
        if nrm < 0:  # no "normal" class: the image-level output as the model gives it
            q = raw
        elif not lesions:
            q = [0.0] * len(names)
            q[nrm] = 1.0
        else:  # the most suspicious lesion: highest malignant probability, else most confident
            top = max(
                lesions,
                key=lambda les: les.probs[MALIGNANT] if mal >= 0 else les.confidence,
            )
            q = list(top.probs.values())
        # The temporal state, under its lock: concurrent calls fold into the EMA and take frame
        # indices in the order they reach it (everything above is per call).
        with self._state_lock:
            if self.smoothing > 0 and self._ema is not None:
                s_ = self.smoothing
                self._ema = [s_ * e + (1 - s_) * r for e, r in zip(self._ema, q, strict=True)]
            else:
                self._ema = q
            ema = self._ema
            index = self._frame_index
            self._frame_index += 1
        if nrm >= 0:
            ema = _without(ema, nrm) if lesions else q
        res = Result(
            mask=mask,
            label=names[ema.index(max(ema))],
            probs=dict(zip(names, ema, strict=True)),
            lesions=lesions,
            frame_index=index,
            timestamp=None,
            timings={},
            roi=roi,
            raw_probs=dict(zip(names, raw, strict=True)),
            in_scope=in_scope,
            scope_score=scope_score,
        )
        return res


NORMAL, MALIGNANT = "normal", "malignant"


def _without(p: list[float], i: int) -> list[float]:
    """``p`` with entry ``i`` set to 0 and the rest renormalized (``p`` itself when ``i < 0``; an
    all-zero rest spreads evenly)."""
    if i < 0:
        return p
    rest = sum(p) - p[i]
    n = len(p) - 1
    out = [v / rest if rest > 0 else 1.0 / n for v in p]
    out[i] = 0.0
    return out


def _check_real(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    what: str = "",
    hi_open: bool = False,
) -> float:
    """A real number (not a bool, not a string), finite, in [lo, hi] (or [lo, hi)), as float;
    :class:`InputError` naming ``name`` otherwise."""
    if lo is None:
        rng = ""
    else:
        rng = f" in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
    need = f"{name} must be a finite number{rng}" + (f" ({what})" if what else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputError(f"{need}, got {type(value).__name__} {value!r}")
    f = float(value)
    if not math.isfinite(f) or (
        lo is not None and hi is not None and not (lo <= f < hi if hi_open else lo <= f <= hi)
    ):
        raise InputError(f"{need}, got {value!r}")
    return f


def _check_threads(threads: Any) -> int | None:
    """None, or an int in 1 .. MAX_THREADS_PER_CPU x the logical CPUs."""
    if threads is None:
        return None
    most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    if isinstance(threads, bool | np.bool_) or not isinstance(threads, int | np.integer):
        raise InputError(
            f"threads must be None or an integer in 1..{most} (the backend's CPU threads; "
            f"{os.cpu_count() or 1} logical CPUs here), got {type(threads).__name__} {threads!r}"
        )
    if not 1 <= int(threads) <= most:
        raise InputError(
            f"threads must be in 1..{most} ({MAX_THREADS_PER_CPU} x the {os.cpu_count() or 1} "
            f"logical CPUs; more only costs start-up time and memory), got {threads}; None "
            "lets the backend choose"
        )
    return int(threads)


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    if t != 1.0:  # the artifact's calibration temperature (sdk/scope.py)
        z = [v / t for v in z]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]
