"""INT8 post-training quantization of an FP32 ONNX model, per target, with accuracy control.

Two targets, because they want different graphs (issue #5):

* ``"cpu"`` -- ONNX Runtime on CPU: QDQ format, uint8 (asymmetric) activations, int8 symmetric
  per-channel weights -- **7-bit for dense convolutions and Gemm / MatMul** (``reduce_range``:
  [-64, 64]), 8-bit for depthwise convolutions -- and int32 biases. ONNX Runtime fuses these into
  QLinearConv / integer kernels. Why: see "The CPU recipe" below.
* ``"tensorrt"`` -- TensorRT 10.3 (Jetson JetPack 6) and 11 (explicit quantization only): signed
  int8 everywhere, zero-point 0 (symmetric activations and weights), per-channel weights, **no
  Q/DQ on biases** (TensorRT fuses the bias of a quantized conv itself and rejects int32
  DequantizeLinear) and none on graph outputs. :func:`check_tensorrt_qdq` enforces this.

For both, nodes that produce graph outputs stay float (the mask logits' last conv, the head's
last linear: where quantization error lands directly on the result), and only Conv /
ConvTranspose / MatMul / Gemm are quantized (for TensorRT only the convolutions: the classifier
head stays float) -- sigmoid, softmax, pooling and resampling stay float. For the CPU, the Clip
(ReLU6) / Relu after them is folded into their uint8 output quantization, so that consecutive
convolutions run integer to integer (:data:`CPU_OP_TYPES`). The quantizer is
ONNX Runtime's ``quantize_static``; NVIDIA ModelOpt produces the same graph form and could
replace it (not measured here).

Accuracy control (:func:`quantize_with_budget`): quantize, evaluate against FP32 on held-out
frames; if Dice or accuracy drops more than the budget, rank the quantized nodes by the error
their outputs carry (ONNX Runtime's QDQ debugging tools, one pass over the calibration frames)
and put the worst back in float, doubling the count until the budget holds. The report says
which nodes stayed float and what each cost.

The CPU recipe (issue #12: one file, right on every CPU it ships to)
--------------------------------------------------------------------
ONNX Runtime's CPU kernels (MLAS) multiply uint8 activations by int8 weights ("U8S8"; int8
activations are shifted to uint8 on x86 by ONNX Runtime's QDQS8ToU8 transform, so S8S8 lands in
the same kernels there). A U8S8 dot product of length K is, per CPU class:

* **x86 AVX2 without VNNI** (Haswell..Coffee Lake, AMD Zen 1-3) and **x86 AVX-512 without VNNI**
  (Skylake-SP, AVX512BW/"Avx512Core" kernels): ``vpmaddubsw`` multiplies 8-bit pairs and adds
  each two neighbouring products into a *saturating int16*, then ``vpmaddwd`` widens to int32
  (MLAS ConvSymKernelAvx2 / QgemmU8S8KernelAvx2 / ...Avx512Core). With full 8-bit weights a pair
  reaches 2 * 255 * 127 = 64770 > 32767: the sum clips, silently. The activations are the raw
  uint8 codes (the zero point is corrected afterwards through column sums), so any activation
  near 255 next to a large weight clips -- common, not a corner case. Measured on an AMD EPYC
  (AVX2, no VNNI) with the previous, 8-bit default: mask logits off by 4.2 from the exact integer
  result, 0.38 through ONNX Runtime's exact U8U8 kernels on the same graph
  (``python benchmarks/int8_recipe.py --check FILE``). U8U8 kernels (``vpmaddwd`` on words
  widened from bytes) are exact, and so are the depthwise ones (below).
* **x86 with AVX512-VNNI or AVX-VNNI** (Cascade Lake+, Ice Lake, Sapphire Rapids, Alder Lake,
  Zen 4+), and AMX: ``vpdpbusd(s)`` / tile ops add four u8*s8 products straight into int32:
  exact for any weight range.
* **aarch64**: with the dot-product extension ``udot``/``sdot`` into int32 (exact); without it
  the uint8 input is shifted to int8 and ``smull``+``smlal`` add two int8*int8 products in int16:
  |2 * 128 * 127| = 32512 < 32767 with symmetric weights (never -128), exact.

Depthwise convolutions take other kernels everywhere: one u8*s8 product per 16/32-bit lane on
x86 (``vpmovzxbd`` + ``vpmaddwd``, or ``vpmaddubsw`` with the partner byte zero: |255 * 127| =
32385 fits int16), two int8*int8 products per int16 on aarch64 (``smull`` + ``smlal``: <= 32512):
exact with full 8-bit weights on every class.

So the 8-bit-weight file is exact on VNNI and ARM but wrong on pre-VNNI x86. The recipe: dense
convolution and Gemm / MatMul weights on [-64, 64] (``reduce_range=True``), which bounds every
``vpmaddubsw`` pair to 2 * 255 * 64 = 32640 <= 32767 -- no saturation is possible -- and depthwise
weights on the full [-127, 127] (an override per weight tensor), whose kernels cannot saturate.
The same file then computes the exact integer result on every class above. Depthwise filters have
9 or 25 taps per channel, so they are the ones that cannot spare a bit: on the demo model, fully
quantized, 200 held-out phantoms, the recipe scores Dice 0.873 / accuracy 0.975 (FP32 0.859 /
0.975) and 7-bit depthwise weights too 0.823 / 0.965 (``benchmarks/results/int8-recipe-*``).
The alternatives, measured there on an AVX2 EPYC (latency against FP32, 2 threads, 128x128):
U8U8 weights are exact everywhere but leave MLAS's symmetric-conv kernels (8x); ONNX Runtime's
session option ``session.x64quantprecision=1`` turns 8-bit weights into U8U8 at load on pre-VNNI
x86 only (exact there, 1.2x, and a runtime setting every deployment would have to remember);
S8S8 activations land in the same U8S8 kernels on x86 and cannot fold ReLU6 (1.75x);
per-tensor weights lose 33 Dice points. TensorRT is unaffected (int8 tensor cores / DP4A
accumulate in int32): its graphs keep full 8-bit weights, and where ONNX Runtime on a CPU stands
in for TensorRT (the budget check, the tests) it must run them through exact integer kernels:
:data:`EXACT_INTEGER_SESSION_CONFIG`.

One more ONNX Runtime behaviour the recipe guards against: at load it quantizes a *float*
Conv / Gemm sitting between a DequantizeLinear and a QuantizeLinear with its own per-tensor 8-bit
weights -- which would undo a budget fallback and bring back saturating pairs. Such nodes get a
per-channel input DequantizeLinear (same values) that the rewrite does not match
(:func:`_hold_float`).

Speed on pre-VNNI x86 is bounded by the same instruction: ``vpmaddubsw`` + ``vpmaddwd`` +
``vpaddd`` per 32 multiply-adds against one FMA per 8 in FP32, about 1.33x per instruction; the
demo model measured 0.93x its FP32 latency there at 128x128, 0.73x at 384x384 (2 threads).
VNNI (``vpdpbusd``) does 32 in one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export._files import writing
from sdk.artifact import Metadata, stamp_onnx_digest
from sdk.errors import InputError, ModelError

__all__ = [
    "EXACT_INTEGER_SESSION_CONFIG",
    "QuantResult",
    "check_tensorrt_qdq",
    "depthwise_weights",
    "output_nodes",
    "quantize",
    "quantize_with_budget",
    "quiet_quantizer",
    "recipe",
    "tensorrt_qdq_violations",
    "unweighted_matmuls",
    "write_int8_artifact",
]

QUANT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the weighted ops the fallback ranks
# CPU: also Clip / Relu, which the quantizer folds into the preceding node's output quantization
# (asymmetric uint8 saturates at 0 and at the calibrated max). Left out, every conv -> ReLU6 ran
# Q -> DQ -> Clip -> Q -> DQ in float between two integer kernels: 1.2-1.3x its FP32 twin's
# latency on an AVX2 EPYC, against 0.73-0.93x folded (benchmarks/results/int8-recipe-*).
CPU_OP_TYPES = (*QUANT_OP_TYPES, "Clip", "Relu")
# TensorRT: convolutions only; the classifier head (Gemm / MatMul) stays float, as the issue's
# TensorRT profile asks (its error lands directly on the class probabilities).
TRT_OP_TYPES = ("Conv", "ConvTranspose")
_EPS = 1e-9  # a drop of exactly the budget passes (0.98 - 0.97 is 0.010000000000000009)
MIN_CALIBRATION_FRAMES = 300
# ONNX Runtime session config that makes its CPU integer kernels exact on every x86 CPU: on AVX2 /
# AVX-512 without VNNI it re-types int8 weights outside [-64, 63] to uint8 at load (U8U8 kernels,
# no int16 saturation); elsewhere it changes nothing. For running a TensorRT (8-bit weight) QDQ
# graph on a CPU as TensorRT's stand-in; the CPU artifact does not need it (7-bit dense weights).
EXACT_INTEGER_SESSION_CONFIG = {"session.x64quantprecision": "1"}


def recipe(target: str) -> dict[str, Any]:
    """The quantization settings of ``target`` ("cpu" or "tensorrt"), as recorded in the
    artifact's provenance (the module docstring says why)."""
    if target == "cpu":
        return {
            "format": "QDQ",
            "activations": "uint8 asymmetric",
            "weights": "int8 symmetric per-channel; dense conv / Gemm / MatMul 7-bit "
            "(reduce_range: [-64, 64]), depthwise conv 8-bit ([-127, 127])",
            "reduce_range": True,
            "depthwise_8bit": True,
            "ops": "Conv, ConvTranspose, MatMul, Gemm; Clip / Relu folded into their output "
            "quantization",
            "why": "no int16 saturation in pre-VNNI x86 U8S8 kernels (vpmaddubsw): exact on "
            "AVX2, AVX-512 with and without VNNI, and aarch64",
        }
    if target == "tensorrt":
        return {
            "format": "QDQ",
            "activations": "int8 symmetric",
            "weights": "int8 symmetric per-channel, 8-bit",
            "reduce_range": False,
            "bias": "float (TensorRT fuses it)",
        }
    raise InputError(f"target must be 'cpu' or 'tensorrt', got {target!r}")


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def output_nodes(model: str | os.PathLike[str] | onnx.ModelProto) -> list[str]:
    """Names of the nodes whose outputs are graph outputs (kept float)."""
    m = _load(model)
    outs = {o.name for o in m.graph.output}
    return [n.name for n in m.graph.node if any(o in outs for o in n.output)]


