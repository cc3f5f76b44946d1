"""The export pipeline's frames: calibration frames, held-out sets and their evaluation through
ONNX Runtime, the report's frames (see :mod:`export.pipeline` for the seed streams)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from export._pipeline.common import CALIB_SEED, HOLDOUT_SEED, REPORT_SEED, _clean, _session
from export.data import FrameProvider, FrameSubset, MultiTaskDataset, open_frames, stratified_split
from sdk import metrics
from sdk.artifact import Metadata, read_onnx_file_metadata
from sdk.errors import InputError

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
