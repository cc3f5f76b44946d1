"""``sonoedge triton-repo``: a model repository for NVIDIA's full Triton Inference Server.

`sonoedge serve` (PyTriton) runs the whole Analyzer. A department that already runs the Triton
container (``nvcr.io/nvidia/tritonserver:<yy.mm>-py3``, with the onnxruntime and tensorrt
backends) may instead serve the bare network; this writes its repository::

    OUT/
      <name>_onnx/            platform onnxruntime_onnx (backend "onnxruntime")
        config.pbtxt
        metadata.json         the artifact's sonoedge metadata (classes, normalization, ...)
        1/model.onnx          the artifact, unchanged (its digest verified first)
      <name>_trt/             platform tensorrt_plan (backend "tensorrt")
        config.pbtxt
        metadata.json
        1/model.plan          the raw engine of --plan (the .plan container's payload), or
        BUILD_ENGINE.md       how to build it on the serving GPU (engines are GPU-specific)
      README.md

The configs follow Triton's ``model_config.proto``; the tests parse them with protobuf's text
format into that schema's ``ModelConfig`` (tritonclient's ``model_config_pb2``) and check the
tensors against the ONNX graph. What the bare network does **not** do: the frame path around
it (preprocessing into ``input``, the mask post-process, lesions, mask-guided pooling, the
calibrated label rule, the scope check): a client of this repository gets raw ``mask_logits`` /
``class_logits`` / ``features`` and must do those itself (``metadata.json`` has every
setting); `sonoedge serve` returns finished Results instead. **The Triton container itself is
not run here** (no Docker, no GPU on our machines).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from sdk.errors import InputError, ModelError

__all__ = ["add_parser", "config_pbtxt", "write_triton_repo"]

_ORT_TO_TRITON = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(bool)": "TYPE_BOOL",
}


def _pb_string(s: str) -> str:
    """A protobuf text-format string literal (C escapes; non-ASCII as UTF-8 octal escapes)."""
    out = []
    for b in s.encode():
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _io(sess: Any) -> tuple[list[dict], list[dict], bool]:
    """Inputs and outputs of an ONNX Runtime session: name, Triton type, dims without the batch
    axis; and whether every tensor's first axis is a free (batch) axis."""

    def conv(v: Any) -> dict[str, Any]:
        if v.type not in _ORT_TO_TRITON:
            raise ModelError(f"tensor {v.name}: type {v.type} has no Triton data type here")
        return {"name": v.name, "type": _ORT_TO_TRITON[v.type], "shape": list(v.shape)}

    ins = [conv(v) for v in sess.get_inputs()]
    outs = [conv(v) for v in sess.get_outputs()]
    batched = all(t["shape"] and not isinstance(t["shape"][0], int) for t in ins + outs)
    for t in ins + outs:
        dims = t["shape"][1:] if batched else t["shape"]
        t["dims"] = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    return ins, outs, batched


def config_pbtxt(
    name: str,
    platform: str,
    backend: str,
    inputs: list[dict],
    outputs: list[dict],
    max_batch: int,
    kind: str,
    instances: int,
    parameters: dict[str, str],
    queue_delay_us: int = 2000,
) -> str:
    """One ``config.pbtxt`` in Triton's text format (fields of ``ModelConfig``)."""

    def tensors(ts: list[dict]) -> str:
        items = [
            "  {\n"
            f"    name: {_pb_string(t['name'])}\n"
            f"    data_type: {t['type']}\n"
            f"    dims: [ {', '.join(str(d) for d in t['dims'])} ]\n"
            "  }"
            for t in ts
        ]
        return "[\n" + ",\n".join(items) + "\n]"

    lines = [
        f"name: {_pb_string(name)}",
        f"platform: {_pb_string(platform)}",
        f"backend: {_pb_string(backend)}",
        f"max_batch_size: {max_batch}",
        f"input {tensors(inputs)}",
        f"output {tensors(outputs)}",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
    ]
    if max_batch > 0:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    for k, v in parameters.items():
        lines.append(
            f"parameters {{\n  key: {_pb_string(k)}\n  value: {{\n"
            f"    string_value: {_pb_string(v)}\n  }}\n}}"
        )
    return "\n".join(lines) + "\n"


