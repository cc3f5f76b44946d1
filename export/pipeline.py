"""The export pipeline: one typed function per step, path in → path out.

    teacher checkpoint ─ distill ─► student checkpoint ─ to_onnx ─► model.onnx (FP32)
        ├─ quantize_cpu ─► model.int8.onnx        (ONNX Runtime CPU, QDQ uint8 activations)
        ├─ quantize_trt ─► model.trt-int8.onnx    (TensorRT explicit-quantization QDQ, int8)
        │                   └─ build_trt(int8) ─► model.int8.plan
        └─ build_trt(fp16) ─► model.fp16.plan
    report(artifacts, frames) ─► report.md, report.json, report.png

* :func:`export.distill.distill` is the distillation step (a module of its own).
* :func:`to_onnx`: checkpoint → FP32 ONNX, opset ≥ 17, dynamic batch, ``onnx.checker`` clean,
  the :class:`sdk.artifact.Metadata` embedded (classes, channels, input size, normalization,
  sigma, output roles, head weights, thresholds, provenance, accuracy at export), and ONNX
  Runtime checked against eager PyTorch (``|ort - eager| <= parity_atol + parity_rtol *
  max|eager|`` on every output, the measured differences recorded in the metadata).
* :func:`quantize_cpu` / :func:`quantize_trt`: :func:`export.quantize.quantize_with_budget` with
  the artifact's own held-out evaluation (Dice and accuracy at the mask resolution, through ONNX
  Runtime), metadata updated with the quantization provenance and the measured accuracy.
* :func:`build_trt`: :func:`export.tensorrt_build.build_engine`; without TensorRT the step
  reports ``"skipped: TensorRT not installed"`` and writes nothing.
* :func:`report`: every artifact through :class:`sdk.Analyzer` (the runtime path: uint8 frame →
  preprocess kernel → model → mask at frame resolution + pooled labels) on the same frames.

Frames (synthetic phantoms, each set from its own seed stream, none shared with training --
which uses ``seed`` and ``seed + 7_919_003``): calibration ``seed + CALIB_SEED``, held-out
quantization checks ``seed + HOLDOUT_SEED``, report ``seed + REPORT_SEED``. For a dataset
folder: calibration from the training split, held-out and report frames from the validation
split of :func:`export.data.stratified_split` (the split training used).

Every artifact is written under a temporary name in its folder and renamed when complete.

This module orchestrates (:func:`run_export`) and holds the quantization steps; the other steps
live in ``export._pipeline``: ``common`` (seed streams, the contract check, ONNX Runtime
sessions, :class:`Artifact`), ``frames`` (calibration / held-out / report frames,
:func:`evaluate_onnx`), ``onnx_step`` (:func:`to_onnx`), ``trt_step`` (:func:`build_trt`),
``report`` (:func:`report`), and the fits a shipping step (:mod:`export.presets`) writes into an
artifact's metadata: ``scope`` (:func:`fit_scope_and_temperature`) and ``gate``
(:func:`fit_lesion_gate`). Their public names, the seed streams and the helpers other modules
use (``_session``, ``_class_probs``) are importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from export._pipeline.common import CALIB_SEED as CALIB_SEED
from export._pipeline.common import DEFAULT_SIGMA as DEFAULT_SIGMA
from export._pipeline.common import HOLDOUT_SEED as HOLDOUT_SEED
from export._pipeline.common import REPORT_SEED as REPORT_SEED
from export._pipeline.common import SCOPE_FIT_SEED as SCOPE_FIT_SEED
from export._pipeline.common import SCOPE_HOLDOUT_SEED as SCOPE_HOLDOUT_SEED
from export._pipeline.common import SCOPE_SIZES as SCOPE_SIZES
from export._pipeline.common import SKIPPED_NO_TRT as SKIPPED_NO_TRT
from export._pipeline.common import (
    Artifact,
    check_contract,
)
from export._pipeline.common import _session as _session
from export._pipeline.frames import (
    EvalSet,
    calibration_frames,
    check_calibration,
    evaluate_onnx,
    heldout_set,
    report_frames,
)
from export._pipeline.frames import _class_probs as _class_probs
from export._pipeline.gate import GATE_SEED as GATE_SEED
from export._pipeline.gate import fit_lesion_gate
from export._pipeline.onnx_step import to_onnx
from export._pipeline.report import report
from export._pipeline.scope import fit_scope_and_temperature
from export._pipeline.trt_step import build_trt
from sdk.artifact import read_onnx_file_metadata
from sdk.errors import InputError, ModelError

__all__ = [
    "FORMATS",
    "Artifact",
    "EvalSet",
    "ExportResult",
    "build_trt",
    "calibration_frames",
    "check_contract",
    "evaluate_onnx",
    "fit_lesion_gate",
    "fit_scope_and_temperature",
    "heldout_set",
    "quantize_cpu",
    "quantize_trt",
    "report",
    "report_frames",
    "run_export",
    "to_onnx",
]

FORMATS = ("onnx", "onnx-int8", "trt-fp16", "trt-int8")


# --------------------------------------------------------------------------- quantization


def _quantize(
    onnx_path: str | os.PathLike[str],
    calib: Sequence[np.ndarray],
    out: str | os.PathLike[str] | None,
    target: str,
    suffix: str,
    *,
    eval_frames: EvalSet | None,
    data: str | os.PathLike[str],
    n_eval: int,
    seed: int,
    budget: float,
    min_frames: int,
    threads: int | None,
    calibrate_method: str = "percentile",
) -> Path:
    from export.quantize import EXACT_INTEGER_SESSION_CONFIG, write_int8_artifact

    src = Path(onnx_path)
    check_contract(src)
    md = read_onnx_file_metadata(src)
    if md.precision != "fp32":
        raise InputError(f"{src.name} is a {md.precision} artifact; quantize the FP32 export")
    if not (isinstance(budget, int | float) and 0 <= budget < 1):
        raise InputError(f"budget must be in [0, 1) (0.01 = 1 point), got {budget!r}")
    check_calibration(calib, md, min_frames)
    out = Path(out) if out is not None else src.with_name(src.stem + suffix)
    ev = eval_frames if eval_frames is not None else heldout_set(src, data, n_eval, seed)
    # A TensorRT graph (8-bit weights) checked on a CPU: exact integer kernels, as TensorRT's.
    cfg = EXACT_INTEGER_SESSION_CONFIG if target == "tensorrt" else None
    return write_int8_artifact(
        src,
        md,
        out,
        calib,
        lambda p: (
            evaluate_onnx(p, ev, threads)
            if cfg is None
            else evaluate_onnx(p, ev, threads, session_config=cfg)
        ),
        target=target,
        budget=budget,
        min_frames=min_frames,
        n_eval=len(ev),
        calibrate_method=calibrate_method,
    )


def quantize_cpu(
    onnx_path: str | os.PathLike[str],
    calib: Sequence[np.ndarray],
    out: str | os.PathLike[str] | None = None,
    *,
    eval_frames: EvalSet | None = None,
    data: str | os.PathLike[str] = "synthetic",
    n_eval: int = 200,
    seed: int = 0,
    budget: float = 0.01,
    min_frames: int = 300,
    threads: int | None = 1,
) -> Path:
    """FP32 ONNX → INT8 QDQ ONNX for ONNX Runtime on CPU (uint8 activations, int8
    per-channel weights), within ``budget`` of FP32 on Dice and accuracy (held-out frames:
    ``eval_frames``, else ``n_eval`` from ``data``); nodes fall back to float, most sensitive
    first, until it holds.

    Args:
        calib: preprocessed frames float32 ``(C, h, w)``, >= ``min_frames``
            (:func:`calibration_frames`).
        out: default ``<stem>.int8.onnx`` beside the input.

    Raises:
        InputError: empty / too few / wrongly sized calibration frames, bad budget, a non-FP32
            input.
        ModelError: an ONNX off the contract or without metadata; INT8 missing the budget even
            with every quantized node in float (the message ranks the nodes by their error).
    """
    return _quantize(
        onnx_path,
        calib,
        out,
        "cpu",
        ".int8.onnx",
        eval_frames=eval_frames,
        data=data,
        n_eval=n_eval,
        seed=seed,
        budget=budget,
        min_frames=min_frames,
        threads=threads,
    )


def quantize_trt(
    onnx_path: str | os.PathLike[str],
    calib: Sequence[np.ndarray],
    out: str | os.PathLike[str] | None = None,
    *,
    eval_frames: EvalSet | None = None,
    data: str | os.PathLike[str] = "synthetic",
    n_eval: int = 200,
    seed: int = 0,
    budget: float = 0.01,
    min_frames: int = 300,
    threads: int | None = 1,
) -> Path:
    """FP32 ONNX → TensorRT explicit-quantization QDQ ONNX (signed int8, zero-point 0,
    per-channel weights, no Q/DQ on biases or outputs), validated by
    :func:`export.quantize.check_tensorrt_qdq`. The budget is checked with ONNX Runtime on CPU
    running the QDQ graph -- a proxy for TensorRT's INT8 kernels, which round the same way but
    may fuse differently. Arguments and errors as :func:`quantize_cpu`; default output
    ``<stem>.trt-int8.onnx``."""
    return _quantize(
        onnx_path,
        calib,
        out,
        "tensorrt",
        ".trt-int8.onnx",
        eval_frames=eval_frames,
        data=data,
        n_eval=n_eval,
        seed=seed,
        budget=budget,
        min_frames=min_frames,
        threads=threads,
    )


# --------------------------------------------------------------------------- the whole run


@dataclass
class ExportResult:
    """What :func:`run_export` produced: report rows, the report files, and whether every
    requested format either succeeded or was skipped for a missing TensorRT."""

    artifacts: list[Artifact]
    report: tuple[Path, Path, Path]
    checkpoints: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(not a.status.startswith("failed") for a in self.artifacts)


def _step(bar: Any, text: str) -> None:
    bar.set_description_str(f"export: {text}")
    bar.refresh()


def run_export(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] = "synthetic",
    student: str | None = "edge_s",
    formats: Sequence[str] = FORMATS,
    baseline: bool = True,
    distill_kwargs: dict[str, Any] | None = None,
    calib_frames: int = 300,
    eval_frames: int = 200,
    n_report: int = 200,
    report_size: tuple[int, int] | None = None,
    budget: float = 0.01,
    threads: int = 1,
    min_calib_frames: int = 300,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
    lesion_gate: bool = False,
    gate_frames: int = 300,
) -> ExportResult:
    """The whole stage: (distill →) to_onnx → quantize → TensorRT → report, into ``out_dir``.

    ``checkpoint`` is the teacher when ``student`` names an architecture (distilled with
    ``distill_kwargs``; with ``baseline`` the same student is also trained without the teacher
    on the same frames and budget, and both are in the report); with ``student=None`` the
    checkpoint itself is exported.
    The report's reference row is the checkpoint's own FP32 ONNX. A quantization that misses
    its budget is a ``failed: ...`` row (``ExportResult.ok`` is False); other errors raise.
    ``lesion_gate``: before the report, fit the runtime's lesion gate
    (:func:`fit_lesion_gate`, ``gate_frames`` tuning phantoms of its own seed stream) into every
    ONNX artifact the stage made (not the teacher's reference copy); synthetic data only (the
    fit draws phantoms). TensorRT plans do not carry it.
    """
    from export.checkpoint import checkpoint_paths, load_checkpoint
    from export.distill import distill

    if lesion_gate and str(data) != "synthetic":
        raise InputError(
            "lesion_gate fits its threshold on synthetic phantoms; export a folder's model "
            "without it, or fit export.pipeline.fit_lesion_gate yourself"
        )
    if lesion_gate and (
        isinstance(gate_frames, bool) or not isinstance(gate_frames, int) or gate_frames < 3
    ):
        raise InputError(f"gate_frames must be an integer >= 3, got {gate_frames!r}")
    fmts = [f.strip() for f in formats if f.strip()]
    bad = sorted(set(fmts) - set(FORMATS))
    if bad or not fmts:
        raise InputError(f"unknown formats {bad}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, src_js = checkpoint_paths(checkpoint)
    src = load_checkpoint(src_js)  # fails early (ModelError) on a bad checkpoint
    arch = src.meta["arch"]
    src_run = src.train.get("run") or {}
    seed = int(src_run.get("seed", 0))
    # A student is always distilled, even of the teacher's architecture (a wider teacher of
    # the same family is the demo preset's): None exports the checkpoint as is.
    distilling = student is not None
    steps = ["teacher onnx"] if distilling else []
    steps += ["distill", *(["baseline"] if baseline else [])] if distilling else []
    steps += ["onnx", *(["calibration"] if {"onnx-int8", "trt-int8"} & set(fmts) else [])]
    steps += [f for f in fmts if f != "onnx"] + (["lesion gate"] if lesion_gate else [])
    steps += ["report"]
    bar = tqdm(total=len(steps), disable=not progress, unit="step", desc="export")

    def step(text: str) -> None:
        _step(bar, text)
        if on_step is not None:
            on_step(text)

    checkpoints: dict[str, Path] = {}
    rows: list[Artifact] = []
    try:
        if distilling:
            assert student is not None  # for the type checker: distilling implies it
            # Same frames as the teacher's run: its size, counts, split and seed.
            keys = ("size", "frame_sizes", "n_train", "n_val", "val_fraction", "seed")
            kw: dict[str, Any] = {k: src_run[k] for k in keys if k in src_run}
            kw["data"] = str(data)
            kw.update({"threads": threads, "progress": progress, "device": "cpu"})
            kw.update(distill_kwargs or {})
            step("teacher → ONNX")
            t_onnx = to_onnx(src_js, out / "teacher.onnx", data=data, n_eval=eval_frames)
            rows.append(Artifact(f"teacher {arch}", "onnx", t_onnx, reference=True))
            bar.update()
            step(f"distill {arch} → {student}")
            checkpoints["student"] = distill(src_js, out / "student", student, **kw)
            bar.update()
            if baseline:
                step(f"{student} without teacher")
                base_kw = {**kw, "alpha_kd": 0.0, "beta_pixel": 0.0}
                checkpoints["baseline"] = distill(src_js, out / "baseline", student, **base_kw)
                bar.update()
        ck = checkpoints.get("student", src_js)
        name = "student" if distilling else arch
        step("to ONNX")
        fp32 = to_onnx(ck, out / f"{name}.onnx", data=data, n_eval=eval_frames)
        rows.append(
            Artifact(f"{name} fp32", "onnx", fp32, reference=not distilling, note="distilled")
            if distilling
            else Artifact(f"{name} fp32", "onnx", fp32, reference=True)
        )
        if "baseline" in checkpoints:
            b = to_onnx(
                checkpoints["baseline"], out / "baseline.onnx", data=data, n_eval=eval_frames
            )
            rows.append(
                Artifact("baseline fp32", "onnx", b, note="same student, no teacher, same budget")
            )
        bar.update()
        md = read_onnx_file_metadata(fp32)
        calib: list[np.ndarray] = []
        ev: EvalSet | None = None
        if {"onnx-int8", "trt-int8"} & set(fmts):
            step("calibration frames")
            # Calibration and the budget's held-out frames come from the training run's
            # phantom size mix (the activation ranges the served frames produce).
            sizes = src_run.get("frame_sizes")
            calib = calibration_frames(
                data,
                md,
                calib_frames,
                seed,
                min_frames=min_calib_frames,
                progress=progress,
                frame_sizes=sizes,
            )
            ev = heldout_set(fp32, data, eval_frames, seed, frame_sizes=sizes)
            bar.update()
        qdq: Path | None = None
        for fmt in fmts:
            if fmt == "onnx":
                continue
            step(fmt)
            if fmt == "onnx-int8":
                rows.append(
                    _quant_row(
                        quantize_cpu, fp32, calib, ev, name, fmt, budget, min_calib_frames, threads
                    )
                )
            elif fmt == "trt-int8":
                row = _quant_row(
                    quantize_trt,
                    fp32,
                    calib,
                    ev,
                    name,
                    "onnx-qdq",
                    budget,
                    min_calib_frames,
                    threads,
                )
                row.note = "TensorRT Q/DQ graph, run here by ONNX Runtime CPU"
                rows.append(row)
                qdq = row.path
                if qdq is None:
                    rows.append(Artifact(f"{name} trt-int8", "trt-int8", None, row.status))
                else:
                    rows.append(
                        build_trt(qdq, out / f"{name}.int8.plan", "int8", name=f"{name} trt-int8")
                    )
            elif fmt == "trt-fp16":
                rows.append(
                    build_trt(fp32, out / f"{name}.fp16.plan", "fp16", name=f"{name} trt-fp16")
                )
            bar.update()
        if lesion_gate:
            step("lesion gate")
            for row in rows:
                if (
                    row.status == "ok"
                    and row.format in ("onnx", "onnx-int8")
                    and row.path is not None
                    and not row.name.startswith("teacher")
                ):
                    g = fit_lesion_gate(row.path, n=gate_frames, seed=seed, threads=threads)
                    gate_note = f"lesion gate {g['threshold']:g}"
                    row.note = f"{row.note}; {gate_note}" if row.note else gate_note
            bar.update()
        step("report")
        frames = report_frames(
            data, md.class_names, n_report, report_size or tuple(md.input_size), seed
        )
        paths = report(
            rows,
            frames,
            out,
            threads=threads,
            progress=progress,
            title=f"sonoedge export: {Path(checkpoint).name}",
        )
        bar.update()
    finally:
        bar.close()
    return ExportResult(rows, paths, checkpoints)


def _quant_row(
    fn: Callable[..., Path],
    fp32: Path,
    calib: list[np.ndarray],
    ev: EvalSet | None,
    name: str,
    fmt: str,
    budget: float,
    min_frames: int,
    threads: int,
) -> Artifact:
    label = f"{name} {'int8 (cpu)' if fmt == 'onnx-int8' else 'int8 (tensorrt qdq)'}"
    try:
        path = fn(
            fp32, calib, eval_frames=ev, budget=budget, min_frames=min_frames, threads=threads
        )
    except ModelError as exc:  # the budget was missed: a failed row, with the node ranking
        return Artifact(label, fmt, None, f"failed: {str(exc).splitlines()[0][:400]}")
    floats = read_onnx_file_metadata(path).provenance.get("quantization", {}).get("float_nodes", [])
    note = f"{len(floats)} node(s) kept float: {', '.join(floats)}" if floats else ""
    if len(floats) > 10:  # the list is in the artifact's metadata; the table wants the gist
        note = f"{len(floats)} node(s) kept float to meet the budget (see the metadata)"
    return Artifact(label, fmt, path, note=note)
