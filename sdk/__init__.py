"""sonoedge: real-time breast-ultrasound analysis at the edge.

Importing ``sdk`` is cheap: submodules (kernels, synthetic phantoms, sources, backends) load on
first attribute access, and nothing here imports torch, TensorRT or CUDA.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sdk import errors

__version__ = "0.1.0"

__all__ = [
    "Analyzer",
    "FramePipeline",
    "Result",
    "__version__",
    "backends",
    "default_model",
    "default_refiner",
    "errors",
    "kernels",
    "sources",
    "synthetic",
]

_LAZY_SUBMODULES = {"backends", "kernels", "sources", "synthetic"}

if TYPE_CHECKING:  # pragma: no cover
    from sdk import backends, kernels, sources, synthetic
    from sdk.analyzer import Analyzer, default_model, default_refiner
    from sdk.pipeline import FramePipeline
    from sdk.result import Result


_LAZY_ATTRS = {
    "Analyzer": "sdk.analyzer",
    "FramePipeline": "sdk.pipeline",
    "Result": "sdk.result",
    "default_model": "sdk.analyzer",
    "default_refiner": "sdk.analyzer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"sdk.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES | set(_LAZY_ATTRS))
