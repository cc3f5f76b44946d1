"""One Analyzer shared by several threads (issue #14): every caller gets its own frame's
Result. Before: 85 of 600 results from 4 threads belonged to another frame (the shared input
buffer was overwritten between preprocessing and inference), with no error.

Every wait is bounded (join with a timeout); nothing here asserts on speed.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import sdk
from sdk.analyzer import AnalyzerClosedError
from sdk.result import Result

JOIN_S = 120.0


def _frames(n: int = 8) -> list[np.ndarray]:
    """Same-size frames, each with its dark blob elsewhere: masks tell them apart."""
    out = []
    for i in range(n):
        f = np.full((96, 128), 150, np.uint8)
        y, x = 8 + 9 * i, 6 + 13 * i
        f[y : y + 14, x : x + 18] = 10
        out.append(f)
    return out


def _run_threads(targets: list[Any]) -> None:
    ths = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in ths:
        t.start()
    for t in ths:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in ths), "a worker thread hung"


def _same(r: Result, ref: Result) -> bool:
    return bool(np.array_equal(r.mask, ref.mask)) and r.probs == pytest.approx(ref.probs, abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_four_threads_share_one_analyzer(tiny_onnx, smoothing: float) -> None:
    frames = _frames()
    with sdk.Analyzer(tiny_onnx, threads=1) as solo:
        refs = [solo.run(f) for f in frames]
    assert len({r.mask.tobytes() for r in refs}) == len(frames)  # distinguishable
    a = sdk.Analyzer(tiny_onnx, threads=1, smoothing=smoothing).load()
    got: list[tuple[int, Result]] = []
    errors: list[BaseException] = []
    per_thread = 150

    def worker(k: int) -> None:
        try:
            for j in range(per_thread):
                i = (k * 3 + j) % len(frames)
                got.append((i, a.run(frames[i])))
        except BaseException as e:  # reported below
            errors.append(e)

    _run_threads([lambda k=k: worker(k) for k in range(4)])
    a.close()
    assert not errors, errors[:3]
    assert len(got) == 4 * per_thread
    wrong = [i for i, r in got if not np.array_equal(r.mask, refs[i].mask)]
    assert not wrong, f"{len(wrong)} of {len(got)} masks belong to another frame"
    if smoothing == 0:
        assert all(r.probs == pytest.approx(refs[i].probs, abs=1e-6) for i, r in got)
    # The frame counter: each call its own index, none lost or repeated.
    assert sorted(r.frame_index for _, r in got) == list(range(len(got)))


def test_run_run_batch_and_streams_at_once(tiny_features_onnx) -> None:
    """run(), run_batch() (the batch buffer) and two pipelined streams on one Analyzer at the
    same time: each result is its own frame's."""
    frames = _frames()
    with sdk.Analyzer(tiny_features_onnx, threads=1) as solo:
        refs = [solo.run(f) for f in frames]
    a = sdk.Analyzer(tiny_features_onnx, threads=1).load()
    bad: list[str] = []

    def runs() -> None:
        for j in range(60):
            i = j % len(frames)
            if not _same(a.run(frames[i]), refs[i]):
                bad.append(f"run {i}")

    def batches() -> None:
        for _ in range(15):
            for i, r in enumerate(a.run_batch(frames)):
                if not np.array_equal(r.mask, refs[i].mask):
                    bad.append(f"batch {i}")

    def streams() -> None:
        for r in a.stream(frames * 6, max_batch=4, queue_size=8):
            i = r.frame_index % len(frames)
            if not isinstance(r, Result) or not np.array_equal(r.mask, refs[i].mask):
                bad.append(f"stream {r.frame_index}")

    try:
        _run_threads([runs, runs, batches, streams, streams])
    finally:
        a.close()
    assert not bad, bad[:10]


def test_close_while_other_threads_run(tiny_onnx) -> None:
    """close() from one thread while three others call run(): each call either returns its own
    frame's Result or raises AnalyzerClosedError -- never a raw error, never another frame's
    answer, never a silent reload."""
    frames = _frames()
    with sdk.Analyzer(tiny_onnx, threads=1) as solo:
        refs = [solo.run(f) for f in frames]
    a = sdk.Analyzer(tiny_onnx, threads=1).load()
    outcomes: list[str] = []
    started = threading.Barrier(4)

    def worker() -> None:
        started.wait(JOIN_S)
        for j in range(10_000):
            i = j % len(frames)
            try:
                r = a.run(frames[i])
            except AnalyzerClosedError:
                outcomes.append("closed")
                return
            except BaseException as e:
                outcomes.append(f"{type(e).__name__}: {e}")
                return
            if not np.array_equal(r.mask, refs[i].mask):
                outcomes.append(f"wrong frame {i}")
                return
        outcomes.append("never closed")

    def closer() -> None:
        started.wait(JOIN_S)
        for _ in range(20):  # let the workers get going (bounded)
            if a.pipeline._state_lock.locked():
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.05)
        a.close()

    _run_threads([worker, worker, worker, closer])
    assert outcomes == ["closed"] * 3, outcomes
    assert not a.backend.loaded
