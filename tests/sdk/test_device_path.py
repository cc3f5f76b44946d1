"""The device-preprocessing frame path and the TensorRT backend's CUDA-graph state machine.

No GPU here: the Analyzer's dispatch is checked with a backend that implements
``infer_frame`` on the CPU (so a wrong ROI / colour / channel argument changes the result),
and the graph logic of :class:`sdk.backends.tensorrt.TensorRTBackend` with a recording fake of
cuda-python's runtime (call order: plain first, captured second, replayed after; a failed
capture falls back for good; growing the frame staging buffer drops the captured graphs).
"""

from __future__ import annotations

import ctypes
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sdk import kernels as K
from sdk import synthetic
from sdk.analyzer import Analyzer, default_model
from sdk.backends.onnxruntime import OnnxRuntimeBackend
from sdk.backends.tensorrt import TensorRTBackend
from sdk.errors import InputError, KernelError
from sdk.kernels import PreprocessSpec


class _CpuFrameBackend(OnnxRuntimeBackend):
    """ONNX Runtime, but declaring device preprocessing and taking raw frames like the
    TensorRT backend's device path (the preprocessing here runs on the CPU)."""

    device_preprocess = True
    calls = 0

    def _infer_frame_impl(self, frame: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
        type(self).calls += 1
        x = K.preprocess(
            frame,
            size=spec.size,
            channels=spec.channels,
            sigma=spec.sigma,
            roi=spec.roi,
            mean=spec.mean,
            std=spec.std,
            dtype=spec.dtype,
            color=spec.color,
            interpolation=spec.interp,
        )
        return self._infer_impl(x[None])


def test_analyzer_uses_infer_frame_with_the_same_arguments() -> None:
    frame, _, _ = synthetic.phantom("malignant", size=(300, 400), seed=5)
    roi = (20, 10, 360, 270)
    ref = Analyzer(threads=1).load()
    dev = Analyzer(threads=1)
    # The route comes from the backend's declared capability, read when the pipeline binds.
    dev.backend.__class__ = _CpuFrameBackend
    dev.load()
    assert dev.pipeline.device_route and not ref.pipeline.device_route
    for r in (None, roi):
        a, b = ref.run(frame, roi=r), dev.run(frame, roi=r)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.probs == pytest.approx(b.probs, abs=1e-6)
        assert [x.bbox for x in a.lesions] == [x.bbox for x in b.lesions]
    assert _CpuFrameBackend.calls == 2
    assert dev.run(frame).timings["preprocess"] < dev.run(frame).timings["total"]


class _FakeRuntime:
    """Records the cuda-python runtime calls the backend makes."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, fail_capture: bool = False) -> None:
        self.log: list[str] = []
        self.capturing = False
        self.fail_capture = fail_capture
        self.next_ptr = 0x1000

    def _ptr(self) -> tuple[int, int]:
        self.next_ptr += 0x1000
        return 0, self.next_ptr

    def cudaMemcpyAsync(self, *a: Any) -> tuple[int]:
        self.log.append("capture-copy" if self.capturing else "copy")
        return (0,)

    def cudaStreamSynchronize(self, s: Any) -> tuple[int]:
        return (0,)

    def cudaStreamBeginCapture(self, s: Any, mode: Any) -> tuple[int]:
        self.capturing = True
        self.log.append("begin")
        return (0,)

    def cudaStreamEndCapture(self, s: Any) -> tuple[int, str]:
        self.capturing = False
        self.log.append("end")
        return (900 if self.fail_capture else 0, "graph")

    def cudaGraphInstantiate(self, g: Any, flags: int) -> tuple[int, str]:
        return 0, "exec"

    def cudaGraphLaunch(self, exe: Any, s: Any) -> tuple[int]:
        self.log.append("launch")
        return (0,)

    def cudaGraphExecDestroy(self, e: Any) -> tuple[int]:
        self.log.append("destroy")
        return (0,)

    def cudaGraphDestroy(self, g: Any) -> tuple[int]:
        return (0,)

    def cudaMallocHost(self, n: int) -> tuple[int, int]:
        return self._ptr()

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        return self._ptr()

    def cudaFreeHost(self, p: int) -> tuple[int]:
        return (0,)

    def cudaFree(self, p: int) -> tuple[int]:
        return (0,)


def _backend(rt: _FakeRuntime) -> TensorRTBackend:
    b = TensorRTBackend(default_model())
    b._rt, b._stream = rt, 7
    b._graphs, b._seen, b._graphs_ok = {}, set(), True
    b._frame_cap, b._frame_host, b._frame_dev = 0, 0, 0
    b._in_names, b._out_names = ["input"], ["out"]
    b._host = {"input": np.zeros((1, 1, 4, 4), np.float32), "out": np.arange(3, dtype=np.float32)}
    b._host_ptr = {"input": 1, "out": 2}
    b._dev = {"input": 3, "out": 4}
    b._ctx = SimpleNamespace(execute_async_v3=lambda s: rt.log.append("exec") or True)
    b._loaded = True
    return b


def test_graph_plain_then_captured_then_replayed() -> None:
    rt = _FakeRuntime()
    b = _backend(rt)
    x = np.ones((1, 1, 4, 4), np.float32)
    outs = [b._infer_impl(x) for _ in range(4)]
    plain = ["copy", "exec", "copy"]  # 1st call: plain (TensorRT's deferred setup)
    capture = ["begin", "capture-copy", "exec", "capture-copy", "end", "launch"]  # 2nd call
    assert rt.log == [*plain, *capture, "launch", "launch"]  # then replay only
    assert all(np.array_equal(o["out"], np.arange(3)) for o in outs)
    assert outs[0]["out"] is not b._host["out"]  # a copy, not the pinned buffer


def test_infer_frame_hands_the_spec_to_the_cuda_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRTBackend.infer_frame (the template, then _infer_frame_impl): the frame's
    PreprocessSpec becomes the CUDA kernel's arguments, one graph per frame geometry."""
    from sdk.backends import IOSpec
    from sdk.kernels import cuda as kc

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kc, "available", lambda: True)
    monkeypatch.setattr(kc, "preprocess", lambda f, out, **kw: calls.append(kw))
    rt = _FakeRuntime()
    pinned: list[Any] = []  # the frame's staging copy needs real host memory

    def malloc_host(n: int) -> tuple[int, int]:
        pinned.append(ctypes.create_string_buffer(n))
        return 0, ctypes.addressof(pinned[-1])

    rt.cudaMallocHost = malloc_host  # type: ignore[method-assign]
    b = _backend(rt)
    b.inputs = (IOSpec("input", np.dtype(np.float32), (None, 1, 4, 4)),)
    assert b.device_preprocess_available()
    base = K.preprocess_settings((4, 4), ("image",), 1.5, 0.25, 2.0)
    frame = np.zeros((30, 40), np.uint8)
    spec = replace(base, roi=(2, 3, 20, 10), color="rgb", interp="area")
    out = b.infer_frame(frame, spec)
    assert np.array_equal(out["out"], np.arange(3)) and b.last_infer_ms >= 0
    assert calls == [
        {
            "channels": ("image",),
            "sigma": 1.5,
            "roi": (2, 3, 20, 10),
            "mean": (0.25,),
            "std": (2.0,),
            "color": "rgb",
            "interpolation": "area",
            "stream": 7,
        }
    ]
    assert ("frame", (30, 40), (2, 3, 20, 10), "rgb") in b._seen
    with pytest.raises(InputError, match="does not fit"):
        b.infer_frame(frame, replace(spec, size=(8, 8)))
    with pytest.raises(InputError, match="uint8"):
        b.infer_frame(frame.astype(np.float32), spec)


