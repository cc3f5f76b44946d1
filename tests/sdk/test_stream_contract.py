"""The stream contract (issue #14, sdk/stream.py module docstring).

* every per-frame failure -- the first item included, model outputs that do not fit, a bad
  ``pixel_spacing_mm`` -- is an error record with an sdk.errors type, and the stream goes on;
* ``close()`` works from any thread, returns within ``CLOSE_TIMEOUT_S`` even when the source
  is stuck, and nothing is delivered after it;
* an iterator that is kept but no longer consumed holds no thread (its workers park after
  ``PARK_AFTER_S`` and come back on the next ``next()``, losing nothing);
* closing the Analyzer under a stream ends it with AnalyzerClosedError, not a record per frame;
* a stateful hypothesis test of all of it: sources mixing good frames, bad items, source
  exceptions and short stalls; consumers that close at random points; several streams at once.

Every wait is bounded (threads joined with timeouts); no assertion on speed beyond the close
bound, which has a wide margin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import sdk
import sdk.stream
from sdk.analyzer import AnalyzerClosedError
from sdk.errors import SourceError
from sdk.result import Result
from sdk.sources import Frame
from sdk.stream import CLOSE_TIMEOUT_S, FrameRecord

MARGIN_S = 1.5  # on top of CLOSE_TIMEOUT_S: a loaded 2-core machine


def sonoedge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sonoedge-") and t.is_alive()]


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def bounded(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, name="test-bounded", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"did not return within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def frame(i: int, w: int = 48) -> np.ndarray:
    """A frame whose width tells it apart: (40, w + i)."""
    f = np.full((40, w + i), 140, np.uint8)
    f[10:20, 10:25] = 10
    return f


@pytest.fixture
def analyzer(tiny_onnx):
    base = len(sonoedge_threads())
    with sdk.Analyzer(tiny_onnx, threads=1) as a:
        yield a
    assert wait_until(lambda: len(sonoedge_threads()) <= base, 5.0), "stream threads leaked"


# ---- per-frame failures are records ----------------------------------------------------------


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_bad_first_item_is_a_record(analyzer, pipeline: bool) -> None:
    """[None, F0, F1] ended the stream with SourceError before F0 and F1 were analyzed."""
    items = [None, frame(1), frame(2), "not a frame", frame(4)]
    recs = bounded(lambda: list(analyzer.stream(items, pipeline=pipeline)))
    assert [r.frame_index for r in recs] == [0, 1, 2, 3, 4]
    kinds = [type(r).__name__ for r in recs]
    assert kinds == ["FrameRecord", "Result", "Result", "FrameRecord", "Result"]
    assert recs[0].status == "error" and recs[0].error.startswith("InputError: ")
    assert recs[1].mask.shape == (40, 49) and recs[4].mask.shape == (40, 52)


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_bad_pixel_spacing_is_a_record(analyzer, pipeline: bool) -> None:
    """A Frame whose metadata says pixel_spacing_mm='abc' ended the stream with a raw
    TypeError; (-1, 2) gave negative areas."""
    items = [
        Frame(frame(0), 0, None, {"pixel_spacing_mm": "abc"}),
        Frame(frame(1), 1, None, {"pixel_spacing_mm": (0.1, 0.1)}),
        Frame(frame(2), 2, None, {"pixel_spacing_mm": (-1, 2)}),
        Frame(frame(3), 3, None, {"pixel_spacing_mm": (float("inf"), 1)}),
        Frame(frame(4), 4, None, {}),
    ]
    recs = bounded(lambda: list(analyzer.stream(items, pipeline=pipeline)))
    assert [r.frame_index for r in recs] == [0, 1, 2, 3, 4]
    for i in (0, 2, 3):
        assert isinstance(recs[i], FrameRecord) and "InputError" in recs[i].error
        assert "pixel_spacing_mm" in recs[i].error
    assert isinstance(recs[1], Result) and all(les.area_mm2 > 0 for les in recs[1].lesions)
    assert isinstance(recs[4], Result)


@pytest.mark.parametrize("pipeline", [True, False])
def test_model_output_errors_are_records(analyzer, pipeline: bool) -> None:
    """Outputs that do not fit the metadata (short class head, no batch axis) ended the stream
    with raw ValueError / TypeError / IndexError; now each is that frame's ModelError record."""
    real = analyzer.backend.infer
    calls = [0]

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        out = real(x)
        calls[0] += 1
        k = calls[0] % 3
        if k == 1:
            return {**out, "class_logits": out["class_logits"][:, :2]}
        if k == 2:
            return {**out, "class_logits": out["class_logits"][0]}
        return out

    analyzer.backend.infer = infer
    try:
        recs = bounded(
            lambda: list(
                analyzer.stream([frame(i) for i in range(6)], pipeline=pipeline, max_batch=1)
            )
        )
    finally:
        analyzer.backend.infer = real
    assert [r.frame_index for r in recs] == list(range(6))
    errs = [r for r in recs if isinstance(r, FrameRecord)]
    assert len(errs) == 4 and all(r.error.startswith("ModelError: ") for r in errs)
    assert sum(isinstance(r, Result) for r in recs) == 2


