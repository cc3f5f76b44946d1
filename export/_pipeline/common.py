"""What the export pipeline's steps share: seed streams, the model contract check, ONNX Runtime
sessions and a report row (:class:`Artifact`); atomic file writing is :mod:`export._files`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import ModelError

CALIB_SEED = 1_000_003
HOLDOUT_SEED = 2_000_003
REPORT_SEED = 3_000_017
SCOPE_FIT_SEED = 4_000_037  # fit_scope_and_temperature: the scope's mean / covariance
SCOPE_HOLDOUT_SEED = 5_000_011  # ... its threshold and reference distances, and the temperature
SCOPE_SIZES = ((128, 128), (256, 256), (480, 640), (600, 800))  # the demo preset's training mix
DEFAULT_SIGMA = 1.0  # MultiTaskDataset's sigma: training and serving use the same one
SKIPPED_NO_TRT = "skipped: TensorRT not installed"
_ROLES = ("mask_logits", "class_logits", "features")


# --------------------------------------------------------------------------- helpers


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def check_contract(onnx_path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Output roles of an ONNX per the model contract (docs/ARCHITECTURE.md "The model
    contract"): ``input`` [B, C, h, w], ``mask_logits`` [B, 1, h', w'], and ``class_logits``
    [B, K] and/or ``features``.

    Returns:
        ``{"mask_logits": name, "class_logits": name | None, "features": name | None}``.

    Raises:
        ModelError: not a readable ONNX, or an output the contract requires is missing.
    """
    import onnx

    path = Path(onnx_path)
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError / ValueError
        raise ModelError(f"{path}: not a readable ONNX model ({exc}); re-export it") from exc
    outs = {o.name: o for o in m.graph.output}
    fix = "export it with export.pipeline.to_onnx (`sonoedge export`)"
    if "mask_logits" not in outs:
        raise ModelError(
            f"{path.name} has outputs {sorted(outs)} but the model contract requires "
            f"'mask_logits' [B, 1, h', w']; {fix}"
        )
    if "class_logits" not in outs and "features" not in outs:
        raise ModelError(
            f"{path.name} has outputs {sorted(outs)}: the contract needs 'class_logits' [B, K] "
            f"or 'features' [B, F, hf, wf] (with head weights); {fix}"
        )
    if len(m.graph.input) != 1:
        raise ModelError(f"{path.name} has {len(m.graph.input)} inputs; the contract has one")
    rank = len(m.graph.input[0].type.tensor_type.shape.dim)
    if rank != 4:
        raise ModelError(f"{path.name}: input must be [B, C, h, w], has rank {rank}; {fix}")
    return {k: (k if k in outs else None) for k in _ROLES}


def _session(path: Path, threads: int | None, config: dict[str, str] | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class Artifact:
    """One row of the report: an artifact file (or a step that produced none).

    ``format``: ``"onnx"``, ``"onnx-int8"``, ``"onnx-qdq"``, ``"trt-fp16"``, ``"trt-int8"``...;
    ``status``: ``"ok"``, ``"skipped: ..."`` or ``"failed: ..."``; ``reference``: the row the
    others' drops are measured against (the FP32 teacher).
    """

    name: str
    format: str
    path: Path | None
    status: str = "ok"
    reference: bool = False
    note: str = ""