def test_failed_capture_falls_back_for_good() -> None:
    rt = _FakeRuntime(fail_capture=True)
    b = _backend(rt)
    x = np.ones((1, 1, 4, 4), np.float32)
    for _ in range(3):
        b._infer_impl(x)
    assert "launch" not in rt.log and not b._graphs_ok
    # plain, failed capture + its work run plain, plain
    assert rt.log.count("exec") == 4 and rt.log[-3:] == ["copy", "exec", "copy"]


def test_growing_the_frame_buffer_drops_graphs() -> None:
    rt = _FakeRuntime()
    b = _backend(rt)
    x = np.ones((1, 1, 4, 4), np.float32)
    b._infer_impl(x)
    b._infer_impl(x)
    assert b._graphs
    b._stage(100)
    assert not b._graphs and "destroy" in rt.log and b._frame_cap == 100
    b._stage(50)  # fits: nothing reallocated
    assert b._frame_cap == 100
    b._stage(150)
    assert b._frame_cap == 200  # doubling: a slowly growing frame does not reallocate each time


def test_batch_other_than_one_is_refused() -> None:
    b = _backend(_FakeRuntime())
    from sdk.errors import ModelError

    with pytest.raises(ModelError, match="batch 1"):
        b._infer_impl(np.ones((2, 1, 4, 4), np.float32))
    assert issubclass(ModelError, Exception) and KernelError is not ModelError


def test_failed_load_frees_what_it_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load that fails after the stream and some buffers exist releases them all."""
    rt = _FakeRuntime()
    freed: list[str] = []
    rt.cudaFree = lambda p: freed.append("dev") or (0,)  # type: ignore[method-assign]
    rt.cudaFreeHost = lambda p: freed.append("host") or (0,)  # type: ignore[method-assign]
    rt.cudaStreamCreate = lambda: (0, 5)  # type: ignore[attr-defined]
    rt.cudaStreamDestroy = lambda s: freed.append("stream") or (0,)  # type: ignore[attr-defined]

    class _Trt:
        class TensorIOMode:
            INPUT = "in"

        @staticmethod
        def nptype(dt: Any) -> Any:
            return np.float32

    names = ["input", "out", "broken"]

    class _Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i: int) -> str:
            return names[i]

        def get_tensor_dtype(self, name: str) -> Any:
            return "f"

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, 1, 4, 4) if name == "input" else (1, 3)

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "input" else "out"

    class _Ctx:
        def set_input_shape(self, name: str, shape: Any) -> None:
            pass

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == "broken":
                raise RuntimeError("boom")
            return (1, 1, 4, 4) if name == "input" else (1, 3)

        def set_tensor_address(self, name: str, ptr: int) -> None:
            pass

    b = TensorRTBackend(default_model())
    b._rt, b._engine, b._ctx, b._runtime = rt, _Engine(), _Ctx(), object()
    b._dev, b._host, b._host_ptr, b._graphs, b._seen = {}, {}, {}, {}, set()
    b._frame_cap, b._stream = 0, 5
    with pytest.raises(RuntimeError, match="boom"):
        try:
            b._bind(_Trt)
        except BaseException:
            b._close_impl()
            raise
    assert freed.count("dev") == 2 and freed.count("host") == 2 and "stream" in freed