def unweighted_matmuls(model: str | os.PathLike[str] | onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes with no weight initializer among their inputs -- computed
    operands, e.g. the mask-guided pooling (``export/models/_pool.py``: the mask probabilities
    times constant resampling matrices). They are pooling, not weighted layers, and stay float
    (module docstring): quantized, the 8-bit mask lands directly on the class probabilities
    (measured on the first MatMul-pooled default: macro AUC -0.026 on 60 report frames, for no
    speed -- ONNX Runtime ran them as Q -> DQ -> float MatMul)."""
    m = _load(model)
    inits = {i.name for i in m.graph.initializer}
    return [
        n.name
        for n in m.graph.node
        if n.op_type == "MatMul" and not any(i in inits for i in n.input)
    ]


def depthwise_weights(m: onnx.ModelProto) -> list[str]:
    """Weight initializers of the depthwise convolutions (one input and one output channel per
    group): ONNX Runtime runs these with its depthwise kernels, not the U8S8 GEMM ones."""
    inits = {i.name: i for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        dims = list(inits[n.input[1]].dims)
        if group > 1 and len(dims) >= 2 and dims[1] == 1 and dims[0] == group:
            out.append(n.input[1])
    return out


def _hold_float(m: onnx.ModelProto, names: set[str]) -> list[str]:
    """Keep the nodes ``names`` float under ONNX Runtime; returns the ones rewritten.

    ONNX Runtime (>= 1.20, ``WeightBiasQuantization``) quantizes at load any float Conv /
    ConvTranspose / Gemm whose input comes from a per-tensor DequantizeLinear and whose only
    output path (through Relu / Clip) ends in a QuantizeLinear -- exactly a fallback node between
    two quantized ones -- with its *own* weight quantization: per-tensor, 8-bit, asymmetric: the
    accuracy the fallback was to restore is lost, and on pre-VNNI x86 its U8S8 pairs can saturate
    (module docstring). Its input DequantizeLinear is therefore written per channel (axis 1, the
    same scale and zero point repeated): the same values, which the rewrite does not match."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    cons: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)

    def ends_in_q(n: onnx.NodeProto) -> bool:
        while True:
            after = cons.get(n.output[0], [])
            if len(n.output) != 1 or len(after) != 1:
                return False
            if after[0].op_type == "QuantizeLinear":
                return True
            if after[0].op_type not in ("Relu", "Clip"):
                return False
            n = after[0]

    held = []
    for n in list(m.graph.node):
        if n.name not in names or n.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        dq = prod.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or n.input[1] not in inits:
            continue
        if dq.input[1] not in inits or not ends_in_q(n):
            continue
        w = inits[n.input[1]].dims
        if n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            channels = w[1] if trans_b else w[0]
        else:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            channels = w[1] * group if n.op_type == "Conv" else w[0]
        scale = numpy_helper.to_array(inits[dq.input[1]])
        if scale.size != 1:
            continue
        tag = f"{n.input[0]}_per_channel_{len(held)}"
        extra = [numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype), tag + "_s")]
        args = [dq.input[0], tag + "_s"]
        if len(dq.input) > 2 and dq.input[2] in inits:
            zp = numpy_helper.to_array(inits[dq.input[2]])
            extra.append(
                numpy_helper.from_array(np.full(channels, zp.item(), zp.dtype), tag + "_z")
            )
            args.append(tag + "_z")
        m.graph.initializer.extend(extra)
        hold = helper.make_node("DequantizeLinear", args, [tag], name=tag, axis=1)
        m.graph.node.insert(list(m.graph.node).index(n), hold)
        n.input[0] = tag
        held.append(n.name)
    return held


