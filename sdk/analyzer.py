"""``sdk.Analyzer``: one frame in, mask + label + lesions out -- a façade over
:class:`sdk.pipeline.FramePipeline` (prepare → infer → finish; docs/ARCHITECTURE.md, "The frame
path").

The Analyzer checks its arguments, picks the backend and, on :meth:`Analyzer.load`, binds a
FramePipeline to the artifact; ``run``, ``run_batch`` and ``stream`` compose its public stages.

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

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdk import _settings as S
from sdk._settings import (
    DEFAULT_MODEL_DIR,
    MAX_THREADS_PER_CPU,
    PipelineSetting,
    default_model,
    default_refiner,
)
from sdk.artifact import Metadata
from sdk.backends import Backend, choose_backend
from sdk.errors import InputError
from sdk.pipeline import AnalyzerClosedError, FramePipeline, to_uint8
from sdk.refiner import LesionRefiner
from sdk.result import Result
from sdk.sources._base import check_pixel_spacing
from sdk.stream import MAX_BATCH

if TYPE_CHECKING:  # pragma: no cover
    from sdk.stream import FrameRecord

__all__ = ["DEFAULT_MODEL_DIR", "MAX_THREADS_PER_CPU", "Analyzer", "AnalyzerClosedError"]
__all__ += ["default_model", "default_refiner", "to_uint8"]

#: Model strings that name a `sonoedge serve` endpoint instead of a file (sdk/remote.py).
REMOTE_SCHEMES = ("grpc://", "http://", "https://")


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
        spin: backend threads busy-wait within a model call, never between calls (ONNX Runtime:
            ~0.8× the latency); False where other busy processes fill the cores (2× slower there).
        bit_depth: bit depth of integer frames wider than 8 bits (see :func:`to_uint8`).
        pixel_spacing_mm: (row, col) spacing for lesion areas in mm² (per call overrides), two
            finite numbers in ``sdk.sources.SPACING_RANGE_MM``.
        refiner: the second stage (:mod:`sdk.refiner`) run on every lesion found: None -- the
            embedded one (:func:`default_refiner`) with the embedded default model (``path``
            None), none with a model given by path; True -- the embedded one; a path -- that
            refiner; False -- none.

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

    # Read by the pipeline on every call: assigning one after load reaches it (sdk/_settings.py).
    smoothing = PipelineSetting()
    bit_depth = PipelineSetting()
    pixel_spacing_mm = PipelineSetting()

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
        spin: bool = True,
        refiner: str | Path | bool | None = None,
    ) -> None:
        if path is not None and not isinstance(path, str | os.PathLike):
            raise InputError(
                f"path must be a str or pathlib.Path of a .onnx / .plan artifact, or None for "
                f"the embedded default model (sdk.default_model()); got {type(path).__name__}"
            )
        S.check_backend_args(backend, device, spin)
        if threshold is not None:
            threshold = S.check_real(threshold, "threshold", 0.0, 1.0, "the mask probability cut")
        smoothing = S.check_real(smoothing, "smoothing", 0.0, 1.0, "0 = off, 0.6 typical", True)
        threads = S.check_threads(threads)
        self.path = default_model() if path is None else Path(path)
        self._threshold = threshold
        self.smoothing = smoothing
        self.threads = threads
        self.bit_depth = S.check_bit_depth(bit_depth)
        self.pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        self._backend: Backend = choose_backend(self.path, backend)(self.path, device, threads)
        self._backend.spin = bool(spin)
        self.refiner_path = S.check_refiner(refiner, path)  # None: the frame model alone
        self._pipeline: FramePipeline | None = None  # bound by load()
        self._ready = False  # load() finished: the pipeline is bound
        self._closed = False
        self._load_lock = threading.Lock()  # load / close

    # ---- lifecycle -----------------------------------------------------------------------------
    def load(self) -> Analyzer:
        """Load the model and bind the frame pipeline to it (run / run_batch / stream call it on
        first use). Thread-safe: one thread loads, concurrent callers wait for it. Raises
        :class:`AnalyzerClosedError` after :meth:`close`."""
        if self._ready:
            return self
        with self._load_lock:
            if self._closed:
                raise AnalyzerClosedError.of(self.path)
            if not self._ready:
                self._pipeline = FramePipeline(
                    self._backend,
                    threshold=self._threshold,
                    smoothing=self.smoothing,
                    bit_depth=self.bit_depth,
                    pixel_spacing_mm=self.pixel_spacing_mm,
                    refiner=self._refiner(),
                )
                self._ready = True
        return self

    def _refiner(self) -> LesionRefiner | None:
        p = self.refiner_path
        return p and LesionRefiner(p, self.threads, self._backend.spin)

    @property
    def pipeline(self) -> FramePipeline:
        """The bound :class:`~sdk.pipeline.FramePipeline` (loads the model on first use; after
        :meth:`close`, the closed one: its calls raise :class:`AnalyzerClosedError`)."""
        return self._pipeline or self.load()._pipeline  # type: ignore[return-value]

    @property
    def backend(self) -> Backend:
        """The :class:`~sdk.backends.Backend` running the model (loaded by :meth:`load`)."""
        return self._backend

    @property
    def metadata(self) -> Metadata:
        """The artifact's metadata; ``class_names``, and ``threshold`` (the constructor's, else
        the artifact's; assignable), as the pipeline has them. Loads the model on first use."""
        return self.pipeline.metadata

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.pipeline.class_names

    @property
    def threshold(self) -> float:
        return self.pipeline.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.pipeline.threshold = value

    def close(self) -> None:
        """Release the model. Final: ``run`` / ``run_batch`` / ``load`` / ``stream`` afterwards
        raise :class:`AnalyzerClosedError`, and a stream still running ends with it (no silent
        reload: closing is how one thread tells the others that this model is gone). Calls
        already inside the model finish first (ONNX Runtime keeps its session alive for them;
        other backends are closed after their current call). Idempotent."""
        with self._load_lock:
            self._closed = True
            self._ready = False
            (self._pipeline or self._backend).close()  # the pipeline closes its backend

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __enter__(self) -> Analyzer:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the temporal state (start of a new cine / patient)."""
        if self._pipeline is not None:
            self._pipeline.reset()

    # ---- the frame path: the pipeline's stages -------------------------------------------------
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
        return self._pipeline.run(  # type: ignore[union-attr]
            frame, roi=roi, timestamp=timestamp, pixel_spacing_mm=pixel_spacing_mm, color=color
        )

    def run_batch(self, frames: Iterable[np.ndarray], color: str = "bgr") -> list[Result]:
        """Analyze frames in order, up to the backend's ``max_batch`` per model call (one call
        per frame on batch-1 backends); smoothing applies across them. Raises the first bad
        frame's error (the frames before it have updated the temporal state, as with ``run``).
        """
        if not self._ready:
            self.load()
        return self._pipeline.run_batch(frames, color)  # type: ignore[union-attr]

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
