"""Faults in ``Analyzer.stream`` (issue #7, item 5), beyond tests/sdk/test_stream.py.

Sources that stall inside ``next()``, change frame size mid-stream, or fail mid-stream or on
their very first frame; consumers slower than the source with ``drop="none"`` and
``drop="latest"``; a producer descheduled between taking a frame out and recording the drop.

``stream()`` has no stall timeout: a consumer blocked in ``next()`` waits for as long as its
source does. What is bounded is getting out: ``close()`` (or leaving a ``for`` loop) after any
record returns within the capture thread's join timeout (2 s) even when the source never
returns, and the capture thread ends, closing its source, as soon as the source does.

Every wait here is bounded by a thread + ``join(timeout)`` (no pytest-timeout): a deadlock fails
the test instead of hanging CI.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import sdk
from sdk import synthetic
from sdk.errors import SourceError
from sdk.result import Result
from sdk.sources import Frame, FrameSource
from sdk.stream import FrameRecord

STALL_MAX_S = 30.0  # a stalled test source gives up after this, so no thread outlives the run
CLOSE_BOUND_S = 3.5  # stream's own join timeout is 2 s


def bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """``fn()`` on a daemon thread; fail (instead of hanging) if it is not back in ``timeout``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised on the test's thread
            box["error"] = e

    t = threading.Thread(target=target, name="test-bounded-call", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} did not return within {timeout} s (deadlock?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def capture_threads_alive() -> bool:
    return any(t.name == "sonoedge-capture" and t.is_alive() for t in threading.enumerate())


class StallingSource(FrameSource):
    """Yields ``frames``, but blocks inside ``next()`` before frame ``stall_at`` until
    ``release`` is set (a frozen camera / network stream)."""

    kind = "stalling"

    def __init__(self, frames: list[np.ndarray], stall_at: int) -> None:
        super().__init__("keep")
        self.frames = frames
        self.stall_at = stall_at
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.yielded = 0

    def _frames(self) -> Iterator[Frame]:
        for i, f in enumerate(self.frames):
            if i == self.stall_at:
                self.stalled.set()
                self.release.wait(STALL_MAX_S)
            self.yielded += 1
            yield Frame(f, i, i / 30.0, self.metadata)

    def close(self) -> None:
        self.closed.set()
        super().close()


@pytest.fixture(scope="module")
def cine() -> list[np.ndarray]:
    return [f for f, _, _ in synthetic.cine(8, "benign", size=(96, 128), seed=4)]


@pytest.fixture
def analyzer(tiny_onnx):
    with sdk.Analyzer(tiny_onnx, threads=1) as a:
        yield a
    # No test may leave a capture thread behind.
    assert wait_until(lambda: not capture_threads_alive(), 5.0), "a capture thread leaked"


def _accounting(recs: list[Any], n: int) -> None:
    """Every frame 0..n-1 exactly once, in order, as a Result or a FrameRecord."""
    assert [r.frame_index for r in recs] == list(range(n))
    assert all(isinstance(r, Result | FrameRecord) for r in recs)


# ---- a source that stalls inside next() ------------------------------------------------------


@pytest.mark.parametrize("drop", ["none", "latest"])
@pytest.mark.parametrize("how", ["close", "break"])
def test_getting_out_of_a_stalled_stream_is_bounded(analyzer, cine, drop: str, how: str) -> None:
    """With the source blocked inside next() for good, close() -- or breaking out of a for
    loop -- returns within the bounded join, yields nothing more, and the capture thread ends
    and closes the source as soon as the source returns (reading at most one more frame)."""
    src = StallingSource(cine, stall_at=3)
    try:
        if how == "close":
            it = analyzer.stream(src, drop=drop)
            got = [bounded(lambda: next(it), 10, "next() before the stall") for _ in range(3)]
            assert src.stalled.wait(5)
            t0 = time.perf_counter()
            bounded(it.close, 10, "close() on a stalled source")
            elapsed = time.perf_counter() - t0
            with pytest.raises(StopIteration):
                next(it)
        else:
            t_stall: list[float] = []

            def consume() -> list[Any]:
                out = []
                for r in analyzer.stream(src, drop=drop):
                    out.append(r)
                    if len(out) == 3:
                        assert src.stalled.wait(5)
                        t_stall.append(time.perf_counter())
                        break  # the generator is finalized right here (refcount)
                return out

            got = bounded(consume, 10, "breaking out of a stalled stream")
            elapsed = time.perf_counter() - t_stall[0]
        assert elapsed < CLOSE_BOUND_S, f"getting out took {elapsed:.2f} s"
        _accounting(got, 3)
        assert not src.closed.is_set()  # still stuck in next(): nothing may touch it yet
    finally:
        src.release.set()
    assert src.closed.wait(5), "the capture thread did not close the source after the stall"
    assert wait_until(lambda: not capture_threads_alive(), 5)
    assert src.yielded <= 4


def test_a_stall_that_ends_loses_nothing(analyzer, cine) -> None:
    """A source that freezes for a while and then recovers: the consumer just waits; every
    frame is analyzed, in order, and the stream ends normally (no spurious source error)."""
    src = StallingSource(cine, stall_at=2)
    timer = threading.Timer(0.4, src.release.set)
    timer.start()
    try:
        recs = bounded(lambda: list(analyzer.stream(src)), 20, "a stream over a 0.4 s stall")
    finally:
        timer.cancel()
        src.release.set()
    _accounting(recs, len(cine))
    assert all(isinstance(r, Result) for r in recs)
    assert src.closed.is_set()


# ---- a source that changes frame size -------------------------------------------------------


def _mixed_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    shapes = [(96, 128), (64, 64), (200, 90), (1, 1), (96, 128, 3), (33, 517), (5, 1), (96, 128)]
    frames = []
    for s in shapes:
        f = rng.integers(120, 220, size=s, dtype=np.uint8)
        if min(s[:2]) > 20:  # a dark blob, so some frames have lesions
            f[s[0] // 4 : s[0] // 2, s[1] // 4 : s[1] // 2] = 10
        frames.append(f)
    return frames


@pytest.mark.parametrize("drop", ["none", "latest"])
def test_frame_size_changes_mid_stream(analyzer, drop: str) -> None:
    """Frames whose size and channel count change from one frame to the next: nothing lost,
    and each Result is that frame's own analysis (mask at its own H x W, identical to
    analyzing the frame alone), even when frames are dropped around it."""
    frames = _mixed_frames() * 3
    recs = []

    def consume() -> None:
        for r in analyzer.stream(iter(frames), drop=drop, queue_size=1, keep_frames=True):
            recs.append(r)
            if drop == "latest":
                time.sleep(0.005)

    bounded(consume, 30, "a stream of changing frame sizes")
    _accounting(recs, len(frames))
    results = [r for r in recs if isinstance(r, Result)]
    assert results and (drop == "latest" or len(results) == len(frames))
    for r in results:
        f = frames[r.frame_index]
        assert r.frame is f
        assert r.mask.shape == f.shape[:2]
        alone = analyzer.run(f)
        np.testing.assert_array_equal(r.mask, alone.mask, err_msg=f"frame {r.frame_index}")
        assert r.probs == pytest.approx(alone.probs, abs=1e-6)


# ---- a source that fails ----------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["none", "latest"])
def test_source_failing_mid_stream_with_slow_consumer(analyzer, cine, drop: str) -> None:
    """A source that raises after N frames while the consumer lags: every one of the N frames
    is accounted for (analyzed, or dropped with drop="latest") in order, then the failure
    surfaces as a SourceError that names it and chains the original exception."""
    n = 3 * len(cine)

    def gen() -> Iterator[np.ndarray]:
        for i in range(n):
            yield cine[i % len(cine)]
        raise OSError("USB capture card unplugged")

    recs: list[Any] = []

    def consume() -> None:
        for r in analyzer.stream(gen(), drop=drop, queue_size=2):
            recs.append(r)
            time.sleep(0.01)

    with pytest.raises(SourceError, match="USB capture card unplugged") as ei:
        bounded(consume, 30, "a failing stream")
    assert isinstance(ei.value.__cause__, OSError)
    _accounting(recs, n)
    if drop == "none":
        assert all(isinstance(r, Result) for r in recs)
    else:
        assert any(isinstance(r, FrameRecord) and r.status == "dropped" for r in recs)
        assert isinstance(recs[-1], Result), "the newest frame before the failure is analyzed"


@pytest.mark.parametrize("drop", ["none", "latest"])
@pytest.mark.parametrize(
    "exc",
    [OSError("no such device"), SourceError("no such device"), RuntimeError("no such device")],
)
def test_source_failing_on_its_first_frame(analyzer, drop: str, exc: Exception) -> None:
    """A source whose very first next() raises: SourceError (the same object when it already
    is one), exactly as a failure on any later frame -- never the raw exception."""

    def gen() -> Iterator[np.ndarray]:
        raise exc
        yield np.zeros((8, 8), np.uint8)  # pragma: no cover - makes this a generator

    with pytest.raises(SourceError, match="no such device") as ei:
        bounded(lambda: list(analyzer.stream(gen(), drop=drop)), 10, "a stream failing at once")
    if isinstance(exc, SourceError):
        assert ei.value is exc
    else:
        assert ei.value.__cause__ is exc


def test_frame_source_failing_mid_stream(analyzer, cine) -> None:
    """A FrameSource whose reader raises SourceError on frame 4 (a truncated file): frames
    0..3 come out, then that very error; the source is closed."""

    class Truncated(FrameSource):
        kind = "truncated"

        def __init__(self) -> None:
            super().__init__("keep")
            self.closed = False

        def _frames(self) -> Iterator[Frame]:
            for i, f in enumerate(cine):
                if i == 4:
                    raise SourceError("cine.dcm: frame 4 missing (file truncated?)")
                yield Frame(f, i, None, self.metadata)

        def close(self) -> None:
            self.closed = True
            super().close()

    src = Truncated()
    recs: list[Any] = []

    def consume() -> None:
        for r in analyzer.stream(src, drop="latest"):
            recs.append(r)

    with pytest.raises(SourceError, match="frame 4 missing"):
        bounded(consume, 10, "a truncated source")
    _accounting(recs, 4)
    assert src.closed


# ---- slow consumers ---------------------------------------------------------------------------


def test_slow_consumer_drop_none_back_pressure(analyzer, cine) -> None:
    """drop="none" with a consumer slower than the source: every frame analyzed exactly once
    in order, and the source is throttled -- it is never more than the queues (capture queue,
    the inference stage's queue, the frames in the two threads' hands) ahead of the consumer."""
    n, queue_size = 30, 2
    pulled = [0]

    def gen() -> Iterator[np.ndarray]:
        for i in range(n):
            pulled[0] += 1
            yield cine[i % len(cine)]

    recs: list[Any] = []
    lead: list[int] = []

    def consume() -> None:
        for r in analyzer.stream(gen(), drop="none", queue_size=queue_size):
            recs.append(r)
            lead.append(pulled[0] - len(recs))
            time.sleep(0.004)

    bounded(consume, 30, "a slow drop='none' stream")
    _accounting(recs, n)
    assert all(isinstance(r, Result) for r in recs)
    from sdk.stream import MAX_BATCH, STAGE_QUEUE

    # capture queue + the frame capture holds + the one the generator is producing + the stage
    # queue + the batch the inference stage holds
    bound = queue_size + 2 + STAGE_QUEUE + MAX_BATCH
    assert max(lead) <= bound, f"the source ran {max(lead)} frames ahead (bound {bound})"


def test_slow_consumer_drop_latest_accounts_for_every_frame(analyzer) -> None:
    """drop="latest" with a consumer much slower than the source: each frame is reported once,
    in order, as analyzed or dropped; frames are really dropped; the newest frame is analyzed;
    and each Result belongs to its own frame (every frame has a distinct width)."""
    n = 60
    frames = [np.full((48, 40 + i), 128, np.uint8) for i in range(n)]
    recs: list[Any] = []

    def consume() -> None:
        for r in analyzer.stream(iter(frames), drop="latest", queue_size=2):
            recs.append(r)
            time.sleep(0.015)

    bounded(consume, 30, "a slow drop='latest' stream")
    _accounting(recs, n)
    dropped = [r for r in recs if isinstance(r, FrameRecord)]
    assert dropped and all(r.status == "dropped" and r.error == "" for r in dropped)
    assert isinstance(recs[-1], Result)
    for r in recs:
        if isinstance(r, Result):
            assert r.mask.shape == frames[r.frame_index].shape


class _SlowGetNowaitQueue(queue.Queue):
    """A queue whose non-blocking get is descheduled right after taking the item out: the
    window between the capture thread removing a frame to drop it and recording the drop."""

    def get_nowait(self) -> Any:
        item = super().get_nowait()
        time.sleep(0.01)
        return item


def test_drop_records_stay_in_order_when_the_producer_is_descheduled(analyzer, monkeypatch) -> None:
    """drop="latest": even if the capture thread loses the CPU between taking the oldest frame
    out of the queue and recording it as dropped, the consumer never yields a newer frame
    before that drop record (frame order holds)."""
    import sdk.stream

    monkeypatch.setattr(sdk.stream.queue, "Queue", _SlowGetNowaitQueue)
    n = 40
    frames = [np.full((32, 32), 100, np.uint8)] * n
    recs: list[Any] = []

    def consume() -> None:
        for r in analyzer.stream(iter(frames), drop="latest", queue_size=3):
            recs.append(r)

    bounded(consume, 30, "a drop='latest' stream with a descheduled producer")
    assert sorted(r.frame_index for r in recs) == list(range(n))
    assert [r.frame_index for r in recs] == list(range(n)), "records out of frame order"
    assert any(isinstance(r, FrameRecord) for r in recs)
