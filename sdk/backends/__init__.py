"""Inference backends behind a registry of plain data: name -> "module:Class", imported on use.

``get_backend(name)`` returns the class; ``available()`` tells, per backend, whether it can run
here and why not. Backends are inert until :meth:`Backend.load`; importing this package never
imports TensorRT, CUDA or torch. Each class declares its capabilities (``reentrant``,
``device_input``, ``device_preprocess``, ``batch_limit``: :class:`Backend`), from which
:class:`sdk.pipeline.FramePipeline` picks its route once, at load.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sdk.backends._base import Backend, IOSpec
from sdk.errors import BackendUnavailableError, InputError

__all__ = ["BACKENDS", "Backend", "IOSpec", "available", "choose_backend", "get_backend"]

BACKENDS: dict[str, str] = {
    "onnxruntime": "sdk.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "sdk.backends.openvino:OpenVINOBackend",
    "tensorrt": "sdk.backends.tensorrt:TensorRTBackend",
    "torch": "sdk.backends.torch:TorchBackend",
}


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} cannot be imported: {e}") from e


def available() -> dict[str, tuple[bool, str]]:
    """{name: (usable here, reason)} for every registered backend."""
    out: dict[str, tuple[bool, str]] = {}
    for name in BACKENDS:
        try:
            out[name] = get_backend(name).probe()
        except BackendUnavailableError as e:
            out[name] = (False, str(e))
    return out


def choose_backend(path: str | Path, backend: str = "auto") -> type[Backend]:
    """The backend class for an artifact: explicit name, or by file suffix for ``auto``."""
    if backend != "auto":
        return get_backend(backend)
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return get_backend("onnxruntime")
    if suffix in (".plan", ".engine"):
        return get_backend("tensorrt")
    raise InputError(
        f"cannot choose a backend for {Path(path).name!r}: expected a .onnx (or, with the "
        "TensorRT backend, .plan) artifact"
    )
