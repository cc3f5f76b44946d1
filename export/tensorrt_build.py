"""TensorRT engines: ONNX → ``.plan`` container, for TensorRT 10.3 (Jetson JetPack 6) to 11.x.

Kept thin on purpose: TensorRT cannot be installed on our build machines, so only the calls
into TensorRT live here; everything around them (the container, fingerprints, cache keys, the
FP16 cast, the Q/DQ validator) is plain Python with tests.

Precision is carried by the ONNX graph, never by builder flags (TensorRT 11 removed them and the
INT8 calibrators):

* ``fp32``: the FP32 ONNX as is.
* ``fp16``: an FP16-cast ONNX (:func:`fp16_onnx`) that keeps sensitive ops in FP32.
* ``int8``: the TensorRT-target QDQ ONNX from :func:`export.quantize.quantize` (explicit
  quantization), validated by :func:`export.quantize.check_tensorrt_qdq`.

Networks are strongly typed (TensorRT 10: the ``STRONGLY_TYPED`` flag; 11: always), so the
engine runs exactly the precisions the ONNX states.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from sdk.artifact import Metadata, write_plan
from sdk.backends.trt_common import Fingerprint, check_fingerprint, current_fingerprint, trt_module
from sdk.errors import InputError, ModelError

__all__ = [
    "EngineCache",
    "Fingerprint",
    "build_engine",
    "check_fingerprint",
    "current_fingerprint",
    "engine_cache_key",
    "fp16_onnx",
]

PRECISIONS = ("fp32", "fp16", "int8")
# Ops whose FP16 error lands directly on the outputs or overflows easily: kept FP32.
FP16_KEEP_FP32 = (
    "Sigmoid",
    "Softmax",
    "Exp",
    "Log",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
    "Div",
    "GlobalAveragePool",
    "LayerNormalization",
    "Resize",
    "GridSample",
)


def engine_cache_key(
    onnx_bytes: bytes, precision: str, profile: tuple[int, int, int], fingerprint: Fingerprint
) -> str:
    """SHA-256 over everything that changes the engine: ONNX content, precision, batch
    profile, GPU (compute capability and name) and TensorRT version."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    h.update(
        json.dumps(
            {"precision": precision, "profile": list(profile), **fingerprint.to_dict()},
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


class EngineCache:
    """A folder of ``<key>.plan`` files (default ``~/.cache/sonoedge/engines``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or Path.home() / ".cache" / "sonoedge" / "engines")

    def path(self, key: str) -> Path:
        if not all(c in "0123456789abcdef" for c in key) or len(key) != 64:
            raise InputError(f"not an engine cache key: {key!r}")
        return self.root / f"{key}.plan"

    def get(self, key: str) -> Path | None:
        p = self.path(key)
        return p if p.is_file() else None

    def put(self, key: str, plan: str | os.PathLike[str]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        dst = self.path(key)
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_bytes(Path(plan).read_bytes())
        os.replace(tmp, dst)
        return dst


def fp16_onnx(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    keep_fp32: tuple[str, ...] = FP16_KEEP_FP32,
) -> Path:
    """FP16-cast ONNX for TensorRT's strongly typed FP16 engines: weights and activations in
    FP16 except the ops in ``keep_fp32`` (casts inserted around them); inputs and outputs stay
    FP32 so the runtime's buffers do not change. Path in, path out (atomic)."""
    import onnx
    from onnxconverter_common import float16

    from sdk.artifact import stamp_onnx_digest

    m = onnx.load(str(onnx_in))
    props = list(m.metadata_props)
    h = float16.convert_float_to_float16(
        m, keep_io_types=True, op_block_list=list(keep_fp32), disable_shape_infer=False
    )
    _internal_readers_of_outputs_to_fp16(h, keep_fp32)
    del h.metadata_props[:]
    h.metadata_props.extend(props)
    out = Path(onnx_out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        onnx.save(h, str(tmp))
        stamp_onnx_digest(tmp)  # the copied digest hashed the FP32 graph: a fresh one
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _internal_readers_of_outputs_to_fp16(m: Any, keep_fp32: tuple[str, ...]) -> None:
    """onnxconverter_common with ``keep_io_types`` ends each FP32 graph output with a Cast from
    the FP16 tensor, but a node *inside* the graph that also reads that output keeps reading the
    FP32 name -- and an FP16 op then mixes FP32 and FP16 inputs, which ONNX Runtime and TensorRT
    refuse (the edge_s graphs since the mask-guided pooling reads ``features`` with a Mul).
    Such readers are pointed at the FP16 tensor; FP32-kept ops (``keep_fp32``) keep the FP32
    name, which is what they want."""
    outs = {o.name for o in m.graph.output}
    fp16_of = {
        n.output[0]: n.input[0]
        for n in m.graph.node
        if n.op_type == "Cast" and len(n.output) == 1 and n.output[0] in outs
    }
    for n in m.graph.node:
        if n.op_type in keep_fp32 or (n.op_type == "Cast" and n.output[0] in fp16_of):
            continue
        for i, name in enumerate(n.input):
            if name in fp16_of:
                n.input[i] = fp16_of[name]


def _graph_precision(onnx_path: Path) -> str:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node):
        return "int8"
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer):
        return "fp16"
    return "fp32"


