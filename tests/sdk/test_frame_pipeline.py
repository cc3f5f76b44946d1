"""sdk.pipeline.FramePipeline: the public stages (prepare → infer → finish), the frame carried
between them, the input tensors lent and given back, and the backends' declared capabilities
that pick the route. (Not test_pipeline.py: pytest's rootdir imports would clash with
tests/export/test_pipeline.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import sdk
from sdk.backends import get_backend
from sdk.backends._base import MAX_DYNAMIC_BATCH, Backend
from sdk.backends.onnxruntime import OnnxRuntimeBackend
from sdk.backends.openvino import OpenVINOBackend
from sdk.backends.tensorrt import TensorRTBackend
from sdk.errors import BackendUnavailableError, InputError, ModelError
from sdk.kernels import PreprocessSpec
from sdk.pipeline import AnalyzerClosedError, FramePipeline, StagedFrame

TIMINGS = {"preprocess", "infer", "postprocess", "total"}


def _same(a: sdk.Result, b: sdk.Result) -> None:
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.label == b.label and a.probs == pytest.approx(b.probs, abs=1e-6)
    assert [x.bbox for x in a.lesions] == [x.bbox for x in b.lesions]


def test_stages_compose_to_run(tiny_features_onnx, phantom_frame) -> None:
    """prepare → infer → finish by hand gives what Analyzer.run gives; each stage fills its
    part of the StagedFrame, and the lent input tensor is given back after infer."""
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_features_onnx, "cpu", 1))
    assert pipe.backend.loaded and not pipe.device_route and pipe.max_batch == MAX_DYNAMIC_BATCH
    assert pipe.spec.size == pipe.metadata.input_size and pipe.input_shape[0] == len(
        pipe.spec.channels
    )
    job = pipe.prepare(img, roi=(10, 20, 300, 200))
    assert isinstance(job, StagedFrame) and job.size == img.shape[:2]
    assert job.roi == (10, 20, 300, 200) and job.outputs is None and job.preprocess_ms > 0
    assert job.tensor is not None and job.tensor.shape == (1, *pipe.input_shape)
    assert not pipe._free1  # the reused tensor is lent to this frame
    pipe.infer(job)
    assert job.tensor is None and job.outputs and job.infer_ms > 0 and len(pipe._free1) == 1
    r = pipe.finish(job, timestamp=1.5)
    assert set(r.timings) == TIMINGS and r.timestamp == 1.5 and r.frame_index == 0
    with sdk.Analyzer(tiny_features_onnx, threads=1) as a:
        _same(r, a.run(img, roi=(10, 20, 300, 200)))


def test_stage_misuse_is_an_input_error(tiny_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1))
    job = pipe.prepare(img)
    with pytest.raises(InputError, match="infer"):
        pipe.finish(job)
    pipe.infer(job)
    with pytest.raises(InputError, match="prepare"):
        pipe.infer(job)  # its tensor went back after the first call
    with pytest.raises(InputError, match="color"):
        pipe.prepare(img, color="gray")
    with pytest.raises(InputError, match="roi"):
        pipe.prepare(img, roi=(0, 0, 10_000, 10))
    with pytest.raises(InputError, match="at most"):
        pipe.prepare_batch([img] * (pipe.max_batch + 1))


def test_a_dropped_prepared_frame_never_blocks(tiny_onnx, phantom_frame) -> None:
    """A frame prepared and never inferred keeps its tensor; later calls take fresh ones (no
    waiting) and the first one given back is reused from then on."""
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1))
    held = pipe.prepare(img)
    r = pipe.finish(pipe.infer(pipe.prepare(img)))
    assert r.mask.shape == img.shape[:2] and len(pipe._free1) == 1
    del held
    a, b = pipe.prepare(img), pipe.prepare(img)
    assert a.tensor is not None and b.tensor is not None
    assert not np.shares_memory(a.tensor, b.tensor)  # never one tensor for two frames


def test_batch_stages_one_call_and_errors_in_their_slots(tiny_features_onnx, phantom_frame):
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_features_onnx, "cpu", 1))
    calls: list[int] = []
    real = pipe.backend.infer
    pipe.backend.infer = lambda x: calls.append(x.shape[0]) or real(x)
    jobs = pipe.prepare_batch([img, np.full((4, 4), np.nan), img[::-1].copy()])
    assert isinstance(jobs[1], InputError) and all(isinstance(j, StagedFrame) for j in jobs[::2])
    done = pipe.infer_batch(jobs)
    assert calls == [2] and done[1] is jobs[1] and len(pipe._freeb) == 1
    results = [pipe.finish(j) for j in done if isinstance(j, StagedFrame)]
    ref = FramePipeline(OnnxRuntimeBackend(tiny_features_onnx, "cpu", 1))
    for r, f in zip(results, [img, img[::-1].copy()], strict=True):
        assert r.timings["infer"] > 0
        got = ref.run(f)
        assert r.label == got.label and (r.mask != got.mask).mean() < 1e-3
    # Frames of separate prepare calls still go through one call (stacked).
    calls.clear()
    assert len(pipe.infer_batch([pipe.prepare(img), pipe.prepare(img)])) == 2 and calls == [2]


def test_a_batch_without_a_batch_axis_is_a_model_error(tiny_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1))
    real = pipe.backend.infer
    pipe.backend.infer = lambda x: {k: np.float32(0) for k in real(x)}  # no axes at all
    out = pipe.infer_batch(pipe.prepare_batch([img, img]))
    assert all(isinstance(e, ModelError) and "batch axis" in str(e) for e in out)


def test_closed_pipeline_raises_analyzer_closed(tiny_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    pipe = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1))
    job = pipe.prepare(img)
    pipe.close()
    assert pipe.closed and not pipe.backend.loaded
    with pytest.raises(AnalyzerClosedError, match="closed"):
        pipe.infer(job)


def test_analyzer_is_a_facade_over_its_pipeline(tiny_onnx) -> None:
    """Settings the pipeline reads per call follow the Analyzer's attributes after load."""
    a = sdk.Analyzer(tiny_onnx, threads=1, smoothing=0.5)
    pipe = a.pipeline  # loads
    assert pipe is a.pipeline and a.backend is pipe.backend and a.metadata is pipe.metadata
    assert pipe.smoothing == 0.5 and a.threshold == pipe.threshold
    a.smoothing, a.bit_depth, a.pixel_spacing_mm = 0.0, 12, (0.1, 0.1)
    assert (pipe.smoothing, pipe.bit_depth, pipe.pixel_spacing_mm) == (0.0, 12, (0.1, 0.1))
    a.threshold = 0.7
    assert pipe.threshold == 0.7
    a.close()
    assert pipe.closed


