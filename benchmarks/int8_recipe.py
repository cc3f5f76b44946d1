"""The CPU INT8 recipe on this CPU: is ONNX Runtime's integer arithmetic exact, what does each
option cost in accuracy, and is INT8 faster than FP32 (issue #12).

Usage::

    python benchmarks/int8_recipe.py [--sizes 128,256,384] [--threads 2] [--rounds 300]
        [--out benchmarks/results] [--tag epyc-avx2-2c]

Prints the tables and writes ``<out>/int8-recipe-cpu-<tag>.md`` and ``.json`` (the tag defaults to
the CPU's maker, its best x86 / ARM integer ISA class and the core count). Work files go to
``runs/int8-recipe/`` (git-ignored).

What it does, all from ``sdk/models/default-fp32.onnx`` (never retrained):

* **Variants.** ``shipped`` is ``sdk/models/default-int8.onnx`` itself (the export's recipe after
  its 1-point budget fallback). Every other row is ``onnxruntime.quantization.quantize_static``
  on the same 300 calibration phantoms as the export (``export.pipeline.calibration_frames``,
  training size mix, percentile ranges computed once and shared through a calibration cache),
  output nodes float as in the export, one option changed per row (see ``VARIANTS``).
* **Exactness.** For each variant, ONNX Runtime's fused integer kernels (ORT_ENABLE_ALL, what the
  SDK runs) against its op-by-op Q/DQ semantics (ORT_DISABLE_ALL: float convolutions of the
  dequantized tensors, the reference) on 16 phantoms: max |mask-logit difference|. Exact integer
  kernels differ only by requantization ties (well under 1 logit); int16 saturation shows as
  logits off by several units. ``sat. pairs``: the fraction of int8 products that ONNX Runtime's
  pre-VNNI x86 U8S8 kernels sum in pairs (``vpmaddubsw``) whose pair sum leaves int16 -- counted
  from the real uint8 activation codes and int8 weights of every dense (non-depthwise)
  convolution on 4 phantoms, pairs taken as MLAS packs them (consecutive input channels of one
  kernel tap). It is a property of the file: it tells what the file computes on CPUs without VNNI
  whatever CPU runs this script.
* **Accuracy.** Dice / accuracy on the export's 200 held-out phantoms (``heldout_set``, size mix,
  mask grid), ONNX Runtime on one thread, against FP32 on the same frames.
* **Latency.** Bare ``InferenceSession.run`` on one preprocessed frame, session options as the
  SDK's ONNX Runtime backend (ORT_ENABLE_ALL, ``--threads`` intra-op threads, one inter-op, no
  spinning), every variant once per round in a shuffled order, ``--rounds`` rounds at the model's
  128×128 (fewer at larger sizes, same total time per size roughly); median and p90, ratio =
  median / FP32 median of the same loop. Larger inputs: the same files with the input's spatial
  dims rewritten (the network is fully convolutional and its resizes use scales; the Q/DQ
  parameters do not depend on the size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
FP32 = ROOT / "sdk/models/default-fp32.onnx"
SHIPPED = ROOT / "sdk/models/default-int8.onnx"
SIZES_MIX = [(128, 128), (256, 256), (480, 640), (600, 800)]  # the training / export size mix
# The export's CPU op set (weighted ops + the Clip / Relu folded into them) and the widest set a
# row tries; the calibration cache is made with the widest set first.
RECIPE_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Clip", "Relu"]
WIDE_OPS = [*RECIPE_OPS, "Add", "Resize", "Mul", "Sigmoid", "Concat"]

# name -> (options changed from the base, session config, note)
# base = the export's CPU recipe (export/quantize.py): QDQ, uint8 asymmetric activations, int8
# symmetric per-channel weights, 7-bit for dense convs and Gemm, 8-bit for depthwise convs;
# RECIPE_OPS quantized; graph-output nodes float.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str], str]] = {
    "recipe, all convs int8": (
        {},
        {},
        "the export's recipe before its budget fallback (here the same graph as shipped: no "
        "node fell back; the two rows show the timing noise)",
    ),
    "previous recipe (8-bit, ReLU6 not folded)": (
        {"reduce_range": False, "op_types": ["Conv", "ConvTranspose", "MatMul", "Gemm"]},
        {},
        "what made the previous default, without its 8 float fallback nodes",
    ),
    "ReLU6 not folded": (
        {"op_types": ["Conv", "ConvTranspose", "MatMul", "Gemm"]},
        {},
        "Clip in float between Q/DQ pairs",
    ),
    "7-bit everywhere": ({"depthwise_8bit": False}, {}, "depthwise weights 7-bit too"),
    "8-bit everywhere": ({"reduce_range": False}, {}, "full-range dense weights"),
    "8-bit, ORT U8U8 at load": (
        {"reduce_range": False},
        {"session.x64quantprecision": "1"},
        "same file as 8-bit everywhere; ONNX Runtime re-types weights to uint8 at load on "
        "pre-VNNI x86 (U8U8 kernels)",
    ),
    "U8U8 (uint8 weights)": (
        {"weight_type": "QUInt8", "WeightSymmetric": False, "reduce_range": False},
        {},
        "asymmetric uint8 weights, exact everywhere: no symmetric-conv (ConvSym) kernels",
    ),
    "S8S8 (int8 activations)": (
        {"activation_type": "QInt8", "ActivationSymmetric": True},
        {},
        "symmetric int8 activations: ReLU6 cannot be folded (no zero point at 0)",
    ),
    "per-tensor weights": ({"per_channel": False}, {}, ""),
    "QOperator format": ({"quant_format": "QOperator"}, {}, "QLinearConv in the file"),
    "+ Add/Resize/Mul/Sigmoid/Concat": ({"op_types": WIDE_OPS}, {}, "more ops int8"),
    "depthwise convs float": ({"float_depthwise": True}, {}, "dense convs int8 only"),
    "stem conv float": ({"float_first": True}, {}, "1 input channel: im2col + GEMM in int8"),
    "first + last convs float": (
        {"float_first_last": True},
        {},
        "the stem and the conv feeding the mask output",
    ),
}


# --------------------------------------------------------------------------- frames


# --------------------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    from sdk import cpu as _cpu

    flags = _cpu.cpu_flags()
    want = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    want += ["asimd", "asimddp", "i8mm"]
    isa = {f: (f in flags) for f in want}
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        klass = "arm64-dot" if isa["asimddp"] else "arm64-neon"
    elif isa["avx512_vnni"]:
        klass = "avx512vnni"
    elif isa["avx_vnni"]:
        klass = "avxvnni"
    elif isa["avx512bw"]:
        klass = "avx512-novnni"
    elif isa["avx2"]:
        klass = "avx2"
    else:
        klass = "x86-sse"
    name = _cpu.cpu_model()
    maker = next(
        (k for k in ("epyc", "ryzen", "xeon", "core", "graviton", "neoverse") if k in name.lower()),
        re.sub(r"[^a-z0-9]+", "", name.lower())[:8] or arch,
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # What ONNX Runtime's MLAS does with a u8*s8 dot product on this class (export/quantize.py).
    u8s8 = {
        "avx2": "vpmaddubsw: pairs summed in saturating int16",
        "avx512-novnni": "vpmaddubsw (zmm): pairs summed in saturating int16",
        "avxvnni": "vpdpbusd: int32, exact",
        "avx512vnni": "vpdpbusd (zmm): int32, exact",
        "arm64-dot": "udot/sdot: int32, exact",
        "arm64-neon": "smull+smlal: int16 pairs, exact with weights in [-127, 127]",
    }.get(klass, "generic C: int32, exact")
    return {
        "cpu": name,
        "arch": arch,
        "cores": cores,
        "isa": isa,
        "class": klass,
        "u8s8_kernel": u8s8,
        "tag": f"{maker}-{klass}-{cores}c",
    }


# --------------------------------------------------------------------------- building


class _Reader:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.i = frames, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return {"input": self.frames[self.i - 1][None]}

    def rewind(self) -> None:
        self.i = 0


def _conv_nodes(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in m.graph.node if n.op_type == "Conv"]


def _group(n: onnx.NodeProto) -> int:
    return next((a.i for a in n.attribute if a.name == "group"), 1)


def build(name: str, opts: dict[str, Any], src: Path, work: Path, calib: list[np.ndarray]) -> Path:
    """One variant, from the FP32 file, as export.quantize.quantize does it but for the options."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from export.quantize import (
        _ensure_node_names,
        _hold_float,
        _prune_unused,
        depthwise_weights,
        output_nodes,
    )

    out = work / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".onnx")
    if out.exists():
        return out
    m = onnx.load(str(src))
    _ensure_node_names(m)
    named = work / "named.onnx"
    onnx.save(m, str(named))
    exclude = set(output_nodes(m))
    convs = _conv_nodes(m)
    if opts.get("float_depthwise"):
        exclude |= {n.name for n in convs if _group(n) > 1}
    if opts.get("float_first"):
        exclude.add(convs[0].name)
    if opts.get("float_first_last"):
        # the stem, and the conv feeding the mask output (whose own conv is float already)
        prod = {o: n for n in m.graph.node for o in n.output}
        feeders = set()
        for n in convs:
            if n.name in exclude:
                x = prod.get(n.input[0])
                while x is not None and x.op_type != "Conv":
                    x = prod.get(x.input[0])
                if x is not None:
                    feeders.add(x.name)
        exclude |= {convs[0].name, *feeders}
    extra: dict[str, Any] = {
        "ActivationSymmetric": opts.get("ActivationSymmetric", False),
        "WeightSymmetric": opts.get("WeightSymmetric", True),
    }
    reduce_range = opts.get("reduce_range", True)
    if reduce_range and opts.get("depthwise_8bit", True):  # as export.quantize.quantize
        over = (
            {"axis": 0, "reduce_range": False}
            if opts.get("per_channel", True)
            else {"reduce_range": False}
        )
        extra["TensorQuantOverrides"] = {w: [dict(over)] for w in depthwise_weights(m)}
    fmt = QuantFormat.QOperator if opts.get("quant_format") == "QOperator" else QuantFormat.QDQ
    quantize_static(
        str(named),
        str(out),
        _Reader(calib),
        quant_format=fmt,
        op_types_to_quantize=opts.get("op_types", RECIPE_OPS),
        per_channel=opts.get("per_channel", True),
        reduce_range=reduce_range,
        activation_type=getattr(QuantType, opts.get("activation_type", "QUInt8")),
        weight_type=getattr(QuantType, opts.get("weight_type", "QInt8")),
        nodes_to_exclude=sorted(exclude),
        calibrate_method=CalibrationMethod.Percentile,
        extra_options=extra,
        # One histogram pass over the frames for all variants: the cache is made with the widest
        # op set first, and the percentile range of a tensor does not depend on the others.
        calibration_cache_path=str(work / "calibration-cache.json"),
    )
    q = onnx.load(str(out))
    _hold_float(q, exclude)  # as the export: float nodes stay float in ONNX Runtime
    _prune_unused(q)
    del q.metadata_props[:]
    for p in onnx.load(str(src)).metadata_props:  # the SDK's metadata, for evaluate_onnx
        q.metadata_props.add(key=p.key, value=p.value)
    onnx.save(q, str(out))
    return out