# ---- closing ----------------------------------------------------------------------------------


class Stall:
    """A source that blocks inside next() before item ``at`` until released (bounded)."""

    def __init__(self, n: int, at: int) -> None:
        self.n, self.at = n, at
        self.stalled, self.release = threading.Event(), threading.Event()
        self.done = threading.Event()

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            for i in range(self.n):
                if i == self.at:
                    self.stalled.set()
                    self.release.wait(20)
                yield frame(i)
        finally:
            self.done.set()


@pytest.mark.parametrize("pipeline", [True, False])
def test_close_from_another_thread_while_next_waits(analyzer, pipeline: bool) -> None:
    """The consumer blocked in next() on a stalled source; close() from another thread raised
    "generator already executing" and the stream ran on. Now close() returns within the bound,
    the blocked next() ends with StopIteration, and nothing comes after."""
    src = Stall(10, at=2)
    it = analyzer.stream(src, pipeline=pipeline)
    got = [bounded(lambda: next(it)) for _ in range(2)]
    assert src.stalled.wait(5)
    box: dict[str, Any] = {}

    def consume() -> None:
        try:
            box["next"] = next(it)
        except StopIteration:
            box["stop"] = True

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.2)  # the consumer is inside next(), waiting on the stalled source
    t0 = time.monotonic()
    bounded(it.close, 10)
    took = time.monotonic() - t0
    t.join(5)
    src.release.set()
    assert not t.is_alive() and box == {"stop": True}, box
    assert took < CLOSE_TIMEOUT_S + MARGIN_S, took
    assert it.closed
    with pytest.raises(StopIteration):
        next(it)
    assert [r.frame_index for r in got] == [0, 1]
    assert wait_until(lambda: not sonoedge_threads(), 5)


def test_a_stalled_source_is_abandoned_within_the_bound(analyzer) -> None:
    """close() returns within CLOSE_TIMEOUT_S while the capture thread is stuck in the source;
    that daemon thread delivers nothing afterwards and exits when the source returns."""
    src = Stall(10, at=1)
    it = analyzer.stream(src)
    first = bounded(lambda: next(it))
    assert src.stalled.wait(5)
    t0 = time.monotonic()
    it.close()
    assert time.monotonic() - t0 < CLOSE_TIMEOUT_S + MARGIN_S
    assert any(t.name == "sonoedge-capture" for t in sonoedge_threads())  # stuck, abandoned
    src.release.set()
    assert wait_until(lambda: not sonoedge_threads(), 5), "the capture thread outlived its source"
    with pytest.raises(StopIteration):
        next(it)
    assert first.frame_index == 0


