"""ONNX Runtime backend: CPU always; CUDA and TensorRT execution providers when installed."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from sdk.artifact import read_onnx_metadata
from sdk.backends._base import Backend, IOSpec
from sdk.errors import BackendUnavailableError, ModelError

__all__ = ["OnnxRuntimeBackend", "session_options"]

_ORT_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


def session_options(ort: Any, threads: int | None, spin: bool = True) -> Any:
    """The ``SessionOptions`` of the SDK's CPU sessions (the benchmarks' bare-session anchors
    take the same, so that a ratio compares the SDK's work, not two configurations).

    ``threads``: intra-op threads (None: ONNX Runtime's choice), one inter-op thread.
    ``spin``: the intra-op threads busy-wait for work *within* a model call and stop spinning
    when it returns (``session.force_spinning_stop``), so between frames they sleep and leave the
    cores to the capture, the UI and the SDK's own kernels. Measured on the 2-core EPYC
    (2026-12-03, edge_s 128x128, 2 threads, the two configurations interleaved in one process):
    the model call takes 0.73-0.77x the time of a session that never spins, and
    ``Analyzer.run`` 0.80-0.85x; with one other busy process the two are within 5 %; with both
    cores taken by other busy processes spinning is 2x *slower* -- pass ``spin=False`` there.
    ``spin=False``: no busy-waiting at all (``session.intra_op.allow_spinning`` 0)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session. ``device``: "auto" (TensorRT EP > CUDA EP > CPU, by
    availability), "cpu", "cuda" or "tensorrt"."""

    name: ClassVar[str] = "onnxruntime"
    # InferenceSession.run is reentrant: concurrent Analyzer calls overlap inside the model.
    reentrant: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as e:
            return False, f"onnxruntime not installed ({e})"
        return True, f"onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}"

    def _providers(self, ort: Any) -> list[str]:
        have = ort.get_available_providers()
        want = {
            "auto": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            "cpu": ["CPUExecutionProvider"],
            "cuda": ["CUDAExecutionProvider"],
            "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        }.get(self.device)
        if want is None:
            raise BackendUnavailableError(
                f"device {self.device!r} is not one of auto, cpu, cuda, tensorrt"
            )
        chosen = [p for p in want if p in have]
        if self.device != "auto" and want[0] not in have:
            raise BackendUnavailableError(
                f"device {self.device!r} needs {want[0]}, which this onnxruntime lacks "
                f"(has {have}); install onnxruntime-gpu or use device='cpu'"
            )
        return chosen + (["CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else [])

    def _load_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(
                "onnxruntime is not installed: pip install onnxruntime"
            ) from e
        so = session_options(ort, self.threads, self.spin)
        # Outside the try: a missing execution provider (device="cuda" without onnxruntime-gpu)
        # is a BackendUnavailableError naming it, not a "corrupted model".
        providers = self._providers(ort)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # ORT raises its own exception types for bad files
            raise ModelError(
                f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}); the file is corrupted or not an ONNX model"
            ) from e
        self.metadata = read_onnx_metadata(self.session, str(self.path))
        self.inputs = tuple(self._spec(i) for i in self.session.get_inputs())
        self.outputs = tuple(self._spec(o) for o in self.session.get_outputs())
        self._check_io_against_metadata()
        self._out_names = [o.name for o in self.outputs]

    def _spec(self, t: Any) -> IOSpec:
        dt = _ORT_TYPES.get(t.type)
        if dt is None:
            raise ModelError(f"{self.path}: tensor {t.name!r} has unsupported type {t.type}")
        shape = tuple(d if isinstance(d, int) else None for d in t.shape)
        return IOSpec(t.name, dt, shape)

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            out = self.session.run(self._out_names, {self.inputs[0].name: x})
        except MemoryError:
            raise
        except Exception as e:  # ORT's own types (Fail, RuntimeException...): a graph it loads
            # but cannot execute (a corrupted attribute, an op without a kernel for this input)
            raise ModelError(
                f"{self.path}: ONNX Runtime loaded the model but cannot run it "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); the "
                "file is corrupted or was exported for another runtime: re-export the model"
            ) from e
        return dict(zip(self._out_names, out, strict=True))

    def _close_impl(self) -> None:
        del self.session
