"""Elementwise ops: arithmetic, comparisons, logic, activations, casts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdk.backends._torch_ops._core import (
    Builder,
    Ctx,
    Node,
    Tensor,
    Unsupported,
    onnx_dtype,
    op,
)

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


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
    op(_name)(_simple(_fn))


@op("Div")
def _b_div(n: Node, c: Ctx) -> Callable[..., Any]:
    if not c.dtype(0).is_floating_point:  # C++ integer division truncates toward zero
        return lambda a, b: torch.div(a, b, rounding_mode="trunc")
    return torch.div


@op("Mod")
def _b_mod(n: Node, c: Ctx) -> Callable[..., Any]:
    if int(c.attr("fmod", 0)) or c.dtype(0).is_floating_point:
        return torch.fmod  # ONNX requires fmod=1 for floats: sign of the dividend
    return torch.remainder  # integers, fmod=0: sign of the divisor (Python's %)


@op("Pow")
def _b_pow(n: Node, c: Ctx) -> Callable[..., Any]:
    return lambda a, b: torch.pow(a, b).to(a.dtype)


def _variadic(f: Callable[[Any, Any], Any]) -> Builder:
    def build(n: Node, c: Ctx) -> Callable[..., Any]:
        def fn(*xs: Tensor) -> Tensor:
            y = xs[0]
            for x in xs[1:]:
                y = f(y, x)
            return y

        return fn

    return build


op("Sum")(_variadic(lambda a, b: torch.add(a, b)))
op("Max")(_variadic(lambda a, b: torch.maximum(a, b)))
op("Min")(_variadic(lambda a, b: torch.minimum(a, b)))


@op("Mean")
def _b_mean(n: Node, c: Ctx) -> Callable[..., Any]:
    add = _variadic(lambda a, b: torch.add(a, b))(n, c)
    return lambda *xs: add(*xs) / len(xs)


@op("LeakyRelu")
def _b_leaky(n: Node, c: Ctx) -> Callable[..., Any]:
    alpha = float(c.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@op("Elu")
def _b_elu(n: Node, c: Ctx) -> Callable[..., Any]:
    alpha = float(c.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


@op("PRelu")
def _b_prelu(n: Node, c: Ctx) -> Callable[..., Any]:
    return lambda x, slope: torch.where(x < 0, x * slope, x)


@op("HardSigmoid")
def _b_hardsigmoid(n: Node, c: Ctx) -> Callable[..., Any]:
    alpha, beta = float(c.attr("alpha", 0.2)), float(c.attr("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@op("HardSwish")
def _b_hardswish(n: Node, c: Ctx) -> Callable[..., Any]:
    # ONNX: x * max(0, min(1, x / 6 + 0.5)) with alpha = 1/6 (not torch's relu6(x + 3) / 6)
    alpha = 1.0 / 6.0
    return lambda x: x * torch.clamp(x * alpha + 0.5, 0.0, 1.0)


@op("Gelu")
def _b_gelu(n: Node, c: Ctx) -> Callable[..., Any]:
    approx = str(c.attr("approximate", "none"))
    if approx not in ("none", "tanh"):
        raise Unsupported(f"approximate={approx!r}")
    return lambda x: F.gelu(x, approximate=approx)


@op("Clip", params=(1, 2))
def _b_clip(n: Node, c: Ctx) -> Callable[..., Any]:
    if c.opset < 11 or "min" in n.attrs or "max" in n.attrs:
        lo, hi = c.attr("min"), c.attr("max")
    else:
        lo, hi = c.scalar(1), c.scalar(2)
    if lo is None and hi is None:
        return lambda x: x
    return lambda x: torch.clamp(x, lo, hi)


@op("Cast")
def _b_cast(n: Node, c: Ctx) -> Callable[..., Any]:
    dt = c.float_dtype(onnx_dtype(c.attr("to")))  # float8 (and its `saturate`) is refused here
    return lambda x: x.to(dt)


@op("CastLike", shape_only=(1,))
def _b_castlike(n: Node, c: Ctx) -> Callable[..., Any]:
    dt = c.dtype(1)
    return lambda x: x.to(dt)


@op("Dropout", params=(1, 2), multi=True)
def _b_dropout(n: Node, c: Ctx) -> Callable[..., Any]:
    if c.has(2) and bool(c.scalar(2)):
        raise Unsupported("training_mode=True")
    if c.used(1):
        return lambda x: (x, torch.ones_like(x, dtype=torch.bool))
    return lambda x: (x,)