def _prune_unused(m: onnx.ModelProto) -> None:
    """Drop nodes and initializers nothing reads (the bounds of the Clips the quantizer folded
    away, a DequantizeLinear :func:`_hold_float` replaced): ONNX Runtime would warn about each
    one at every session load."""
    while True:
        used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
        dead = [n for n in m.graph.node if not any(o in used for o in n.output)]
        for n in dead:
            m.graph.node.remove(n)
        if not dead:
            break
    keep = [i for i in m.graph.initializer if i.name in used]
    if len(keep) != len(m.graph.initializer):
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)


def _ensure_node_names(m: onnx.ModelProto) -> bool:
    changed = False
    for i, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
            changed = True
    return changed


class _Reader:
    """``CalibrationDataReader`` over preprocessed frames (1, C, h, w) float32; ``set_range``
    and ``len`` let ONNX Runtime feed them in strides (``CalibStridedMinMax``)."""

    def __init__(self, name: str, frames: Sequence[np.ndarray]) -> None:
        self.name = name
        self.frames = frames
        self.i, self.end = 0, len(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, min(end_index, len(self.frames))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        x = self.frames[self.i]
        self.i += 1
        return {self.name: x if x.ndim == 4 else x[None]}

    def rewind(self) -> None:
        self.i, self.end = 0, len(self.frames)


#: Bytes of intermediate tensors the calibration may hold at once. ONNX Runtime's histogram
#: calibrators (percentile, entropy) keep every *calibrated* tensor (the float inputs and outputs
#: of the node types being quantized) of *every* calibration frame in memory before they build
#: the histograms (``HistogramCalibrater.collect_data``): 300 frames of mtl_oca at 96x96 were
#: killed for memory on a 24 GiB machine. Above this budget the frames go in strides
#: (``CalibStridedMinMax``; each stride's histograms are merged into the previous ones, on the
#: first stride's bin width, so the ranges can differ slightly from one pass); under it (an
#: edge_s export at 128x128: ~19 MiB a frame, 6 GiB for 300) calibration is one pass.
CALIBRATION_MEMORY_BYTES = 8 << 30


def calibrated_tensors(m: onnx.ModelProto, op_types: Sequence[str]) -> set[str]:
    """Names of the tensors ONNX Runtime's calibrators observe for ``op_types``
    (``CalibraterBase.select_tensors_to_calibrate``): every input and output of a node of those
    types that is not an initializer (the float ones among them, at run time)."""
    inits = {i.name for i in m.graph.initializer}
    ops = set(op_types)
    return {
        t
        for n in m.graph.node
        if n.op_type in ops
        for t in (*n.input, *n.output)
        if t and t not in inits
    }


def activation_bytes(
    m: onnx.ModelProto, x: np.ndarray, op_types: Sequence[str] | None = None
) -> int:
    """Bytes of the float tensors one forward pass of ``m`` produces on input ``x``: every node
    output (``op_types`` None), or only those the calibrator of ``op_types`` keeps
    (:func:`calibrated_tensors`), the graph's outputs included. Measured by running ``m`` once
    with those tensors exposed, as ONNX Runtime's calibrator does (static shape inference cannot
    size GroupNorm reshapes or deformable convolutions). The difference matters for big graphs:
    sam_mtl (TinyViT) at 256x256 produces 5.9 GiB of node outputs a frame, of which the CPU
    recipe's calibrator keeps 2.1 GiB."""
    import onnxruntime as ort

    g = onnx.ModelProto()
    g.CopyFrom(m)
    have = {o.name for o in g.graph.output}
    want = (
        [o for n in g.graph.node for o in n.output]
        if op_types is None
        else sorted(calibrated_tensors(g, op_types))
    )
    graph_in = {i.name for i in g.graph.input}
    for name in want:
        if name and name not in have and name not in graph_in:
            g.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    s = ort.InferenceSession(g.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = s.run(None, {s.get_inputs()[0].name: x})
    kept = int(sum(o.nbytes for o in outs if isinstance(o, np.ndarray) and o.dtype.kind == "f"))
    # The graph input is calibrated too when a calibrated node reads it.
    return kept + (x.nbytes if op_types is not None and graph_in & set(want) else 0)


def calibration_stride(
    m: onnx.ModelProto,
    frames: Sequence[np.ndarray],
    budget: int | None = None,
    op_types: Sequence[str] | None = None,
) -> int | None:
    """Frames per calibration stride so that the held intermediate tensors (those of
    ``op_types``' calibrator: :func:`activation_bytes`) stay within ``budget``
    (:data:`CALIBRATION_MEMORY_BYTES`): None (one pass) when all frames fit, else the largest
    divisor of their number that fits (ONNX Runtime needs equal strides), at least 1."""
    budget = CALIBRATION_MEMORY_BYTES if budget is None else budget
    n = len(frames)
    x = frames[0] if frames[0].ndim == 4 else frames[0][None]
    per_frame = max(activation_bytes(m, np.ascontiguousarray(x, np.float32), op_types), 1)
    if per_frame * n <= budget:
        return None
    fit = max(1, budget // per_frame)
    return max(d for d in range(1, min(fit, n) + 1) if n % d == 0)


def _check_calibration(
    m: onnx.ModelProto, frames: Sequence[np.ndarray], min_frames: int
) -> tuple[str, list[np.ndarray]]:
    if len(frames) < max(min_frames, 1):
        raise InputError(
            f"calibration needs >= {max(min_frames, 1)} frames, got {len(frames)}; pass more "
            "frames from the data (or lower min_frames for a quick experiment)"
        )
    inp = m.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    out = []
    for i, f in enumerate(frames):
        x = np.asarray(f)
        x = x[None] if x.ndim == 3 else x
        if x.dtype != np.float32 or x.ndim != 4:
            raise InputError(
                f"calibration frame {i} must be float32 (C, h, w), got {x.dtype} {x.shape}"
            )
        for j, (d, s) in enumerate(zip(dims, x.shape, strict=True)):
            if d is not None and j > 0 and d != s:
                raise InputError(
                    f"calibration frame {i} has shape {x.shape[1:]} but the model takes "
                    f"{tuple(dims[1:])}; preprocess with the model's input size and channels"
                )
        if not np.isfinite(x).all():
            raise InputError(f"calibration frame {i} contains NaN or inf")
        out.append(x[:1])
    return inp.name, out


def quantize(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    calibration: Sequence[np.ndarray],
    target: str = "cpu",
    exclude_nodes: Sequence[str] = (),
    calibrate_method: str = "minmax",
    min_frames: int = MIN_CALIBRATION_FRAMES,
    calibration_cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Static INT8 QDQ quantization for ``target`` ("cpu" or "tensorrt"); path in, path out.

    ``calibration``: preprocessed frames (C, h, w) or (1, C, h, w), float32, at least
    ``min_frames``. Nodes in ``exclude_nodes``, the output nodes and the MatMuls without a
    weight (:func:`unweighted_matmuls`) stay float. The result is
    written to a temporary name and renamed; for "tensorrt" it must pass
    :func:`check_tensorrt_qdq` or nothing is written.

    ``calibration_cache``: a JSON file of the calibrated tensor ranges (ONNX Runtime's
    ``calibration_cache_path``; 1.32 has it): written by the first call, read by the next ones
    instead of running the calibration again -- only valid for the same model, frames, target and
    method (:func:`quantize_with_budget` uses it for its fallback candidates, which differ only
    in ``exclude_nodes``: which tensors the calibrator observes does not depend on it). Ignored
    (every call calibrates) with an ONNX Runtime that lacks it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    spec = recipe(target)  # raises InputError for an unknown target
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if calibrate_method not in methods:
        raise InputError(
            f"calibrate_method must be one of {sorted(methods)}, got {calibrate_method!r}"
        )
    m = _load(onnx_in)
    name, frames = _check_calibration(m, calibration, min_frames)
    onnx_out = Path(onnx_out)
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "named.onnx"
        _ensure_node_names(m)
        onnx.save(m, str(src))
        exclude = sorted(set(exclude_nodes) | set(output_nodes(m)) | set(unweighted_matmuls(m)))
        extra: dict[str, Any] = {
            "ActivationSymmetric": target == "tensorrt",
            "WeightSymmetric": True,
        }
        if target == "tensorrt":
            extra["QuantizeBias"] = False
        ops = list(CPU_OP_TYPES if target == "cpu" else TRT_OP_TYPES)
        cached = calibration_cache is not None and Path(calibration_cache).is_file()
        stride = None if cached else calibration_stride(m, frames, op_types=ops)
        if stride is not None:
            extra["CalibStridedMinMax"] = stride  # any calibrator: collect_data per stride
        if spec["reduce_range"] and spec.get("depthwise_8bit"):
            # Depthwise weights keep 8 bits (their kernels cannot saturate; module docstring).
            extra["TensorQuantOverrides"] = {
                w: [{"axis": 0, "reduce_range": False}] for w in depthwise_weights(m)
            }
        tmp = Path(td) / "q.onnx"
        quantize_static(
            str(src),
            str(tmp),
            _Reader(name, frames),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
            per_channel=True,
            reduce_range=spec["reduce_range"],
            activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=methods[calibrate_method],
            extra_options=extra,
            **_cache_kwargs(calibration_cache),
        )
        q = onnx.load(str(tmp))
        if target == "cpu":
            _hold_float(q, set(exclude))
        _prune_unused(q)
        # Carry the source's metadata (sonoedge artifact JSON) over, now saying int8.
        del q.metadata_props[:]
        for prop in m.metadata_props:
            q.metadata_props.add(key=prop.key, value=_mark_int8(prop.key, prop.value, target))
        if target == "tensorrt":
            check_tensorrt_qdq(q)
        with writing(onnx_out) as part:
            onnx.save(q, str(part))
            stamp_onnx_digest(part)  # the copied digest hashed the FP32 graph: a fresh one
    return onnx_out


def _cache_kwargs(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``calibration_cache_path`` for ``quantize_static`` when given and supported."""
    import inspect

    from onnxruntime.quantization import quantize_static

    params = inspect.signature(quantize_static).parameters
    if path is None or "calibration_cache_path" not in params:
        return {}
    return {"calibration_cache_path": str(path)}


def _mark_int8(key: str, value: str, target: str) -> str:
    from sdk.artifact import METADATA_KEY, Metadata

    if key != METADATA_KEY:
        return value
    md = Metadata.from_json(value)
    md.precision = "int8"
    md.provenance = {
        **md.provenance,
        "quantization": {
            "target": target,
            "quantizer": "onnxruntime.quantize_static",
            **{k: v for k, v in recipe(target).items() if k != "why"},
        },
    }
    return md.to_json()


def tensorrt_qdq_violations(model: str | os.PathLike[str] | onnx.ModelProto) -> list[str]:
    """Everything in a QDQ graph that TensorRT 10.3 / 11 would reject or mis-handle."""
    m = _load(model)
    inits = {i.name: i for i in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
    graph_outputs = {o.name for o in m.graph.output}
    problems: list[str] = []

    def tensor(name: str) -> np.ndarray | None:
        if name in inits:
            return onnx.numpy_helper.to_array(inits[name])
        if name in consts:
            return onnx.numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    for n in m.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{n.op_type} {n.name or n.output[0]!r}"
        zp = tensor(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None:
            if zp.dtype == np.uint8:
                problems.append(f"{where}: uint8 zero-point (TensorRT needs signed int8)")
            elif zp.dtype != np.int8:
                problems.append(f"{where}: {zp.dtype} zero-point (TensorRT needs int8)")
            if np.any(zp != 0):
                problems.append(f"{where}: non-zero zero-point (TensorRT is symmetric only)")
        if n.op_type == "DequantizeLinear":
            x = tensor(n.input[0])
            if x is not None and x.dtype == np.int32:
                problems.append(
                    f"{where}: int32 DequantizeLinear (quantized bias); TensorRT fuses "
                    "biases itself: quantize with QuantizeBias=False"
                )
            if any(o in graph_outputs for o in n.output):
                problems.append(f"{where}: Q/DQ on a graph output; keep output layers float")
        scale = tensor(n.input[1])
        if scale is not None and not np.all(scale > 0):
            problems.append(f"{where}: non-positive scale")
    return problems


def check_tensorrt_qdq(model: str | os.PathLike[str] | onnx.ModelProto) -> None:
    """Raise :class:`sdk.errors.ModelError` listing every TensorRT-incompatible Q/DQ."""
    problems = tensorrt_qdq_violations(model)
    if problems:
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ModelError(
            "this ONNX is not a valid TensorRT explicit-quantization graph:\n  "
            + "\n  ".join(problems[:10])
            + more
            + "\nRe-quantize with export.quantize.quantize(..., target='tensorrt')."
        )


@dataclass
class QuantResult:
    """Outcome of :func:`quantize_with_budget`."""

    path: Path
    fp32: dict[str, float]
    int8: dict[str, float]
    float_nodes: list[str]
    sensitivity: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def drops(self) -> dict[str, float | None]:
        # None where a metric is undefined (macro AUC of held-out frames of one class).
        return {
            k: None if self.fp32[k] is None or self.int8[k] is None else self.fp32[k] - self.int8[k]
            for k in self.fp32
            if k in self.int8
        }


def node_sensitivity(
    fp32_path: str | os.PathLike[str],
    qdq_path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
) -> dict[str, float]:
    """Per quantized node: relative L2 error of its output (QDQ vs float), averaged over frames.

    Runs the float and the QDQ model with every node output exposed, so one pass measures all.
    """
    import onnxruntime as ort

    fm, qm = _load(fp32_path), _load(qdq_path)
    _ensure_node_names(fm)
    # Quantized nodes: those whose inputs come through a DequantizeLinear in the QDQ graph.
    dq_out = {o for n in qm.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quant_nodes = {
        n.name for n in qm.graph.node if n.op_type in QUANT_OP_TYPES and set(n.input) & dq_out
    } & {n.name for n in fm.graph.node}
    node_out = {n.name: n.output[0] for n in fm.graph.node if n.name in quant_nodes}
    # QDQ graphs keep the float node names for the float-domain ops they wrap.
    q_out = {n.name: n.output[0] for n in qm.graph.node if n.name in quant_nodes}

    def session(m: onnx.ModelProto, names: list[str]) -> Any:
        m = onnx.ModelProto.FromString(m.SerializeToString())
        have = {o.name for o in m.graph.output}
        for nm in names:
            if nm not in have:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(nm))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    keys = sorted(set(node_out) & set(q_out))
    fs = session(fm, [node_out[k] for k in keys])
    qs = session(qm, [q_out[k] for k in keys])
    name = fm.graph.input[0].name
    err = dict.fromkeys(keys, 0.0)
    for x in frames:
        x = x if x.ndim == 4 else x[None]
        fo = fs.run([node_out[k] for k in keys], {name: x})
        qo = qs.run([q_out[k] for k in keys], {name: x})
        for k, a, b in zip(keys, fo, qo, strict=True):
            err[k] += float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12)) / len(frames)
    return err


def quantize_with_budget(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    calibration: Sequence[np.ndarray],
    evaluate: Callable[[Path], dict[str, float]],
    target: str = "cpu",
    budget: float = 0.01,
    watch: Sequence[str] = ("dice", "accuracy"),
    min_frames: int = MIN_CALIBRATION_FRAMES,
    sensitivity_frames: int = 16,
    calibrate_method: str = "percentile",
) -> QuantResult:
    """Quantize and fall back to float, most sensitive nodes first, until every metric in
    ``watch`` is within ``budget`` (absolute, e.g. 0.01 = 1 point) of FP32.

    ``evaluate(path) -> {metric: value}`` runs a model file on held-out frames.
    ``calibrate_method`` defaults to "percentile": on the demo student (200 held-out phantoms)
    MinMax cost 4 Dice / 5 accuracy points fully quantized, percentile 0.3 / 1.0. Raises
    :class:`sdk.errors.ModelError` with the per-node report when even full fallback misses.
    """
    onnx_out = Path(onnx_out)
    fp32 = evaluate(Path(onnx_in))
    missing = [k for k in watch if k not in fp32]
    if missing:
        raise InputError(f"evaluate() must return {list(watch)}; missing {missing}")
    history: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as td:
        # One calibration for every candidate: they differ only in the nodes kept float.
        cache = Path(td) / "calibration.json"
        full = quantize(
            onnx_in,
            Path(td) / "full.onnx",
            calibration,
            target,
            calibrate_method=calibrate_method,
            min_frames=min_frames,
            calibration_cache=cache,
        )
        m8 = evaluate(full)
        history.append({"float_nodes": [], **m8})
        if all(fp32[k] - m8[k] <= budget + _EPS for k in watch):
            os.replace(full, onnx_out)
            return QuantResult(onnx_out, fp32, m8, [], {}, history)
        sens = node_sensitivity(onnx_in, full, list(calibration)[:sensitivity_frames])
        ranked = sorted(sens, key=sens.__getitem__, reverse=True)
        k = 1
        while True:
            k = min(k, len(ranked))
            keep_float = ranked[:k]
            cand = quantize(
                onnx_in,
                Path(td) / f"q{k}.onnx",
                calibration,
                target,
                exclude_nodes=keep_float,
                calibrate_method=calibrate_method,
                min_frames=min_frames,
                calibration_cache=cache,
            )
            m8 = evaluate(cand)
            history.append({"float_nodes": keep_float, **m8})
            # With every quantized node back in float the graph is FP32, not INT8: a failure.
            if k < len(ranked) and all(fp32[kk] - m8[kk] <= budget + _EPS for kk in watch):
                os.replace(cand, onnx_out)
                return QuantResult(onnx_out, fp32, m8, keep_float, sens, history)
            if k == len(ranked):
                worst = ", ".join(f"{n} ({sens[n]:.3g})" for n in ranked[:10])
                raise ModelError(
                    f"INT8 misses the {budget:g} budget unless all {k} quantized nodes go back "
                    f"to float ({_tries(fp32, history, watch)}). Most sensitive nodes (relative "
                    f"output error): {worst}. Calibrate on more representative frames or keep FP32."
                )
            k *= 2


def _tries(fp32: dict[str, float], history: list[dict[str, Any]], watch: Sequence[str]) -> str:
    """The budget search in one line, short enough for a report's status cell: FP32, then each
    try as ``<nodes kept float>: <metric> <value>...`` (the node names: the sensitivity list)."""

    def m(d: dict[str, Any]) -> str:
        return " ".join(f"{k} {float(d[k]):.3f}" for k in watch)

    steps = "; ".join(f"{len(h['float_nodes'])} float: {m(h)}" for h in history)
    return f"FP32 {m(fp32)}; INT8 with {steps}"


class _DropOrtAdvice(logging.Filter):
    """ONNX Runtime's quantizer logs "consider pre-processing" on every call (root logger);
    we run its shape inference ourselves through the checker, so the advice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Drop ONNX Runtime's quantizer advice from the root logger while the block runs."""
    root = logging.getLogger()
    f = _DropOrtAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def write_int8_artifact(
    src: Path,
    md: Metadata,
    out: Path,
    calib: Sequence[np.ndarray],
    evaluate: Callable[[Path], dict[str, Any]],
    *,
    target: str,
    budget: float,
    min_frames: int,
    n_eval: int,
    calibrate_method: str = "percentile",
) -> Path:
    """The core of :func:`export.pipeline.quantize_cpu` / :func:`~export.pipeline.quantize_trt`:
    FP32 artifact ``src`` (metadata ``md``) → INT8 artifact ``out`` for ``target``.

    :func:`quantize_with_budget` (``evaluate(path)`` scores each candidate on ``n_eval`` held-out
    frames), the TensorRT Q/DQ check, then the metadata: precision int8, the quantization
    provenance (recipe, calibration, source digest, budget, float nodes, sensitivity, history)
    and the accuracy measured against FP32. Written atomically (:func:`export._files.writing`).
    """
    from export.checkpoint import _sha256
    from export.onnx_export import embed_metadata

    with writing(out) as tmp:
        with quiet_quantizer():
            res = quantize_with_budget(
                src,
                tmp,
                list(calib),
                evaluate,
                target=target,
                budget=budget,
                min_frames=min_frames,
                calibrate_method=calibrate_method,
            )
        if target == "tensorrt":
            check_tensorrt_qdq(tmp)
        top = sorted(res.sensitivity.items(), key=lambda kv: kv[1], reverse=True)[:20]
        qmd = Metadata.from_dict(md.to_dict())
        qmd.precision = "int8"
        qmd.provenance["quantization"] = {
            "target": target,
            "tool": "onnxruntime.quantization.quantize_static (QDQ, per-channel weights)",
            **recipe(target),
            "calibration": {"frames": len(calib), "method": calibrate_method},
            "source_sha256": _sha256(src),
            "budget": budget,
            "watch": ["dice", "accuracy"],
            "float_nodes": res.float_nodes,
            "sensitivity_top": dict(top),
            "history": res.history,
        }
        qmd.accuracy = {
            **md.accuracy,
            "fp32_reference": res.fp32,
            "int8": res.int8,
            "drop": res.drops(),
            "int8_measured_on": f"{n_eval} held-out frames, ONNX Runtime CPU",
        }
        embed_metadata(tmp, qmd)
    return out


# --------------------------------------------------------------------------- export.quantize(...)
# Issue #16 asks for ``export.quantize(src, dst, *, data, target, budget, calib_frames)``, and
# ``export.quantize`` is this module: once imported, the import system binds the submodule to
# that attribute of the package, replacing any function of the same name there. So the module
# itself is callable and hands the call to export.importer.quantize; ``from export.quantize
# import quantize`` (the recipe-level function above) and ``export.quantize.recipe`` are
# unchanged. tests/export/test_importer.py checks every import order in a fresh interpreter.


class _CallableModule(type(os)):  # types.ModuleType
    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        from export.importer import quantize as quantize_artifact

        return quantize_artifact(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