def resized(path: Path, size: int, work: Path) -> Path:
    """The same file with an input of size x size (spatial dims of the outputs left free).

    The mask-guided pooling's two MatMuls read constant bilinear resampling matrices built for
    the exported size (``export/models/_pool.py``: mask grid x feature grid); they are rebuilt
    for the new size, scaled with it (without this ONNX Runtime refuses the graph: incompatible
    MatMul dimensions). Every other weight is size-independent.
    """
    from onnx import numpy_helper

    from export.models._pool import _linear_array

    m = onnx.load(str(path))
    d = m.graph.input[0].type.tensor_type.shape.dim
    base = int(d[2].dim_value)
    if size == base:
        return path
    out = work / f"{path.stem}@{size}.onnx"
    d[2].dim_value, d[3].dim_value = size, size
    consts = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            consts.update((n.output[0], a.t) for a in n.attribute if a.name == "value")
    qdq = {
        n.output[0]: n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    }

    def source(name: str, q: tuple[str, str | None] | None) -> tuple[str, Any]:
        """Follow an operand through Q / DQ nodes to its constant: a float constant is
        replaced; an integer one is requantized with the scale / zero point that reads it."""
        while name not in consts and name in qdq:
            if qdq[name].op_type == "DequantizeLinear":
                dq_in = qdq[name].input
                q = (dq_in[1], dq_in[2] if len(dq_in) > 2 else None)
            name = qdq[name].input[0]
        return name, q

    operands = []  # (constant name, (scale name, zero-point name) or None) per MatMul operand
    for n in m.graph.node:
        if n.op_type == "MatMul":  # float, or QDQ variants that quantize weightless MatMuls
            operands += [source(i, None) for i in n.input]
        elif n.op_type == "QLinearMatMul":  # the QOperator format: a, a_scale, a_zp, b, ...
            operands += [source(n.input[k], (n.input[k + 1], n.input[k + 2])) for k in (0, 3)]
    rebuilt = 0
    for name, q in operands:
        init = consts.get(name)
        if init is None or len(init.dims) != 2:
            continue
        if init.data_type == onnx.TensorProto.FLOAT:
            q = None
        a = numpy_helper.to_array(init)
        scale = zp = None
        if q is not None:
            scale = float(numpy_helper.to_array(consts[q[0]]))
            zp = numpy_helper.to_array(consts[q[1]]) if q[1] else np.zeros((), a.dtype)
            a = (a.astype(np.float32) - zp.astype(np.float32)) * scale
        r, c = a.shape
        if (r * size) % base or (c * size) % base:
            continue
        r2, c2 = r * size // base, c * size // base
        tol = 0.0 if q is None else scale / 2 + 1e-7
        if np.allclose(a, _linear_array(r, c), rtol=0, atol=tol):
            new = _linear_array(r2, c2)
        elif np.allclose(a, _linear_array(c, r).T, rtol=0, atol=tol):
            new = _linear_array(c2, r2).T
        else:
            continue
        if q is not None:
            info = np.iinfo(zp.dtype)
            new = np.clip(np.round(new / scale) + zp, info.min, info.max).astype(zp.dtype)
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), init.name))
        rebuilt += 1
    if rebuilt not in (0, 2):
        raise RuntimeError(f"{path}: {rebuilt} pooling matrices found (expected 0 or 2)")
    for o in m.graph.output:
        for x in o.type.tensor_type.shape.dim[2:]:
            x.Clear()
    del m.graph.value_info[:]
    onnx.save(m, str(out))
    return out


