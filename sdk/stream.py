"""Streaming: capture → prepare + infer → finish, three pipelined stages.

Capture (decoding a video / DICOM cine, camera reads) runs on its own thread; the
:class:`sdk.pipeline.FramePipeline`'s ``prepare`` and ``infer`` stages of frame n+1 run on a
second thread while the caller's thread runs ``finish`` of frame n (mask at frame resolution,
lesions, pooling, the temporal EMA, in frame order). Bounded queues
join the stages (back-pressure, no unbounded memory). Frames already waiting when the inference
stage is free go through one model call (``max_batch``, never waiting to fill a batch), so a
source that is ahead is caught up with batched calls. ``pipeline=False`` keeps preprocessing and
inference on the caller's thread too (two stages, one frame per call).

The contract (:class:`Stream`):

* Records come out in frame order, and every item the source yields is accounted for: analyzed
  (:class:`sdk.result.Result`), dropped to keep up (``drop="latest"``, a ``FrameRecord`` with
  status "dropped"), or failed -- a :class:`FrameRecord` with status "error" and the
  :mod:`sdk.errors` type in its text, for *any* per-frame failure (an item that is not an array,
  a bad dtype / shape / value, a bad ``pixel_spacing_mm``, model outputs that do not fit the
  metadata), the first item included; the stream goes on after it.
* The source itself failing (its iterator raises) or ending ends the stream: the error re-raised
  as :class:`sdk.errors.SourceError` after every earlier record.
* Closing the Analyzer under a running stream ends it with
  :class:`sdk.analyzer.AnalyzerClosedError` after the records already made (no silent reload).
* :meth:`Stream.close` may be called from any thread (also while another thread is inside
  ``next()``, which then ends with StopIteration) and returns within :data:`CLOSE_TIMEOUT_S`.
  A capture thread stuck inside the source past that bound is abandoned: a daemon thread that
  never delivers another frame and that closes the source and exits as soon as the source
  returns. Leaving a ``for`` loop, or dropping the last reference, closes the same way.
* Threads exist only while someone consumes: when nobody has called ``next()`` for
  :data:`PARK_AFTER_S`, the worker threads park (exit, keeping their frames and the source
  position) and the next ``next()`` restarts them. An iterator that is kept but no longer
  consumed holds no thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk.errors import InputError, SDKError, SourceError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from sdk.analyzer import Analyzer
    from sdk.result import Result

__all__ = ["CLOSE_TIMEOUT_S", "PARK_AFTER_S", "FrameRecord", "Stream", "stream"]

log = logging.getLogger("sdk.stream")

STAGE_QUEUE = 2  # frames between inference and post-processing (pipeline=True)
MAX_BATCH = 4  # default cap of the frames one model call takes in a pipelined stream
_POLL_S = 0.05  # bounded waits: a closed consumer never leaves the producer blocked for long
#: ``Stream.close()`` waits at most this long (seconds) for the stream's threads.
CLOSE_TIMEOUT_S = 1.0
#: Worker threads park (exit, to be restarted by the next ``next()``) after the consumer has
#: not called ``next()`` for this long (seconds).
PARK_AFTER_S = 2.0

_PUT, _STOP, _PARK = "put", "stop", "park"
_PARKED = object()  # what _Shared.get returns to a worker that should park


@dataclass(frozen=True)
class FrameRecord:
    """A frame that produced no Result: ``status`` is "dropped" or "error" (with ``error``)."""

    frame_index: int
    timestamp: float | None
    status: str
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_index": self.frame_index,
            "timestamp": self.timestamp,
            "status": self.status,
            "error": self.error,
        }


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Shared:
    """What the consumer, the worker threads and close() share -- never the Stream itself, so
    that a running thread does not keep an abandoned Stream alive."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()  # parking / restarting / closing decisions
        self.in_next = False
        self.last_pull = time.monotonic()
        self.threads: dict[str, threading.Thread] = {}
        self.targets: dict[str, Callable[[], None]] = {}
        self.parked: set[str] = set()
        self.src: Any = None
        self.src_closed = False
        self.deadline: float | None = None

    # ---- the consumer's side ---------------------------------------------------------------
    def enter(self) -> None:
        """A ``next()`` begins: no parking while it runs; parked workers are restarted."""
        with self.lock:
            self.in_next = True
            if self.parked and not self.stop.is_set():
                for name in ("capture", "infer"):  # upstream first
                    if name in self.parked:
                        self.parked.discard(name)
                        self._spawn(name)

    def leave(self) -> None:
        with self.lock:
            self.in_next = False
            self.last_pull = time.monotonic()

    def start(self, name: str, target: Callable[[], None]) -> None:
        with self.lock:
            if not self.stop.is_set():
                self.targets[name] = target
                self._spawn(name)

    def _spawn(self, name: str) -> None:
        t = threading.Thread(target=self.targets[name], name=f"sonoedge-{name}", daemon=True)
        self.threads[name] = t
        t.start()

    # ---- the workers' side -------------------------------------------------------------------
    def wants_park(self, name: str) -> bool:
        """True (and ``name`` marked parked) when the consumer has been away for PARK_AFTER_S;
        the worker then returns, leaving what it holds for the thread that restarts it."""
        if self.in_next or time.monotonic() - self.last_pull < PARK_AFTER_S:
            return False
        with self.lock:
            if self.stop.is_set() or self.in_next:
                return False
            if time.monotonic() - self.last_pull < PARK_AFTER_S:
                return False
            self.parked.add(name)
            return True

    def running(self, name: str) -> bool:
        """The worker is alive or parked (it will be restarted): its end marker may come."""
        t = self.threads.get(name)
        return name in self.parked or (t is not None and t.is_alive())

    def put(self, q: queue.Queue[Any], item: Any, name: str) -> str:
        """Put with back-pressure: _PUT, _STOP once ``stop`` is set, or _PARK."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return _PUT
            except queue.Full:
                if self.wants_park(name):
                    return _PARK
        return _STOP

    def get(self, q: queue.Queue[Any], name: str, producer: str) -> Any:
        """The next item; None after one poll interval; _PARKED for a worker that should park.
        A producer that ended without its end marker is a SourceError, not a wait without end --
        unless the stream was stopped: then the producer left on ``stop`` and the caller's loop
        ends (a close() from another thread raced a consumer waiting here)."""
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if self.stop.is_set():
                return None
            if not self.running(producer) and q.empty():
                raise SourceError(f"the {producer} thread ended without an end marker") from None
            if name != "consumer" and self.wants_park(name):
                return _PARKED
            return None

    # ---- closing -------------------------------------------------------------------------------
    def close_source(self) -> None:
        with self.lock:
            src, self.src = self.src, None
            if src is None or self.src_closed:
                return
            self.src_closed = True
        try:
            src.__exit__(None, None, None)
        except Exception as e:  # a close that fails must not hide the stream's own outcome
            log.warning("closing the stream's source failed: %s: %s", type(e).__name__, e)

    def shutdown(self, wait: bool = True) -> None:
        """Stop every stage; wait for the threads until CLOSE_TIMEOUT_S after the first call.
        The source is closed here when no capture thread is left to do it (never started,
        parked, ended), else by that thread once its read returns."""
        self.stop.set()
        with self.lock:
            if self.deadline is None:
                self.deadline = time.monotonic() + CLOSE_TIMEOUT_S
            threads = list(self.threads.values())
            self.parked.clear()
        me = threading.current_thread()
        if wait:
            for t in threads:
                if t is not me:
                    t.join(max(0.0, self.deadline - time.monotonic()))
        cap = self.threads.get("capture")
        if cap is None or not cap.is_alive():
            self.close_source()


class Stream(Iterator["Result | FrameRecord"]):
    """The iterator :func:`stream` returns (see the module docstring for its contract).

    ``close()`` works from any thread and returns within :data:`CLOSE_TIMEOUT_S`; afterwards
    ``next()`` raises StopIteration. Also a context manager (``with a.stream(src) as s:``).
    """

    def __init__(self, gen: Iterator[Result | FrameRecord], shared: _Shared) -> None:
        self._gen = gen
        self._shared = shared

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Result | FrameRecord:
        sh = self._shared
        if sh.stop.is_set():
            raise StopIteration
        sh.enter()
        try:
            return next(self._gen)
        finally:
            sh.leave()

    def close(self) -> None:
        """Stop the stream (from any thread); idempotent."""
        self._shared.shutdown()
        gen = self._gen
        if not getattr(gen, "gi_running", False):
            try:
                gen.close()  # type: ignore[attr-defined]
            except ValueError:  # started running in another thread meanwhile: it sees stop
                pass

    @property
    def closed(self) -> bool:
        return self._shared.stop.is_set()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _LenientFrames:
    """An in-memory iterable of frames, passed on unchecked: every item becomes a frame for the
    analyzer, so a bad one (None, a list, a wrong dtype) fails there as that frame's error
    record instead of ending the stream inside the source. Never closes the caller's iterable.
    """

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items

    def __enter__(self) -> _LenientFrames:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


class _ArrayFrames(_LenientFrames):
    """A non-uint8 array (one frame or a stack): :class:`sdk.sources.ArraySource`'s layout and
    colour rules, with the Analyzer's dtype rule (:func:`sdk.analyzer.to_uint8` and its
    ``bit_depth``) applied per frame -- the same rule a list of the same frames gets. A frame
    the rule refuses goes on unconverted and becomes its own error record."""

    def __init__(self, a: np.ndarray, bit_depth: int | None, color: str) -> None:
        if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4)):
            a = a[None]
        if a.ndim not in (3, 4) or a.shape[0] == 0:
            raise InputError(f"array source: expected 2-D to 4-D array of frames, got {a.shape}")
        super().__init__(())
        self.a, self.bit_depth, self.color = a, bit_depth, color

    def __iter__(self) -> Iterator[Any]:
        from sdk.pipeline import to_uint8
        from sdk.sources import Frame, convert_color

        md = {"source": "array", "path": f"<array {self.a.shape}>", "pixel_spacing_mm": None}
        for i in range(self.a.shape[0]):
            f = self.a[i]
            try:
                f = convert_color(to_uint8(f, self.bit_depth), self.color, "RGB")
            except InputError:
                pass  # the analyzer refuses it again, as that frame's error record
            yield Frame(f, i, None, md)


def _lenient(source: Any, bit_depth: int | None, color: str) -> _LenientFrames | None:
    """Wrap in-memory frames (lists / tuples / iterators / generators of arrays, non-uint8
    arrays); None for anything open_source should handle (paths, folders, lists of paths,
    cameras, videos, FrameSources, uint8 arrays). Nothing is read from the source here."""
    import numpy as np

    from sdk.sources import FrameSource

    if isinstance(source, np.ndarray):
        return None if source.dtype == np.uint8 else _ArrayFrames(source, bit_depth, color)
    if isinstance(source, FrameSource | str | bytes | bytearray | dict | int | np.integer):
        return None
    if not hasattr(source, "__iter__") or hasattr(source, "__fspath__"):
        return None
    if (
        isinstance(source, list | tuple)
        and source
        and all(isinstance(o, str | os.PathLike) for o in source)
    ):
        return None  # a list of image paths: open_source's image sequence
    return _LenientFrames(source)


def _frame_error(e: BaseException) -> SDKError:
    """A per-frame failure as an sdk.errors type (the stream reports it and goes on)."""
    if isinstance(e, SDKError):
        return e
    return SDKError(f"unexpected {type(e).__name__} while analyzing the frame: {e}")


def stream(
    analyzer: Analyzer,
    source: Any,
    drop: str = "none",
    queue_size: int = 4,
    color: str = "gray",
    max_frames: int | None = None,
    keep_frames: bool = False,
    pipeline: bool = True,
    max_batch: int = MAX_BATCH,
) -> Stream:
    """Analyze every frame of ``source`` (anything :func:`sdk.sources.open_source` accepts, or
    any iterable of frames); a :class:`Stream` of Result / FrameRecord (contract: module
    docstring).

    ``drop="none"``: back-pressure, every frame analyzed. ``drop="latest"``: when the analyzer
    falls behind, queued frames are dropped (oldest first) so the newest is analyzed next; each
    dropped frame is yielded as a ``FrameRecord(status="dropped")`` in its place.
    ``keep_frames``: attach each analyzed frame to its Result (``result.frame``) for overlays.
    ``pipeline``: run preprocessing + inference on their own thread, overlapped with the
    post-processing of the previous frame (default); ``Result.timings`` then hold each stage's
    own time for that frame, not the time it waited in a queue.
    ``max_batch``: with ``pipeline``, the inference stage takes the frames already waiting in
    the capture queue, up to this many (and the backend's ``max_batch``), into one model call.
    It never waits for a frame to fill a batch: a source slower than the analyzer runs batch 1
    at batch-1 latency, one that has fallen behind (a file, a burst) catches up with batched
    calls (measured on the 2-core Xeon: 0.9x the per-frame model time at batch 2-4). 1 turns
    it off, as does ``drop="latest"`` (the newest frame goes next, alone);
    ``Result.timings["infer"]`` of a batched frame is its share of the call.
    ``max_frames``: stop after this many frames (None: the whole source).

    Arrays, lists and iterators of frames follow the Analyzer's frame rules
    (:func:`sdk.analyzer.to_uint8`), whatever their container: ``np.stack(frames)`` and
    ``list(frames)`` are analyzed alike.

    Arguments are checked here (InputError); the model is loaded and the source opened on the
    first ``next()``.
    """
    from sdk.sources import COLOR_MODES

    if drop not in ("none", "latest"):
        raise InputError(f"drop must be 'none' or 'latest', got {drop!r}")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise InputError(f"queue_size must be an integer >= 1, got {queue_size!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0
    ):
        raise InputError(f"max_frames must be None or an integer >= 0, got {max_frames!r}")
    if color not in COLOR_MODES:
        raise InputError(f"color must be one of {COLOR_MODES}, got {color!r}")
    shared = _Shared()
    gen = _run(
        analyzer,
        source,
        shared,
        drop,
        queue_size,
        color,
        max_frames,
        keep_frames,
        pipeline,
        max_batch,
    )
    return Stream(gen, shared)


def _run(
    analyzer: Analyzer,
    source: Any,
    sh: _Shared,
    drop: str,
    queue_size: int,
    color: str,
    max_frames: int | None,
    keep_frames: bool,
    pipeline: bool,
    max_batch: int,
) -> Iterator[Result | FrameRecord]:
    """The consumer's side of a stream (runs inside ``Stream.__next__``)."""
    from sdk.pipeline import AnalyzerClosedError
    from sdk.sources import Frame, open_source

    try:
        # A model that cannot load fails here, before any thread starts; the stages below are
        # the bound pipeline's public ones, the same that Analyzer.run composes.
        pipe = analyzer.load().pipeline
        src = _lenient(source, analyzer.bit_depth, color) or open_source(source, color=color)
        sh.src = src
        q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        dropped: list[FrameRecord] = []  # guarded by lock; emitted in order by the consumer
        lock = threading.Lock()
        reader: list[Iterator[Any]] = []  # the source's iterator, made on the capture thread
        count = [0]
        held: list[Any] = []  # the item the capture thread holds (kept across a park)

        def read() -> Any:
            """The source's next item as a Frame (whatever it is), or an end marker."""
            if max_frames is not None and count[0] >= max_frames:
                return _End()
            try:
                if not reader:
                    reader.append(iter(src))
                item = next(reader[0])
            except StopIteration:
                return _End()
            except BaseException as e:  # the source failed: re-raised on the consumer side
                return _End(e)
            i = count[0]
            count[0] += 1
            return item if isinstance(item, Frame) else Frame(item, i, None, {})

        def put(item: Any) -> str:
            if drop != "latest" or isinstance(item, _End):
                return sh.put(q, item, "capture")
            while not sh.stop.is_set():
                if sh.wants_park("capture"):
                    return _PARK
                try:
                    q.put_nowait(item)
                    return _PUT
                except queue.Full:
                    # Taking the frame out and recording it as dropped is one step under the
                    # lock: the consumer must not see a newer frame before this drop record.
                    with lock:
                        try:
                            old = q.get_nowait()
                        except queue.Empty:
                            continue
                        if not isinstance(old, _End):
                            dropped.append(FrameRecord(old.index, old.timestamp, "dropped"))
                    if isinstance(old, _End):  # never drop the end marker
                        q.put(old)
            return _STOP

        def capture() -> None:
            while True:
                if not held:
                    held.append(read())
                r = put(held[0])
                if r == _PARK:
                    return  # the source stays open and `held` kept for the restarted thread
                item = held.pop()
                if r == _STOP or isinstance(item, _End):
                    break
            sh.close_source()

        color_arg = "rgb" if color == "rgb" else "bgr"
        sh.start("capture", capture)

        if pipeline:
            # drop="latest" wants the newest frame next, not a batch of the waiting (older) ones.
            batch_cap = 1 if drop == "latest" else max(1, min(max_batch, pipe.max_batch))
            q2: queue.Queue[Any] = queue.Queue(maxsize=STAGE_QUEUE)
            out: list[tuple[Any, Any]] = []  # (item, staged) in hand, kept across a park

            def infer_stage() -> None:
                while not sh.stop.is_set():
                    while out:
                        if sh.put(q2, out[0], "infer") != _PUT:
                            return  # parked (out kept) or stopped
                        if isinstance(out.pop(0)[0], _End):
                            return
                    try:
                        item = sh.get(q, "infer", "capture")
                    except SourceError as e:  # a dead capture thread
                        out.append((_End(e), None))
                        continue
                    if item is _PARKED:
                        return
                    if item is None:
                        continue
                    batch = [item]
                    while len(batch) < batch_cap and not isinstance(batch[-1], _End):
                        try:  # only what is already waiting: never wait to fill a batch
                            batch.append(q.get_nowait())
                        except queue.Empty:
                            break
                    end = batch.pop() if isinstance(batch[-1], _End) else None
                    if batch:
                        try:
                            staged = pipe.infer_batch(
                                pipe.prepare_batch([b.image for b in batch], color_arg)
                            )
                        except Exception as e:  # never the stream's end: each frame's record
                            staged = [_frame_error(e)] * len(batch)
                        out.extend(zip(batch, staged, strict=True))
                    if end is not None:
                        out.append((end, None))

            sh.start("infer", infer_stage)

            def next_entry() -> tuple[Any, Any] | None:
                return sh.get(q2, "consumer", "infer")

        else:

            def next_entry() -> tuple[Any, Any] | None:
                item = sh.get(q, "consumer", "capture")
                return None if item is None else (item, None)

        while not sh.stop.is_set():
            entry = next_entry()
            if entry is None:
                continue
            item, staged = entry
            with lock:
                pending = [
                    d for d in dropped if isinstance(item, _End) or d.frame_index < item.index
                ]
                for d in pending:
                    dropped.remove(d)
            yield from sorted(pending, key=lambda d: d.frame_index)
            if isinstance(item, _End):
                if item.error is not None:
                    err = item.error
                    if isinstance(err, SourceError):
                        raise err
                    raise SourceError(f"the source failed: {type(err).__name__}: {err}") from err
                return
            try:
                if staged is None:
                    staged = pipe.infer(pipe.prepare(item.image, None, color_arg))
                if isinstance(staged, BaseException):
                    raise staged
                res = pipe.finish(staged, item.timestamp, item.pixel_spacing_mm)
            except AnalyzerClosedError:
                raise  # the model is gone: the stream ends here, not with a record per frame
            except Exception as e:
                err = _frame_error(e)
                yield FrameRecord(
                    item.index, item.timestamp, "error", f"{type(err).__name__}: {err}"
                )
                continue
            res.frame_index = item.index
            if keep_frames:
                res.frame = item.image
            yield res
    finally:
        sh.shutdown()
