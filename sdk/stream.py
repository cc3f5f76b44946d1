"""Streaming: capture → preprocess + inference → post-processing, three pipelined stages.

Capture (decoding a video / DICOM cine, camera reads) runs on its own thread; preprocessing and
inference of frame n+1 run on a second thread while the caller's thread post-processes frame n
(mask at frame resolution, lesions, pooling, the temporal EMA, in frame order). Bounded queues
join the stages (back-pressure, no unbounded memory). Frames already waiting when the inference
stage is free go through one model call (``max_batch``, never waiting to fill a batch), so a
source that is ahead is caught up with batched calls. ``pipeline=False`` keeps preprocessing and
inference on the caller's thread too (two stages, one frame per call). Records come out in frame
order. Every frame is accounted for: analyzed (:class:`sdk.result.Result`), dropped to keep up
(``drop="latest"``), or failed (a bad frame) -- the last two as :class:`FrameRecord`; the stream
goes on after a bad frame. A source error or the end of the source ends the iterator (the
error re-raised as :class:`sdk.errors.SourceError` after every earlier record). Closing the
iterator stops the capture thread within a bounded wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk.errors import InputError, SDKError, SourceError

if TYPE_CHECKING:  # pragma: no cover
    from sdk.analyzer import Analyzer
    from sdk.result import Result

__all__ = ["FrameRecord", "stream"]

STAGE_QUEUE = 2  # frames between inference and post-processing (pipeline=True)
MAX_BATCH = 4  # default cap of the frames one model call takes in a pipelined stream
_POLL_S = 0.05  # bounded waits: a closed consumer never leaves the producer blocked for long


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


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put with back-pressure, giving up (False) once ``stop`` is set: never blocked for good."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], producer: threading.Thread, what: str) -> Any:
    """The next item, or None after one poll interval; a producer that died without its end
    marker is a :class:`SourceError` instead of a wait without end."""
    try:
        return q.get(timeout=_POLL_S)
    except queue.Empty:
        if not producer.is_alive() and q.empty():
            raise SourceError(f"the {what} thread ended without an end marker") from None
        return None


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _LenientFrames:
    """Arrays from an iterable, passed on unchecked: a bad frame then fails in the analyzer and
    becomes an error record, instead of ending the stream inside the source."""

    def __init__(self, items: Iterator[Any], fps: float | None = None) -> None:
        self.items = items

    def __enter__(self) -> _LenientFrames:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        from sdk.sources import Frame

        for i, item in enumerate(self.items):
            yield item if isinstance(item, Frame) else Frame(item, i, None, {})


def _lenient(source: Any) -> _LenientFrames | None:
    """Wrap in-memory iterables of frames (lists of arrays, generators); None for anything
    open_source should handle (paths, folders, cameras, videos, a single array)."""
    import itertools

    import numpy as np

    from sdk.sources import Frame, FrameSource

    if isinstance(source, FrameSource | np.ndarray | str | bytes | int) or not hasattr(
        source, "__iter__"
    ):
        return None
    if hasattr(source, "__fspath__"):
        return None
    it = iter(source)
    try:
        first = next(it)
    except StopIteration:
        return _LenientFrames(iter(()))
    except Exception as e:  # the source failed on its first frame: a SourceError, as later ones
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"the source failed: {type(e).__name__}: {e}") from e
    rest = itertools.chain([first], it)
    if isinstance(first, np.ndarray | Frame):
        return _LenientFrames(rest)
    if isinstance(source, list | tuple):
        return None  # e.g. a list of image paths: open_source's image sequence
    raise InputError(
        f"stream: an iterable source must yield numpy arrays or sdk.sources.Frame, got "
        f"{type(first).__name__}"
    )


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
) -> Iterator[Result | FrameRecord]:
    """Analyze every frame of ``source`` (anything :func:`sdk.sources.open_source` accepts).

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
    """
    from sdk.sources import open_source

    if drop not in ("none", "latest"):
        raise InputError(f"drop must be 'none' or 'latest', got {drop!r}")
    if not isinstance(queue_size, int) or queue_size < 1:
        raise InputError(f"queue_size must be an integer >= 1, got {queue_size!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    analyzer.load()  # a model that cannot load fails here, before any thread starts
    src = _lenient(source) or open_source(source, color=color)
    q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    dropped: list[FrameRecord] = []  # guarded by lock; emitted in order by the consumer
    lock = threading.Lock()

    def put(item: Any) -> bool:
        while not stop.is_set():
            if drop == "latest" and not isinstance(item, _End):
                try:
                    q.put_nowait(item)
                    return True
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
                    continue
            return _put(q, item, stop)
        return False

    def capture() -> None:
        try:
            with src:
                for n, frame in enumerate(src):
                    if max_frames is not None and n >= max_frames:
                        break
                    if not put(frame):
                        return
            put(_End())
        except BaseException as e:  # re-raised on the consumer side
            put(_End(e))

    t = threading.Thread(target=capture, name="sonoedge-capture", daemon=True)
    t.start()
    threads = [t]
    color_arg = "rgb" if color == "rgb" else "bgr"

    def front(item: Any) -> Any:
        """Stage 2 for one frame: the staged outputs, or the SDKError it raised."""
        try:
            return analyzer._front(item.image, None, color_arg)
        except SDKError as e:
            return e

    if pipeline:
        # drop="latest" wants the newest frame next, not a batch of the waiting (older) ones.
        batch_cap = 1 if drop == "latest" else max(1, min(max_batch, analyzer._backend.max_batch))
        q2: queue.Queue[Any] = queue.Queue(maxsize=STAGE_QUEUE)

        def infer_stage() -> None:
            try:
                while not stop.is_set():
                    item = _get(q, t, "capture")
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
                        staged = analyzer._front_batch([b.image for b in batch], color_arg)
                        for b, st in zip(batch, staged, strict=True):
                            if not _put(q2, (b, st), stop):
                                return
                    if end is not None:
                        _put(q2, (end, None), stop)
                        return
            except BaseException as e:  # an unexpected failure (or a dead capture thread)
                _put(q2, (_End(e), None), stop)  # ends the stream, not silently

        t2 = threading.Thread(target=infer_stage, name="sonoedge-infer", daemon=True)
        t2.start()
        threads.append(t2)

        def next_entry() -> tuple[Any, Any] | None:
            return _get(q2, t2, "inference")

    else:

        def next_entry() -> tuple[Any, Any] | None:
            item = _get(q, t, "capture")
            return None if item is None else (item, None)

    try:
        while True:
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
                    staged = front(item)
                if isinstance(staged, SDKError):
                    raise staged
                res = analyzer._back(staged, item.timestamp, item.pixel_spacing_mm)
                res.frame_index = item.index
                if keep_frames:
                    res.frame = item.image
                yield res
            except SDKError as e:
                yield FrameRecord(item.index, item.timestamp, "error", f"{type(e).__name__}: {e}")
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=2.0)
