"""Quantization, simulated in float: QuantizeLinear, DequantizeLinear and the fused Q → DQ step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdk.backends._torch_ops._core import (
    Ctx,
    Node,
    Tensor,
    Unsupported,
    _axis,
    onnx_dtype,
    op,
)

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


# ---- quantization (simulated in float) ----------------------------------------------------------
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767), "uint16": (0, 65535)}


def _qparams(c: Ctx, rank: int) -> tuple[Tensor, Tensor | None, Any]:
    """(scale as float32 shaped for broadcasting, zero point as float32 or None, zp dtype)."""
    if int(c.attr("block_size", 0)):
        raise Unsupported("blocked quantization (block_size)")
    scale = c.const(1)
    zp = c.const(2)
    qdt = zp.dtype if zp is not None else onnx_dtype(int(c.attr("output_dtype", 2)) or 2)
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
        raise Unsupported(f"quantization to {name}")
    return _QRANGE[name]


@op("QuantizeLinear", params=(1, 2))
def _b_quantize(n: Node, c: Ctx) -> Callable[..., Any]:
    s, z, qdt = _qparams(c, len(c.shape(0)))
    lo, hi = _qbounds(qdt)
    z = None if z is None else c.to(z)

    def fn(x: Tensor) -> Tensor:
        y = torch.round(torch.div(x.to(torch.float32), s))  # ONNX: x / scale, half to even
        if z is not None:
            y = y + z
        return y.clamp_(lo, hi).to(qdt)

    return fn


@op("DequantizeLinear", params=(1, 2))
def _b_dequantize(n: Node, c: Ctx) -> Callable[..., Any]:
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


@op("_QDQ", params=(1, 2))
def _b_qdq(n: Node, c: Ctx) -> Callable[..., Any]:
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
