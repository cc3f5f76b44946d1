"""torch backend: runs the same ``.onnx`` artifact as ONNX Runtime, on CUDA or CPU, through a small
ONNX → torch interpreter built at load time.

Why an interpreter and not a TorchScript / exported program: the project's rule is **no pickle on
any load path** (``torch.load``, ``torch.jit.load`` and ``torch.export.load`` all unpickle), and one
artifact should serve every backend. So :meth:`TorchBackend.load` parses the ``.onnx`` protobuf
(the ``onnx`` package; protobuf is data, not code), turns its initializers into tensors
(protobuf → numpy → torch) and maps every node to a torch functional op with the exact ONNX
semantics (:data:`SUPPORTED_OPS`). A model with an op outside that list is refused at load with
:class:`sdk.errors.BackendUnavailableError` naming the ops, never run half-way.

How a model runs:

* At load, everything computable from the initializers alone is folded once (e.g. every
  ``DequantizeLinear`` of int8 weights becomes float weights), ``QuantizeLinear →
  DequantizeLinear`` pairs on activations fuse into one simulated step (float math with ONNX's
  round-half-to-even and saturation), and unused nodes are dropped.
* Per input shape (the batch is dynamic), the graph is *specialized*: the first call runs it
  eagerly, evaluating shape arithmetic (``Shape`` → ``Gather`` → ``Concat`` …) on the host, and
  records the device ops as a flat program with every shape and constant baked in. Later calls
  with that shape replay the program: no host-side shape logic, no device → host syncs. A few
  shapes are cached (LRU); a new batch size costs one eager run.
* On CUDA the program is captured in a ``torch.cuda.CUDAGraph`` after warm-up and replayed per
  call between static input / output buffers, with pinned host buffers and ``non_blocking``
  copies on the backend's own stream; a new batch size re-captures. TF32 is off while the graph is
  captured / run (``tf32=False``; cuDNN's flag is process-global: set for our calls, then
  restored), so FP32 matches ONNX Runtime's FP32 within 1e-4. ``half=True``
  (or artifact metadata ``precision == "fp16"``) computes in FP16, keeping the ops that
  overflow or lose accuracy in FP16 (sigmoid, softmax, exp, reductions, normalizations,
  Q/DQ…) in FP32, like ``export.tensorrt_build.fp16_onnx`` does; inputs and outputs keep the
  graph's dtypes.
* Calls run under ``torch.inference_mode()``. ``threads`` sets ``torch.set_num_threads`` for the
  duration of each call and restores the previous value after: torch's intra-op thread count is
  **process-global**, so another thread using torch at the same moment sees it too.

torch and onnx are imported only when the backend is probed or loaded, never when ``sdk`` is.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sdk.artifact import METADATA_KEY, Metadata
from sdk.backends._base import Backend, IOSpec
from sdk.errors import BackendUnavailableError, InputError, ModelError

__all__ = ["SUPPORTED_OPS", "TorchBackend"]

# The torch module and torch.nn.functional, bound by _require_torch() on first probe / load. The
# op builders below use them as if imported at the top; sdk itself never imports torch.
torch: Any = None
F: Any = None

Tensor = Any  # torch.Tensor (not importable at module import time)

#: Oldest default-domain opset the interpreter accepts (Resize / Clip / Pad took their
#: current input-based forms in opset 11).
MIN_OPSET = 11
#: Specialized programs (one per input shape) kept per backend.
MAX_PROGRAMS = 8
#: Warm-up runs before a CUDA graph capture (the first one specializes the program).
CUDA_WARMUP = 3

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
_IO_DTYPES = {1: np.dtype(np.float32), 10: np.dtype(np.float16)}

# Ops computed in FP32 in half mode: their FP16 error lands on the outputs or they overflow
# (the same list export.tensorrt_build keeps FP32 in FP16 ONNX, plus the normalizations and Q/DQ).
_KEEP_FP32 = frozenset(
    {
        "Sigmoid", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Div", "Erf",
        "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
        "ReduceLogSumExp", "GlobalAveragePool", "LayerNormalization", "InstanceNormalization",
        "BatchNormalization", "Softplus",
    }
)  # fmt: skip


def _require_torch() -> Any:
    """Import torch (bind the module globals) or raise :class:`BackendUnavailableError`."""
    global torch, F
    try:
        import torch as torch_
        import torch.nn.functional as functional
    except ImportError as e:
        raise BackendUnavailableError(
            f"the torch backend needs PyTorch, which cannot be imported ({e}); install it "
            '(pip install torch, or pip install "sonoedge[export]"), or run the artifact with '
            "backend='onnxruntime'"
        ) from e
    torch, F = torch_, functional
    return torch_


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailableError(
            "the torch backend reads the .onnx artifact with the `onnx` package, which cannot be "
            f"imported ({e}); pip install onnx, or use backend='onnxruntime'"
        ) from e
    return onnx


class _Unsupported(Exception):
    """An op, attribute or tensor type the interpreter does not implement."""


# ---- the graph ----------------------------------------------------------------------------------
@dataclass
class _Node:
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
        raise _Unsupported("string tensors are not supported")
    if a.dtype.name == "bfloat16":  # ml_dtypes
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    if a.dtype.name not in _ONNX_DTYPES.values():
        raise _Unsupported(f"tensors of type {a.dtype.name} are not supported")
    return torch.from_numpy(np.array(a, copy=True))


def _dtype(code: int) -> Any:
    name = _ONNX_DTYPES.get(int(code))
    if name is None:
        raise _Unsupported(f"ONNX tensor type {code} is not supported")
    return getattr(torch, name)


def _tensor_proto(t: Any, onnx: Any, what: str) -> Tensor:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelError(
            f"{what} keeps its data in an external file; sonoedge artifacts are single files: "
            "re-export the model without external data"
        )
    return _to_tensor(onnx.numpy_helper.to_array(t))


def _attr_value(a: Any, onnx: Any, where: str) -> Any:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, onnx.TensorProto):
        return _tensor_proto(v, onnx, f"attribute {a.name!r} of {where}")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", "replace") for s in v]
    return v


def _constant(node: _Node) -> Tensor:
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
    raise _Unsupported(f"Constant with attribute(s) {sorted(a)} is not supported")


def _toposort(nodes: list[_Node], known: set[str], source: str) -> list[_Node]:
    """Nodes in dependency order (ONNX files are usually sorted already)."""
    have = set(known) | {""}
    out: list[_Node] = []
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
class _Ctx:
    """What an op builder may know about a node: attributes, input shapes / dtypes, and the values
    of inputs that do not depend on the data (constants, shape arithmetic)."""

    def __init__(
        self,
        node: _Node,
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
            raise _Unsupported(
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
            raise _Unsupported(f"input {i} must be a scalar, got shape {tuple(v.shape)}")
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


Builder = Callable[[_Node, _Ctx], Callable[..., Any]]


@dataclass(frozen=True)
class _OpDef:
    build: Builder
    params: tuple[int, ...] = ()  # inputs read at build time (must be data-independent)
    shape_only: tuple[int, ...] = ()  # inputs whose shape / dtype alone is used
    multi: bool = False  # the built function returns a tuple of outputs


_OPS: dict[str, _OpDef] = {}


def _op(*names: str, params: tuple[int, ...] = (), shape_only: tuple[int, ...] = (),
        multi: bool = False) -> Callable[[Builder], Builder]:  # fmt: skip
    def deco(fn: Builder) -> Builder:
        for n in names:
            _OPS[n] = _OpDef(fn, params, shape_only, multi)
        return fn

    return deco


def _axis(a: int, rank: int) -> int:
    if not -rank <= a < max(rank, 1):
        raise _Unsupported(f"axis {a} is out of range for rank {rank}")
    return a + rank if a < 0 else a


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))


# ---- elementwise --------------------------------------------------------------------------------
def _simple(fn: Callable[..., Any]) -> Builder:
    return lambda n, c: fn


for _name, _fn in {
    "Identity": lambda x: x,
    "Relu": lambda x: torch.relu(x),
    "Sigmoid": lambda x: torch.sigmoid(x),
    "Tanh": lambda x: torch.tanh(x),
    "Exp": lambda x: torch.exp(x),
    "Log": lambda x: torch.log(x),
    "Sqrt": lambda x: torch.sqrt(x),
    "Abs": lambda x: torch.abs(x),
    "Neg": lambda x: torch.neg(x),
    "Reciprocal": lambda x: torch.reciprocal(x),
    "Floor": lambda x: torch.floor(x),
    "Ceil": lambda x: torch.ceil(x),
    "Round": lambda x: torch.round(x),  # half to even, as ONNX
    "Sign": lambda x: torch.sign(x),
    "Erf": lambda x: torch.erf(x),
    "Sin": lambda x: torch.sin(x),
    "Cos": lambda x: torch.cos(x),
    "Softplus": lambda x: F.softplus(x),
    "Not": lambda x: torch.logical_not(x),
    "Add": lambda a, b: torch.add(a, b),
    "Sub": lambda a, b: torch.sub(a, b),
    "Mul": lambda a, b: torch.mul(a, b),
    "Equal": lambda a, b: torch.eq(a, b),
    "Less": lambda a, b: torch.lt(a, b),
    "LessOrEqual": lambda a, b: torch.le(a, b),
    "Greater": lambda a, b: torch.gt(a, b),
    "GreaterOrEqual": lambda a, b: torch.ge(a, b),
    "And": lambda a, b: torch.logical_and(a, b),
    "Or": lambda a, b: torch.logical_or(a, b),
    "Xor": lambda a, b: torch.logical_xor(a, b),
    "Where": lambda cond, a, b: torch.where(cond, a, b),
    "MatMul": lambda a, b: torch.matmul(a, b),
}.items():
    _OPS[_name] = _OpDef(_simple(_fn))


@_op("Div")
def _b_div(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if not c.dtype(0).is_floating_point:  # C++ integer division truncates toward zero
        return lambda a, b: torch.div(a, b, rounding_mode="trunc")
    return torch.div


@_op("Mod")
def _b_mod(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if int(c.attr("fmod", 0)) or c.dtype(0).is_floating_point:
        return torch.fmod  # ONNX requires fmod=1 for floats: sign of the dividend
    return torch.remainder  # integers, fmod=0: sign of the divisor (Python's %)


@_op("Pow")
def _b_pow(n: _Node, c: _Ctx) -> Callable[..., Any]:
    return lambda a, b: torch.pow(a, b).to(a.dtype)


def _variadic(f: Callable[[Any, Any], Any]) -> Builder:
    def build(n: _Node, c: _Ctx) -> Callable[..., Any]:
        def fn(*xs: Tensor) -> Tensor:
            y = xs[0]
            for x in xs[1:]:
                y = f(y, x)
            return y

        return fn

    return build


_OPS["Sum"] = _OpDef(_variadic(lambda a, b: torch.add(a, b)))
_OPS["Max"] = _OpDef(_variadic(lambda a, b: torch.maximum(a, b)))
_OPS["Min"] = _OpDef(_variadic(lambda a, b: torch.minimum(a, b)))


@_op("Mean")
def _b_mean(n: _Node, c: _Ctx) -> Callable[..., Any]:
    add = _variadic(lambda a, b: torch.add(a, b))(n, c)
    return lambda *xs: add(*xs) / len(xs)


@_op("LeakyRelu")
def _b_leaky(n: _Node, c: _Ctx) -> Callable[..., Any]:
    alpha = float(c.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@_op("Elu")
def _b_elu(n: _Node, c: _Ctx) -> Callable[..., Any]:
    alpha = float(c.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


@_op("PRelu")
def _b_prelu(n: _Node, c: _Ctx) -> Callable[..., Any]:
    return lambda x, slope: torch.where(x < 0, x * slope, x)


@_op("HardSigmoid")
def _b_hardsigmoid(n: _Node, c: _Ctx) -> Callable[..., Any]:
    alpha, beta = float(c.attr("alpha", 0.2)), float(c.attr("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@_op("HardSwish")
def _b_hardswish(n: _Node, c: _Ctx) -> Callable[..., Any]:
    # ONNX: x * max(0, min(1, x / 6 + 0.5)) with alpha = 1/6 (not torch's relu6(x + 3) / 6)
    alpha = 1.0 / 6.0
    return lambda x: x * torch.clamp(x * alpha + 0.5, 0.0, 1.0)


@_op("Gelu")
def _b_gelu(n: _Node, c: _Ctx) -> Callable[..., Any]:
    approx = str(c.attr("approximate", "none"))
    if approx not in ("none", "tanh"):
        raise _Unsupported(f"approximate={approx!r}")
    return lambda x: F.gelu(x, approximate=approx)


@_op("Clip", params=(1, 2))
def _b_clip(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if c.opset < 11 or "min" in n.attrs or "max" in n.attrs:
        lo, hi = c.attr("min"), c.attr("max")
    else:
        lo, hi = c.scalar(1), c.scalar(2)
    if lo is None and hi is None:
        return lambda x: x
    return lambda x: torch.clamp(x, lo, hi)


@_op("Cast")
def _b_cast(n: _Node, c: _Ctx) -> Callable[..., Any]:
    dt = c.float_dtype(_dtype(c.attr("to")))  # float8 (and its `saturate`) is refused here
    return lambda x: x.to(dt)


@_op("CastLike", shape_only=(1,))
def _b_castlike(n: _Node, c: _Ctx) -> Callable[..., Any]:
    dt = c.dtype(1)
    return lambda x: x.to(dt)


@_op("Dropout", params=(1, 2), multi=True)
def _b_dropout(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if c.has(2) and bool(c.scalar(2)):
        raise _Unsupported("training_mode=True")
    if c.used(1):
        return lambda x: (x, torch.ones_like(x, dtype=torch.bool))
    return lambda x: (x,)


# ---- shapes -------------------------------------------------------------------------------------
@_op("Shape", shape_only=(0,))
def _b_shape(n: _Node, c: _Ctx) -> Callable[..., Any]:
    shape = c.shape(0)
    start, end = int(c.attr("start", 0)), c.attr("end")
    value = torch.tensor(shape[start : None if end is None else int(end)], dtype=torch.int64)
    return lambda: value


@_op("Size", shape_only=(0,))
def _b_size(n: _Node, c: _Ctx) -> Callable[..., Any]:
    value = torch.tensor(_prod(c.shape(0)), dtype=torch.int64)
    return lambda: value


@_op("Reshape", params=(1,))
def _b_reshape(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs, shape = c.shape(0), c.ints(1)
    allowzero = int(c.attr("allowzero", 0))
    target = [xs[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
    if target.count(-1) > 1:
        raise _Unsupported(f"Reshape to {shape}: more than one -1")
    if -1 in target:
        known = _prod([s for s in target if s != -1])
        target[target.index(-1)] = _prod(xs) // known if known else 0
    if _prod(target) != _prod(xs):
        raise _Unsupported(f"cannot reshape {xs} to {shape}")
    return lambda x: x.reshape(target)


@_op("Flatten")
def _b_flatten(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    a = int(c.attr("axis", 1))
    a = a + len(xs) if a < 0 else a
    target = (_prod(xs[:a]), _prod(xs[a:]))
    return lambda x: x.reshape(target)


@_op("Transpose")
def _b_transpose(n: _Node, c: _Ctx) -> Callable[..., Any]:
    r = len(c.shape(0))
    perm = [int(p) for p in c.attr("perm", list(range(r))[::-1])]
    return lambda x: x.permute(perm)


@_op("Squeeze", params=(1,))
def _b_squeeze(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    axes = c.attr("axes") if c.opset < 13 else c.ints(1)
    if axes is None:
        target = [d for d in xs if d != 1]
    else:
        drop = {_axis(int(a), len(xs)) for a in axes}
        target = [d for i, d in enumerate(xs) if i not in drop]
    return lambda x: x.reshape(target)


@_op("Unsqueeze", params=(1,))
def _b_unsqueeze(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    axes = c.attr("axes") if c.opset < 13 else c.ints(1)
    r = len(xs) + len(axes)
    put = {_axis(int(a), r) for a in axes}
    it = iter(xs)
    target = [1 if i in put else next(it) for i in range(r)]
    return lambda x: x.reshape(target)


@_op("Concat")
def _b_concat(n: _Node, c: _Ctx) -> Callable[..., Any]:
    a = _axis(int(c.attr("axis")), len(c.shape(0)))
    return lambda *xs: torch.cat(xs, a)


@_op("Split", params=(1,), multi=True)
def _b_split(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    a = _axis(int(c.attr("axis", 0)), len(xs))
    sizes = c.attr("split") if c.opset < 13 else c.ints(1)
    if sizes is None:
        k = int(c.attr("num_outputs", len(n.outputs)))
        step = -(-xs[a] // k)  # ceil: the last chunk is smaller (opset 18)
        sizes = [min(step, xs[a] - i * step) for i in range(k)]
    sizes = [int(s) for s in sizes]
    return lambda x: torch.split(x, sizes, a)


@_op("Slice", params=(1, 2, 3, 4))
def _b_slice(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    if c.opset < 10:
        raise _Unsupported("Slice before opset 10")
    starts, ends = c.ints(1), c.ints(2)
    axes = c.ints(3) or list(range(len(starts)))
    steps = c.ints(4) or [1] * len(starts)
    index: list[Any] = [slice(None)] * len(xs)
    flips: list[tuple[int, Tensor]] = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = _axis(a, len(xs))
        d = xs[a]
        if st == 0:
            raise _Unsupported("Slice step 0")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            index[a] = slice(min(max(s, 0), d), min(max(e, 0), d), st)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            flips.append((a, c.to(torch.arange(s, e, st, dtype=torch.int64))))
    key = tuple(index)

    def fn(x: Tensor) -> Tensor:
        y = x[key]
        for a, idx in flips:
            y = y.index_select(a, idx)
        return y

    return fn


@_op("Gather")
def _b_gather(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    a = _axis(int(c.attr("axis", 0)), len(xs))
    d = xs[a]
    idx = c.maybe_const(1)
    if idx is not None:
        idx = idx.to(torch.int64)
        idx = torch.where(idx < 0, idx + d, idx)
        if idx.dim() == 0:
            i = int(idx)
            return lambda x, _i: x.select(a, i)
        flat = c.to(idx.reshape(-1))
        shape = (*xs[:a], *idx.shape, *xs[a + 1 :])
        return lambda x, _i: x.index_select(a, flat).reshape(shape)

    def fn(x: Tensor, i: Tensor) -> Tensor:
        i = torch.where(i < 0, i + d, i)
        return x.index_select(a, i.reshape(-1)).reshape((*xs[:a], *i.shape, *xs[a + 1 :]))

    return fn


@_op("ScatterND")
def _b_scatternd(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if str(c.attr("reduction", "none")) != "none":
        raise _Unsupported(f"reduction={c.attr('reduction')!r}")
    xs = c.shape(0)
    k = c.shape(1)[-1]
    dims = c.to(torch.tensor(xs[:k], dtype=torch.int64))

    def fn(data: Tensor, indices: Tensor, updates: Tensor) -> Tensor:
        idx = torch.where(indices < 0, indices + dims, indices)
        out = data.clone()
        out[tuple(idx.unbind(-1))] = updates
        return out

    return fn


@_op("ConstantOfShape", params=(0,))
def _b_constant_of_shape(n: _Node, c: _Ctx) -> Callable[..., Any]:
    shape = c.ints(0)
    v = c.attr("value")
    value = v.reshape(()).item() if v is not None else 0.0
    dt = c.float_dtype(v.dtype if v is not None else torch.float32)
    device = c.device if c.dynamic else "cpu"
    return lambda: torch.full(shape, value, dtype=dt, device=device)


@_op("Expand", params=(1,))
def _b_expand(n: _Node, c: _Ctx) -> Callable[..., Any]:
    out = tuple(int(s) for s in np.broadcast_shapes(c.shape(0), tuple(c.ints(1))))
    return lambda x: torch.broadcast_to(x, out)


@_op("Tile", params=(1,))
def _b_tile(n: _Node, c: _Ctx) -> Callable[..., Any]:
    reps = c.ints(1)
    return lambda x: x.repeat(reps)


@_op("Range", params=(0, 1, 2))
def _b_range(n: _Node, c: _Ctx) -> Callable[..., Any]:
    start, limit, delta = c.scalar(0), c.scalar(1), c.scalar(2)
    dt = c.dtype(0)
    k = max(math.ceil((limit - start) / delta), 0)
    if dt.is_floating_point:
        value = (torch.arange(k, dtype=torch.float64) * delta + start).to(dt)
    else:
        value = torch.arange(k, dtype=torch.int64).mul(int(delta)).add(int(start)).to(dt)
    value = c.to(value)
    return lambda: value


@_op("Pad", params=(1, 2, 3))
def _b_pad(n: _Node, c: _Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    r = len(xs)
    mode = str(c.attr("mode", "constant"))
    pads = c.ints(1)
    axes = [_axis(a, r) for a in (c.ints(3) or range(r))]
    begin, end = [0] * r, [0] * r
    for j, a in enumerate(axes):
        begin[a], end[a] = pads[j], pads[j + len(axes)]
    value = c.scalar(2) if c.has(2) else 0
    first = next((i for i in range(r) if begin[i] or end[i]), r)
    arg = [v for i in reversed(range(first, r)) for v in (begin[i], end[i])]
    if not arg:
        return lambda x: x
    if mode == "constant":
        return lambda x: F.pad(x, arg, mode="constant", value=value)
    tmode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if tmode is None:
        raise _Unsupported(f"mode={mode!r}")
    if r - first > 3 or r - first > r - 2 or r > 5 or min(begin + end) < 0:
        raise _Unsupported(
            f"mode={mode!r} padding axes {list(range(first, r))} of a rank-{r} input"
        )
    return lambda x: F.pad(x, arg, mode=tmode)


# ---- reductions / normalizations ----------------------------------------------------------------
def _reduce(kind: str) -> Builder:
    def build(n: _Node, c: _Ctx) -> Callable[..., Any]:
        r = len(c.shape(0))
        keep = bool(int(c.attr("keepdims", 1)))
        axes = c.attr("axes")
        if axes is None and c.has(1):
            axes = c.ints(1)
        if not axes:
            if int(c.attr("noop_with_empty_axes", 0)):
                return lambda x: x
            axes = list(range(r))
        dims = sorted({_axis(int(a), r) for a in axes})
        if kind == "Prod":

            def prod(x: Tensor) -> Tensor:
                for d in reversed(dims):
                    x = torch.prod(x, d, keepdim=keep)
                return x

            return prod
        f = {
            "Mean": lambda x: torch.mean(x, dims, keepdim=keep),
            "Sum": lambda x: torch.sum(x, dims, keepdim=keep),
            "Max": lambda x: torch.amax(x, dims, keepdim=keep),
            "Min": lambda x: torch.amin(x, dims, keepdim=keep),
            "L1": lambda x: torch.sum(torch.abs(x), dims, keepdim=keep),
            "L2": lambda x: torch.sqrt(torch.sum(x * x, dims, keepdim=keep)),
            "SumSquare": lambda x: torch.sum(x * x, dims, keepdim=keep),
            "LogSumExp": lambda x: torch.logsumexp(x, dims, keepdim=keep),
        }[kind]
        return f

    return build


for _kind in ("Mean", "Sum", "Max", "Min", "Prod", "L1", "L2", "SumSquare", "LogSumExp"):
    _OPS[f"Reduce{_kind}"] = _OpDef(_reduce(_kind), params=(1,))


def _arg(kind: str) -> Builder:
    def build(n: _Node, c: _Ctx) -> Callable[..., Any]:
        xs = c.shape(0)
        a = _axis(int(c.attr("axis", 0)), len(xs))
        keep = bool(int(c.attr("keepdims", 1)))
        f = torch.argmax if kind == "max" else torch.argmin
        if int(c.attr("select_last_index", 0)):
            last = xs[a] - 1
            return lambda x: last - f(torch.flip(x, (a,)), a, keepdim=keep)
        return lambda x: f(x, a, keepdim=keep)

    return build


_OPS["ArgMax"] = _OpDef(_arg("max"))
_OPS["ArgMin"] = _OpDef(_arg("min"))


def _softmax(log: bool) -> Builder:
    def build(n: _Node, c: _Ctx) -> Callable[..., Any]:
        xs = c.shape(0)
        f = torch.log_softmax if log else torch.softmax
        if c.opset >= 13:
            a = _axis(int(c.attr("axis", -1)), len(xs))
            return lambda x: f(x, a)
        a = _axis(int(c.attr("axis", 1)), len(xs))  # opset < 13: coerced to 2-D at axis
        flat = (_prod(xs[:a]), _prod(xs[a:]))
        return lambda x: f(x.reshape(flat), 1).reshape(xs)

    return build


_OPS["Softmax"] = _OpDef(_softmax(False))
_OPS["LogSoftmax"] = _OpDef(_softmax(True))


@_op("BatchNormalization", multi=True)
def _b_batchnorm(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if int(c.attr("training_mode", 0)) or any(c.used(i) for i in range(1, len(n.outputs))):
        raise _Unsupported("training mode (running statistics outputs)")
    eps = float(c.attr("epsilon", 1e-5))
    return lambda x, s, b, m, v: (F.batch_norm(x, m, v, s, b, False, 0.0, eps),)


@_op("InstanceNormalization")
def _b_instancenorm(n: _Node, c: _Ctx) -> Callable[..., Any]:
    eps = float(c.attr("epsilon", 1e-5))
    return lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=eps)


@_op("LayerNormalization", multi=True)
def _b_layernorm(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if c.used(1) or c.used(2):
        raise _Unsupported("the Mean / InvStdDev outputs")
    xs = c.shape(0)
    a = _axis(int(c.attr("axis", -1)), len(xs))
    eps = float(c.attr("epsilon", 1e-5))
    norm = xs[a:]
    dims = tuple(range(a, len(xs)))
    if c.shape(1) == norm and (not c.has(2) or c.shape(2) == norm):
        return lambda x, s, b=None: (F.layer_norm(x, norm, s, b, eps),)

    def fn(x: Tensor, s: Tensor, b: Tensor | None = None) -> tuple[Tensor]:
        mu = x.mean(dims, keepdim=True)
        var = (x - mu).pow(2).mean(dims, keepdim=True)
        y = (x - mu) / torch.sqrt(var + eps) * s
        return (y if b is None else y + b,)

    return fn


# ---- convolution / pooling / linear -------------------------------------------------------------
def _pads(c: _Ctx, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dil: Sequence[int]) -> tuple[list[int], list[int]]:  # fmt: skip
    """(begin, end) pads per spatial axis, auto_pad resolved against the input shape."""
    nd = len(kernel)
    auto = str(c.attr("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        p = [int(v) for v in c.attr("pads", [0] * (2 * nd))]
        return p[:nd], p[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise _Unsupported(f"auto_pad={auto!r}")
    begin, end = [], []
    for i in range(nd):
        out = -(-spatial[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - spatial[i])
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end


def _pad_arg(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX (begin…, end…) → F.pad's (last-axis begin, last-axis end, …)."""
    return [v for i in reversed(range(len(begin))) for v in (begin[i], end[i])]