# ---- capabilities --------------------------------------------------------------------------------
def test_capabilities_are_declared_on_the_classes() -> None:
    assert (Backend.reentrant, Backend.device_input, Backend.device_preprocess) == (
        False,
        False,
        False,
    )
    assert OnnxRuntimeBackend.reentrant and not OnnxRuntimeBackend.device_preprocess
    assert not OpenVINOBackend.reentrant
    assert TensorRTBackend.device_preprocess and TensorRTBackend.batch_limit == 1
    assert not TensorRTBackend.reentrant
    torch_cls = get_backend("torch")  # imports the module, never torch itself
    assert not torch_cls.reentrant and not torch_cls.device_preprocess


def test_route_and_lock_follow_capabilities(tiny_onnx) -> None:
    ort = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1))
    assert ort._infer_lock is None and not ort.device_route

    class OneAtATime(OnnxRuntimeBackend):
        reentrant = False
        batch_limit = 2

    p = FramePipeline(OneAtATime(tiny_onnx, "cpu", 1))
    assert p._infer_lock is not None and p.max_batch == 2 and p.backend.max_batch == 2


def test_infer_frame_is_the_template_checked_and_timed(tiny_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    b = OnnxRuntimeBackend(tiny_onnx, "cpu", 1).load()
    spec = FramePipeline(OnnxRuntimeBackend(tiny_onnx, "cpu", 1)).spec
    with pytest.raises(BackendUnavailableError, match="cannot preprocess on the device"):
        b.infer_frame(img, spec)

    class FrameBackend(OnnxRuntimeBackend):
        device_preprocess = True

        def _infer_frame_impl(self, frame: np.ndarray, spec: PreprocessSpec):
            x = sdk.kernels.preprocess(
                frame,
                size=spec.size,
                channels=spec.channels,
                sigma=spec.sigma,
                mean=spec.mean,
                std=spec.std,
                roi=spec.roi,
            )
            return self._infer_impl(x[None])

    fb = FrameBackend(tiny_onnx, "cpu", 1)
    with pytest.raises(InputError, match="not loaded"):
        fb.infer_frame(img, spec)
    fb.load()
    with pytest.raises(InputError, match="uint8"):
        fb.infer_frame(img.astype(np.float32), spec)
    from dataclasses import replace

    with pytest.raises(InputError, match="does not fit"):
        fb.infer_frame(img, replace(spec, size=(64, 64)))
    full = replace(spec, roi=(0, 0, img.shape[1], img.shape[0]))
    out = fb.infer_frame(img, full)
    assert fb.last_infer_ms > 0 and set(out) == {o.name for o in fb.outputs}
    pipe = FramePipeline(FrameBackend(tiny_onnx, "cpu", 1))
    assert pipe.device_route and pipe.max_batch == 1
    job = pipe.prepare(img)
    assert job.tensor is None  # the raw frame goes to the backend
    _same(pipe.finish(pipe.infer(job)), FramePipeline(OnnxRuntimeBackend(tiny_onnx)).run(img))
