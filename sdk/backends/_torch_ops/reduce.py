"""Reductions (Reduce*, ArgMax / ArgMin, Softmax) and normalizations (Batch / Instance / Layer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdk.backends._torch_ops._core import (
    Builder,
    Ctx,
    Node,
    Tensor,
    Unsupported,
    _axis,
    _prod,
    op,
)

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


# ---- reductions / normalizations ----------------------------------------------------------------
def _reduce(kind: str) -> Builder:
    def build(n: Node, c: Ctx) -> Callable[..., Any]:
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
    op(f"Reduce{_kind}", params=(1,))(_reduce(_kind))


def _arg(kind: str) -> Builder:
    def build(n: Node, c: Ctx) -> Callable[..., Any]:
        xs = c.shape(0)
        a = _axis(int(c.attr("axis", 0)), len(xs))
        keep = bool(int(c.attr("keepdims", 1)))
        f = torch.argmax if kind == "max" else torch.argmin
        if int(c.attr("select_last_index", 0)):
            last = xs[a] - 1
            return lambda x: last - f(torch.flip(x, (a,)), a, keepdim=keep)
        return lambda x: f(x, a, keepdim=keep)

    return build


op("ArgMax")(_arg("max"))
op("ArgMin")(_arg("min"))


def _softmax(log: bool) -> Builder:
    def build(n: Node, c: Ctx) -> Callable[..., Any]:
        xs = c.shape(0)
        f = torch.log_softmax if log else torch.softmax
        if c.opset >= 13:
            a = _axis(int(c.attr("axis", -1)), len(xs))
            return lambda x: f(x, a)
        a = _axis(int(c.attr("axis", 1)), len(xs))  # opset < 13: coerced to 2-D at axis
        flat = (_prod(xs[:a]), _prod(xs[a:]))
        return lambda x: f(x.reshape(flat), 1).reshape(xs)

    return build


op("Softmax")(_softmax(False))
op("LogSoftmax")(_softmax(True))


@op("BatchNormalization", multi=True)
def _b_batchnorm(n: Node, c: Ctx) -> Callable[..., Any]:
    if int(c.attr("training_mode", 0)) or any(c.used(i) for i in range(1, len(n.outputs))):
        raise Unsupported("training mode (running statistics outputs)")
    eps = float(c.attr("epsilon", 1e-5))
    return lambda x, s, b, m, v: (F.batch_norm(x, m, v, s, b, False, 0.0, eps),)


@op("InstanceNormalization")
def _b_instancenorm(n: Node, c: Ctx) -> Callable[..., Any]:
    eps = float(c.attr("epsilon", 1e-5))
    return lambda x, s, b: F.instance_norm(x, weight=s, bias=b, eps=eps)


@op("LayerNormalization", multi=True)
def _b_layernorm(n: Node, c: Ctx) -> Callable[..., Any]:
    if c.used(1) or c.used(2):
        raise Unsupported("the Mean / InvStdDev outputs")
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