@_op("Conv")
def _b_conv(n: _Node, c: _Ctx) -> Callable[..., Any]:
    kernel = c.shape(1)[2:]
    nd = len(kernel)
    if nd not in (1, 2, 3):
        raise _Unsupported(f"{nd}-D convolution")
    strides = [int(s) for s in c.attr("strides", [1] * nd)]
    dil = [int(d) for d in c.attr("dilations", [1] * nd)]
    group = int(c.attr("group", 1))
    begin, end = _pads(c, c.shape(0)[2:], kernel, strides, dil)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    if begin == end:
        return lambda x, w, b=None: conv(x, w, b, strides, begin, dil, group)
    arg = _pad_arg(begin, end)
    return lambda x, w, b=None: conv(F.pad(x, arg), w, b, strides, 0, dil, group)


@_op("_ConvAct")
def _b_conv_act(n: _Node, c: _Ctx) -> Callable[..., Any]:
    """Conv followed by Relu / Clip (fused at load): the activation runs in place on the
    convolution's fresh output, saving a pass over memory and an allocation."""
    conv = _b_conv(n, c)
    lo, hi = n.attrs["_clamp"]
    if lo == 0.0 and hi is None:
        return lambda x, w, b=None: conv(x, w, b).relu_()
    return lambda x, w, b=None: conv(x, w, b).clamp_(lo, hi)


