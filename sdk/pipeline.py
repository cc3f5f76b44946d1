"""``sdk.pipeline.FramePipeline``: the frame path as three public stages, prepare → infer → finish.

docs/ARCHITECTURE.md, "The frame path": a :class:`StagedFrame` carries one frame through the
stages.

* :meth:`FramePipeline.prepare`: the frame as uint8 (:func:`to_uint8`), its ROI checked, and --
  on the host route -- the fused preprocess kernel writing straight into an input tensor.
* :meth:`FramePipeline.infer`: one backend call (:meth:`~sdk.backends.Backend.infer`, or on the
  device route :meth:`~sdk.backends.Backend.infer_frame` with the raw frame: preprocessing then
  runs on the device, inside that call).
* :meth:`FramePipeline.finish`: mask post-process at frame resolution, lesion components and
  outlines, mask-guided pooling + head, calibrated probabilities, the scope decision (first: an
  out-of-scope frame skips the mask and lesion work), the temporal state → :class:`Result`.

The pipeline is bound once, at construction, to the artifact's checked settings (the backend's
metadata, a :class:`sdk.kernels.PreprocessSpec`, the head, the scope, the temperature) and picks
its route from the backend's declared capabilities (``device_preprocess``, ``reentrant``,
``max_batch``). :class:`sdk.Analyzer` is a façade over it; ``Analyzer.run``, ``run_batch`` and
``stream`` compose these same stages.

Threading (the guarantees of :mod:`sdk.analyzer`): the reused input tensors are handed out, not
shared -- a call that finds one taken preprocesses into a tensor of its own instead of waiting;
backends that are not ``reentrant`` take one call at a time (a lock); the temporal state (the
smoothing EMA, the frame counter) is updated under its own lock, the only part of ``finish`` that
is, so with smoothing frames fold into the EMA in the order they reach it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk import kernels as K
from sdk._settings import check_bit_depth, check_real
from sdk.backends import Backend
from sdk.errors import InputError, ModelError, SDKError
from sdk.kernels import _validate as V
from sdk.result import Lesion, Result
from sdk.scope import OUT_OF_SCOPE, Scope
from sdk.sources._base import check_pixel_spacing

if TYPE_CHECKING:  # pragma: no cover
    from sdk.refiner import LesionRefiner

__all__ = ["AnalyzerClosedError", "FramePipeline", "StagedFrame", "to_uint8"]

NORMAL, MALIGNANT = "normal", "malignant"
_ONE = np.ones((1, 1), np.int32)  # one grid cell of label 1 (the refined lesions' outlines)


class AnalyzerClosedError(InputError):
    """The Analyzer was closed: ``run`` / ``run_batch`` / ``load`` / ``stream`` after ``close()``
    (or after its ``with`` block), or a stream whose Analyzer was closed under it."""

    @classmethod
    def of(cls, path: Path) -> AnalyzerClosedError:
        """The error for the Analyzer (or pipeline) of the artifact ``path``."""
        return cls(
            f"{path.name}: this Analyzer was closed (close(), or the end of its with-block); "
            "create a new sdk.Analyzer to analyze more frames"
        )


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
        and (bit_depth is None or check_bit_depth(bit_depth) is not None)
    ):
        return frame
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if isinstance(frame, np.ma.MaskedArray):
        raise InputError(
            "frame is a numpy.ma.MaskedArray: masked pixels have no value to analyze; pass "
            "frame.filled(0) (or np.asarray(frame) to use the data under the mask)"
        )
    bit_depth = check_bit_depth(bit_depth)
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


class _Input:
    """A reused input tensor lent to prepared frames, given back to its free list after their
    model call (``rows`` frames still to infer)."""

    __slots__ = ("buf", "free", "rows")

    def __init__(self, buf: np.ndarray, free: list[np.ndarray] | None, rows: int) -> None:
        self.buf, self.free, self.rows = buf, free, rows

    def done(self, n: int = 1) -> None:
        self.rows -= n
        if self.rows <= 0 and self.free is not None:  # given back once, never twice
            free, self.free = self.free, None
            if not free:  # one tensor kept per free list
                free.append(self.buf)


@dataclass(slots=True, eq=False)
class StagedFrame:
    """One frame on its way through :class:`FramePipeline`.

    ``image``: the frame as uint8 ``(H, W[, C])``; ``size``: its ``(H, W)``; ``roi``: the
    checked ``(x, y, w, h)``; ``color``: "bgr" / "rgb". ``tensor``: the preprocessed
    ``(1, C, h, w)`` input on the host route between prepare and infer (None on the device
    route, and after infer). ``outputs``: the model's outputs by name, set by infer (batch axis
    1). ``preprocess_ms`` / ``infer_ms``: each stage's own time (a batched frame's infer time is
    its share of the call).
    """

    image: np.ndarray | None
    size: tuple[int, int]
    roi: tuple[int, int, int, int]
    color: str = "bgr"
    tensor: np.ndarray | None = None
    outputs: dict[str, np.ndarray] | None = None
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    _input: _Input | None = field(default=None, repr=False)


class FramePipeline:
    """prepare → infer → finish over one loaded backend (module docstring).

    Args:
        backend: a :class:`~sdk.backends.Backend`; loaded here when it is not (with output
            checks on every inference: a ModelError, never a kernel's InputError).
        threshold: mask probability threshold in [0, 1] (None: the artifact's).
        smoothing: EMA factor in [0, 1) for image-level probabilities across frames.
        bit_depth: bit depth of integer frames wider than 8 bits (:func:`to_uint8`).
        pixel_spacing_mm: default (row, col) spacing for lesion areas in mm².
        refiner: a loaded :class:`sdk.refiner.LesionRefiner` run on every found lesion (its
            verdict, class and frame-resolution mask replace the frame model's), or None.

    Raises :class:`~sdk.errors.ModelError` for metadata the frame path cannot use.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        threshold: float | None = None,
        smoothing: float = 0.0,
        bit_depth: int | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        refiner: LesionRefiner | None = None,
    ) -> None:
        #: The second stage (:class:`sdk.refiner.LesionRefiner`; None: the frame model alone).
        self.refiner = refiner
        if threshold is not None:
            threshold = check_real(threshold, "threshold", 0.0, 1.0, "the mask probability cut")
        self.smoothing = check_real(smoothing, "smoothing", 0.0, 1.0, "0 = off, 0.6 typical", True)
        self.bit_depth = check_bit_depth(bit_depth)
        self.pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        self.backend = backend
        self.path = Path(backend.path)
        # Outputs checked against their roles at load (the backend) and on every inference:
        # present, rank, dims >= 1, the metadata's sizes, finite features.
        backend.check_outputs = True
        backend.load()
        md = backend.metadata
        if md is None:  # pragma: no cover - Backend.load guarantees it
            raise ModelError(f"{self.path}: the backend found no metadata")
        self.metadata = md
        self.class_names = md.class_names
        if refiner is not None and set(refiner.class_names) != set(md.class_names):
            raise ModelError(
                f"{self.path}: its classes {list(md.class_names)} are not the refiner's "
                f"{list(refiner.class_names)} ({refiner.path.name}); pass a refiner trained "
                "behind this model (export.refiner), or refiner=False"
            )
        self.threshold = md.mask_threshold if threshold is None else float(threshold)
        #: The lesion gate of the artifact (``Metadata.max_lesion_normal_prob``; 1.0: off).
        self.max_lesion_normal_prob = float(md.max_lesion_normal_prob)
        spec_in = backend.inputs[0]
        self.input_shape: tuple[int, int, int] = (len(md.channels), *md.input_size)
        self.input_dtype = np.dtype(spec_in.dtype)
        #: The artifact's preprocessing, checked once (sdk.kernels.PreprocessSpec).
        self.spec = K.preprocess_settings(
            md.input_size, md.channels, md.sigma, md.mean, md.std, spec_in.dtype
        )
        self._pre = (list(self.spec.kinds), list(self.spec.mean), list(self.spec.inv_std))
        if md.outputs.get("features") and md.head is None:
            raise ModelError(f"{self.path}: a features output needs head weights in the metadata")
        #: sdk/scope.py: the fitted out-of-scope model (None: every frame is in scope).
        self.scope = Scope.from_dict(md.scope, str(self.path)) if md.scope else None
        self.temperature = float((md.calibration or {}).get("temperature", 1.0))
        self._head = K.MLPHead(**md.head) if md.head is not None else None
        if self._head is not None and self.temperature != 1.0:
            # softmax(z / T) for every pooled row at no per-frame cost: the head's last layer
            # divided by T once here.
            h, t = self._head, np.float32(self.temperature)
            self._head = K.MLPHead(h.w1, h.b1, h.w2 / t, h.b2 / t)
        self._fixed_roi = md.roi_box if md.roi_policy == "fixed" else None
        #: The route, from the backend's declared capabilities: True = the raw frame goes to
        #: ``infer_frame`` and preprocessing runs on the device.
        self.device_route = backend.device_preprocess_available()
        self.max_batch = 1 if self.device_route else backend.max_batch
        self._free1 = [np.zeros((1, *self.input_shape), self.input_dtype)]
        self._freeb: list[np.ndarray] = []
        self._infer_lock = None if backend.reentrant else threading.Lock()
        self._state_lock = threading.Lock()  # the EMA and the frame counter
        self._ema: list[float] | None = None
        self._frame_index = 0
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend, after the model call in progress on non-reentrant backends; later
        calls raise :class:`AnalyzerClosedError`. Idempotent."""
        self._closed = True
        with self._infer_lock or contextlib.nullcontext():
            self.backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def reset(self) -> None:
        """Forget the temporal state (start of a new cine / patient)."""
        with self._state_lock:
            self._ema = None
            self._frame_index = 0

    # ---- the composed path -----------------------------------------------------------------------
    def run(
        self,
        frame: Any,
        *,
        roi: tuple[int, int, int, int] | None = None,
        timestamp: float | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        color: str = "bgr",
    ) -> Result:
        """prepare → infer → finish for one frame, every argument checked first (as
        :meth:`sdk.Analyzer.run`)."""
        V.check_color(color)
        if timestamp is not None:
            timestamp = check_real(timestamp, "timestamp", what="seconds")
        if pixel_spacing_mm is not None:
            pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        return self.finish(self.infer(self.prepare(frame, roi, color)), timestamp, pixel_spacing_mm)

    def run_batch(self, frames: Iterable[Any], color: str = "bgr") -> list[Result]:
        """prepare_batch → infer_batch → finish per ``max_batch`` frames, in order; raises the
        first bad frame's error (the frames before it have updated the temporal state)."""
        V.check_color(color)
        frames = list(frames)
        results: list[Result] = []
        step = self.max_batch
        for k in range(0, len(frames), step):
            for job in self.infer_batch(self.prepare_batch(frames[k : k + step], color)):
                if isinstance(job, SDKError):
                    raise job
                results.append(self.finish(job))
        return results

    # ---- stage 1: prepare ------------------------------------------------------------------------
    def _checked(
        self, frame: Any, roi: tuple[int, int, int, int] | None, color: str
    ) -> StagedFrame:
        f8 = to_uint8(frame, self.bit_depth)
        H, W = f8.shape[:2]
        if roi is None:
            roi = self._fixed_roi
        return StagedFrame(f8, (H, W), V.check_roi(roi, H, W), color)

    def _preprocess(self, job: StagedFrame, out: np.ndarray) -> None:
        """The CPU kernel with the settings checked at construction, minus its per-call argument
        checks (the frame and ROI were checked by ``_checked``; ~15 us a frame on the 2-core
        Xeon)."""
        f8, roi = job.image, job.roi
        assert f8 is not None
        if f8.ndim == 3 and f8.shape[2] == 1:
            f8 = f8[:, :, 0]
        interp = V.check_interp("auto", (roi[3], roi[2]), self.spec.size)
        kinds, mean, inv_std = self._pre
        K.native().preprocess_cpu(
            f8,
            roi,
            out,
            kinds,
            mean,
            inv_std,
            self.spec.sigma,
            V.INTERP_CODES[interp],
            V.COLOR_CODES[job.color],
            1,
        )

    def _take(self, n: int) -> _Input:
        """An (>= n, C, h, w) input tensor lent for ``n`` frames: the reused one of its size
        class when free, else -- another call holds it -- a fresh one (no waiting: the model
        call is the long part). Whichever comes back first is kept for the next call."""
        free = self._free1 if n == 1 else self._freeb
        try:
            buf = free.pop()
        except IndexError:
            buf = np.empty((n, *self.input_shape), self.input_dtype)
        else:
            if buf.shape[0] < n:
                buf = np.zeros((n, *self.input_shape), self.input_dtype)
        return _Input(buf, free, n)

    def prepare(
        self, frame: Any, roi: tuple[int, int, int, int] | None = None, color: str = "bgr"
    ) -> StagedFrame:
        """Stage 1: the frame as uint8 (:func:`to_uint8`), the ROI checked (None: the model's
        fixed ROI, else the whole frame), and on the host route the preprocess kernel into an
        input tensor lent to the frame until :meth:`infer`. :class:`InputError` for bad input."""
        t0 = time.perf_counter()
        V.check_color(color)
        job = self._checked(frame, roi, color)
        if not self.device_route:
            free = self._free1  # _take(1), inlined: the per-frame path
            try:
                buf = free.pop()
            except IndexError:
                buf = np.empty((1, *self.input_shape), self.input_dtype)
            lent = _Input(buf, free, 1)
            x = buf[:1]
            try:
                self._preprocess(job, x[0])
            except BaseException:
                lent.done()
                raise
            job.tensor, job._input = x, lent
        job.preprocess_ms = (time.perf_counter() - t0) * 1e3
        return job

    def prepare_batch(
        self, frames: Sequence[Any], color: str = "bgr"
    ) -> list[StagedFrame | SDKError]:
        """Stage 1 for up to :attr:`max_batch` frames (whole frames, the model's ROI), into one
        input tensor: a frame that fails its checks gets its error in its slot."""
        if len(frames) > self.max_batch:
            raise InputError(
                f"{len(frames)} frames for one model call; the backend takes at most "
                f"{self.max_batch}"
            )
        V.check_color(color)
        out: list[StagedFrame | SDKError] = []
        if self.device_route or len(frames) <= 1:
            for f in frames:
                try:
                    out.append(self.prepare(f, None, color))
                except SDKError as e:
                    out.append(e)
            return out
        lent = self._take(len(frames))
        buf, ok = lent.buf, 0
        for f in frames:
            t0 = time.perf_counter()
            try:
                job = self._checked(f, None, color)
                self._preprocess(job, buf[ok])
            except SDKError as e:
                out.append(e)
                continue
            job.tensor, job._input = buf[ok : ok + 1], lent
            job.preprocess_ms = (time.perf_counter() - t0) * 1e3
            ok += 1
            out.append(job)
        lent.done(len(frames) - ok)  # rows of frames that failed (all: the tensor goes back)
        return out

    # ---- stage 2: infer --------------------------------------------------------------------------
    def _call(self, x: Any, job: StagedFrame | None = None) -> dict[str, np.ndarray]:
        """The backend call (``infer``, or ``infer_frame`` with the frame on the device route),
        one at a time for non-reentrant backends; a call that fails because the pipeline was
        closed under it raises :class:`AnalyzerClosedError`."""
        lock = self._infer_lock
        try:
            if job is None:
                if lock is None:
                    return self.backend.infer(x)
                with lock:
                    return self.backend.infer(x)
            spec = replace(
                self.spec,
                roi=job.roi,
                color=job.color,
                interp=V.check_interp("auto", (job.roi[3], job.roi[2]), self.spec.size),
            )
            with lock or contextlib.nullcontext():
                return self.backend.infer_frame(x, spec)
        except Exception as e:
            if self._closed:
                raise AnalyzerClosedError.of(self.path) from e
            raise

    def infer(self, job: StagedFrame) -> StagedFrame:
        """Stage 2: one model call for a prepared frame; fills ``job.outputs`` and
        ``job.infer_ms`` and gives the lent input tensor back."""
        t1 = time.perf_counter()
        lent, job._input = job._input, None
        try:
            if self.device_route:
                job.outputs = self._call(job.image, job)
            elif job.tensor is None:
                raise InputError("this frame has no prepared input (inferred already?); prepare it")
            else:
                job.outputs = self._call(job.tensor)
        finally:
            job.tensor = None
            if lent is not None:
                lent.done()
        job.infer_ms = (time.perf_counter() - t1) * 1e3
        return job

    def infer_batch(self, jobs: list[StagedFrame | SDKError]) -> list[StagedFrame | SDKError]:
        """Stage 2 for the frames of :meth:`prepare_batch`: one model call (frame by frame on
        the device route and batch-1 backends); a failing call gives every frame its error, as
        does an output without a batch axis. ``infer_ms``: each frame's share of the call."""
        ok = [(i, j) for i, j in enumerate(jobs) if isinstance(j, StagedFrame)]
        res = list(jobs)
        if self.device_route or self.max_batch == 1 or len(ok) <= 1:
            for i, j in ok:
                try:
                    self.infer(j)
                except SDKError as e:
                    res[i] = e
            return res
        if any(j.tensor is None for _, j in ok):
            raise InputError("a frame has no prepared input (inferred already?); prepare it")
        lent = ok[0][1]._input
        same = lent is not None and all(j._input is lent for _, j in ok) and lent.rows == len(ok)
        t1 = time.perf_counter()
        try:
            # prepare_batch's frames are the first rows of one tensor; frames of several
            # prepare calls are stacked into one of their own.
            x = lent.buf[: len(ok)] if same else np.concatenate([j.tensor for _, j in ok])
            out = self._call(x)
        except SDKError as e:
            for i, _ in ok:
                res[i] = e
            return res
        finally:
            for _, j in ok:
                if j._input is not None:
                    j._input.done()
                j.tensor, j._input = None, None
        share = (time.perf_counter() - t1) * 1e3 / len(ok)
        for k, (i, j) in enumerate(ok):
            try:
                mine = {name: v[k : k + 1] for name, v in out.items()}
                if any(len(v) != 1 for v in mine.values()):
                    raise IndexError("an output has fewer rows than the batch")
            except (IndexError, TypeError) as e:  # an output without a batch axis
                res[i] = ModelError(
                    f"{self.path}: the model's outputs have no batch axis of {len(ok)} "
                    f"({type(e).__name__}: {e}); re-export the model"
                )
                continue
            j.outputs, j.infer_ms = mine, share
        return res

    # ---- stage 3: finish -------------------------------------------------------------------------
    def finish(
        self,
        job: StagedFrame,
        timestamp: float | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> Result:
        """Stage 3: the Result of an inferred frame, with ``timings`` (preprocess, infer,
        postprocess, total; ms) and ``timestamp``. ``pixel_spacing_mm`` None: the pipeline's.
        Both are taken as given (``Analyzer.run`` checks them, a stream's source makes them).
        Outputs the post-processing cannot read raise :class:`~sdk.errors.ModelError`."""
        if job.outputs is None:
            raise InputError("this frame has no model outputs yet: pass it through infer() first")
        spacing = self.pixel_spacing_mm if pixel_spacing_mm is None else pixel_spacing_mm
        t2 = time.perf_counter()
        try:
            res = self._postprocess(job.outputs, job.size, job.roi, spacing, job.image, job.color)
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
        pre_ms, infer_ms = job.preprocess_ms, job.infer_ms
        res.timestamp = timestamp
        res.timings = {
            "preprocess": pre_ms,
            "infer": infer_ms,
            "postprocess": post_ms,
            "total": pre_ms + infer_ms + post_ms,
        }
        return res

    def _raw_probs_out_of_scope(
        self, out: dict[str, np.ndarray], cl: np.ndarray | None
    ) -> list[float]:
        """The model's own image-level probabilities of a frame the scope refused (its class
        head, else the pooled image row), after the same finiteness checks as the full path."""
        lg = out[self.metadata.outputs["mask_logits"]][0, 0]
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
        return _softmax(z, self.temperature)

    def _pooled_rows(
        self, out: dict[str, np.ndarray], prob: np.ndarray, labels: np.ndarray, k: int
    ) -> list[list[float]]:
        """Mask-guided pooling + head (the compiled kernel): row 0 the image, rows 1..k the
        lesions; calibrated (the head carries 1 / T from construction)."""
        h = self._head
        assert h is not None  # construction refuses features without a head
        feats = np.ascontiguousarray(out[self.metadata.outputs["features"]][0], dtype=np.float32)
        _, _, probs = K.native().pool_classify_cpu(
            feats, prob, labels, k, 1e-6, h.w1, h.b1, h.w2, h.b2
        )
        return probs.tolist()

    def _refined(
        self,
        image: np.ndarray,
        color: str,
        roi: tuple[int, int, int, int],
        mask: np.ndarray,
        boxes: np.ndarray,
        areas: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, list[list[np.ndarray]], list[list[float]], int]:
        """The refiner's lesions in place of the frame model's (``mask`` rewritten in place):
        regions it calls normal are dropped; the kept ones take its class probabilities and its
        frame-resolution mask; kept masks that overlap are one lesion
        (:func:`sdk.refiner.merge_overlapping`). Returns boxes,
        areas, outlines, probability rows (the model's class order) and the lesion count."""
        from sdk.refiner import merge_overlapping

        ref = self.refiner
        assert ref is not None
        x0, y0, w0, h0 = roi
        gray = _gray(image, color)[y0 : y0 + h0, x0 : x0 + w0]
        live = [i for i in range(len(areas)) if areas[i]]
        found = ref.refine(
            gray, [(int(b[0]) - x0, int(b[1]) - y0, int(b[2]), int(b[3])) for b in boxes[live]]
        )
        lesions = merge_overlapping([r for r in found if r.keep and r.mask.any()])
        mask[:] = 0
        nat = K.native()
        out_boxes, out_areas, out_lines, out_rows = [], [], [], []
        for le in lesions:
            m = le.mask
            # Its outlines traced on its own mask, every pixel owned by it (a 1x1 label grid
            # spanning the box), so the filled outlines are exactly its pixels.
            b, a, lines = nat.lesion_outlines_cpu(m, _ONE, 1, (0, 0, m.shape[1], m.shape[0]))
            fx, fy = x0 + le.box[0], y0 + le.box[1]
            region = mask[fy : fy + m.shape[0], fx : fx + m.shape[1]]
            np.maximum(region, m, out=region)
            out_rows.append([le.probs.get(n, 0.0) for n in self.class_names])
            bb = b[0].tolist()
            out_boxes.append((bb[0] + fx, bb[1] + fy, bb[2], bb[3]))
            out_areas.append(int(a[0]))
            shift = np.array([fx, fy], np.int32)
            out_lines.append([c + shift for c in lines[0]])
        return (
            np.array(out_boxes, np.int64).reshape(-1, 4),
            np.array(out_areas, np.int64),
            out_lines,
            out_rows,
            len(out_boxes),
        )

    def _postprocess(
        self,
        out: dict[str, np.ndarray],
        frame_hw: tuple[int, int],
        roi: tuple[int, int, int, int],
        spacing: tuple[float, float] | None,
        image: np.ndarray | None = None,
        color: str = "bgr",
    ) -> Result:
        # The hot path calls the compiled kernels without sdk.kernels' argument checks: every
        # argument here is either checked already (the ROI and frame size in prepare, the output
        # names and head at construction) or made by the model / the previous kernel (dtype and
        # layout normalized below), and the bindings still refuse a wrong call. Measured on the
        # 2-core Xeon: the checks cost ~60 us of a ~400 us post-process.
        md = self.metadata
        names = self.class_names
        cl_name = md.outputs.get("class_logits")
        cl = out.get(cl_name) if cl_name else None
        in_scope, scope_score = True, None
        if self.scope is not None:  # sdk/scope.py; no diagnosis is claimed out of scope
            # First, from the outputs alone: an out-of-scope frame skips the mask and lesion
            # work below (its Result carries an empty mask and no lesions).
            f_name = md.outputs.get("features")
            in_scope, scope_score, _ = self.scope.score(
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
        nat = K.native()
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
        k = len(stats)
        img = self._image_probs(cl) if cl is not None else None
        if md.outputs.get("features"):
            rows = self._pooled_rows(out, prob, labels, k)
            lesion_rows, per_lesion = rows[1:], True
            if img is None:
                img = rows[0]
        else:
            assert img is not None  # load() refuses a model with neither output
            lesion_rows, per_lesion = [img] * k, False
        nrm = names.index(NORMAL) if NORMAL in names else -1
        if nrm >= 0 and self.max_lesion_normal_prob < 1.0:
            # The lesion gate (Metadata.max_lesion_normal_prob): a region its own mask-guided
            # class probabilities call normal tissue is not a lesion -- its cells leave the frame
            # mask (-inf logits, as components too small), so mask, outlines and lesions agree.
            # A model with image-level probabilities only gives every region the image's row:
            # the gate then clears the whole mask of a frame the classifier calls normal.
            for i in range(k):
                if lesion_rows[i][nrm] > self.max_lesion_normal_prob:
                    kept[labels == i + 1] = -np.inf
        mask = np.empty(frame_hw, np.uint8)
        nat.mask_post_cpu(kept, mask, roi, self.threshold, 1, 1)
        # Each lesion's region of that mask (the pixels blended from its cells), its box, area
        # and outer borders in frame pixels: the filled outlines are the mask.
        boxes, areas, outlines = nat.lesion_outlines_cpu(mask, labels, k, roi)
        if self.refiner is not None and k:
            # The second stage (sdk/refiner.py): each region looked at again at frame
            # resolution -- kept or dropped, its class and its region of the mask replaced.
            boxes, areas, outlines, lesion_rows, k = self._refined(
                image, color, roi, mask, boxes, areas
            )
            per_lesion = True

        # The label rule (sdk/result.py, Result): a lesion is never "normal" (its probabilities
        # renormalized over the other classes); the image is "normal" exactly when there is no
        # lesion, else it takes the most suspicious lesion's class and probabilities. The EMA
        # smooths that decision's probabilities; with lesions the smoothed ones are renormalized
        # over the lesion classes again. raw_probs: the model's own image-level output.
        raw = img
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
        return Result(
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


def _gray(image: np.ndarray, color: str) -> np.ndarray:
    """The 2-D uint8 gray frame of a (H, W[, 1|3|4]) uint8 image (BGR or RGB order)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    import cv2

    rgb = color == "rgb"
    if image.shape[2] == 4:
        code = cv2.COLOR_RGBA2GRAY if rgb else cv2.COLOR_BGRA2GRAY
    else:
        code = cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(np.ascontiguousarray(image), code)


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


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    if t != 1.0:  # the artifact's calibration temperature (sdk/scope.py)
        z = [v / t for v in z]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]