# --------------------------------------------------------------------------- measuring


def session(path: Path, threads: int, optimized: bool = True, config: dict | None = None) -> Any:
    import onnxruntime as ort

    from sdk.backends.onnxruntime import session_options

    # The SDK's session setup without spinning: what the committed tables were measured with.
    so = session_options(ort, threads, spin=False)
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def exactness(path: Path, config: dict, x: np.ndarray) -> float:
    fused = session(path, 1, True, config).run(["mask_logits"], {"input": x})[0]
    ref = session(path, 1, False).run(["mask_logits"], {"input": x})[0]
    return float(np.abs(fused - ref).max())


def saturation(path: Path, x: np.ndarray) -> dict[str, float]:
    """Pairs of u8*s8 products (consecutive K of one output, K ordered kernel tap then input
    channel, as MLAS's x86 U8S8 kernels pack them) whose sum leaves int16, over every dense
    convolution fed through Q/DQ, on the real activation codes of ``x``."""
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    convs = []
    for n in m.graph.node:
        if n.op_type != "Conv" or _group(n) > 1:
            continue
        dqx, dqw = prod.get(n.input[0]), prod.get(n.input[1])
        if not (dqx and dqw and dqx.op_type == dqw.op_type == "DequantizeLinear"):
            continue
        if dqw.input[0] not in inits or inits[dqw.input[0]].dtype != np.int8:
            continue
        convs.append((n, dqx.input[0], inits[dqw.input[0]], dqx))
    if not convs:
        return {"pairs": 0.0, "saturated": 0.0, "worst_node": ""}
    mm = onnx.ModelProto.FromString(m.SerializeToString())
    codes = sorted({c[1] for c in convs})
    for c in codes:
        mm.graph.output.append(onnx.helper.make_empty_tensor_value_info(c))
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(mm.SerializeToString(), so, providers=["CPUExecutionProvider"])
    vals = dict(zip(codes, s.run(codes, {"input": x}), strict=True))
    total = sat = 0
    worst, worst_frac = "", 0.0
    for n, cname, w, dqx in convs:
        a = vals[cname]
        if a.dtype != np.uint8:  # int8 activations: x86 shifts them to uint8 (+128)
            a = (a.astype(np.int16) + 128).astype(np.uint8)
        zp = int(inits[dqx.input[2]]) if len(dqx.input) > 2 and dqx.input[2] in inits else 0
        zp = zp + 128 if vals[cname].dtype == np.int8 else zp
        attrs = {a_.name: onnx.helper.get_attribute_value(a_) for a_ in n.attribute}
        kh, kw = w.shape[2:]
        sh, sw = attrs.get("strides", [1, 1])
        pads = attrs.get("pads", [0, 0, 0, 0])
        a = np.pad(
            a,
            ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])),
            constant_values=zp,  # MLAS pads with the zero-point code
        ).astype(np.int32)
        _, c, h, wd = a.shape
        oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
        cols = np.stack(
            [
                a[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=1,
        )  # (b, taps, c, oh, ow): K order = tap, then channel
        k = kh * kw * c
        cols = cols.transpose(0, 3, 4, 1, 2).reshape(-1, k)
        wk = w.astype(np.int32).transpose(0, 2, 3, 1).reshape(w.shape[0], k)
        if k % 2:
            cols = np.pad(cols, ((0, 0), (0, 1)))
            wk = np.pad(wk, ((0, 0), (0, 1)))
        # pair sums: (pixels, out channels, K/2)
        p0, p1 = cols[:, 0::2], cols[:, 1::2]
        pair = p0[:, None, :] * wk[None, :, 0::2] + p1[:, None, :] * wk[None, :, 1::2]
        bad = int(np.count_nonzero((pair > 32767) | (pair < -32768)))
        total += pair.size
        sat += bad
        if bad / pair.size > worst_frac:
            worst, worst_frac = n.name, bad / pair.size
    return {
        "pairs": float(total),
        "saturated": sat / total,
        "worst_node": worst,
        "worst_frac": worst_frac,
    }


def int8_weight_max(path: Path) -> dict[str, int | None]:
    """max |integer weight code - zero point| of the dense and of the depthwise convolutions
    (and Gemm, counted dense), over the weights that reach them through DequantizeLinear."""
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    out: dict[str, int | None] = {"dense": None, "depthwise": None}
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 2 or n.input[1] not in prod:
            continue
        dq = prod[n.input[1]]
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        w = inits[dq.input[0]].astype(np.int32)
        if len(dq.input) > 2 and dq.input[2] in inits:
            zp = inits[dq.input[2]].astype(np.int32)
            w = w - (zp.reshape(-1, *[1] * (w.ndim - 1)) if zp.ndim else zp)
        kind = "depthwise" if n.op_type == "Conv" and _group(n) > 1 else "dense"
        out[kind] = max(out[kind] or 0, int(np.abs(w).max()))
    return out


def time_variants(
    paths: dict[str, tuple[Path, dict]], x: np.ndarray, threads: int, rounds: int, warmup: int = 10
) -> dict[str, np.ndarray]:
    sessions = {k: session(p, threads, True, cfg) for k, (p, cfg) in paths.items()}
    feeds = {"input": x}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feeds)
    t = {k: [] for k in sessions}
    order = list(sessions)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds)
            t[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) * 1e3 for k, v in t.items()}