@_op("ConvTranspose")
def _b_convtranspose(n: _Node, c: _Ctx) -> Callable[..., Any]:
    kernel = c.shape(1)[2:]
    nd = len(kernel)
    if nd not in (1, 2, 3):
        raise _Unsupported(f"{nd}-D transposed convolution")
    if c.attr("output_shape") is not None or str(c.attr("auto_pad", "NOTSET")) not in (
        "NOTSET",
        "",
        "VALID",
    ):
        raise _Unsupported("output_shape / auto_pad SAME (give explicit pads)")
    strides = [int(s) for s in c.attr("strides", [1] * nd)]
    dil = [int(d) for d in c.attr("dilations", [1] * nd)]
    outpad = [int(p) for p in c.attr("output_padding", [0] * nd)]
    group = int(c.attr("group", 1))
    p = [int(v) for v in c.attr("pads", [0] * (2 * nd))]
    if str(c.attr("auto_pad", "NOTSET")) == "VALID":
        p = [0] * (2 * nd)
    begin, end = p[:nd], p[nd:]
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    if begin == end:
        return lambda x, w, b=None: conv(x, w, b, strides, begin, outpad, group, dil)
    crop = (
        slice(None),
        slice(None),
        *(slice(b, -e if e else None) for b, e in zip(begin, end, strict=True)),
    )
    return lambda x, w, b=None: conv(x, w, b, strides, 0, outpad, group, dil)[crop]