def build_engine(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    metadata: Metadata,
    precision: str,
    profile: tuple[int, int, int] = (1, 1, 8),
    workspace_gb: float = 2.0,
    timing_cache: str | os.PathLike[str] | None = None,
    cache: EngineCache | None = None,
) -> Path:
    """Build a TensorRT engine from an ONNX whose graph carries ``precision`` and write the
    ``.plan`` container (metadata + fingerprint + engine). ``profile`` = (min, opt, max) batch.

    Raises :class:`InputError` when the ONNX does not carry the asked precision,
    :class:`ModelError` when TensorRT rejects the graph (its parser errors quoted), and
    :class:`BackendUnavailableError` without TensorRT or a GPU.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    lo, opt, hi = profile
    if not 1 <= lo <= opt <= hi:
        raise InputError(
            f"profile must be (min, opt, max) batch with 1 <= min <= opt <= max, got {profile}"
        )
    graph = _graph_precision(onnx_path)
    if graph != precision:
        fix = {
            "fp16": "export.tensorrt_build.fp16_onnx()",
            "int8": "export.quantize.quantize(..., target='tensorrt')",
            "fp32": "the FP32 export",
        }
        raise InputError(
            f"{onnx_path.name} is a {graph} graph but {precision} was asked; "
            f"build from {fix[precision]}"
        )
    if precision == "int8":
        from export.quantize import check_tensorrt_qdq

        check_tensorrt_qdq(onnx_path)
    trt = trt_module()
    fp = current_fingerprint()
    onnx_bytes = onnx_path.read_bytes()
    key = engine_cache_key(onnx_bytes, precision, profile, fp)
    if cache is not None and (hit := cache.get(key)) is not None:
        plan_path.write_bytes(hit.read_bytes())
        return plan_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) == 10:  # always strongly typed from 11 on
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}:\n  " + "\n  ".join(errs[:10]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    prof = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(t.shape)
        dims = [
            tuple(b if d == -1 and j == 0 else d for j, d in enumerate(shape))
            for b in (lo, opt, hi)
        ]
        if any(d == -1 for d in shape[1:]):
            raise ModelError(f"{onnx_path.name}: input {t.name} has dynamic non-batch dims {shape}")
        prof.set_shape(t.name, *dims)
    config.add_optimization_profile(prof)
    tc_path = Path(timing_cache) if timing_cache else None
    tc = config.create_timing_cache(tc_path.read_bytes() if tc_path and tc_path.is_file() else b"")
    config.set_timing_cache(tc, False)
    t0 = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelError(f"TensorRT failed to build {onnx_path.name} (see the log above)")
    build_s = time.perf_counter() - t0
    if tc_path:
        tmp = tc_path.with_name(tc_path.name + ".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, tc_path)
    md = Metadata.from_dict(metadata.to_dict())
    md.precision = precision
    md.tensorrt = {
        **fp.to_dict(),
        "precision": precision,
        "profile": list(profile),
        "build_seconds": round(build_s, 1),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }
    write_plan(plan_path, md, bytes(engine))
    if cache is not None:
        cache.put(key, plan_path)
    return plan_path
