"""OpenVINO backend: the same ``.onnx`` artifact through Intel's OpenVINO runtime on the CPU.

Why a second CPU runtime: on the 2-core Xeon the embedded FP32 model runs at 0.72x the bare
ONNX Runtime session under OpenVINO (``benchmarks/results/formats-default-cpu-xeon-2c.md``),
with outputs within 6e-6 of ONNX Runtime's. Optional: ``pip install openvino`` (or the
``bench`` extra); ``sonoedge info`` says whether it is usable.

Settings, each measured or needed for parity: ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's CPU
default may compute in bf16 on AVX-512-BF16 hardware: faster on some chips, but not the model
that was validated), ``PERFORMANCE_HINT=LATENCY`` with one stream (one frame at a time), static
input shapes (a model compiled per batch size on first use: static shapes run faster than a
dynamic batch axis). Outputs are copied out of OpenVINO's buffers (``share_outputs=False``): the
pipelined stream post-processes frame n while frame n+1 runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sdk.artifact import read_onnx_file_metadata
from sdk.backends._base import Backend, IOSpec
from sdk.errors import BackendUnavailableError, ModelError

__all__ = ["OpenVINOBackend"]

_OV_DEVICES = {"auto": "CPU", "cpu": "CPU"}


def _ov() -> Any:
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(
            f"openvino is not installed ({e}): pip install openvino"
        ) from e
    return ov


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU. ``device``: "auto" or "cpu"."""

    name: ClassVar[str] = "openvino"
    # One infer request per input shape, reused: one call at a time; host tensors only.
    reentrant: ClassVar[bool] = False

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            ov = _ov()
        except BackendUnavailableError as e:
            return False, str(e)
        devices = ov.Core().available_devices
        if "CPU" not in devices:
            return False, f"openvino {ov.__version__}: no CPU device ({devices})"
        return True, f"openvino {ov.__version__}: {', '.join(devices)}"

    def _load_impl(self) -> None:
        ov = _ov()
        if self.device not in _OV_DEVICES:
            raise BackendUnavailableError(
                f"device {self.device!r}: the openvino backend runs on 'cpu' (or 'auto'); use "
                "backend='onnxruntime' or 'tensorrt' for a GPU"
            )
        self.metadata = read_onnx_file_metadata(self.path)
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for bad graphs
            raise ModelError(
                f"{self.path}: OpenVINO cannot read it ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''})"
            ) from e
        self.inputs = tuple(self._spec(i) for i in self._model.inputs)
        self.outputs = tuple(self._spec(o) for o in self._model.outputs)
        self._check_io_against_metadata()
        self._requests: dict[tuple[int, ...], tuple[Any, list[tuple[str, Any]]]] = {}
        # Compile batch 1 now: a graph OpenVINO cannot compile fails at load, not on frame 1.
        md = self.metadata
        self._request((1, len(md.channels), *md.input_size))

    def _spec(self, port: Any) -> IOSpec:
        name = port.get_any_name()
        et = port.get_element_type().get_type_name()
        dt = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16)}.get(et)
        if dt is None:
            raise ModelError(f"{self.path}: tensor {name!r} has unsupported type {et}")
        ps = port.get_partial_shape()
        shape = tuple(d.get_length() if d.is_static else None for d in ps)
        return IOSpec(name, dt, shape)

    def _request(self, shape: tuple[int, ...]) -> tuple[Any, list[tuple[str, Any]]]:
        """The infer request of a model compiled for this static input shape (cached)."""
        hit = self._requests.get(shape)
        if hit is not None:
            return hit
        ov = _ov()
        model = self._model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            compiled = self._core.compile_model(model, "CPU", config)
        except Exception as e:
            raise ModelError(
                f"{self.path}: OpenVINO cannot compile it for input {shape} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); use "
                "backend='onnxruntime'"
            ) from e
        outs = [(o.get_any_name(), o) for o in compiled.outputs]
        hit = (compiled.create_infer_request(), outs)
        self._requests[shape] = hit
        return hit

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        req, outs = self._request(tuple(x.shape))
        try:
            res = req.infer({0: x}, share_inputs=True, share_outputs=False)
        except Exception as e:
            raise ModelError(
                f"{self.path}: OpenVINO loaded the model but cannot run it "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
            ) from e
        return {name: np.asarray(res[port]) for name, port in outs}

    def _close_impl(self) -> None:
        self._requests.clear()
        self._model = None
        self._core = None
