"""The interpreter's core: the graph (nodes, tensors from protobuf, topological order), the
build-time view of one node (:class:`Ctx`) and the op registry (:data:`OPS`, :func:`op`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdk.errors import ModelError

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None

Tensor = Any  # torch.Tensor (not importable at module import time)

_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


class Unsupported(Exception):
    """An op, attribute or tensor type the interpreter does not implement."""


# ---- the graph ----------------------------------------------------------------------------------
@dataclass
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"node {self.name!r} ({self.op})" if self.name else f"a {self.op} node"


def _to_tensor(a: np.ndarray) -> Tensor:
    """numpy (from an ONNX TensorProto) → an owned CPU tensor."""
    if a.dtype.kind in "OSU":
        raise Unsupported("string tensors are not supported")
    if a.dtype.name == "bfloat16":  # ml_dtypes
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    if a.dtype.name not in _ONNX_DTYPES.values():
        raise Unsupported(f"tensors of type {a.dtype.name} are not supported")
    return torch.from_numpy(np.array(a, copy=True))


def onnx_dtype(code: int) -> Any:
    name = _ONNX_DTYPES.get(int(code))
    if name is None:
        raise Unsupported(f"ONNX tensor type {code} is not supported")
    return getattr(torch, name)


def tensor_from_proto(t: Any, onnx: Any, what: str) -> Tensor:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelError(
            f"{what} keeps its data in an external file; sonoedge artifacts are single files: "
            "re-export the model without external data"
        )
    return _to_tensor(onnx.numpy_helper.to_array(t))


def attr_value(a: Any, onnx: Any, where: str) -> Any:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, onnx.TensorProto):
        return tensor_from_proto(v, onnx, f"attribute {a.name!r} of {where}")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", "replace") for s in v]
    return v


def constant_value(node: Node) -> Tensor:
    """The value of a ``Constant`` node."""
    a = node.attrs
    if "value" in a:
        return a["value"]
    if "value_float" in a:
        return torch.tensor(a["value_float"], dtype=torch.float32)
    if "value_floats" in a:
        return torch.tensor(a["value_floats"], dtype=torch.float32)
    if "value_int" in a:
        return torch.tensor(a["value_int"], dtype=torch.int64)
    if "value_ints" in a:
        return torch.tensor(a["value_ints"], dtype=torch.int64)
    raise Unsupported(f"Constant with attribute(s) {sorted(a)} is not supported")


def toposort(nodes: list[Node], known: set[str], source: str) -> list[Node]:
    """Nodes in dependency order (ONNX files are usually sorted already)."""
    have = set(known) | {""}
    out: list[Node] = []
    pending = list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.inputs):
                out.append(n)
                have.update(n.outputs)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.inputs if i not in have})[:5]
            raise ModelError(
                f"{source}: the graph uses values nothing produces ({missing}) or has a cycle; "
                "the file is corrupted or not a valid ONNX model"
            )
        pending = rest
    return out


# ---- build-time view of one node ----------------------------------------------------------------
class Ctx:
    """What an op builder may know about a node: attributes, input shapes / dtypes, and the values
    of inputs that do not depend on the data (constants, shape arithmetic)."""

    def __init__(
        self,
        node: Node,
        values: list[Tensor | None],
        static: list[bool],
        opset: int,
        device: Any,
        dynamic: bool,
        half: bool,
        used: set[str],
    ) -> None:
        self.node = node
        self.values = values
        self.static_flags = static
        self.opset = opset
        self.device = device
        self.dynamic = dynamic  # runs on the device per call (else: evaluated once on the host)
        self.half = half
        self._used = used

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def has(self, i: int) -> bool:
        return i < len(self.node.inputs) and self.node.inputs[i] != ""

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.values[i].shape)

    def dtype(self, i: int) -> Any:
        return self.values[i].dtype

    def maybe_const(self, i: int) -> Tensor | None:
        """The input's value when known without the data, else None (absent or data-dependent)."""
        if not self.has(i) or not self.static_flags[i]:
            return None
        return self.values[i]

    def const(self, i: int) -> Tensor | None:
        """The input's value (None if absent); raises if it depends on the data."""
        if not self.has(i):
            return None
        if not self.static_flags[i]:
            raise Unsupported(
                f"input {i} ({self.node.inputs[i]!r}) is computed from the data at run time; "
                "the torch backend needs it constant or derived from shapes"
            )
        return self.values[i]

    def ints(self, i: int) -> list[int] | None:
        v = self.const(i)
        return None if v is None else [int(a) for a in v.reshape(-1).tolist()]

    def floats(self, i: int) -> list[float] | None:
        v = self.const(i)
        return None if v is None else [float(a) for a in v.reshape(-1).tolist()]

    def scalar(self, i: int) -> float | int | bool | None:
        v = self.const(i)
        if v is None:
            return None
        if v.numel() != 1:
            raise Unsupported(f"input {i} must be a scalar, got shape {tuple(v.shape)}")
        return v.reshape(()).item()

    def used(self, out_index: int) -> bool:
        outs = self.node.outputs
        return out_index < len(outs) and outs[out_index] != "" and outs[out_index] in self._used

    def to(self, t: Tensor) -> Tensor:
        """A build-time tensor (indices, weights) on the device the node runs on."""
        return t.to(self.device) if self.dynamic else t

    def float_dtype(self, dt: Any) -> Any:
        """The dtype a float ``dt`` computes in (FP16 for dynamic nodes in half mode)."""
        if self.half and self.dynamic and dt in (torch.float32, torch.float64):
            return torch.float16
        return dt


Builder = Callable[[Node, Ctx], Callable[..., Any]]


@dataclass(frozen=True)
class OpDef:
    build: Builder
    params: tuple[int, ...] = ()  # inputs read at build time (must be data-independent)
    shape_only: tuple[int, ...] = ()  # inputs whose shape / dtype alone is used
    multi: bool = False  # the built function returns a tuple of outputs


OPS: dict[str, OpDef] = {}


def op(*names: str, params: tuple[int, ...] = (), shape_only: tuple[int, ...] = (),
        multi: bool = False) -> Callable[[Builder], Builder]:  # fmt: skip
    def deco(fn: Builder) -> Builder:
        for n in names:
            OPS[n] = OpDef(fn, params, shape_only, multi)
        return fn

    return deco


def _axis(a: int, rank: int) -> int:
    if not -rank <= a < max(rank, 1):
        raise Unsupported(f"axis {a} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))
