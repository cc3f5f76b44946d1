"""The export pipeline of issue #5: one typed function per step, path in → path out.

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
  Runtime checked against eager PyTorch (``|ort - eager| <= parity_atol`` on every output,
  the measured differences recorded in the metadata).
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
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from export.checkpoint import _sha256
from export.data import FrameProvider, FrameSubset, MultiTaskDataset, open_frames, stratified_split
from sdk import metrics
from sdk.artifact import Metadata, read_onnx_file_metadata
from sdk.errors import BackendUnavailableError, InputError, ModelError

__all__ = [
    "FORMATS",
    "Artifact",
    "EvalSet",
    "ExportResult",
    "build_trt",
    "calibration_frames",
    "check_contract",
    "evaluate_onnx",
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


def _part(out: Path) -> Path:
    """Temporary sibling of ``out`` (same folder, so the final rename is atomic)."""
    return out.with_name(f".{out.stem}.part{out.suffix}")


def _write_text(path: Path, text: str) -> None:
    tmp = _part(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


class _DropOrtAdvice(logging.Filter):
    """ONNX Runtime's quantizer logs "consider pre-processing" on every call (root logger);
    we run its shape inference ourselves through the checker, so the advice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    f = _DropOrtAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def check_contract(onnx_path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Output roles of an ONNX per the model contract (DESIGN.md): ``input`` [B, C, h, w],
    ``mask_logits`` [B, 1, h', w'], and ``class_logits`` [B, K] and/or ``features``.

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


# --------------------------------------------------------------------------- frames


def _split_frames(
    data: str | os.PathLike[str],
    class_names: Sequence[str],
    size: tuple[int, int],
    n: int,
    seed: int,
    offset: int,
    split: str,
    val_fraction: float = 0.2,
    frame_sizes: Sequence[Sequence[int]] | None = None,
) -> FrameProvider:
    """``n`` annotated frames for one role (see the module docstring for which frames);
    phantoms are drawn at ``frame_sizes`` (a size mix) when given, else at ``size``."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"the number of frames must be a positive integer, got {n!r}")
    if str(data) == "synthetic":
        return open_frames(
            "synthetic", class_names, n=int(n), size=frame_sizes or size, seed=seed + offset
        )
    frames = open_frames(data, class_names, seed=seed)
    tr, va = stratified_split(frames.labels, val_fraction, seed)
    idx = tr if split == "train" else va
    # A fixed, seeded subset: the same frames on every run with the same seed.
    rng = np.random.default_rng([seed, offset])
    pick = sorted(rng.permutation(idx)[: int(n)].tolist())
    return FrameSubset(frames, pick)


def calibration_frames(
    data: str | os.PathLike[str],
    metadata: Metadata,
    n: int = 300,
    seed: int = 0,
    *,
    min_frames: int = 300,
    progress: bool = False,
    frame_sizes: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """Preprocessed calibration frames for an artifact: float32 ``(C, h, w)`` each, channels /
    size / normalization / sigma from ``metadata`` (what the runtime feeds the model).

    Args:
        data: ``"synthetic"`` (fresh phantoms, seed stream ``seed + CALIB_SEED``) or a dataset
            folder (frames of its training split).
        metadata: the FP32 artifact's metadata.
        n: frames wanted (at least ``min_frames``).
        min_frames: the floor (300 for real exports; tests lower it).
        frame_sizes: phantom size mix (default: the model's input size), as in training.

    Raises:
        InputError: ``n`` below the floor, or a folder with fewer usable frames.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < max(1, min_frames):
        raise InputError(
            f"calibration needs >= {max(1, min_frames)} frames, asked for {n!r}; pass more"
        )
    frames = _split_frames(
        data,
        metadata.class_names,
        metadata.input_size,
        n,
        seed,
        CALIB_SEED,
        "train",
        frame_sizes=frame_sizes,
    )
    if len(frames) < max(1, min_frames):
        raise InputError(
            f"{data}: only {len(frames)} training frames for calibration, need >= {min_frames}; "
            "add data"
        )
    from sdk import kernels

    out = []
    for i in tqdm(range(len(frames)), desc="calibration frames", disable=not progress, leave=False):
        image = frames.get(i)[0]
        out.append(
            kernels.preprocess(
                image,
                metadata.input_size,
                metadata.channels,
                metadata.sigma,
                mean=metadata.mean,
                std=metadata.std,
            )
        )
    return out


def check_calibration(frames: Sequence[np.ndarray], metadata: Metadata, min_frames: int) -> None:
    """Raise :class:`InputError` unless ``frames`` are >= ``min_frames`` finite float32
    ``(C, h, w)`` (or ``(1, C, h, w)``) arrays of the artifact's channels and input size."""
    if frames is None or len(frames) == 0:
        raise InputError(
            "calibration data is empty; pass >= 300 preprocessed frames "
            "(export.pipeline.calibration_frames(data, metadata))"
        )
    if len(frames) < max(1, min_frames):
        raise InputError(
            f"calibration needs >= {max(1, min_frames)} frames, got {len(frames)}; pass more "
            "frames from the data"
        )
    want = (len(metadata.channels), *metadata.input_size)
    for i, f in enumerate(frames):
        a = np.asarray(f)
        shape = a.shape[1:] if a.ndim == 4 and a.shape[0] == 1 else a.shape
        if tuple(shape) != want:
            raise InputError(
                f"calibration frame {i} has shape {a.shape}, the model takes (C, h, w) = {want} "
                f"(channels {list(metadata.channels)}); preprocess with the artifact's metadata "
                "(export.pipeline.calibration_frames)"
            )
        if a.dtype != np.float32:
            raise InputError(f"calibration frame {i} must be float32, got {a.dtype}")


@dataclass
class EvalSet:
    """Held-out frames preprocessed for one artifact.

    ``x`` float32 ``(N, C, h, w)``; ``masks`` bool ``(N, hm, wm)`` (lesion fraction > 0.5 per
    cell of the model's mask grid); ``labels`` int64 ``(N,)`` ids into ``class_names``.
    """

    x: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def heldout_set(
    onnx_path: str | os.PathLike[str],
    data: str | os.PathLike[str] = "synthetic",
    n: int = 200,
    seed: int = 0,
    *,
    offset: int = HOLDOUT_SEED,
    frame_sizes: Sequence[Sequence[int]] | None = None,
) -> EvalSet:
    """Held-out frames for ``onnx_path`` (mask grid read from the graph's output shape);
    phantoms at ``frame_sizes`` (a size mix) when given, else at the model's input size."""
    path = Path(onnx_path)
    md = read_onnx_file_metadata(path)
    sess = _session(path, 1)
    probe = np.zeros((1, len(md.channels), *md.input_size), np.float32)
    mask_hw = sess.run([md.outputs["mask_logits"]], {sess.get_inputs()[0].name: probe})[0].shape
    frames = _split_frames(
        data, md.class_names, md.input_size, n, seed, offset, "val", frame_sizes=frame_sizes
    )
    ds = MultiTaskDataset(
        frames,
        md.input_size,
        md.channels,
        md.mean,
        md.std,
        (int(mask_hw[-2]), int(mask_hw[-1])),
        augment=None,
        sigma=md.sigma,
    )
    xs, ms, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return EvalSet(
        np.stack([x.numpy() for x in xs]),
        np.stack([m.numpy()[0] > 0.5 for m in ms]),
        np.asarray([int(y) for y in ys], np.int64),
        md.class_names,
    )


def _class_probs(out: dict[str, np.ndarray], md: Metadata) -> np.ndarray:
    """``(B, K)`` class probabilities: softmax of class_logits, else the SDK's pooling head."""
    if md.outputs.get("class_logits") and md.outputs["class_logits"] in out:
        z = out[md.outputs["class_logits"]].astype(np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    from sdk import kernels

    head = kernels.MLPHead(**md.head)  # type: ignore[arg-type]
    logits = out[md.outputs["mask_logits"]]
    feats = out[md.outputs["features"]]  # type: ignore[index]
    rows = []
    for b in range(logits.shape[0]):
        w = 1.0 / (1.0 + np.exp(-logits[b, 0]))
        rows.append(kernels.pool_classify(feats[b], w, head=head).probs[0])
    return np.stack(rows)


def evaluate_onnx(
    onnx_path: str | os.PathLike[str],
    frames: EvalSet,
    threads: int | None = 1,
    batch: int = 16,
    session_config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Dice, IoU (means over frames at the mask grid, both-empty = 1), accuracy and macro AUC of
    an ONNX artifact on ``frames``, through ONNX Runtime on CPU (dynamic batch);
    ``session_config``: extra ONNX Runtime session config entries."""
    path = Path(onnx_path)
    md = read_onnx_file_metadata(path)
    sess = _session(path, threads, session_config)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    dices, ious, probs = [], [], []
    for s in range(0, len(frames), batch):
        out = dict(zip(names, sess.run(names, {name: frames.x[s : s + batch]}), strict=True))
        pred = out[md.outputs["mask_logits"]][:, 0] > 0.0  # sigmoid > 0.5
        for p, t in zip(pred, frames.masks[s : s + batch], strict=True):
            dices.append(metrics.dice(p, t))
            ious.append(metrics.iou(p, t))
        probs.append(_class_probs(out, md))
    p = np.concatenate(probs)
    return {
        "dice": float(np.mean(dices)),
        "iou": float(np.mean(ious)),
        "accuracy": metrics.accuracy(frames.labels, p.argmax(1)),
        "macro_auc": _clean(metrics.macro_auc(frames.labels, p)),
        "frames": len(frames),
    }


# --------------------------------------------------------------------------- to_onnx


def _checkpoint_provenance(ck: Any, js: Path) -> dict[str, Any]:
    info = ck.train or {}
    dist = info.get("distillation")
    return {
        "checkpoint": {
            "path": str(js),
            "arch": ck.meta.get("arch"),
            "config": ck.meta.get("config"),
            "epoch": ck.epoch,
            "weights_sha256": ck.meta.get("weights_sha256"),
        },
        "training": info.get("run"),
        "validation": info.get("val"),
        "distillation": dist,
        "teacher": None if not dist else dist.get("teacher"),
    }


def _parity(model: Any, onnx_path: Path, xs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Max |ORT - eager| per output over ``xs`` (run as one batch and as single frames)."""
    import torch

    sess = _session(onnx_path, 1)
    name = sess.get_inputs()[0].name
    diffs = dict.fromkeys(names, 0.0)
    batches = [xs] + [xs[i : i + 1] for i in range(min(2, len(xs)))]
    for x in batches:
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        got = sess.run(list(names), {name: x})
        for k, g in zip(names, got, strict=True):
            r = ref[k].numpy()
            if g.shape != r.shape:
                raise ModelError(
                    f"ONNX output {k} has shape {g.shape}, eager {r.shape}: the export is broken"
                )
            diffs[k] = max(diffs[k], float(np.abs(g - r).max()))
    return diffs


def to_onnx(
    ckpt: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    data: str | os.PathLike[str] = "synthetic",
    n_eval: int = 200,
    seed: int | None = None,
    opset: int = 17,
    parity_atol: float = 1e-4,
    mask_threshold: float = 0.5,
    min_lesion_area_px: int = 16,
    threads: int | None = 1,
) -> Path:
    """Checkpoint → FP32 ONNX artifact with metadata (see the module docstring).

    Args:
        ckpt: a checkpoint of :mod:`export.checkpoint` (stem, ``.json`` or ``.safetensors``).
        out: the ``.onnx`` to write (default: next to the checkpoint, ``<stem>.onnx``).
        data: frames for the accuracy measured at export (``n_eval`` held-out frames) and the
            parity check (``"synthetic"`` or the training folder).
        seed: frame seed (default: the training run's seed).
        opset: ONNX opset, >= 17.
        parity_atol: largest allowed ``|ort - eager|`` on any output element.
        mask_threshold, min_lesion_area_px: the artifact's runtime thresholds.
        threads: torch / ONNX Runtime CPU threads for the checks.

    Returns:
        The ``.onnx`` path.

    Raises:
        ModelError: a checkpoint that is missing, corrupt or whose config does not match its
            architecture; a model off the contract; parity above ``parity_atol``.
        InputError: bad arguments.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from export.checkpoint import checkpoint_paths, load_checkpoint
    from export.onnx_export import embed_metadata, to_onnx_file
    from export.train import _torch_threads

    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise InputError(f"opset must be an integer >= 17, got {opset!r}")
    if not (isinstance(parity_atol, int | float) and parity_atol > 0):
        raise InputError(f"parity_atol must be a positive number, got {parity_atol!r}")
    _, js = checkpoint_paths(ckpt)
    out = Path(out) if out is not None else js.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise InputError(f"out must end in .onnx, got {out}")
    with _torch_threads(threads):
        ck = load_checkpoint(js, device="cpu")  # ModelError on a config / weights mismatch
        model = ck.model.eval()
        names = tuple(model.output_names)
        if "mask_logits" not in names or not ({"class_logits", "features"} & set(names)):
            raise ModelError(f"{ck.meta['arch']} outputs {names}: off the model contract")
        x0 = model.example_input(1, tuple(model.input_size))
        if isinstance(x0, tuple):
            raise ModelError(
                f"{ck.meta['arch']} takes {len(x0)} inputs; the artifact contract has one "
                "'input' [B, C, h, w]"
            )
        from export.checkpoint import normalization

        norm = normalization(model)
        head = None
        if getattr(model, "has_features", False):
            head = {k: v.numpy() for k, v in model.head_weights().items()}
        run_seed = int((ck.train.get("run") or {}).get("seed", 0)) if seed is None else seed
        md = Metadata(
            arch=ck.meta["arch"],
            class_names=tuple(model.class_names),
            channels=tuple(model.input_channels),
            input_size=tuple(model.input_size),
            mean=tuple(norm["mean"]),
            std=tuple(norm["std"]),
            sigma=DEFAULT_SIGMA,
            outputs={k: (k if k in names else None) for k in _ROLES},
            head=head,
            mask_threshold=float(mask_threshold),
            min_lesion_area_px=int(min_lesion_area_px),
            precision="fp32",
            provenance={
                **_checkpoint_provenance(ck, js),
                "export": {
                    "torch": torch.__version__,
                    "onnx": onnx.__version__,
                    "onnxruntime": ort.__version__,
                    "opset": opset,
                    "exporter": "torch.onnx.export (TorchScript), dynamic batch",
                    "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            },
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _part(out)
        try:
            to_onnx_file(model, (x0,), tmp, opset=opset)
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
            embed_metadata(tmp, md)  # the evaluation below reads the metadata back
            check_contract(tmp)
            ev = heldout_set(tmp, data, n_eval, run_seed)
            diffs = _parity(model, tmp, ev.x[: min(4, len(ev))], names)
            worst = max(diffs, key=diffs.__getitem__)
            if diffs[worst] > parity_atol:
                raise ModelError(
                    f"ONNX Runtime differs from eager PyTorch by {diffs[worst]:.3g} on {worst} "
                    f"(tolerance {parity_atol:g}; all: {diffs}); the export is not faithful: "
                    "check for ops the exporter approximates, or raise parity_atol knowingly"
                )
            md.accuracy = {
                "fp32": evaluate_onnx(tmp, ev, threads),
                "measured_on": f"{len(ev)} held-out frames of {data} (seed stream "
                f"{run_seed} + {HOLDOUT_SEED}), masks at the model's grid, ONNX Runtime CPU",
                "parity": {
                    "max_abs_diff": diffs,
                    "tolerance": parity_atol,
                    "frames": int(min(4, len(ev))),
                    "reference": "eager PyTorch, float32, CPU",
                },
            }
            embed_metadata(tmp, md)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


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
    from export.onnx_export import embed_metadata
    from export.quantize import (
        EXACT_INTEGER_SESSION_CONFIG,
        check_tensorrt_qdq,
        quantize_with_budget,
        recipe,
    )

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
    tmp = _part(out)
    # A TensorRT graph (8-bit weights) checked on a CPU: exact integer kernels, as TensorRT's.
    cfg = EXACT_INTEGER_SESSION_CONFIG if target == "tensorrt" else None
    try:
        with _quiet_quantizer():
            res = quantize_with_budget(
                src,
                tmp,
                list(calib),
                lambda p: (
                    evaluate_onnx(p, ev, threads)
                    if cfg is None
                    else evaluate_onnx(p, ev, threads, session_config=cfg)
                ),
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
            "int8_measured_on": f"{len(ev)} held-out frames, ONNX Runtime CPU",
        }
        embed_metadata(tmp, qmd)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


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


# --------------------------------------------------------------------------- TensorRT


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


def build_trt(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
    *,
    profile: tuple[int, int, int] = (1, 1, 8),
    workspace_gb: float = 2.0,
    timing_cache: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Artifact:
    """ONNX → TensorRT ``.plan`` (:func:`export.tensorrt_build.build_engine`).

    ``precision``: ``"fp16"`` (from the FP32 export, cast by
    :func:`export.tensorrt_build.fp16_onnx` with sensitive ops kept FP32), ``"int8"`` (from the
    :func:`quantize_trt` QDQ graph) or ``"fp32"``. Returns the artifact with its status:
    ``"ok"``, or ``"skipped: TensorRT not installed"`` / ``"skipped: <why>"`` when TensorRT or
    a GPU is missing -- then nothing is written. Default output ``<stem>.<precision>.plan``.

    Raises:
        InputError: a precision the graph does not carry; ModelError: TensorRT rejects the
            graph, an ONNX off the contract or without metadata.
    """
    import tempfile

    from export.tensorrt_build import build_engine, fp16_onnx
    from sdk.backends._trt_common import trt_module

    src = Path(onnx_path)
    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    check_contract(src)
    md = read_onnx_file_metadata(src)
    base = src.name.removesuffix(".onnx").removesuffix(".trt-int8")
    out = Path(out) if out is not None else src.with_name(f"{base}.{precision}.plan")
    fmt = f"trt-{precision}"
    label = name or f"{base} {fmt}"

    def skipped(exc: BackendUnavailableError) -> Artifact:
        if importlib.util.find_spec("tensorrt") is None:
            return Artifact(label, fmt, None, SKIPPED_NO_TRT)
        return Artifact(label, fmt, None, f"skipped: {str(exc).splitlines()[0]}")

    if precision == "int8":
        from export.tensorrt_build import _graph_precision

        if _graph_precision(src) != "int8":
            return Artifact(
                label,
                fmt,
                None,
                "failed: the QDQ graph holds no quantized node "
                "(INT8 missed the accuracy budget); no INT8 engine",
            )
    with tempfile.TemporaryDirectory() as td:
        graph = src
        if precision == "fp16":
            try:  # no point casting to FP16 for a TensorRT that is not there
                trt_module()
            except BackendUnavailableError as exc:
                return skipped(exc)
            with warnings.catch_warnings():
                # Tiny weights flushed to FP16's range: expected, and checked by the build.
                warnings.simplefilter("ignore", UserWarning)
                graph = fp16_onnx(src, Path(td) / "fp16.onnx")
        try:
            # INT8: build_engine validates the Q/DQ graph before it needs TensorRT.
            path = build_engine(
                graph, out, md, precision, profile, workspace_gb, timing_cache, cache=None
            )
        except BackendUnavailableError as exc:
            return skipped(exc)
    return Artifact(label, fmt, path, "ok")


# --------------------------------------------------------------------------- scope + calibration


def _scope_outputs(
    path: Path, md: Metadata, frames: Any, threads: int | None, batch: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scope summaries (N, D), image-level class logits (N, K) and labels (N,) of ``frames``
    (``(image, mask, label)`` providers) through ONNX Runtime, preprocessed as the runtime does."""
    from sdk import kernels
    from sdk.scope import summary

    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    f_name, c_name = md.outputs.get("features"), md.outputs.get("class_logits")
    summaries = _scope_summaries(md)
    head = kernels.MLPHead(**md.head) if md.head is not None else None  # type: ignore[arg-type]
    zs, logits, labels = [], [], []
    for s in range(0, len(frames), batch):
        xs, ys = [], []
        for i in range(s, min(s + batch, len(frames))):
            image, _, label = frames.get(i)
            xs.append(
                kernels.preprocess(
                    image, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std
                )
            )
            ys.append(int(label))
        out = dict(zip(names, sess.run(names, {name: np.stack(xs)}), strict=True))
        for b in range(len(xs)):
            f = out[f_name][b] if f_name else None
            c = out[c_name][b] if c_name else None
            zs.append(summary(f, c, summaries))
            if c is None:  # a features-only model: the pooled image row's head logits
                w = 1.0 / (1.0 + np.exp(-out[md.outputs["mask_logits"]][b, 0]))
                c = kernels.pool_classify(f, w.astype(np.float32), head=head).logits[0]
            logits.append(np.asarray(c, np.float64))
        labels += ys
    return np.stack(zs), np.stack(logits), np.asarray(labels, np.int64)


def _scope_summaries(md: Metadata) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    if md.outputs.get("features"):
        out += ("gap", "std")
    if md.outputs.get("class_logits"):
        out += ("class_logits",)
    return out


def fit_scope_and_temperature(
    model_path: str | os.PathLike[str],
    n_fit: int = 800,
    n_heldout: int = 300,
    seed: int = 0,
    *,
    styles: Sequence[str] = ("classic", "scanner"),
    frame_sizes: Sequence[Sequence[int]] = SCOPE_SIZES,
    quantile: float = 0.99,
    threads: int | None = 1,
    write: bool = True,
    frames_cache: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Fit the out-of-scope model and the probability temperature of an ``.onnx`` artifact on
    its own outputs, and (``write``) embed both in its metadata through
    :func:`export.onnx_export.embed_metadata` (which also re-stamps the integrity digest).

    Frames: synthetic phantoms of each of ``styles`` (``sdk.synthetic``, ``"classic"`` and
    ``"scanner"``: the training distribution), drawn at ``frame_sizes``, on seed streams of their
    own (``seed + SCOPE_FIT_SEED`` / ``seed + SCOPE_HOLDOUT_SEED`` + the style's index; none
    shared with training, calibration, held-out checks or the report). ``n_fit`` per style fit
    the summaries' mean and covariance (:func:`sdk.scope.fit_scope`); ``n_heldout`` per style,
    never seen by that fit, give the reference distances, the threshold (their ``quantile``)
    and the temperature (:func:`sdk.scope.fit_temperature`: NLL of the image-level logits).
    No MUST / SIMUS-family frame is used. Nothing about the model's graph or weights changes.
    ``frames_cache``: a dict shared by several calls (e.g. the FP32 and INT8 files of one
    export): the phantoms are drawn once, kept there, and reused by the next call.

    Returns: a summary (threshold, temperature, held-out flag rate and ECE before / after).
    """
    from export.data import SyntheticFrames
    from export.onnx_export import embed_metadata
    from sdk.scope import CALIBRATION_VERSION, ece, fit_scope, fit_temperature, softmax

    path = Path(model_path)
    md = read_onnx_file_metadata(path)
    check_contract(path)
    if not _scope_summaries(md):
        raise ModelError(f"{path}: neither features nor class_logits: nothing to fit a scope on")
    sets: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"fit": [], "heldout": []}
    for role, n, offset in (
        ("fit", n_fit, SCOPE_FIT_SEED),
        ("heldout", n_heldout, SCOPE_HOLDOUT_SEED),
    ):
        for k, style in enumerate(styles):
            sizes = [tuple(s) for s in frame_sizes]
            key = (int(n), tuple(sizes), seed + offset + k, tuple(md.class_names), style)
            frames = None if frames_cache is None else frames_cache.get(key)
            if frames is None:
                cache = frames_cache is not None  # keep the drawn frames only to share them
                frames = SyntheticFrames(
                    int(n), sizes, seed + offset + k, md.class_names, cache=cache, style=style
                )
                if frames_cache is not None:
                    frames_cache[key] = frames
            sets[role].append(_scope_outputs(path, md, frames, threads))
    fz = np.concatenate([z for z, _, _ in sets["fit"]])
    hz = np.concatenate([z for z, _, _ in sets["heldout"]])
    hl = np.concatenate([c for _, c, _ in sets["heldout"]])
    hy = np.concatenate([y for _, _, y in sets["heldout"]])
    fitted_on = {
        "frames": "sdk.synthetic phantoms",
        "styles": list(styles),
        "frame_sizes": [list(s) for s in frame_sizes],
        "fit_per_style": int(n_fit),
        "heldout_per_style": int(n_heldout),
        "seed": int(seed),
        "fit_seed_offset": SCOPE_FIT_SEED,
        "heldout_seed_offset": SCOPE_HOLDOUT_SEED,
    }
    scope = fit_scope(
        fz, hz, summaries=_scope_summaries(md), quantile=quantile, fitted_on=fitted_on
    )
    t = fit_temperature(hl, hy)
    before = ece(softmax(hl), hy)
    after = ece(softmax(hl, t), hy)
    calibration = {
        "version": CALIBRATION_VERSION,
        "method": "temperature",
        "temperature": round(t, 6),
        "fitted_on": {**fitted_on, "set": "heldout", "objective": "nll"},
        "heldout_ece_before": round(before, 5),
        "heldout_ece_after": round(after, 5),
    }
    md.scope = scope.to_dict()
    md.calibration = calibration
    if write:
        embed_metadata(path, md)
    return {
        "model": str(path),
        "threshold": scope.threshold,
        "quantile": quantile,
        "dim": scope.dim,
        "temperature": t,
        "heldout_flagged": float(np.mean(scope.heldout_d2 > scope.threshold)),
        "heldout_ece_before": before,
        "heldout_ece_after": after,
        "written": bool(write),
    }


# --------------------------------------------------------------------------- report


def report_frames(
    data: str | os.PathLike[str] = "synthetic",
    class_names: Sequence[str] = ("normal", "benign", "malignant"),
    n: int = 200,
    size: tuple[int, int] = (600, 800),
    seed: int = 0,
) -> FrameProvider:
    """Annotated frames for :func:`report`: fresh phantoms of ``size`` (seed stream
    ``seed + REPORT_SEED``, never used in training) or the validation split of a folder."""
    return _split_frames(data, class_names, size, n, seed, REPORT_SEED, "val")


def _frame_list(frames: Any) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], tuple[str, ...]]:
    if hasattr(frames, "get") and hasattr(frames, "class_names"):
        names = tuple(frames.class_names)
        items = [frames.get(i) for i in range(len(frames))]
    else:
        items = list(frames)
        names = ()
    if not items:
        raise InputError("report needs at least one annotated frame (image, mask, label)")
    return items, names


def _measure(
    art: Artifact,
    items: list[tuple[np.ndarray, np.ndarray, int]],
    frame_classes: tuple[str, ...],
    threads: int,
    warmup: int,
    progress: bool,
) -> dict[str, Any]:
    from sdk.analyzer import Analyzer

    with Analyzer(art.path, threads=threads) as a:
        classes = tuple(a.class_names)
        # Frames label by name; map them onto this artifact's class order.
        if frame_classes and sorted(frame_classes) != sorted(classes):
            raise InputError(
                f"{art.name}: classes {list(classes)} differ from the frames' {list(frame_classes)}"
            )
        to_art = [classes.index(c) for c in frame_classes or classes]
        for image, _, _ in items[:warmup]:
            a.run(image)
        a.reset()
        dices, ious, ms, labels, probs = [], [], [], [], []
        bar = tqdm(items, desc=f"report {art.name}", disable=not progress, leave=False)
        for image, mask, label in bar:
            r = a.run(image)
            dices.append(metrics.dice(r.mask > 0, mask > 0))
            ious.append(metrics.iou(r.mask > 0, mask > 0))
            ms.append(r.timings["total"])
            labels.append(to_art[int(label)])
            probs.append([r.raw_probs[c] for c in classes])
    y = np.asarray(labels)
    p = np.asarray(probs)
    t = np.asarray(ms)
    return {
        "dice": float(np.mean(dices)),
        "iou": float(np.mean(ious)),
        "accuracy": metrics.accuracy(y, p.argmax(1)),
        "macro_auc": _clean(metrics.macro_auc(y, p)),
        "ms_per_frame": float(np.median(t)),
        "ms_p90": float(np.percentile(t, 90)),
        "fps": float(1000.0 / np.mean(t)),
        "precision": a.metadata.precision,
    }


_KEYS = ("dice", "iou", "accuracy", "macro_auc")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report(
    artifacts: Sequence[Artifact],
    frames: Any,
    out_dir: str | os.PathLike[str],
    *,
    threads: int = 1,
    warmup: int = 3,
    title: str = "sonoedge export report",
    stem: str = "report",
    progress: bool = False,
) -> tuple[Path, Path, Path]:
    """Run every artifact through :class:`sdk.Analyzer` on the same ``frames`` and write
    ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` (latency against Dice / accuracy).

    Args:
        artifacts: rows; those with a path and status ``"ok"`` are measured, the others are
            listed with their status (e.g. ``"skipped: TensorRT not installed"``). The row with
            ``reference=True`` (else the first measured) is what the drops are against.
        frames: a :class:`export.data.FrameProvider` or ``(image uint8 (H, W), mask (H, W),
            label id)`` tuples (ids in the artifacts' class order).
        threads: CPU threads of the Analyzer (ONNX Runtime intra-op and kernels).
        warmup: frames run first and not timed.

    Per row: format, status, size (MB, 10⁶ bytes), Dice / IoU (frame resolution, both-empty
    frames count 1), accuracy, macro AUC (one-vs-rest, on the image-level probabilities),
    ms/frame (median of ``Analyzer.run`` wall time: preprocess + inference + post-process)
    and FPS (1000 / mean ms), and the drop of each metric against the reference.
    """
    out = Path(out_dir)
    items, frame_classes = _frame_list(frames)
    if not artifacts:
        raise InputError("report needs at least one artifact")
    rows: list[dict[str, Any]] = []
    for art in artifacts:
        row: dict[str, Any] = {
            "name": art.name,
            "format": art.format,
            "status": art.status,
            "path": None if art.path is None else str(art.path),
            "size_mb": None,
            "reference": art.reference,
            "note": art.note,
            **dict.fromkeys((*_KEYS, "ms_per_frame", "ms_p90", "fps")),
        }
        if art.status == "ok" and art.path is not None:
            row["size_mb"] = Path(art.path).stat().st_size / 1e6
            row.update(_measure(art, items, frame_classes, threads, warmup, progress))
        rows.append(row)
    measured = [r for r in rows if r["dice"] is not None]
    ref = next((r for r in measured if r["reference"]), measured[0] if measured else None)
    for r in rows:
        r["drop"] = {
            k: None if ref is None or r[k] is None or ref[k] is None else ref[k] - r[k]
            for k in _KEYS
        }
    shape = items[0][0].shape[:2]
    from sdk.bench._timing import machine_info

    doc = {
        "title": title,
        "reference": None if ref is None else ref["name"],
        "frames": {"n": len(items), "shape": list(shape), "warmup": warmup},
        "threads": threads,
        "machine": machine_info(),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    md_path, js_path, png_path = (out / f"{stem}.{e}" for e in ("md", "json", "png"))
    _write_text(js_path, json.dumps(doc, indent=2) + "\n")
    _write_text(md_path, _markdown(doc))
    _plot_report(rows, png_path, title)
    return md_path, js_path, png_path


def _markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# {doc['title']}",
        "",
        f"{doc['frames']['n']} frames of {doc['frames']['shape'][0]}×{doc['frames']['shape'][1]} "
        f"through `sdk.Analyzer` ({doc['threads']} thread(s), {doc['frames']['warmup']} warm-up "
        f"frames); drops against **{doc['reference']}** on the same frames "
        "(positive = worse). Dice / IoU at frame resolution, both-empty frames count 1.",
        "",
        f"Machine: {m['cpu']} ({m.get('cpu_class', '?')}: {m.get('isa', '?')}; sonoedge "
        f"kernels {m.get('kernels_isa', '?')}), {m['cores']} cores, {m['device']}; "
        f"{m['versions']}; {m['date']}.",
        "",
        "| artifact | format | status | size MB | Dice | IoU | accuracy | macro AUC | ms/frame "
        "| FPS | ΔDice | ΔIoU | Δaccuracy | ΔAUC |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["rows"]:
        d = r["drop"]
        lines.append(
            f"| {r['name']} | {r['format']} | {r['status']} | {_fmt(r['size_mb'], 2)} "
            f"| {_fmt(r['dice'])} | {_fmt(r['iou'])} | {_fmt(r['accuracy'])} "
            f"| {_fmt(r['macro_auc'])} | {_fmt(r['ms_per_frame'], 2)} | {_fmt(r['fps'], 1)} "
            f"| {_fmt(d['dice'])} | {_fmt(d['iou'])} | {_fmt(d['accuracy'])} "
            f"| {_fmt(d['macro_auc'])} |"
        )
    notes = [f"- **{r['name']}**: {r['note']}" for r in doc["rows"] if r.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _plot_report(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    pts = [r for r in rows if r["ms_per_frame"] is not None]
    for key, marker in (("dice", "o"), ("accuracy", "s")):
        xs = [r["ms_per_frame"] for r in pts]
        ys = [r[key] for r in pts]
        ax.scatter(xs, ys, marker=marker, label=key)
    for r in pts:
        ax.annotate(
            r["name"],
            (r["ms_per_frame"], r["dice"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    skipped = [r["name"] for r in rows if r["ms_per_frame"] is None]
    if skipped:
        ax.text(
            0.01,
            0.01,
            "not measured: " + ", ".join(skipped),
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
        )
    ax.set(xlabel="ms / frame (Analyzer.run, median)", ylabel="Dice / accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = _part(path)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
) -> ExportResult:
    """The whole stage: (distill →) to_onnx → quantize → TensorRT → report, into ``out_dir``.

    ``checkpoint`` is the teacher when ``student`` names an architecture (distilled with
    ``distill_kwargs``; with ``baseline`` the same student is also trained without the teacher
    on the same frames and budget, and both are in the report); with ``student=None`` the
    checkpoint itself is exported.
    The report's reference row is the checkpoint's own FP32 ONNX. A quantization that misses
    its budget is a ``failed: ...`` row (``ExportResult.ok`` is False); other errors raise.
    """
    from export.checkpoint import checkpoint_paths, load_checkpoint
    from export.distill import distill

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
    steps += [f for f in fmts if f != "onnx"] + ["report"]
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