def write_triton_repo(
    model: str | Path,
    out: str | Path,
    *,
    name: str = "sonoedge",
    plan: str | Path | None = None,
    max_batch: int = 8,
    instances: int = 1,
    onnx_kind: str = "gpu",
) -> dict[str, Any]:
    """Write the repository (see the module docstring); returns what was written."""
    import onnxruntime as ort

    from sdk.artifact import read_onnx_metadata, read_plan, verify_onnx_digest

    model = Path(model)
    if model.suffix.lower() != ".onnx" or not model.is_file():
        raise InputError(f"{model}: give an exported sonoedge .onnx artifact")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"--name {name!r}: letters, digits, '-' and '_' only")
    if not 0 <= max_batch <= 1024:
        raise InputError(f"--max-batch must be in 0..1024, got {max_batch}")
    if onnx_kind not in ("gpu", "cpu"):
        raise InputError(f"--onnx-kind must be gpu or cpu, got {onnx_kind!r}")
    verify_onnx_digest(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    md = read_onnx_metadata(sess, str(model))
    ins, outs, batched = _io(sess)
    mb = max_batch if batched else 0
    engine = None
    if plan is not None:
        pmd, engine = read_plan(plan)
        if pmd.class_names != md.class_names or pmd.input_size != md.input_size:
            raise InputError(
                f"{plan} was not built from {model.name} (classes / input size differ); "
                "give the engine built from this artifact"
            )
    summary = {
        "class_names": list(md.class_names),
        "channels": list(md.channels),
        "input_size": list(md.input_size),
        "mean": list(md.mean),
        "std": list(md.std),
        "sigma": md.sigma,
        "outputs": md.outputs,
        "mask_threshold": md.mask_threshold,
        "temperature": float((md.calibration or {}).get("temperature", 1.0)),
        "precision": md.precision,
    }
    params = {"sonoedge_metadata": json.dumps(summary, separators=(",", ":"))}
    out = Path(out)
    written: dict[str, Any] = {"repository": str(out), "models": {}}
    full_md = md.to_json()
    for suffix, platform, backend, kind in (
        ("onnx", "onnxruntime_onnx", "onnxruntime", f"KIND_{onnx_kind.upper()}"),
        ("trt", "tensorrt_plan", "tensorrt", "KIND_GPU"),
    ):
        mname = f"{name}_{suffix}"
        d = out / mname
        (d / "1").mkdir(parents=True, exist_ok=True)
        cfg = config_pbtxt(mname, platform, backend, ins, outs, mb, kind, instances, params)
        (d / "config.pbtxt").write_text(cfg)
        (d / "metadata.json").write_text(full_md)
        if suffix == "onnx":
            shutil.copyfile(model, d / "1" / "model.onnx")
            files = ["config.pbtxt", "metadata.json", "1/model.onnx"]
        elif engine is not None:
            (d / "1" / "model.plan").write_bytes(engine)
            files = ["config.pbtxt", "metadata.json", "1/model.plan"]
        else:
            (d / "BUILD_ENGINE.md").write_text(_build_engine_text(name, ins, mb))
            files = ["config.pbtxt", "metadata.json", "BUILD_ENGINE.md (no engine: see it)"]
        written["models"][mname] = files
    (out / "README.md").write_text(_readme(name, model.name, engine is not None))
    return written


def _build_engine_text(name: str, ins: list[dict], mb: int) -> str:
    t = ins[0]
    dims = "x".join(str(d) for d in t["dims"])
    shapes = ""
    if mb:
        shapes = (
            f" \\\n    --minShapes={t['name']}:1x{dims} --optShapes={t['name']}:{max(1, mb // 2)}x"
            f"{dims} --maxShapes={t['name']}:{mb}x{dims}"
        )
    return (
        f"# {name}_trt: build the TensorRT engine on the serving GPU\n\n"
        "TensorRT engines are specific to a GPU model and a TensorRT version, so none ships "
        "here. On the machine (or in the container) that runs Triton, either\n\n"
        "```bash\n"
        f"sonoedge export ... --formats trt-fp16   # then: sonoedge triton-repo MODEL.onnx "
        f"--plan MODEL.plan --out REPO\n```\n\nor with TensorRT's own tool:\n\n```bash\n"
        f"trtexec --onnx=../{name}_onnx/1/model.onnx --saveEngine=1/model.plan --fp16{shapes}\n"
        "```\n\nUntil `1/model.plan` exists Triton reports this model as unavailable (start "
        f"Triton with `--model-control-mode=explicit --load-model={name}_onnx` to skip it).\n"
    )


def _readme(name: str, source: str, has_plan: bool) -> str:
    return (
        f"# Triton model repository for {source}\n\n"
        "Written by `sonoedge triton-repo`. Serve it with NVIDIA's Triton container:\n\n"
        "```bash\n"
        "docker run --gpus all --rm -p 127.0.0.1:8000-8002:8000-8002 -v $PWD:/models \\\n"
        "    nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models\n"
        "```\n\n"
        f"- `{name}_onnx`: ONNX Runtime backend.\n"
        f"- `{name}_trt`: TensorRT backend"
        + ("" if has_plan else " (build the engine first: see its BUILD_ENGINE.md)")
        + ".\n\n"
        "These models are the bare network: raw `mask_logits` / `class_logits` / `features`. "
        "The frame path around it (preprocessing, mask post-process, lesions, calibrated label "
        "rule, scope) is the client's job; `metadata.json` holds every setting. `sonoedge "
        "serve` returns finished Results instead. The Triton container was not run with this "
        "repository by sonoedge: its configs are checked against Triton's model_config.proto "
        "schema and the ONNX graph only.\n"
    )


def add_parser(sub: Any) -> None:
    from sdk.argtypes import int_type

    p = sub.add_parser(
        "triton-repo",
        help="write a model repository for NVIDIA's Triton server (onnxruntime + tensorrt)",
        description=(
            "Write a Triton model repository for an exported artifact: <name>_onnx "
            "(onnxruntime backend) and <name>_trt (tensorrt backend; the engine from --plan, or "
            "instructions to build it on the serving GPU), each with config.pbtxt, the model "
            "and metadata.json. The bare network only: clients do the pre / post-processing "
            "(`sonoedge serve` returns finished Results instead). The Triton container itself "
            "is not run by sonoedge."
        ),
    )
    p.add_argument("model", help="exported sonoedge .onnx artifact")
    p.add_argument("--out", required=True, help="repository folder (created)")
    p.add_argument("--name", default="sonoedge", help="model name prefix (sonoedge)")
    p.add_argument("--plan", default=None, help="a sonoedge .plan built from MODEL (optional)")
    p.add_argument(
        "--max-batch", type=int_type(0, 1024, "a batch size"), default=8, help="(8; 0: none)"
    )
    p.add_argument(
        "--instances", type=int_type(1, 64, "an instance count"), default=1, help="per GPU (1)"
    )
    p.add_argument("--onnx-kind", choices=("gpu", "cpu"), default="gpu", help="ORT on (gpu)")
    p.set_defaults(handler=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    w = write_triton_repo(
        args.model,
        args.out,
        name=args.name,
        plan=args.plan,
        max_batch=args.max_batch,
        instances=args.instances,
        onnx_kind=args.onnx_kind,
    )
    print(json.dumps(w, indent=2))
    return 0