@pytest.mark.parametrize("drop", ["none", "latest"])
@pytest.mark.parametrize("pipeline", [True, False])
def test_a_kept_but_idle_iterator_holds_no_thread(analyzer, monkeypatch, drop, pipeline) -> None:
    """Each abandoned but referenced iterator kept 2 threads for good. Now its workers park
    when nobody pulls, and the next next() brings them back with nothing lost."""
    monkeypatch.setattr(sdk.stream, "PARK_AFTER_S", 0.2)
    n = 30
    its = [
        analyzer.stream([frame(i) for i in range(n)], drop=drop, pipeline=pipeline, queue_size=2)
        for _ in range(3)
    ]
    firsts = [bounded(lambda it=it: next(it)) for it in its]
    assert wait_until(lambda: not sonoedge_threads(), 10), sonoedge_threads()
    for it, first in zip(its, firsts, strict=True):  # still referenced, and resumable
        recs = [first, *bounded(lambda it=it: list(it))]
        assert [r.frame_index for r in recs] == list(range(n))
        if drop == "none":
            assert all(
                isinstance(r, Result) and r.mask.shape == (40, 48 + r.frame_index) for r in recs
            )


def test_closing_the_analyzer_ends_its_streams(tiny_onnx) -> None:
    """Closing the Analyzer mid-stream turned every later frame into a "backend not loaded"
    record; now the stream ends with AnalyzerClosedError after the records already made."""
    a = sdk.Analyzer(tiny_onnx, threads=1).load()
    it = a.stream([frame(i) for i in range(50)], queue_size=2)
    recs = [bounded(lambda: next(it)) for _ in range(3)]
    a.close()
    with pytest.raises(AnalyzerClosedError, match="closed"):
        bounded(lambda: recs.extend(it))
    assert [r.frame_index for r in recs] == list(range(len(recs)))
    assert all(isinstance(r, Result) for r in recs)  # no "backend not loaded" records
    assert wait_until(lambda: not sonoedge_threads(), 5)


def test_stream_is_a_context_manager(analyzer) -> None:
    with analyzer.stream([frame(i) for i in range(20)]) as s:
        assert next(s).frame_index == 0
    assert s.closed and wait_until(lambda: not sonoedge_threads(), 5)


# ---- the stateful test -------------------------------------------------------------------------

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

ITEM = st.sampled_from(["good", "good", "good", "none", "complex", "shape", "nan", "stall"])


class _Source:
    """An iterable from a script: good frames (width tells the index), bad items, short stalls,
    optionally an exception at the end."""

    def __init__(self, script: list[str], fail: bool, uid: int) -> None:
        self.script, self.fail, self.uid = script, fail, uid

    def __iter__(self) -> Iterator[Any]:
        for i, kind in enumerate(self.script):
            if kind == "stall":
                time.sleep(0.03)
                kind = "good"
            yield {
                "good": lambda i=i: frame(i, 32 + 4 * (self.uid % 5)),
                "none": lambda: None,
                "complex": lambda: np.zeros((8, 8), complex),
                "shape": lambda: np.zeros((8, 8, 2), np.uint8),
                "nan": lambda: np.full((8, 8), np.nan),
            }[kind]()
        if self.fail:
            raise OSError(f"source {self.uid} unplugged")


