"""TensorRT helpers shared by the runtime backend and the export stage (no TensorRT import at
module import time): the module loader with its version floor, and the build fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdk.errors import BackendUnavailableError, ModelError

__all__ = [
    "Fingerprint",
    "check_fingerprint",
    "cudart",
    "current_fingerprint",
    "trt_logger",
    "trt_module",
]

_LOGGER: Any = None


def trt_module() -> Any:
    """``import tensorrt`` with a clear error and the 10.3 floor (JetPack 6)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            "TensorRT is not installed: on a GPU machine `pip install tensorrt-cu12` (or "
            '`pip install ".[trt]"`), on Jetson JetPack >= 6.1\'s python3-libnvinfer; engines '
            "cannot be built or run without it"
        ) from e
    major, minor = (int(v) for v in trt.__version__.split(".")[:2])
    if (major, minor) < (10, 3):
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is too old: need >= 10.3")
    return trt


def trt_logger() -> Any:
    """The process's one ``trt.Logger`` (WARNING): TensorRT keeps a single global logger and
    warns when builders / runtimes bring different ones, so the builder and every backend
    share this one."""
    global _LOGGER
    if _LOGGER is None:
        trt = trt_module()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def cudart() -> Any:
    """cuda-python's runtime bindings (new and old module layouts)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as e:
            raise BackendUnavailableError(
                "cuda-python is not installed: pip install cuda-python"
            ) from e
    return runtime


@dataclass(frozen=True)
class Fingerprint:
    """What a serialized engine is tied to."""

    tensorrt: str
    gpu: str
    compute_capability: str

    def to_dict(self) -> dict[str, str]:
        return {
            "version": self.tensorrt,
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
        }


def current_fingerprint(device: int = 0) -> Fingerprint:
    """TensorRT version and this machine's GPU (cuda-python, else torch)."""
    trt = trt_module()
    name, cc = _gpu(device)
    return Fingerprint(trt.__version__, name, cc)


def _gpu(device: int) -> tuple[str, str]:
    try:
        rt = cudart()
        err, prop = rt.cudaGetDeviceProperties(device)
        if int(err) != 0:
            raise BackendUnavailableError(f"cudaGetDeviceProperties failed: {err}")
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return name.strip("\x00 "), f"{prop.major}.{prop.minor}"
    except BackendUnavailableError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(device)
            return p.name, f"{p.major}.{p.minor}"
    except ImportError:
        pass
    raise BackendUnavailableError("no CUDA device found (install cuda-python, check the driver)")


def check_fingerprint(
    built: dict[str, Any] | None, here: Fingerprint, path: str = "engine"
) -> None:
    """Refuse an engine built for another TensorRT version or GPU, saying how to rebuild."""
    if not built:
        raise ModelError(f"{path}: the .plan carries no TensorRT build fingerprint; rebuild it")
    mismatches = []
    if built.get("version") != here.tensorrt:
        mismatches.append(f"TensorRT {built.get('version')} (here {here.tensorrt})")
    if built.get("compute_capability") != here.compute_capability:
        mismatches.append(
            f"compute capability {built.get('compute_capability')} "
            f"({built.get('gpu')}; here {here.compute_capability}, {here.gpu})"
        )
    if mismatches:
        raise ModelError(
            f"{path} was built for {' and '.join(mismatches)}. TensorRT engines only run where "
            "they were built: rebuild on this machine with `sonoedge export MODEL.onnx "
            "--formats trt-fp16` (or trt-int8), or run the .onnx with backend='onnxruntime'."
        )