def _pool(kind: str) -> Builder:
    def build(n: _Node, c: _Ctx) -> Callable[..., Any]:
        if kind == "max" and c.used(1):
            raise _Unsupported("the Indices output")
        xs = c.shape(0)
        kernel = [int(k) for k in c.attr("kernel_shape")]
        nd = len(kernel)
        if nd not in (1, 2, 3) or len(xs) != nd + 2:
            raise _Unsupported(f"{nd}-D pooling")
        strides = [int(s) for s in c.attr("strides", [1] * nd)]
        dil = [int(d) for d in c.attr("dilations", [1] * nd)]
        ceil = bool(int(c.attr("ceil_mode", 0)))
        begin, end = _pads(c, xs[2:], kernel, strides, dil)
        native = begin == end and all(
            2 * p <= (k - 1) * d + 1 for p, k, d in zip(begin, kernel, dil, strict=True)
        )
        if kind == "max":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            if native:
                return lambda x: (pool(x, kernel, strides, begin, dil, ceil),)
            if ceil:
                raise _Unsupported("ceil_mode=1 with asymmetric or large pads")
            arg = _pad_arg(begin, end)
            return lambda x: (pool(F.pad(x, arg, value=-math.inf), kernel, strides, 0, dil),)
        if any(d != 1 for d in dil):
            raise _Unsupported("AveragePool with dilations")
        include = bool(int(c.attr("count_include_pad", 0)))
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        if ceil and any(begin + end):
            # torch and ONNX Runtime count the divisor of windows that overhang the padding
            # differently; refuse rather than differ.
            raise _Unsupported("ceil_mode=1 with pads")
        if native:
            return lambda x: pool(x, kernel, strides, begin, ceil, include)
        if not include or ceil:
            raise _Unsupported("asymmetric pads with count_include_pad=0 or ceil_mode=1")
        arg = _pad_arg(begin, end)
        return lambda x: pool(F.pad(x, arg), kernel, strides, 0, False, True)

    return build


_OPS["MaxPool"] = _OpDef(_pool("max"), multi=True)
_OPS["AveragePool"] = _OpDef(_pool("avg"))


@_op("GlobalAveragePool")
def _b_gap(n: _Node, c: _Ctx) -> Callable[..., Any]:
    dims = tuple(range(2, len(c.shape(0))))
    return lambda x: torch.mean(x, dims, keepdim=True)


@_op("GlobalMaxPool")
def _b_gmp(n: _Node, c: _Ctx) -> Callable[..., Any]:
    dims = tuple(range(2, len(c.shape(0))))
    return lambda x: torch.amax(x, dims, keepdim=True)


@_op("Gemm")
def _b_gemm(n: _Node, c: _Ctx) -> Callable[..., Any]:
    alpha, beta = float(c.attr("alpha", 1.0)), float(c.attr("beta", 1.0))
    ta, tb = int(c.attr("transA", 0)), int(c.attr("transB", 0))

    def fn(a: Tensor, b: Tensor, cc: Tensor | None = None) -> Tensor:
        a = a.t() if ta else a
        b = b.t() if tb else b
        if cc is None:
            y = a @ b
            return y if alpha == 1.0 else y * alpha
        if cc.dim() <= 2:
            return torch.addmm(cc, a, b, beta=beta, alpha=alpha)
        return (a @ b) * alpha + cc * beta

    return fn


# ---- resampling ---------------------------------------------------------------------------------
_CTM = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)


def _source_coords(ctm: str, n_out: int, n_in: int, scale: np.float32) -> np.ndarray:
    """Resize: input coordinate of every output index, in float32 like ONNX Runtime."""
    f32 = np.float32
    x = np.arange(n_out, dtype=f32)
    half, s, lin, lout = f32(0.5), f32(scale), f32(n_in), f32(n_out)
    if ctm == "half_pixel":
        return (x + half) / s - half
    if ctm == "half_pixel_symmetric":
        adj = lout / (s * lin)
        offset = (lin / f32(2)) * (f32(1) - adj)
        return offset + (x + half) / s - half
    if ctm == "pytorch_half_pixel":
        return (x + half) / s - half if n_out > 1 else np.zeros(n_out, f32)
    if ctm == "align_corners":
        return np.zeros(n_out, f32) if n_out == 1 else x * (lin - f32(1)) / (lout - f32(1))
    if ctm == "asymmetric":
        return x / s
    return (x + half) / s  # tf_half_pixel_for_nn


def _nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    t = np.trunc(x)
    away = np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)  # std::round: half away from 0
    if mode == "round_prefer_floor":
        return np.where(x == t + np.float32(0.5), t, away)
    if mode == "round_prefer_ceil":
        return away
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    raise _Unsupported(f"nearest_mode={mode!r}")


def _cubic_weights(r: np.ndarray, a: float) -> np.ndarray:
    def k(s: np.ndarray) -> np.ndarray:
        s = np.abs(s)
        near = ((a + 2) * s - (a + 3)) * s * s + 1
        far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
        return np.where(s < 1, near, np.where(s < 2, far, 0.0))

    return np.stack([k(r + 1), k(r), k(1 - r), k(2 - r)], axis=1).astype(np.float32)