# --------------------------------------------------------------------------- main


def check(path: Path) -> None:
    """Max |output| difference of ONNX Runtime's fused integer kernels against its op-by-op Q/DQ
    semantics on 16 phantoms, plainly and with ``session.x64quantprecision=1`` (which re-types
    weights outside [-64, 63] to uint8 on pre-VNNI x86: U8U8 kernels, no int16 saturation). The
    same graph either way: a difference that only the plain run shows is saturation."""
    from sdk import kernels, synthetic
    from sdk.artifact import read_onnx_file_metadata

    md = read_onnx_file_metadata(path)
    kinds = ("benign", "malignant", "normal")
    x = np.stack(
        [
            kernels.preprocess(
                synthetic.phantom(kinds[i % 3], size=(300, 400), seed=100 + i)[0],
                size=md.input_size,
                channels=md.channels,
                sigma=md.sigma,
                mean=md.mean,
                std=md.std,
            )
            for i in range(16)
        ]
    ).astype(np.float32)
    ref = session(path, 1, False)
    names = [o.name for o in ref.get_outputs()]
    want = ref.run(names, {"input": x})
    print(f"{path} on {cpu_info()['cpu']} ({cpu_info()['class']})")
    for label, cfg in (("plain", {}), ("session.x64quantprecision=1", EXACT)):
        got = session(path, 1, True, cfg).run(names, {"input": x})
        diffs = {
            n: round(float(np.abs(a - b).max()), 3)
            for n, a, b in zip(names, got, want, strict=True)
        }
        print(f"  fused integer kernels vs op-by-op Q/DQ, {label}: {diffs}")


