"""The torch backend's ONNX → torch interpreter (:class:`Interpreter`), by op family.

``_core`` holds the graph, the build-time view of a node and the op registry; each family module
(``elementwise``, ``shape``, ``reduce``, ``conv``, ``resize``, ``quant``) registers its builders
with :func:`op` at import; ``interpreter`` folds, fuses and specializes a graph into programs.

No module here imports torch: ``sdk.backends.torch`` imports it when the backend is probed or
loaded and binds it (and ``torch.nn.functional``) into every module with :func:`bind_torch`, so
``import sdk.backends.torch`` (and :data:`SUPPORTED_OPS`) never needs torch.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from sdk.backends._torch_ops import (
    _core,
    conv,
    elementwise,
    interpreter,
    quant,
    reduce,
    resize,
    shape,
)
from sdk.backends._torch_ops._core import (
    OPS,
    Node,
    Unsupported,
    attr_value,
    tensor_from_proto,
)
from sdk.backends._torch_ops.interpreter import Interpreter, Program

__all__ = [
    "OPS",
    "SUPPORTED_OPS",
    "Interpreter",
    "Node",
    "Program",
    "Unsupported",
    "attr_value",
    "bind_torch",
    "tensor_from_proto",
]

_MODULES: tuple[ModuleType, ...] = (
    _core, elementwise, shape, reduce, conv, resize, quant, interpreter,
)  # fmt: skip

#: Every ONNX op (default domain) the torch backend implements.
SUPPORTED_OPS: frozenset[str] = frozenset(k for k in OPS if not k.startswith("_")) | {"Constant"}


def bind_torch(torch: Any, functional: Any) -> None:
    """Bind ``torch`` / ``torch.nn.functional`` as the globals ``torch`` / ``F`` of every module
    here (the op builders use them as if imported at the top)."""
    for m in _MODULES:
        m.torch, m.F = torch, functional