def _resize_taps(mode: str, ctm: str, nearest: str, a: float, exclude: bool, n_out: int,
                 n_in: int, scale: np.float32) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(indices [n_out, taps], weights [n_out, taps] or None) of one resized axis."""
    x = _source_coords(ctm, n_out, n_in, scale)
    if mode == "nearest":
        idx = np.clip(_nearest_index(x, nearest), 0, n_in - 1).astype(np.int64)
        return idx[:, None], None
    if mode == "linear":
        xc = np.clip(x, np.float32(0), np.float32(n_in - 1))
        i0 = np.minimum(np.floor(xc), n_in - 1).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = np.abs(xc - i0.astype(np.float32))
        w0 = np.abs(xc - i1.astype(np.float32))
        same = i0 == i1
        w0, w1 = np.where(same, 0.5, w0), np.where(same, 0.5, w1)
        return np.stack([i0, i1], 1), np.stack([w0, w1], 1).astype(np.float32)
    base = np.floor(x)
    w = _cubic_weights((x - base).astype(np.float32), a)
    raw = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude:
        w = np.where((raw >= 0) & (raw < n_in), w, 0.0)
        w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    return np.clip(raw, 0, n_in - 1), w


def _pow2_upscale(n_in: int, n_out: int, scale: np.float32) -> bool:
    k = n_out // n_in if n_in else 0
    return k >= 1 and n_out == k * n_in and k & (k - 1) == 0 and scale == k


@_op("Resize", params=(1, 2, 3))
def _b_resize(n: _Node, c: _Ctx) -> Callable[..., Any]:
    mode = str(c.attr("mode", "nearest"))
    ctm = str(c.attr("coordinate_transformation_mode", "half_pixel"))
    nearest = str(c.attr("nearest_mode", "round_prefer_floor"))
    if mode not in ("nearest", "linear", "cubic"):
        raise _Unsupported(f"mode={mode!r}")
    if ctm not in _CTM:
        raise _Unsupported(f"coordinate_transformation_mode={ctm!r}")
    if int(c.attr("antialias", 0)):
        raise _Unsupported("antialias=1")
    xs = c.shape(0)
    r = len(xs)
    if mode != "nearest" and not c.dtype(0).is_floating_point:
        raise _Unsupported(f"{mode} resize of {c.dtype(0)} tensors")
    axes = [_axis(int(a), r) for a in c.attr("axes", range(r))]
    sizes = c.ints(3) if c.has(3) and c.const(3).numel() else None
    scales = c.floats(2) if c.has(2) and c.const(2).numel() else None
    f32 = np.float32
    out, sc = list(xs), [f32(1)] * r
    if sizes is not None:
        if str(c.attr("keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise _Unsupported(f"keep_aspect_ratio_policy={c.attr('keep_aspect_ratio_policy')!r}")
        for ax, s in zip(axes, sizes, strict=True):
            out[ax], sc[ax] = int(s), f32(s) / f32(xs[ax])
    elif scales is not None:
        for ax, s in zip(axes, scales, strict=True):
            sc[ax] = f32(s)
            out[ax] = int(f32(xs[ax]) * f32(s))
    else:
        raise _Unsupported("Resize without scales or sizes")
    todo = [ax for ax in range(r) if out[ax] != xs[ax] or sc[ax] != 1]
    if not todo:
        return lambda x: x
    exact = all(f32(out[ax]) / f32(xs[ax]) == sc[ax] for ax in todo)
    if (
        mode == "linear"
        and r == 4
        and set(todo) <= {2, 3}
        and exact
        and (
            ctm in ("half_pixel", "align_corners")
            or (ctm == "pytorch_half_pixel" and min(out[2:]) > 1)
        )
    ):
        size, ac = (out[2], out[3]), ctm == "align_corners"
        return lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=ac)
    if (
        mode == "nearest"
        and ctm == "asymmetric"
        and nearest == "floor"
        and r == 4
        and set(todo) <= {2, 3}
        and all(_pow2_upscale(xs[ax], out[ax], sc[ax]) for ax in (2, 3))
    ):  # floor(i / 2^k) exactly: torch's nearest computes i * 2^-k, which is exact
        size = (out[2], out[3])
        return lambda x: F.interpolate(x, size=size, mode="nearest")
    a, excl = float(c.attr("cubic_coeff_a", -0.75)), bool(int(c.attr("exclude_outside", 0)))
    plan = []
    for ax in todo:
        idx, w = _resize_taps(mode, ctm, nearest, a, excl, out[ax], xs[ax], sc[ax])
        view = [1] * r
        view[ax] = out[ax]
        cols = [
            c.to(torch.from_numpy(np.ascontiguousarray(idx[:, t]))) for t in range(idx.shape[1])
        ]
        ws = None
        if w is not None:
            dt = c.dtype(0)
            ws = [c.to(torch.from_numpy(np.ascontiguousarray(w[:, t])).to(dt).reshape(view))
                  for t in range(w.shape[1])]  # fmt: skip
        plan.append((ax, cols, ws))

    def fn(x: Tensor) -> Tensor:
        for ax, cols, ws in plan:
            if ws is None:
                x = x.index_select(ax, cols[0])
                continue
            y = x.index_select(ax, cols[0]) * ws[0]
            for col, w in zip(cols[1:], ws[1:], strict=True):
                y = y + x.index_select(ax, col) * w
            x = y
        return x

    return fn


@_op("GridSample")
def _b_gridsample(n: _Node, c: _Ctx) -> Callable[..., Any]:
    if len(c.shape(0)) != 4:
        raise _Unsupported("GridSample of a non-4-D input")
    mode = str(c.attr("mode", "linear" if c.opset >= 20 else "bilinear"))
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise _Unsupported(f"mode={mode!r}")
    pad = str(c.attr("padding_mode", "zeros"))
    if pad not in ("zeros", "border", "reflection"):
        raise _Unsupported(f"padding_mode={pad!r}")
    ac = bool(int(c.attr("align_corners", 0)))
    return lambda x, g: F.grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)


# ---- quantization (simulated in float) ----------------------------------------------------------
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767), "uint16": (0, 65535)}


def _qparams(c: _Ctx, rank: int) -> tuple[Tensor, Tensor | None, Any]:
    """(scale as float32 shaped for broadcasting, zero point as float32 or None, zp dtype)."""
    if int(c.attr("block_size", 0)):
        raise _Unsupported("blocked quantization (block_size)")
    scale = c.const(1)
    zp = c.const(2)
    qdt = zp.dtype if zp is not None else _dtype(int(c.attr("output_dtype", 2)) or 2)
    view: list[int] = []  # per tensor (a 1-element scale broadcasts the same either way)
    if scale.numel() > 1:  # per axis
        a = _axis(int(c.attr("axis", 1)), rank)
        view = [1] * rank
        view[a] = scale.numel()
    s = c.to(scale.to(torch.float32).reshape(view))
    z = None
    if zp is not None and bool(torch.any(zp != 0)):
        z = zp.to(torch.int64 if qdt == torch.int32 else torch.float32).reshape(view)
    return s, z, qdt


def _qbounds(qdt: Any) -> tuple[int, int]:
    name = str(qdt).replace("torch.", "")
    if name not in _QRANGE:
        raise _Unsupported(f"quantization to {name}")
    return _QRANGE[name]


@_op("QuantizeLinear", params=(1, 2))
def _b_quantize(n: _Node, c: _Ctx) -> Callable[..., Any]:
    s, z, qdt = _qparams(c, len(c.shape(0)))
    lo, hi = _qbounds(qdt)
    z = None if z is None else c.to(z)

    def fn(x: Tensor) -> Tensor:
        y = torch.round(torch.div(x.to(torch.float32), s))  # ONNX: x / scale, half to even
        if z is not None:
            y = y + z
        return y.clamp_(lo, hi).to(qdt)

    return fn


@_op("DequantizeLinear", params=(1, 2))
def _b_dequantize(n: _Node, c: _Ctx) -> Callable[..., Any]:
    scale = c.const(1)
    s, z, _ = _qparams(c, len(c.shape(0)))
    z = None if z is None else c.to(z)
    out = c.float_dtype(scale.dtype)
    wide = c.dtype(0) == torch.int32  # exact: subtract in int64, then one rounding to float

    def fn(x: Tensor) -> Tensor:
        if wide:
            v = (x.to(torch.int64) - z if z is not None else x).to(torch.float32)
        else:
            v = x.to(torch.float32)
            if z is not None:
                v = v - z
        return (v * s).to(out)

    return fn


@_op("_QDQ", params=(1, 2))
def _b_qdq(n: _Node, c: _Ctx) -> Callable[..., Any]:
    """DequantizeLinear(QuantizeLinear(x)) with the same scale / zero point, fused:
    ``(clamp(round(x / s), qmin - zp, qmax - zp)) * s`` — equal to the two ops, in one pass."""
    s, z, qdt = _qparams(c, len(c.shape(0)))
    lo, hi = _qbounds(qdt)
    out = c.float_dtype(c.dtype(0))
    if z is None:
        lo_t, hi_t = float(lo), float(hi)
    elif z.numel() == 1:
        lo_t, hi_t = float(lo - z.item()), float(hi - z.item())
    else:
        lo_t, hi_t = c.to(float(lo) - z), c.to(float(hi) - z)

    def fn(x: Tensor) -> Tensor:
        y = torch.div(x.to(torch.float32), s)  # a new tensor: the in-place ops below are safe
        y.round_().clamp_(lo_t, hi_t).mul_(s)
        return y.to(out)

    return fn


#: Every ONNX op (default domain) the torch backend implements.
SUPPORTED_OPS: frozenset[str] = frozenset(k for k in _OPS if not k.startswith("_")) | {"Constant"}


# ---- the interpreter ----------------------------------------------------------------------------
class _Program:
    """One input shape's device ops, flattened: shapes and constants baked in, values in slots."""

    __slots__ = ("in_slot", "in_to", "out_casts", "out_slots", "steps", "template")

    def __init__(self) -> None:
        self.template: list[Any] = [None]  # slot 0: an absent optional input
        # (function, input slots, output slot (int) or slots (tuple, -1: unused), slots to free)
        self.steps: list[tuple[Callable[..., Any], tuple[int, ...], Any, tuple[int, ...]]] = []
        self.in_slot = 0
        self.in_to: dict[str, Any] | None = None  # Tensor.to() arguments for the input
        self.out_slots: tuple[int, ...] = ()
        self.out_casts: tuple[Any, ...] = ()

    def run(self, x: Tensor) -> list[Tensor]:
        env = self.template.copy()
        env[self.in_slot] = x if self.in_to is None else x.to(**self.in_to)
        for fn, ins, out, free in self.steps:
            r = fn(*[env[i] for i in ins])
            if type(out) is int:
                env[out] = r
            else:
                for s, v in zip(out, r, strict=False):
                    if s >= 0:
                        env[s] = v
            for s in free:
                env[s] = None
        return [
            env[s] if dt is None else env[s].to(dt)
            for s, dt in zip(self.out_slots, self.out_casts, strict=True)
        ]


