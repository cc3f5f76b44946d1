"""Convolution, pooling and linear ops: Conv (+ fused activation), ConvTranspose, Max / Average
pooling, global pooling, Gemm."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from sdk.backends._torch_ops._core import (
    Builder,
    Ctx,
    Node,
    Tensor,
    Unsupported,
    op,
)

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


# ---- convolution / pooling / linear -------------------------------------------------------------
def _pads(c: Ctx, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
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
        raise Unsupported(f"auto_pad={auto!r}")
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


@op("Conv")
def _b_conv(n: Node, c: Ctx) -> Callable[..., Any]:
    kernel = c.shape(1)[2:]
    nd = len(kernel)
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-D convolution")
    strides = [int(s) for s in c.attr("strides", [1] * nd)]
    dil = [int(d) for d in c.attr("dilations", [1] * nd)]
    group = int(c.attr("group", 1))
    begin, end = _pads(c, c.shape(0)[2:], kernel, strides, dil)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    if begin == end:
        return lambda x, w, b=None: conv(x, w, b, strides, begin, dil, group)
    arg = _pad_arg(begin, end)
    return lambda x, w, b=None: conv(F.pad(x, arg), w, b, strides, 0, dil, group)


@op("_ConvAct")
def _b_conv_act(n: Node, c: Ctx) -> Callable[..., Any]:
    """Conv followed by Relu / Clip (fused at load): the activation runs in place on the
    convolution's fresh output, saving a pass over memory and an allocation."""
    conv = _b_conv(n, c)
    lo, hi = n.attrs["_clamp"]
    if lo == 0.0 and hi is None:
        return lambda x, w, b=None: conv(x, w, b).relu_()
    return lambda x, w, b=None: conv(x, w, b).clamp_(lo, hi)


@op("ConvTranspose")
def _b_convtranspose(n: Node, c: Ctx) -> Callable[..., Any]:
    kernel = c.shape(1)[2:]
    nd = len(kernel)
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-D transposed convolution")
    if c.attr("output_shape") is not None or str(c.attr("auto_pad", "NOTSET")) not in (
        "NOTSET",
        "",
        "VALID",
    ):
        raise Unsupported("output_shape / auto_pad SAME (give explicit pads)")
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
    def build(n: Node, c: Ctx) -> Callable[..., Any]:
        if kind == "max" and c.used(1):
            raise Unsupported("the Indices output")
        xs = c.shape(0)
        kernel = [int(k) for k in c.attr("kernel_shape")]
        nd = len(kernel)
        if nd not in (1, 2, 3) or len(xs) != nd + 2:
            raise Unsupported(f"{nd}-D pooling")
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
                raise Unsupported("ceil_mode=1 with asymmetric or large pads")
            arg = _pad_arg(begin, end)
            return lambda x: (pool(F.pad(x, arg, value=-math.inf), kernel, strides, 0, dil),)
        if any(d != 1 for d in dil):
            raise Unsupported("AveragePool with dilations")
        include = bool(int(c.attr("count_include_pad", 0)))
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        if ceil and any(begin + end):
            # torch and ONNX Runtime count the divisor of windows that overhang the padding
            # differently; refuse rather than differ.
            raise Unsupported("ceil_mode=1 with pads")
        if native:
            return lambda x: pool(x, kernel, strides, begin, ceil, include)
        if not include or ceil:
            raise Unsupported("asymmetric pads with count_include_pad=0 or ceil_mode=1")
        arg = _pad_arg(begin, end)
        return lambda x: pool(F.pad(x, arg), kernel, strides, 0, False, True)

    return build


op("MaxPool", multi=True)(_pool("max"))
op("AveragePool")(_pool("avg"))


@op("GlobalAveragePool")
def _b_gap(n: Node, c: Ctx) -> Callable[..., Any]:
    dims = tuple(range(2, len(c.shape(0))))
    return lambda x: torch.mean(x, dims, keepdim=True)


@op("GlobalMaxPool")
def _b_gmp(n: Node, c: Ctx) -> Callable[..., Any]:
    dims = tuple(range(2, len(c.shape(0))))
    return lambda x: torch.amax(x, dims, keepdim=True)


@op("Gemm")
def _b_gemm(n: Node, c: Ctx) -> Callable[..., Any]:
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