EXACT = {"session.x64quantprecision": "1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256,384")
    ap.add_argument("--threads", default="2", help="comma-separated; the first is the main table")
    ap.add_argument("--rounds", type=int, default=300, help="rounds at 128x128")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    ap.add_argument("--work", type=Path, default=ROOT / "runs/int8-recipe")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--only", default=None, help="';'-separated variant names (debugging)")
    ap.add_argument(
        "--check",
        type=Path,
        default=None,
        help="only print one INT8 file's exactness here, with and without ONNX Runtime's exact "
        "U8U8 path (e.g. the previous default: git show 07e11e8~1:sdk/models/default-int8.onnx)",
    )
    args = ap.parse_args()
    if args.check is not None:
        check(args.check)
        return
    args.work = args.work.resolve()
    t_start = time.time()

    import onnxruntime as ort

    from export.pipeline import calibration_frames, evaluate_onnx, heldout_set
    from sdk import kernels, synthetic
    from sdk.artifact import read_onnx_file_metadata
    from sdk.bench.timing import machine_info

    info = cpu_info()
    tag = args.tag or info["tag"]
    args.work.mkdir(parents=True, exist_ok=True)
    md = read_onnx_file_metadata(FP32)
    print(f"CPU: {info['cpu']} ({info['class']}; u8*s8 in MLAS: {info['u8s8_kernel']})")

    calib = calibration_frames("synthetic", md, 300, 0, frame_sizes=SIZES_MIX)
    ev = heldout_set(FP32, "synthetic", 200, 0, frame_sizes=SIZES_MIX)
    # Exactness / saturation / timing frames: phantoms as tests/sdk/test_backend_torch.py uses.
    kinds = ("benign", "malignant", "normal")
    probe = np.stack(
        [
            kernels.preprocess(
                synthetic.phantom(kinds[i % 3], size=(300, 400), seed=100 + i)[0],
                size=md.input_size,
                channels=md.channels,
                sigma=md.sigma,
                mean=md.mean,
                std=md.std,
            )
            for i in range(16)
        ]
    ).astype(np.float32)

    # The widest op set first, so the shared calibration cache holds every tensor's range.
    order = sorted(VARIANTS, key=lambda k: -len(VARIANTS[k][0].get("op_types", RECIPE_OPS)))
    if args.only:
        keep = set(args.only.split(";"))
        order = [k for k in order if k in keep]
    models: dict[str, tuple[Path, dict, str]] = {
        "FP32": (FP32, {}, "sdk/models/default-fp32.onnx"),
        "shipped INT8": (SHIPPED, {}, "sdk/models/default-int8.onnx (recipe + budget fallback)"),
    }
    for name in order:
        opts, cfg, note = VARIANTS[name]
        t0 = time.time()
        p = build(name, opts, FP32, args.work, calib)
        print(f"built {name} ({time.time() - t0:.0f} s)")
        models[name] = (p, cfg, note)

    rows: list[dict[str, Any]] = []
    fp = evaluate_onnx(FP32, ev, 1)
    for name, (p, cfg, note) in models.items():
        r: dict[str, Any] = {"name": name, "note": note, "file": os.path.relpath(p, ROOT)}
        r["session_config"] = cfg
        r["size_mb"] = p.stat().st_size / 1e6
        if name != "FP32":
            r["weight_max"] = int8_weight_max(p)  # {"dense": .., "depthwise": ..}
            in_file = {n.op_type for n in onnx.load(str(p)).graph.node}
            # A QOperator file runs the same integer kernels op by op: no reference to hold it to.
            r["exact_max_diff"] = None if "QLinearConv" in in_file else exactness(p, cfg, probe)
            # (a runtime that re-types the weights to uint8 runs no U8S8 kernel: nothing to count)
            r["saturation"] = None if cfg else saturation(p, probe[:4])
            acc = evaluate_onnx(p, ev, 1, session_config=cfg or None)
            r.update({k: acc[k] for k in ("dice", "accuracy")})
            r["d_dice"], r["d_acc"] = acc["dice"] - fp["dice"], acc["accuracy"] - fp["accuracy"]
            m = onnx.load(str(p))
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            for k, v in cfg.items():
                so.add_session_config_entry(k, v)
            so.optimized_model_filepath = str(args.work / "optimized.onnx")
            ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
            r["ort_int8_convs"] = sum(o == "QLinearConv" for o in ops)
            r["ort_float_convs"] = sum(o in ("Conv", "FusedConv") for o in ops)
            r["ort_layout_ops"] = sum(
                o in ("Transpose", "ReorderInput", "ReorderOutput") for o in ops
            )
        else:
            r.update({k: fp[k] for k in ("dice", "accuracy")})
        rows.append(r)
        print(f"{name}: {json.dumps({k: v for k, v in r.items() if k not in ('note',)})}")

    sizes = [int(s) for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in str(args.threads).split(",")]
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    timing: dict[int, dict[int, dict[str, dict[str, float]]]] = {}
    for threads in thread_counts:
        timing[threads] = {}
        for size in sizes:
            rounds = (
                max(40, int(args.rounds * (128 / size) ** 2 * 1.5)) if size > 128 else args.rounds
            )
            x = kernels.preprocess(
                synthetic.phantom("malignant", size=(600, 800), seed=7)[0],
                size=(size, size),
                channels=md.channels,
                sigma=md.sigma,
                mean=md.mean,
                std=md.std,
            )[None].astype(np.float32)
            paths = {k: (resized(p, size, args.work), cfg) for k, (p, cfg, _) in models.items()}
            t = time_variants(paths, x, threads, rounds)
            base = float(np.median(t["FP32"]))
            timing[threads][size] = {
                k: {
                    "median_ms": float(np.median(v)),
                    "p90_ms": float(np.percentile(v, 90)),
                    "ratio": float(np.median(v)) / base,
                    # per round, this row's time over FP32's in the same round: drift cancels
                    "paired_ratio": float(np.median(v / t["FP32"])),
                    "rounds": rounds,
                }
                for k, v in t.items()
            }
            print(
                f"{threads} thread(s), {size}x{size} ({rounds} rounds): "
                + ", ".join(
                    f"{k} {d['median_ms']:.2f} ms ({d['ratio']:.2f}x)"
                    for k, d in timing[threads][size].items()
                )
            )

    doc = {
        "title": "CPU INT8 recipe: exactness, accuracy and latency of ONNX Runtime INT8 variants",
        "command": "python benchmarks/int8_recipe.py "
        + " ".join(
            f"--{k} {v}"
            for k, v in (("sizes", args.sizes), ("threads", args.threads), ("rounds", args.rounds))
        ),
        "cpu": info,
        "machine": machine_info(),
        "onnx": onnx.__version__,
        "threads": thread_counts,
        # 1-minute load average before / after the timing loops (others' jobs share the cores)
        "load_average": [
            None if load_before is None else round(load_before[0], 2),
            round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        ],
        "fp32": {k: fp[k] for k in ("dice", "accuracy", "frames")},
        "rows": rows,
        # the first thread count's table; "latency_by_threads" holds all of them
        "latency": {str(k): v for k, v in timing[thread_counts[0]].items()},
        "latency_by_threads": {
            str(t): {str(k): v for k, v in d.items()} for t, d in timing.items()
        },
        "wall_s": time.time() - t_start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"int8-recipe-cpu-{tag}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    print("wrote", stem.with_suffix(".md"), stem.with_suffix(".json"))
    shutil.rmtree(args.work / "tmp", ignore_errors=True)


def _f(v: Any, d: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def markdown(doc: dict[str, Any]) -> str:
    c, m = doc["cpu"], doc["machine"]
    flags = ", ".join(
        f"{k} {'yes' if v else 'no'}"
        for k, v in c["isa"].items()
        if not (c["arch"] == "x86_64" and k.startswith(("asimd", "i8mm")))
    )
    sizes = list(doc["latency"])
    lines = [
        f"### {doc['title']}",
        "",
        f"- CPU: **{c['cpu']}** ({c['arch']}, {c['cores']} cores visible); ISA: {flags}; class "
        f"**{c['class']}**: MLAS computes u8*s8 with {c['u8s8_kernel']}",
        f"- versions: {m['versions']}, onnx {doc['onnx']}; {m['date']}; command: "
        f"`{doc['command']}` ({doc['wall_s']:.0f} s)",
        "- source: `sdk/models/default-fp32.onnx` (not retrained); variants: 300 calibration "
        "phantoms (scanner style, the export's own: size mix, percentile); accuracy: 200 "
        "held-out phantoms (export's "
        f"budget frames, mask grid), FP32 Dice {doc['fp32']['dice']:.4f} / accuracy "
        f"{doc['fp32']['accuracy']:.3f}",
        "- exact: max |mask-logit| of ORT's fused integer kernels vs its op-by-op Q/DQ "
        "semantics on 16 phantoms; sat. pairs: share of u8*s8 pair sums outside int16 in dense "
        "convs (what pre-VNNI x86 kernels clip), from the file's real codes on 4 phantoms",
        f"- latency: bare `session.run`, batch 1, {doc['threads'][0]} intra-op thread(s), SDK "
        "session options, all rows interleaved in one shuffled loop per size; ratio = "
        "median / FP32 median of the same loop, in brackets the median over rounds of the "
        "same-round ratio; 1-minute load average before / after the timing: "
        f"{doc['load_average'][0]} / {doc['load_average'][1]} (on {c['cores']} cores)",
        "",
        "| variant | max abs(w − zp) dense / dw | exact (max Δ logit) | sat. pairs | Dice "
        "| ΔDice | accuracy | Δacc "
        "| ORT int8 / float convs, layout ops | "
        + " | ".join(f"{s}² ms p50 / p90 | {s}² ratio" for s in sizes)
        + " |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|" + "--:|--:|" * len(sizes),
    ]
    for r in doc["rows"]:
        sat = r.get("saturation")
        cfg = "".join(f" + `{k}={v}`" for k, v in r["session_config"].items())
        cells = [
            r["name"] + cfg,
            "–"
            if not r.get("weight_max")
            else f"{_f(r['weight_max']['dense'])} / {_f(r['weight_max']['depthwise'])}",
            _f(r.get("exact_max_diff"), 3),
            "–" if not sat or not sat["pairs"] else f"{100 * sat['saturated']:.3f}%",
            _f(r["dice"], 4),
            _f(r.get("d_dice"), 4),
            _f(r["accuracy"], 3),
            _f(r.get("d_acc"), 3),
            "–"
            if "ort_int8_convs" not in r
            else f"{r['ort_int8_convs']} / {r['ort_float_convs']}, {r['ort_layout_ops']}",
        ]
        for s in sizes:
            t = doc["latency"][s][r["name"]]
            cells += [
                f"{t['median_ms']:.2f} / {t['p90_ms']:.2f}",
                f"{t['ratio']:.2f}× ({t['paired_ratio']:.2f}×)",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    for threads in doc["threads"][1:]:
        lat = doc["latency_by_threads"][str(threads)]
        lines += [
            "",
            f"Latency with {threads} intra-op thread(s), same loop design: p50 ms (ratio to FP32)",
            "",
            "| variant | " + " | ".join(f"{s}²" for s in lat) + " |",
            "|---|" + "--:|" * len(lat),
        ]
        for r in doc["rows"]:
            cells = [
                f"{lat[s][r['name']]['median_ms']:.2f} ({lat[s][r['name']]['ratio']:.2f}×)"
                for s in lat
            ]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    notes = [f"- **{r['name']}**: {r['note']}" for r in doc["rows"] if r.get("note")]
    return "\n".join([*lines, "", *notes]) + "\n"


if __name__ == "__main__":
    main()
