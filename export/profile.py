"""Model cost: parameters, multiply-accumulates and ONNX Runtime CPU latency.

MACs (one multiply + one add = 1 MAC; per frame, batch 1, at the model's default input) are counted
on a real forward pass:

* forward hooks on ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` / ``nn.Linear``:
  ``output elements x (C_in / groups) x kernel volume`` resp. ``output elements x in_features``;
* a ``TorchDispatchMode`` for the matrix products that no such module owns -- attention's
  ``Q Kᵀ`` and ``A V`` (``matmul`` / ``bmm`` / ``einsum`` / fused
  ``scaled_dot_product_attention``) and functional ``F.linear`` / ``F.conv*`` calls such as the
  projections inside ``nn.MultiheadAttention`` -- seen as ATen ``mm`` / ``addmm`` / ``bmm`` /
  ``baddbmm`` / ``convolution`` / attention ops. Ops issued inside a hooked module are not
  counted twice. ``torch.utils.flop_counter.FlopCounterMode`` agrees (FLOPs = 2 x MACs).

Element-wise ops, norms, activations, pooling and resizing are not counted (the usual convention;
they are memory-bound, and latency is measured anyway).

Latency: the model is exported with :func:`export.onnx_export.to_onnx_file` and timed with ONNX
Runtime's CPU provider, ``threads`` intra-op threads, all graph optimizations: median and p90 of
``runs`` calls after ``warmup``.

    python -m export.profile            # every registered model, a table
    python -m export.profile edge_s --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from export.models import create_model, list_models, model_defaults
from sdk.errors import InputError

__all__ = ["count_macs", "count_params", "ort_latency", "profile_model"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(model: nn.Module) -> dict[str, int]:
    """``{"params": all, "trainable": requires_grad}`` (shared tensors counted once)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    return {
        "params": sum(p.numel() for p in seen.values()),
        "trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
    }


def _prod(shape: Any) -> int:
    return int(math.prod(int(v) for v in shape))


def _module_macs(m: nn.Module, inp: tuple[Any, ...], out: Any) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, _CONV):
        # weight (C_out, C_in / g, k...): each output element is a dot product of that length.
        return out.numel() * _prod(m.weight.shape[1:])
    if isinstance(m, _CONV_T):
        # weight (C_in, C_out / g, k...): each input element is scattered into that many outputs.
        return inp[0].numel() * _prod(m.weight.shape[1:])
    return 0


def _bmm(a: torch.Tensor, b: torch.Tensor) -> int:
    """MACs of ``a @ b`` for 2-D ``(n, k) x (k, m)`` or 3-D batched operands."""
    return _prod(a.shape[:-1]) * a.shape[-1] * b.shape[-1]


def _aten_macs(op: Any, args: Any, out: Any) -> int:
    """MACs of one ATen matrix-product op (others: 0)."""
    aten = torch.ops.aten
    if op in (aten.mm, aten.bmm):
        return _bmm(args[0], args[1])
    if op in (aten.addmm, aten.baddbmm):
        return _bmm(args[1], args[2])
    if op is aten.convolution:
        x, w, transposed = args[0], args[1], bool(args[6])
        return (x.numel() if transposed else out.numel()) * _prod(w.shape[1:])
    if op is getattr(aten, "_native_multi_head_attention", None):
        # nn.MultiheadAttention's fused inference path: in-projections of q, k, v, Q Kᵀ and A V
        # over all heads (L x S x E each), out-projection.
        q, k, e = args[0], args[1], int(args[3])
        b, lq, lk = _prod(q.shape[:-2]), q.shape[-2], k.shape[-2]
        return b * (lq * e * e + 2 * lk * e * e + 2 * lq * lk * e + lq * e * e)
    if op in _SDPA_OPS:
        q, k, v = args[:3]  # (B, H, L, E), (B, H, S, E), (B, H, S, Ev): Q Kᵀ then A V
        return _prod(q.shape[:-2]) * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return 0


_SDPA_OPS = tuple(
    getattr(torch.ops.aten, n)
    for n in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(torch.ops.aten, n)
)


