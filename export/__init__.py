"""sonoedge export stage: research models → distilled, quantized ONNX / TensorRT artifacts.

Needs the ``export`` extra (torch, onnx): the models (:mod:`export.models`), the trainer
(:mod:`export.train`), the export pipeline (:mod:`export.pipeline`), quantization and TensorRT
builds, and the ``sonoedge`` commands that need torch (:mod:`export.cli`).

Bring your own model (issue #16, :mod:`export.importer`): ``export.import_onnx``,
``export.import_torch`` and ``export.quantize(src, dst, ...)``. They are resolved lazily
(PEP 562 ``__getattr__``), so ``import export`` stays free of onnx / torch.
``export.quantize`` is also the recipe module (``from export.quantize import
quantize_with_budget`` keeps working): the module object itself is callable and runs
:func:`export.importer.quantize` (see ``export/quantize.py``'s last lines for why).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__: list[str] = ["import_onnx", "import_torch", "quantize"]


def __getattr__(name: str) -> Any:
    if name in ("import_onnx", "import_torch"):
        return getattr(importlib.import_module("export.importer"), name)
    if name == "quantize":  # importing the submodule binds it here; it is callable
        return importlib.import_module("export.quantize")
    raise AttributeError(f"module 'export' has no attribute {name!r}")