class StreamMachine(RuleBasedStateMachine):
    """Streams over one shared Analyzer, opened, pulled, closed and drained in any order."""

    streams = Bundle("streams")

    def __init__(self, analyzer: sdk.Analyzer) -> None:
        super().__init__()
        self.a = analyzer
        self.uid = 0
        self.open: dict[int, dict[str, Any]] = {}

    @initialize()
    def start(self) -> None:
        self.base = len(sonoedge_threads())

    @rule(
        target=streams,
        script=st.lists(ITEM, min_size=0, max_size=8),
        fail=st.booleans(),
        pipeline=st.booleans(),
        drop=st.sampled_from(["none", "none", "latest"]),
        queue_size=st.integers(1, 3),
        max_batch=st.integers(1, 4),
    )
    def open_stream(self, script, fail, pipeline, drop, queue_size, max_batch) -> int:
        self.uid += 1
        src = _Source(script, fail, self.uid)
        it = self.a.stream(
            src, drop=drop, pipeline=pipeline, queue_size=queue_size, max_batch=max_batch
        )
        self.open[self.uid] = {
            "it": it,
            "script": script,
            "fail": fail,
            "drop": drop,
            "recs": [],
            "ended": None,
        }
        return self.uid

    def _check(self, s: dict[str, Any], complete: bool) -> None:
        """Records: a prefix of the script (all of it when complete), in order, each item
        analyzed (good) or an error record (bad), or -- with drop="latest" only -- dropped."""
        recs, script = s["recs"], s["script"]
        assert [r.frame_index for r in recs] == list(range(len(recs)))
        assert len(recs) <= len(script)
        if complete:
            assert len(recs) == len(script), (len(recs), script)
        w = 32 + 4 * (s["uid"] % 5) if "uid" in s else None
        for r, kind in zip(recs, script, strict=False):
            if isinstance(r, FrameRecord) and r.status == "dropped":
                assert s["drop"] == "latest"
                continue
            if kind in ("good", "stall"):
                assert isinstance(r, Result), r
                if w is not None:
                    assert r.mask.shape == (40, w + r.frame_index)
            else:
                assert isinstance(r, FrameRecord) and r.status == "error", r
                assert r.error.split(":")[0] in ("InputError", "ModelError", "SDKError")

    def _pull(self, uid: int, k: int) -> None:
        s = self.open[uid]
        s["uid"] = uid
        it = s["it"]
        if s["ended"] is not None:  # ended: next() says StopIteration from now on
            with pytest.raises(StopIteration):
                next(it)
            return

        def pull() -> None:
            for _ in range(k):
                try:
                    s["recs"].append(next(it))
                except StopIteration:
                    s["ended"] = "stop"
                    return
                except SourceError as e:
                    s["ended"] = e
                    return

        bounded(pull, 30)
        if s["ended"] is not None:
            self._check(s, complete=True)
            if s["fail"]:
                assert isinstance(s["ended"], SourceError) and "unplugged" in str(s["ended"])
            else:
                assert s["ended"] == "stop"
        else:
            self._check(s, complete=False)

    @rule(uid=streams, k=st.integers(1, 4))
    def pull(self, uid: int, k: int) -> None:
        if uid in self.open:
            self._pull(uid, k)

    @rule(uid=consumes(streams))
    def drain(self, uid: int) -> None:
        if uid in self.open:
            self._pull(uid, 100)
            assert self.open[uid]["ended"] is not None
            del self.open[uid]

    @rule(uid=consumes(streams), other_thread=st.booleans())
    def close(self, uid: int, other_thread: bool) -> None:
        if uid not in self.open:
            return
        s = self.open.pop(uid)
        t0 = time.monotonic()
        if other_thread:
            bounded(s["it"].close, 10)
        else:
            s["it"].close()
        assert time.monotonic() - t0 < CLOSE_TIMEOUT_S + MARGIN_S
        with pytest.raises(StopIteration):
            next(s["it"])
        self._check(s, complete=False)

    @invariant()
    def threads_bounded(self) -> None:
        # At most two workers per open stream (plus any still leaving after a close).
        assert len(sonoedge_threads()) <= self.base + 2 * len(self.open) + 4

    def teardown(self) -> None:
        for s in self.open.values():
            s["it"].close()
        self.open.clear()
        assert wait_until(lambda: len(sonoedge_threads()) <= self.base, 5.0), sonoedge_threads()


def test_stream_contract_stateful(tiny_onnx) -> None:
    with sdk.Analyzer(tiny_onnx, threads=1) as a:
        run_state_machine_as_test(
            lambda: StreamMachine(a),
            settings=settings(
                max_examples=25,
                stateful_step_count=10,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
