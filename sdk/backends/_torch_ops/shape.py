"""Shape and indexing ops: Shape / Reshape / Transpose …, Concat / Split / Slice, Gather /
ScatterND, Expand / Tile / Range, Pad."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sdk.backends._torch_ops._core import (
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


# ---- shapes -------------------------------------------------------------------------------------
@op("Shape", shape_only=(0,))
def _b_shape(n: Node, c: Ctx) -> Callable[..., Any]:
    shape = c.shape(0)
    start, end = int(c.attr("start", 0)), c.attr("end")
    value = torch.tensor(shape[start : None if end is None else int(end)], dtype=torch.int64)
    return lambda: value


@op("Size", shape_only=(0,))
def _b_size(n: Node, c: Ctx) -> Callable[..., Any]:
    value = torch.tensor(_prod(c.shape(0)), dtype=torch.int64)
    return lambda: value


@op("Reshape", params=(1,))
def _b_reshape(n: Node, c: Ctx) -> Callable[..., Any]:
    xs, shape = c.shape(0), c.ints(1)
    allowzero = int(c.attr("allowzero", 0))
    target = [xs[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
    if target.count(-1) > 1:
        raise Unsupported(f"Reshape to {shape}: more than one -1")
    if -1 in target:
        known = _prod([s for s in target if s != -1])
        target[target.index(-1)] = _prod(xs) // known if known else 0
    if _prod(target) != _prod(xs):
        raise Unsupported(f"cannot reshape {xs} to {shape}")
    return lambda x: x.reshape(target)


@op("Flatten")
def _b_flatten(n: Node, c: Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    a = int(c.attr("axis", 1))
    a = a + len(xs) if a < 0 else a
    target = (_prod(xs[:a]), _prod(xs[a:]))
    return lambda x: x.reshape(target)


@op("Transpose")
def _b_transpose(n: Node, c: Ctx) -> Callable[..., Any]:
    r = len(c.shape(0))
    perm = [int(p) for p in c.attr("perm", list(range(r))[::-1])]
    return lambda x: x.permute(perm)


@op("Squeeze", params=(1,))
def _b_squeeze(n: Node, c: Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    axes = c.attr("axes") if c.opset < 13 else c.ints(1)
    if axes is None:
        target = [d for d in xs if d != 1]
    else:
        drop = {_axis(int(a), len(xs)) for a in axes}
        target = [d for i, d in enumerate(xs) if i not in drop]
    return lambda x: x.reshape(target)


@op("Unsqueeze", params=(1,))
def _b_unsqueeze(n: Node, c: Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    axes = c.attr("axes") if c.opset < 13 else c.ints(1)
    r = len(xs) + len(axes)
    put = {_axis(int(a), r) for a in axes}
    it = iter(xs)
    target = [1 if i in put else next(it) for i in range(r)]
    return lambda x: x.reshape(target)


@op("Concat")
def _b_concat(n: Node, c: Ctx) -> Callable[..., Any]:
    a = _axis(int(c.attr("axis")), len(c.shape(0)))
    return lambda *xs: torch.cat(xs, a)


@op("Split", params=(1,), multi=True)
def _b_split(n: Node, c: Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    a = _axis(int(c.attr("axis", 0)), len(xs))
    sizes = c.attr("split") if c.opset < 13 else c.ints(1)
    if sizes is None:
        k = int(c.attr("num_outputs", len(n.outputs)))
        step = -(-xs[a] // k)  # ceil: the last chunk is smaller (opset 18)
        sizes = [min(step, xs[a] - i * step) for i in range(k)]
    sizes = [int(s) for s in sizes]
    return lambda x: torch.split(x, sizes, a)


@op("Slice", params=(1, 2, 3, 4))
def _b_slice(n: Node, c: Ctx) -> Callable[..., Any]:
    xs = c.shape(0)
    if c.opset < 10:
        raise Unsupported("Slice before opset 10")
    starts, ends = c.ints(1), c.ints(2)
    axes = c.ints(3) or list(range(len(starts)))
    steps = c.ints(4) or [1] * len(starts)
    index: list[Any] = [slice(None)] * len(xs)
    flips: list[tuple[int, Tensor]] = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = _axis(a, len(xs))
        d = xs[a]
        if st == 0:
            raise Unsupported("Slice step 0")
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


@op("Gather")
def _b_gather(n: Node, c: Ctx) -> Callable[..., Any]:
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


@op("ScatterND")
def _b_scatternd(n: Node, c: Ctx) -> Callable[..., Any]:
    if str(c.attr("reduction", "none")) != "none":
        raise Unsupported(f"reduction={c.attr('reduction')!r}")
    xs = c.shape(0)
    k = c.shape(1)[-1]
    dims = c.to(torch.tensor(xs[:k], dtype=torch.int64))

    def fn(data: Tensor, indices: Tensor, updates: Tensor) -> Tensor:
        idx = torch.where(indices < 0, indices + dims, indices)
        out = data.clone()
        out[tuple(idx.unbind(-1))] = updates
        return out

    return fn


@op("ConstantOfShape", params=(0,))
def _b_constant_of_shape(n: Node, c: Ctx) -> Callable[..., Any]:
    shape = c.ints(0)
    v = c.attr("value")
    value = v.reshape(()).item() if v is not None else 0.0
    dt = c.float_dtype(v.dtype if v is not None else torch.float32)
    device = c.device if c.dynamic else "cpu"
    return lambda: torch.full(shape, value, dtype=dt, device=device)


@op("Expand", params=(1,))
def _b_expand(n: Node, c: Ctx) -> Callable[..., Any]:
    out = tuple(int(s) for s in np.broadcast_shapes(c.shape(0), tuple(c.ints(1))))
    return lambda x: torch.broadcast_to(x, out)


@op("Tile", params=(1,))
def _b_tile(n: Node, c: Ctx) -> Callable[..., Any]:
    reps = c.ints(1)
    return lambda x: x.repeat(reps)


@op("Range", params=(0, 1, 2))
def _b_range(n: Node, c: Ctx) -> Callable[..., Any]:
    start, limit, delta = c.scalar(0), c.scalar(1), c.scalar(2)
    dt = c.dtype(0)
    k = max(math.ceil((limit - start) / delta), 0)
    if dt.is_floating_point:
        value = (torch.arange(k, dtype=torch.float64) * delta + start).to(dt)
    else:
        value = torch.arange(k, dtype=torch.int64).mul(int(delta)).add(int(start)).to(dt)
    value = c.to(value)
    return lambda: value


@op("Pad", params=(1, 2, 3))
def _b_pad(n: Node, c: Ctx) -> Callable[..., Any]:
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
        raise Unsupported(f"mode={mode!r}")
    if r - first > 3 or r - first > r - 2 or r > 5 or min(begin + end) < 0:
        raise Unsupported(f"mode={mode!r} padding axes {list(range(first, r))} of a rank-{r} input")
    return lambda x: F.pad(x, arg, mode=tmode)