class _Counter(TorchDispatchMode):
    """Counts the ATen matrix products issued outside the hooked Conv / Linear modules.

    At the ATen level every ``F.linear`` / ``matmul`` / attention call is an ``mm`` / ``addmm`` /
    ``bmm`` / fused attention op, whatever Python code issued it, so nothing is missed and
    nothing is seen twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0  # depth of hooked modules currently running
        self.macs = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.inside:
            n = _aten_macs(func.overloadpacket, args, out)
            if n:
                self.macs += n
                name = str(func.overloadpacket.__name__)
                self.by_op[name] = self.by_op.get(name, 0) + n
        return out


def _inputs(model: nn.Module, size: tuple[int, int] | None) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    x = model.example_input(1, size)
    return x if isinstance(x, tuple) else (x,)


@torch.no_grad()
def count_macs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    """MACs of one forward pass of ``model(*inputs)`` (see the module docstring).

    Returns ``{"macs": total, "by_module": {conv / linear module name: MACs},
    "functional": {op: MACs}}``.
    """
    counter = _Counter()
    by_module: dict[str, int] = {}
    handles = []

    def pre(_m: nn.Module, _i: Any) -> None:
        counter.inside += 1

    def make_post(name: str) -> Callable[..., None]:
        def post(m: nn.Module, inp: tuple[Any, ...], out: Any) -> None:
            counter.inside -= 1
            by_module[name] = by_module.get(name, 0) + _module_macs(m, inp, out)

        return post

    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, *_CONV, *_CONV_T)):
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(make_post(name)))
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = sum(by_module.values()) + counter.macs
    return {"macs": int(total), "by_module": by_module, "functional": counter.by_op}


def ort_latency(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    threads: int = 2,
    runs: int = 50,
    warmup: int = 10,
    onnx_path: str | Path | None = None,
    spinning: bool = False,
) -> dict[str, Any]:
    """FP32 ONNX Runtime CPU latency of ``model`` on ``inputs`` (ms per call).

    ``spinning``: ORT's ``session.intra_op.allow_spinning``. Off by default: on a CPU shared
    with other jobs, worker threads that busy-wait for each other double the median (measured:
    edge_s 256x256, 2 threads, a loaded 2-core machine: 11.0 ms spinning vs 5.5 ms not). On
    idle cores reserved for the model, ``spinning=True`` may shave a little latency.

    Returns ``{"median_ms", "p90_ms", "min_ms", "threads", "spinning", "runs", "onnx_bytes"}``.
    """
    import onnxruntime as ort

    from export.onnx_export import to_onnx_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(onnx_path) if onnx_path is not None else Path(tmp) / "model.onnx"
        to_onnx_file(model, tuple(inputs), path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {
            i.name: t.detach().cpu().numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)
        }
        for _ in range(warmup):
            sess.run(None, feeds)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        size = path.stat().st_size
    t = np.asarray(times)
    return {
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
        "min_ms": float(t.min()),
        "threads": int(threads),
        "spinning": bool(spinning),
        "runs": int(runs),
        "onnx_bytes": int(size),
    }


def profile_model(
    name: str,
    *,
    size: tuple[int, int] | None = None,
    threads: int = 2,
    runs: int = 50,
    warmup: int = 10,
    latency: bool = True,
    spinning: bool = False,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Parameters, MACs and FP32 ORT latency of a registered model at its default input.

    The model is built without pretrained weights when its factory has a ``pretrained`` option
    (costs do not depend on the values, and no weight wheel is needed).

    Args:
        name: registered architecture.
        size: input ``(h, w)``; default the model's ``input_size``.
        threads: ORT intra-op threads.
        runs, warmup: timed and untimed ORT calls.
        latency: False skips the ONNX export and timing.
        spinning: ORT thread spinning (see :func:`ort_latency`).
        **model_kwargs: factory options.

    Returns:
        JSON-safe dict: ``name``, ``input_shapes``, ``params``, ``trainable``, ``macs``,
        ``gmacs``, ``latency`` (see :func:`ort_latency`, None when skipped), ``ort_version``,
        ``torch_version``.
    """
    if "pretrained" in model_defaults(name) and "pretrained" not in model_kwargs:
        model_kwargs["pretrained"] = False
    model = create_model(name, **model_kwargs)
    model.eval()
    inputs = _inputs(model, size)
    macs = count_macs(model, inputs)
    res: dict[str, Any] = {
        "name": name,
        "input_shapes": [list(t.shape) for t in inputs],
        **count_params(model),
        "macs": macs["macs"],
        "gmacs": macs["macs"] / 1e9,
        "latency": None,
        "torch_version": torch.__version__,
    }
    if latency:
        import onnxruntime as ort

        res["latency"] = ort_latency(model, inputs, threads, runs, warmup, spinning=spinning)
        res["ort_version"] = ort.__version__
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.profile [NAME ...] [--size N] [--threads 2] [--json]``."""
    p = argparse.ArgumentParser(prog="python -m export.profile", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="models (default: all registered)")
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (50)")
    p.add_argument("--no-latency", action="store_true", help="parameters and MACs only")
    p.add_argument("--spinning", action="store_true", help="let ORT threads busy-wait")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    names = args.names or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; choose from {list_models()}")
    rows: list[dict[str, Any]] = []
    failed = 0
    for n in names:
        size = None if args.size is None else (args.size, args.size)
        try:
            r = profile_model(
                n,
                size=size,
                threads=args.threads,
                runs=args.runs,
                latency=not args.no_latency,
                spinning=args.spinning,
            )
        except Exception as exc:  # one broken model must not hide the others' rows
            failed += 1
            r = {"name": n, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(r)
        if args.json:
            continue
        if "error" in r:
            print(f"{n:14s} FAILED {r['error']}", flush=True)
            continue
        lat = "-" if r["latency"] is None else f"{r['latency']['median_ms']:8.2f}"
        print(
            f"{n:14s} {r['input_shapes']!s:22s} params {r['params'] / 1e6:8.3f} M  "
            f"MACs {r['gmacs']:8.3f} G  ORT FP32 {lat} ms ({args.threads} threads)",
            flush=True,
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