class _Interpreter:
    """An ONNX graph as torch ops: constant folding at construction, one program per shape."""

    def __init__(
        self,
        nodes: list[_Node],
        consts: dict[str, Tensor],
        input_name: str,
        outputs: list[tuple[str, Any]],
        opset: int,
        device: Any,
        half: bool,
        source: str,
        channels_last: bool = False,
    ) -> None:
        self.input_name, self.outputs, self.opset = input_name, outputs, opset
        self.channels_last = channels_last
        self.device, self.half, self.source = device, half, source
        self.consts = dict(consts)
        out_names = {o for o, _ in outputs}
        nodes = _toposort(nodes, set(self.consts) | {input_name}, source)
        self.used = self._used(nodes, out_names)
        nodes = self._fold(nodes)
        nodes = self._fuse_qdq(nodes, out_names)
        nodes = self._fuse_conv_act(nodes, out_names)
        nodes = self._dce(nodes, out_names)
        self.nodes = nodes
        self.used = self._used(nodes, out_names)
        self._dev_consts: dict[str, Tensor] = {}
        self._programs: OrderedDict[tuple[int, ...], _Program] = OrderedDict()

    # ---- graph passes ---------------------------------------------------------------------------
    @staticmethod
    def _used(nodes: list[_Node], out_names: set[str]) -> set[str]:
        return {i for n in nodes for i in n.inputs if i} | out_names

    def _fold(self, nodes: list[_Node]) -> list[_Node]:
        """Evaluate, once, every node whose inputs are all constants."""
        keep = []
        for n in nodes:
            if all(i == "" or i in self.consts for i in n.inputs):
                outs = self._eval_static(n, self.consts)
                self.consts.update((o, v) for o, v in zip(n.outputs, outs, strict=False) if o)
            else:
                keep.append(n)
        return keep

    def _fuse_qdq(self, nodes: list[_Node], out_names: set[str]) -> list[_Node]:
        """QuantizeLinear → DequantizeLinear with equal parameters → one ``_QDQ`` node."""
        producer = {o: n for n in nodes for o in n.outputs}
        out = []
        for n in nodes:
            q = producer.get(n.inputs[0]) if n.op == "DequantizeLinear" else None
            if q is not None and q.op == "QuantizeLinear" and self._same_qparams(q, n):
                n = _Node("_QDQ", n.name, (q.inputs[0], *q.inputs[1:3]), n.outputs, dict(q.attrs))
            out.append(n)
        return out

    def _same_qparams(self, q: _Node, dq: _Node) -> bool:
        if q.attrs.get("block_size") or dq.attrs.get("block_size"):
            return False
        vals = []
        for node in (q, dq):
            s = self.consts.get(node.inputs[1]) if len(node.inputs) > 1 else None
            z = self.consts.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            if s is None or (len(node.inputs) > 2 and node.inputs[2] and z is None):
                return False
            vals.append((s, z, int(node.attrs.get("axis", 1)) if s.numel() > 1 else 0))
        (s1, z1, a1), (s2, z2, a2) = vals
        same_z = (z1 is None and z2 is None) or (
            z1 is not None and z2 is not None and z1.dtype == z2.dtype and torch.equal(z1, z2)
        )
        return a1 == a2 and s1.dtype == s2.dtype and torch.equal(s1, s2) and same_z

    def _fuse_conv_act(self, nodes: list[_Node], out_names: set[str]) -> list[_Node]:
        """Conv → Relu / Clip (constant bounds), the Conv's output used only there → one node."""
        consumers = Counter(i for n in nodes for i in n.inputs if i)
        producer = {o: n for n in nodes for o in n.outputs}
        fused: dict[int, tuple[_Node, tuple[Any, Any]]] = {}
        for n in nodes:
            p = producer.get(n.inputs[0]) if n.op in ("Relu", "Clip") and n.inputs else None
            if p is None or p.op != "Conv" or consumers[n.inputs[0]] != 1:
                continue
            if n.inputs[0] in out_names:
                continue
            if n.op == "Relu":
                fused[id(p)] = (n, (0.0, None))
                continue
            if self.opset < 11 or "min" in n.attrs or "max" in n.attrs:
                continue
            bounds = []
            for k in (1, 2):
                name = n.inputs[k] if k < len(n.inputs) else ""
                v = self.consts.get(name) if name else None
                if name and (v is None or v.numel() != 1):
                    break
                bounds.append(None if v is None else v.reshape(()).item())
            else:
                if bounds[0] is not None or bounds[1] is not None:
                    fused[id(p)] = (n, (bounds[0], bounds[1]))
        acts = {id(a) for a, _ in fused.values()}
        out = []
        for n in nodes:
            if id(n) in acts:
                continue
            if id(n) in fused:
                act, bounds = fused[id(n)]
                n = _Node("_ConvAct", n.name, n.inputs, act.outputs, {**n.attrs, "_clamp": bounds})
            out.append(n)
        return out

    @staticmethod
    def _dce(nodes: list[_Node], out_names: set[str]) -> list[_Node]:
        needed = set(out_names)
        keep = []
        for n in reversed(nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        return keep[::-1]

    # ---- evaluation -----------------------------------------------------------------------------
    def _build(self, n: _Node, values: list[Tensor | None], static: list[bool],
               dynamic: bool) -> Callable[..., Any]:  # fmt: skip
        opdef = _OPS[n.op]
        ctx = _Ctx(n, values, static, self.opset, self.device, dynamic, self.half, self.used)
        try:
            fn = opdef.build(n, ctx)
        except _Unsupported as e:
            raise BackendUnavailableError(
                f"{self.source}: {n.label}: not supported by the torch backend: {e}; run this "
                "artifact with backend='onnxruntime'"
            ) from e
        except (ModelError, BackendUnavailableError):
            raise
        except Exception as e:
            raise ModelError(
                f"{self.source}: {n.label} cannot be built ({type(e).__name__}: {e}); the model "
                "is malformed, or run it with backend='onnxruntime'"
            ) from e
        if dynamic and self.half and n.op in _KEEP_FP32:
            fn = _in_fp32(fn)
        return fn

    def _data_positions(self, n: _Node) -> list[int]:
        opdef = _OPS[n.op]
        return [
            i for i in range(len(n.inputs)) if i not in opdef.params and i not in opdef.shape_only
        ]

    def _eval_static(self, n: _Node, env: dict[str, Tensor]) -> tuple[Tensor, ...]:
        if n.op == "Constant":
            try:
                return (_constant(n),)
            except _Unsupported as e:
                raise BackendUnavailableError(f"{self.source}: {n.label}: {e}") from e
        values = [env.get(i) if i else None for i in n.inputs]
        fn = self._build(n, values, [True] * len(values), dynamic=False)
        try:
            r = fn(*[values[i] for i in self._data_positions(n)])
        except Exception as e:
            raise ModelError(
                f"{self.source}: {n.label} failed on constant inputs ({type(e).__name__}: {e})"
            ) from e
        return r if isinstance(r, tuple) else (r,)

    def _dev_const(self, name: str, value: Tensor, cache: dict[str, Tensor]) -> Tensor:
        t = cache.get(name)
        if t is None:
            dt = value.dtype
            if self.half and dt in (torch.float32, torch.float64):
                dt = torch.float16
            t = value.to(device=self.device, dtype=dt)
            if self.channels_last and t.dim() == 4 and t.is_floating_point():
                t = t.contiguous(memory_format=torch.channels_last)
            cache[name] = t
        return t

    def program(self, shape: tuple[int, ...]) -> _Program | None:
        """The specialized program of an input shape, if cached."""
        return self._programs.get(tuple(shape))

    def run(self, x: Tensor) -> list[Tensor]:
        """Outputs for input ``x`` (on the device): the cached program, or specialize eagerly."""
        key = tuple(x.shape)
        prog = self._programs.get(key)
        if prog is not None:
            self._programs.move_to_end(key)
            return prog.run(x)
        prog, outs = self._specialize(x)
        self._programs[key] = prog
        while len(self._programs) > MAX_PROGRAMS:
            self._programs.popitem(last=False)
        return outs

    def _specialize(self, x: Tensor) -> tuple[_Program, list[Tensor]]:
        """Run the graph eagerly on ``x``, recording its device ops as a :class:`_Program`."""
        prog = _Program()
        in_to: dict[str, Any] = {}
        if self.half and x.dtype in (torch.float32, torch.float64):
            in_to["dtype"] = torch.float16
        if self.channels_last and x.dim() == 4:
            in_to["memory_format"] = torch.channels_last
        prog.in_to = in_to or None
        xin = x.to(**in_to) if in_to else x
        local: dict[str, Tensor] = {}  # shape-derived (batch-dependent) host values
        local_dev: dict[str, Tensor] = {}
        dyn: dict[str, Tensor] = {self.input_name: xin}
        slot: dict[str, int] = {self.input_name: 1}
        prog.template.append(None)
        prog.in_slot = 1

        def static_value(name: str) -> Tensor | None:
            if name in self.consts:
                return self.consts[name]
            return local.get(name)

        def slot_of(name: str) -> int:
            if name == "":
                return 0
            if name in slot:
                return slot[name]
            v = static_value(name)
            if name in self.consts:
                t = self._dev_const(name, v, self._dev_consts)
            else:
                t = self._dev_const(name, v, local_dev)
            slot[name] = len(prog.template)
            prog.template.append(t)
            return slot[name]

        raw: list[tuple[Callable[..., Any], tuple[int, ...], tuple[str, ...], bool]] = []
        for n in self.nodes:
            opdef = _OPS[n.op]
            values: list[Tensor | None] = []
            static: list[bool] = []
            for i in n.inputs:
                v = static_value(i) if i else None
                static.append(i == "" or v is not None)
                values.append(v if v is not None or i == "" else dyn[i])
            if all(static[i] for i in range(len(n.inputs)) if i not in opdef.shape_only):
                outs = self._eval_static(
                    n, {i: v for i, v in zip(n.inputs, values, strict=True) if i}
                )
                local.update((o, v) for o, v in zip(n.outputs, outs, strict=False) if o)
                continue
            fn = self._build(n, values, static, dynamic=True)
            pos = self._data_positions(n)
            ins = tuple(slot_of(n.inputs[i]) for i in pos)
            env = prog.template
            args = [
                dyn[n.inputs[i]] if n.inputs[i] in dyn else env[ins[k]] for k, i in enumerate(pos)
            ]
            try:
                r = fn(*args)
            except Exception as e:
                raise ModelError(
                    f"{self.source}: {n.label} failed in the torch backend ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:300] if str(e) else ''}); run it with "
                    "backend='onnxruntime'"
                ) from e
            results = r if isinstance(r, tuple) else (r,)
            for o, v in zip(n.outputs, results, strict=False):
                if o:
                    dyn[o] = v
                    slot[o] = len(prog.template)
                    prog.template.append(None)
            raw.append((fn, ins, n.outputs, opdef.multi))

        final = [slot_of(o) for o, _ in self.outputs]
        consts = set(range(len(prog.template))) - {s for o, s in slot.items() if o in dyn}
        last: dict[int, int] = {}
        for k, (_, ins, _, _) in enumerate(raw):
            for s in ins:
                last[s] = k
        pinned = set(final) | consts | {0}
        trash = len(prog.template)  # where an unused single output goes (dead code is dropped
        prog.template.append(None)  # before this; kept for safety)
        for k, (fn, ins, outs, multi) in enumerate(raw):
            out_slots = tuple(slot[o] if o and o in self.used else -1 for o in outs)
            free = tuple(s for s in set(ins) if last.get(s) == k and s not in pinned)
            single = out_slots[0] if out_slots[0] >= 0 else trash
            prog.steps.append((fn, ins, out_slots if multi else single, free))
        prog.out_slots = tuple(final)
        casts = []
        results = []
        for (o, dt), s in zip(self.outputs, final, strict=True):
            v = dyn.get(o, prog.template[s])
            casts.append(dt if v.dtype != dt else None)
            results.append(v if v.dtype == dt else v.to(dt))
        prog.out_casts = tuple(casts)
        return prog, results


def _in_fp32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Half mode: compute ``fn`` in FP32 (FP16 inputs up-cast, FP32 results down-cast)."""

    def wrapped(*args: Any) -> Any:
        up = [a.float() if a is not None and a.dtype == torch.float16 else a for a in args]
        r = fn(*up)
        if isinstance(r, tuple):
            return tuple(v.half() if v.dtype == torch.float32 else v for v in r)
        return r.half() if r.dtype == torch.float32 else r

    return wrapped


# ---- the backend --------------------------------------------------------------------------------
@dataclass
class _CudaState:
    """Buffers (and the captured graph) of one input shape on CUDA."""

    shape: tuple[int, ...]
    h_in: Any
    h_in_np: np.ndarray
    d_in: Any
    d_out: list[Any] | None = None
    h_out: list[Any] = field(default_factory=list)
    h_out_np: list[np.ndarray] = field(default_factory=list)
    graph: Any = None
    program: _Program | None = None  # owns device tensors the graph reads: keep it alive


class TorchBackend(Backend):
    """Runs a ``.onnx`` artifact with PyTorch (see the module docstring for how).

    Args:
        path: the ``.onnx`` artifact (with sonoedge metadata).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        threads: torch intra-op threads during each call (process-global in torch: set for the
            call and restored after). None: torch's default.
        half: compute in FP16 on CUDA (FP32 kept where FP16 is unsafe). None: when the
            artifact's metadata says ``precision == "fp16"`` and the device is CUDA.
        cuda_graph: capture the forward in a CUDA graph (CUDA only; re-captured when the batch
            size changes). Falls back to eager execution, with a warning, if capture fails.
        tf32: allow TF32 convolutions on Ampere+ GPUs (faster, ~1e-3 relative error). Off by
            default so FP32 outputs match ONNX Runtime's within 1e-4.
        channels_last: run 4-D activations and weights in NHWC memory layout (same results;
            oneDNN's depthwise convolutions are ~2x faster so). None: on CPU only.
    """

    name: ClassVar[str] = "torch"

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        half: bool | None = None,
        cuda_graph: bool = True,
        tf32: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(path, device, threads)
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.half_requested = half
        self.use_cuda_graph = bool(cuda_graph)
        self.tf32 = bool(tf32)
        self.channels_last_requested = channels_last
        self.channels_last = False
        self.half = False
        self.opset = 0
        self._interp: _Interpreter | None = None
        self._cuda: _CudaState | None = None
        self._stream: Any = None
        self._torch_device: Any = None

    # ---- Backend API ----------------------------------------------------------------------------
    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            t = _require_torch()
        except BackendUnavailableError as e:
            return False, str(e)
        except Exception as e:  # a broken install (missing shared libraries...)
            return False, f"torch cannot be imported ({type(e).__name__}: {e})"
        if importlib.util.find_spec("onnx") is None:
            return False, (
                f"onnx not installed (torch {t.__version__} is; the torch backend reads .onnx "
                "artifacts with the onnx package): pip install onnx"
            )
        try:
            n = t.cuda.device_count() if t.cuda.is_available() else 0
        except Exception:
            n = 0
        where = f"cuda ({n} device(s)) and cpu" if n else "cpu (no CUDA device)"
        return True, f"torch {t.__version__}: {where}; runs .onnx artifacts (backend='torch')"

    @property
    def is_cuda(self) -> bool:
        return self._torch_device is not None and self._torch_device.type == "cuda"

    def _resolve_device(self) -> Any:
        d = str(self.device)
        cuda = torch.cuda.is_available()
        if d == "auto":
            return torch.device("cuda" if cuda else "cpu")
        if d == "cpu":
            return torch.device("cpu")
        if d == "cuda" or d.startswith("cuda:"):
            if not cuda:
                raise BackendUnavailableError(
                    f"device {d!r}: torch {torch.__version__} sees no CUDA device (a CPU-only "
                    "build, no driver or no GPU); use device='cpu' or install a CUDA build of torch"
                )
            dev = torch.device(d)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"device {d!r}: only {torch.cuda.device_count()} CUDA device(s) present"
                )
            return dev
        raise BackendUnavailableError(f"device {d!r} is not one of auto, cpu, cuda, cuda:N")

    def _load_impl(self) -> None:
        _require_torch()
        onnx = _require_onnx()
        self._torch_device = self._resolve_device()
        source = str(self.path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ModelError(f"{source}: cannot read the artifact ({e.strerror})") from e
        try:
            model = onnx.ModelProto.FromString(data)
        except Exception as e:  # google.protobuf DecodeError and friends
            raise ModelError(
                f"{source}: not a readable ONNX model ({type(e).__name__}); the file is "
                "corrupted or not an ONNX model"
            ) from e
        if not model.HasField("graph") or not model.graph.node:
            raise ModelError(f"{source}: the ONNX file has no graph; it is corrupted or empty")
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise ModelError(
                f"{source} carries no sonoedge metadata (metadata_props['{METADATA_KEY}']); "
                "export it with `sonoedge export`, or add metadata with "
                "export.onnx_export.embed_metadata"
            )
        self.metadata = Metadata.from_json(props[METADATA_KEY], source)
        self._interp = self._interpreter(model, onnx, source)
        if self.is_cuda:
            self._stream = torch.cuda.Stream(device=self._torch_device)
        shape = self._warmup_shape()
        if shape is not None:  # prove every op runs (and capture the CUDA graph) now
            self._infer_impl(np.zeros(shape, dtype=self.inputs[0].dtype))

    def _interpreter(self, model: Any, onnx: Any, source: str) -> _Interpreter:
        g = model.graph
        opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
        self.opset = opsets.get("ai.onnx", 0)
        unsupported = Counter(
            nd.op_type if nd.domain in ("", "ai.onnx") else f"{nd.domain}::{nd.op_type}"
            for nd in g.node
            if nd.domain not in ("", "ai.onnx") or nd.op_type not in SUPPORTED_OPS
        )
        if unsupported:
            listed = ", ".join(f"{op} (x{k})" for op, k in sorted(unsupported.items()))
            raise BackendUnavailableError(
                f"{source}: the torch backend does not implement the ONNX op(s) {listed}; run "
                "this artifact with backend='onnxruntime' (sdk.Analyzer(path, "
                "backend='onnxruntime'))"
            )
        if self.opset < MIN_OPSET:
            raise BackendUnavailableError(
                f"{source}: ONNX opset {self.opset} is older than the torch backend supports "
                f"({MIN_OPSET}); re-export with opset >= 13, or use backend='onnxruntime'"
            )
        try:
            nodes = []
            for k, nd in enumerate(g.node):
                name = nd.name or f"{nd.op_type}_{k}"
                where = f"{source}: node {name!r} ({nd.op_type})"
                attrs = {a.name: _attr_value(a, onnx, where) for a in nd.attribute}
                nodes.append(_Node(nd.op_type, name, tuple(nd.input), tuple(nd.output), attrs))
            consts = {
                t.name: _tensor_proto(t, onnx, f"{source}: initializer {t.name!r}")
                for t in g.initializer
            }
        except _Unsupported as e:
            raise BackendUnavailableError(
                f"{source}: {e}; run this artifact with backend='onnxruntime'"
            ) from e
        real_inputs = [i for i in g.input if i.name not in consts]
        if len(real_inputs) != 1:
            raise ModelError(
                f"{source}: the torch backend feeds one input tensor; this model has "
                f"{len(real_inputs)} ({[i.name for i in real_inputs]}); use backend='onnxruntime'"
            )
        self.inputs = (self._spec(real_inputs[0], source),)
        self.outputs = tuple(self._spec(o, source) for o in g.output)
        md = self.metadata
        if md is not None:
            # Outputs only: the op tests run graphs of any input shape under stock metadata.
            self._check_outputs_against_metadata(source)
        half = self.half_requested
        if half is None:
            half = md is not None and md.precision == "fp16" and self._torch_device.type == "cuda"
        self.half = bool(half)
        cl = self.channels_last_requested
        self.channels_last = self._torch_device.type == "cpu" if cl is None else bool(cl)
        out_dtypes = [(o.name, getattr(torch, o.dtype.name)) for o in self.outputs]
        return _Interpreter(
            nodes,
            consts,
            self.inputs[0].name,
            out_dtypes,
            self.opset,
            self._torch_device,
            self.half,
            source,
            channels_last=self.channels_last,
        )

    def _spec(self, v: Any, source: str) -> IOSpec:
        tt = v.type.tensor_type
        dt = _IO_DTYPES.get(tt.elem_type)
        if dt is None:
            raise ModelError(
                f"{source}: tensor {v.name!r} has unsupported type {tt.elem_type} "
                "(float32 or float16 expected)"
            )
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        return IOSpec(v.name, dt, shape)

    def _warmup_shape(self) -> tuple[int, ...] | None:
        md, dims = self.metadata, list(self.inputs[0].shape)
        if dims and dims[0] is None:
            dims[0] = 1
        if md is not None and len(dims) == 4:
            dims[1] = len(md.channels) if dims[1] is None else dims[1]
            dims[2] = md.input_size[0] if dims[2] is None else dims[2]
            dims[3] = md.input_size[1] if dims[3] is None else dims[3]
        return None if any(d is None for d in dims) else tuple(dims)

    # ---- running --------------------------------------------------------------------------------
    @contextmanager
    def _call_context(self) -> Iterator[None]:
        n = self.threads
        prev = torch.get_num_threads()
        change = n is not None and int(n) != prev
        if change:
            torch.set_num_threads(int(n))
        try:
            with torch.inference_mode():
                yield
        finally:
            if change:
                torch.set_num_threads(prev)

    def _infer_impl(self, x: np.ndarray) -> dict[str, np.ndarray]:
        assert self._interp is not None
        with self._call_context():
            if self.is_cuda:
                return self._infer_cuda(x)
            if not (x.flags.c_contiguous and x.flags.writeable):
                x = np.array(x, order="C")
            outs = self._interp.run(torch.from_numpy(x))
            return {  # fresh C-ordered arrays (outputs may be views, or channels-last)
                o.name: np.array(t.numpy(), order="C", copy=True)
                for o, t in zip(self.outputs, outs, strict=True)
            }

    @contextmanager
    def _cuda_flags(self) -> Iterator[None]:
        """TF32 off (unless asked for) while our kernels are chosen and launched."""
        cudnn = torch.backends.cudnn
        try:
            prev = cudnn.allow_tf32
            cudnn.allow_tf32 = self.tf32
        except RuntimeError:  # a torch that refuses the legacy flag: leave precision alone
            yield
            return
        try:
            yield
        finally:
            cudnn.allow_tf32 = prev

    def _infer_cuda(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.cuda.device(self._torch_device):
            return self._infer_cuda_on_device(x)

    def _infer_cuda_on_device(self, x: np.ndarray) -> dict[str, np.ndarray]:
        st = self._cuda
        if st is None or st.shape != x.shape:
            st = self._prepare_cuda(x)
        else:
            np.copyto(st.h_in_np, x)
            with self._cuda_flags(), torch.cuda.stream(self._stream):
                st.d_in.copy_(st.h_in, non_blocking=True)
                if st.graph is not None:
                    st.graph.replay()
                    outs = st.d_out
                else:
                    outs = self._interp.run(st.d_in)
                for h, d in zip(st.h_out, outs, strict=True):
                    h.copy_(d, non_blocking=True)
        self._stream.synchronize()
        return {o.name: a.copy() for o, a in zip(self.outputs, st.h_out_np, strict=True)}

    def _prepare_cuda(self, x: np.ndarray) -> _CudaState:
        """New input shape: static buffers, warm-up (specializes the program), graph capture;
        the call's own outputs are left in the pinned host buffers."""
        self._cuda = None  # free the previous graph and its memory pool first
        dev, stream = self._torch_device, self._stream
        dt = getattr(torch, self.inputs[0].dtype.name)
        h_in = torch.empty(x.shape, dtype=dt, pin_memory=True)
        st = _CudaState(
            tuple(x.shape), h_in, h_in.numpy(), torch.empty(x.shape, dtype=dt, device=dev)
        )
        np.copyto(st.h_in_np, x)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with self._cuda_flags():
            with torch.cuda.stream(stream):
                st.d_in.copy_(st.h_in, non_blocking=True)
                for _ in range(CUDA_WARMUP if self.use_cuda_graph else 1):
                    outs = self._interp.run(st.d_in)
            stream.synchronize()
            st.program = self._interp.program(st.shape)
            if self.use_cuda_graph:
                try:
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=stream, capture_error_mode="thread_local"):
                        st.d_out = self._interp.run(st.d_in)
                    st.graph = g
                except Exception as e:  # capture is best effort: eager execution still works
                    self.use_cuda_graph = False
                    st.graph, st.d_out = None, None
                    warnings.warn(
                        f"{self.path.name}: CUDA graph capture failed ({type(e).__name__}: {e}); "
                        "the torch backend runs this model eagerly",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            with torch.cuda.stream(stream):
                if st.graph is not None:
                    st.graph.replay()
                    outs = st.d_out
                st.h_out = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outs]
                st.h_out_np = [h.numpy() for h in st.h_out]
                for h, d in zip(st.h_out, outs, strict=True):
                    h.copy_(d, non_blocking=True)
        self._cuda = st
        return st

    def _close_impl(self) -> None:
        self._cuda = None
        self._interp = None
        self._stream = None
