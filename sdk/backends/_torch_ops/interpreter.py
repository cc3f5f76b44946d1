"""The interpreter: graph passes at construction (fold constants, fuse Q → DQ and Conv →
activation, drop dead nodes), then one flat program per input shape."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from sdk.backends._torch_ops._core import (
    OPS,
    Ctx,
    Node,
    Tensor,
    Unsupported,
    constant_value,
    toposort,
)
from sdk.errors import BackendUnavailableError, ModelError

# torch, torch.nn.functional: bound by bind_torch() at probe / load (see the package docstring).
torch: Any = None
F: Any = None


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


#: Specialized programs (one per input shape) kept per backend.
MAX_PROGRAMS = 8


# ---- the interpreter ----------------------------------------------------------------------------
class Program:
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


class Interpreter:
    """An ONNX graph as torch ops: constant folding at construction, one program per shape."""

    def __init__(
        self,
        nodes: list[Node],
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
        nodes = toposort(nodes, set(self.consts) | {input_name}, source)
        self.used = self._used(nodes, out_names)
        nodes = self._fold(nodes)
        nodes = self._fuse_qdq(nodes, out_names)
        nodes = self._fuse_conv_act(nodes, out_names)
        nodes = self._dce(nodes, out_names)
        self.nodes = nodes
        self.used = self._used(nodes, out_names)
        self._dev_consts: dict[str, Tensor] = {}
        self._programs: OrderedDict[tuple[int, ...], Program] = OrderedDict()

    # ---- graph passes ---------------------------------------------------------------------------
    @staticmethod
    def _used(nodes: list[Node], out_names: set[str]) -> set[str]:
        return {i for n in nodes for i in n.inputs if i} | out_names

    def _fold(self, nodes: list[Node]) -> list[Node]:
        """Evaluate, once, every node whose inputs are all constants."""
        keep = []
        for n in nodes:
            if all(i == "" or i in self.consts for i in n.inputs):
                outs = self._eval_static(n, self.consts)
                self.consts.update((o, v) for o, v in zip(n.outputs, outs, strict=False) if o)
            else:
                keep.append(n)
        return keep

    def _fuse_qdq(self, nodes: list[Node], out_names: set[str]) -> list[Node]:
        """QuantizeLinear → DequantizeLinear with equal parameters → one ``_QDQ`` node."""
        producer = {o: n for n in nodes for o in n.outputs}
        out = []
        for n in nodes:
            q = producer.get(n.inputs[0]) if n.op == "DequantizeLinear" else None
            if q is not None and q.op == "QuantizeLinear" and self._same_qparams(q, n):
                n = Node("_QDQ", n.name, (q.inputs[0], *q.inputs[1:3]), n.outputs, dict(q.attrs))
            out.append(n)
        return out

    def _same_qparams(self, q: Node, dq: Node) -> bool:
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

    def _fuse_conv_act(self, nodes: list[Node], out_names: set[str]) -> list[Node]:
        """Conv → Relu / Clip (constant bounds), the Conv's output used only there → one node."""
        consumers = Counter(i for n in nodes for i in n.inputs if i)
        producer = {o: n for n in nodes for o in n.outputs}
        fused: dict[int, tuple[Node, tuple[Any, Any]]] = {}
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
                n = Node("_ConvAct", n.name, n.inputs, act.outputs, {**n.attrs, "_clamp": bounds})
            out.append(n)
        return out

    @staticmethod
    def _dce(nodes: list[Node], out_names: set[str]) -> list[Node]:
        needed = set(out_names)
        keep = []
        for n in reversed(nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        return keep[::-1]

    # ---- evaluation -----------------------------------------------------------------------------
    def _build(self, n: Node, values: list[Tensor | None], static: list[bool],
               dynamic: bool) -> Callable[..., Any]:  # fmt: skip
        opdef = OPS[n.op]
        ctx = Ctx(n, values, static, self.opset, self.device, dynamic, self.half, self.used)
        try:
            fn = opdef.build(n, ctx)
        except Unsupported as e:
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

    def _data_positions(self, n: Node) -> list[int]:
        opdef = OPS[n.op]
        return [
            i for i in range(len(n.inputs)) if i not in opdef.params and i not in opdef.shape_only
        ]

    def _eval_static(self, n: Node, env: dict[str, Tensor]) -> tuple[Tensor, ...]:
        if n.op == "Constant":
            try:
                return (constant_value(n),)
            except Unsupported as e:
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

    def program(self, shape: tuple[int, ...]) -> Program | None:
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

    def _specialize(self, x: Tensor) -> tuple[Program, list[Tensor]]:
        """Run the graph eagerly on ``x``, recording its device ops as a :class:`Program`."""
        prog = Program()
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
            opdef = OPS[n.op]
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
