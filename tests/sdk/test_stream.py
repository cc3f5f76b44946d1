"""Analyzer.stream: order, drop policies, bad frames, source faults, close mid-stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

import sdk
from sdk import synthetic
from sdk.errors import SourceError
from sdk.result import Result
from sdk.stream import FrameRecord


@pytest.fixture(scope="module")
def cine():
    return [f for f, _, _ in synthetic.cine(12, "benign", size=(160, 200), seed=2)]


def test_every_frame_in_order(tiny_onnx, cine) -> None:
    a = sdk.Analyzer(tiny_onnx, smoothing=0.5)
    recs = list(a.stream(cine))
    assert [r.frame_index for r in recs] == list(range(len(cine)))
    assert all(isinstance(r, Result) for r in recs)
    stack = list(a.stream(np.stack(cine)))  # an array stack through open_source
    assert len(stack) == len(cine)


def test_bad_frame_is_recorded_and_the_stream_goes_on(tiny_onnx, cine) -> None:
    frames = list(cine[:5])
    frames[2] = np.full((10, 10), np.nan)
    recs = list(sdk.Analyzer(tiny_onnx).stream(iter(frames)))
    assert [r.frame_index for r in recs] == [0, 1, 2, 3, 4]
    assert isinstance(recs[2], FrameRecord) and recs[2].status == "error"
    assert "NaN" in recs[2].error
    assert all(isinstance(r, Result) for i, r in enumerate(recs) if i != 2)


def test_source_failure_surfaces_after_earlier_frames(tiny_onnx, cine) -> None:
    def gen():
        yield from cine[:3]
        raise OSError("camera unplugged")

    out = []
    with pytest.raises(SourceError, match="camera unplugged"):
        for r in sdk.Analyzer(tiny_onnx).stream(gen()):
            out.append(r)
    assert [r.frame_index for r in out] == [0, 1, 2]


def test_drop_latest_accounts_for_every_frame(tiny_onnx, cine) -> None:
    a = sdk.Analyzer(tiny_onnx)
    recs = []
    for r in a.stream(cine * 3, drop="latest", queue_size=1):
        time.sleep(0.01)  # a slow consumer
        recs.append(r)
    idx = [r.frame_index for r in recs]
    assert idx == sorted(idx) == list(range(len(cine) * 3))
    assert any(isinstance(r, FrameRecord) and r.status == "dropped" for r in recs)


def test_close_mid_stream_stops_capture(tiny_onnx, cine) -> None:
    import threading

    it = sdk.Analyzer(tiny_onnx).stream(cine * 10)
    next(it)
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 3
    assert not any(t.name == "sonoedge-capture" and t.is_alive() for t in threading.enumerate())


def test_stream_argument_errors(tiny_onnx) -> None:
    from sdk.errors import InputError

    a = sdk.Analyzer(tiny_onnx)
    with pytest.raises(InputError, match="drop"):
        next(a.stream([np.zeros((8, 8), np.uint8)], drop="oldest"))
    with pytest.raises(InputError, match="queue_size"):
        next(a.stream([np.zeros((8, 8), np.uint8)], queue_size=0))
    # Items that are not frames are per-frame failures (issue #14): error records, in order.
    recs = list(a.stream(iter([1, 2, 3])))
    assert [(r.frame_index, r.status) for r in recs] == [(0, "error"), (1, "error"), (2, "error")]
    assert all("InputError" in r.error and "numpy" in r.error for r in recs)


def test_pipelined_stream_equals_the_sequential_one(cine) -> None:
    """pipeline=True (inference overlapped with post-processing on another thread) yields the
    same records as pipeline=False and as run() frame by frame, including the temporal EMA
    (which needs frames in order) and an error record for a bad frame in the middle."""
    frames = [cine[i % len(cine)] for i in range(12)]
    frames[5] = np.zeros((0, 4), np.uint8)
    runs = []
    for pipeline in (True, False):
        with sdk.Analyzer(threads=1, smoothing=0.6) as a:
            runs.append(list(a.stream(iter(frames), pipeline=pipeline)))
    with sdk.Analyzer(threads=1, smoothing=0.6) as a:
        direct = []
        for f in frames:
            try:
                direct.append(a.run(f))
            except sdk.errors.InputError:
                direct.append(None)
    piped, seq = runs
    assert [r.frame_index for r in piped] == list(range(12))
    assert isinstance(piped[5], FrameRecord) and piped[5].status == "error"
    for p, s, d in zip(piped, seq, direct, strict=True):
        assert type(p) is type(s)
        if isinstance(p, Result):
            np.testing.assert_array_equal(p.mask, s.mask)
            np.testing.assert_array_equal(p.mask, d.mask)
            assert p.probs == pytest.approx(s.probs, abs=1e-9)
            assert p.probs == pytest.approx(d.probs, abs=1e-9)
            assert set(p.timings) == {"preprocess", "infer", "postprocess", "total"}


def _spy_batches(a: sdk.Analyzer) -> list[int]:
    """Record the batch size of every model call the analyzer's backend makes."""
    sizes: list[int] = []
    real = a.backend.infer

    def infer(x):
        sizes.append(int(x.shape[0]))
        return real(x)

    a.backend.infer = infer
    return sizes


def test_backlogged_stream_batches_model_calls(tiny_features_onnx, cine) -> None:
    """Frames already waiting go through one model call (up to max_batch); the records equal
    the unbatched stream's, a bad frame inside a batch gets its own error record."""
    frames = [cine[i % len(cine)] for i in range(20)]
    frames[6] = np.full((10, 10), np.inf)
    runs, calls = [], []
    for max_batch in (4, 1):
        a = sdk.Analyzer(tiny_features_onnx, smoothing=0.5).load()
        sizes = _spy_batches(a)
        # A list source fills the capture queue at once: a backlog from the first call.
        runs.append(list(a.stream(frames, max_batch=max_batch, queue_size=8)))
        calls.append(sizes)
    batched, single = runs
    assert max(calls[0]) > 1 and max(calls[0]) <= 4 and sum(calls[0]) == 19
    assert calls[1] == [1] * 19
    assert [r.frame_index for r in batched] == list(range(20))
    assert isinstance(batched[6], FrameRecord) and batched[6].status == "error"
    for b, s in zip(batched, single, strict=True):
        assert type(b) is type(s)
        if isinstance(b, Result):
            assert b.probs == pytest.approx(s.probs, abs=1e-5)
            assert [les.bbox for les in b.lesions] == [les.bbox for les in s.lesions]
            assert (b.mask != s.mask).mean() < 1e-3
            assert b.timings["infer"] > 0


def test_drop_latest_never_batches(tiny_onnx, cine) -> None:
    a = sdk.Analyzer(tiny_onnx).load()
    sizes = _spy_batches(a)
    recs = list(a.stream(cine * 2, drop="latest", queue_size=4, max_batch=4))
    assert [r.frame_index for r in recs] == list(range(len(cine) * 2))
    assert sizes and set(sizes) == {1}


def test_max_batch_argument(tiny_onnx) -> None:
    from sdk.errors import InputError

    a = sdk.Analyzer(tiny_onnx)
    for bad in (0, -1, 2.0, True, "4"):
        with pytest.raises(InputError, match="max_batch"):
            next(a.stream([np.zeros((8, 8), np.uint8)], max_batch=bad))
