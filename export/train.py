"""Multi-task training of any registered architecture, with or without a teacher: the one
trainer of the export stage (teachers, the edge student, its distillation, the no-teacher
baseline; :func:`export.distill.distill` is this function with a teacher).

``train(arch, data, out_dir, ...)`` writes into ``out_dir``:

* ``last.{safetensors,json}`` after every epoch (weights + optimizer, see :mod:`export.checkpoint`)
  and ``best.{safetensors,json}`` at the best validation score (mean of Dice and accuracy);
* ``metrics.json``: the run settings, the data summary and one record per epoch (train losses,
  validation losses, Dice, IoU, accuracy, macro AUC, per-class sensitivity / specificity,
  confusion matrix, learning rate, seconds), all through :mod:`sdk.metrics`;
* ``curves.png``: losses and validation metrics per epoch.

Loss (:class:`export.losses.TrainingLoss`): ``λ (BCE + Dice) + (1 - λ) CE`` with balanced class
weights; optionally deep supervision on the ``aux_mask_logits`` a model's ``forward_train``
returns (``aux_weight``) and, with a ``teacher`` checkpoint, class KD (``alpha_kd``, temperature
``T``), pixel KD on the mask (``beta_pixel``) and feature KD on the lesion-pooled features
(``gamma_feat``). The teacher is frozen (eval mode, no gradient) and sees the very augmented
frame the student sees, preprocessed for its own input (channels, normalization, size).
AdamW, cosine learning-rate decay per epoch, optional linear warm-up over the first
``warmup_steps`` optimizer steps. Validation: a stratified held-out split of a folder,
or phantoms with other seeds for ``"synthetic"``; masks compared at the model's mask resolution
(prediction = ``sigmoid > 0.5``, target = lesion fraction > 0.5 per cell).

Determinism: the shuffling of epoch ``e`` uses a generator seeded by ``(seed, e)``, augmentation by
``(seed, e, index)``, torch's global RNG is reseeded per epoch; so a run stopped and resumed
(``resume=True``) ends with the same weights as an uninterrupted one on the same device.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from export.checkpoint import checkpoint_paths, load_checkpoint, normalization, save_checkpoint
from export.data import (
    Augment,
    ConcatFrames,
    FrameProvider,
    FrameSubset,
    MultiTaskDataset,
    SyntheticFrames,
    describe,
    open_frames,
    resolve_split,
    stratified_split,
)
from export.data import frame_sizes as data_frame_sizes
from export.losses import MultiTaskLoss, TrainingLoss, balanced_class_weights
from export.models import create_model, list_models, model_defaults
from export.slab_data import CineSlabs, SlabDataset
from sdk import metrics, synthetic
from sdk.errors import BackendUnavailableError, InputError

__all__ = ["evaluate", "resolve_device", "train"]

# Settings that must be equal when resuming (epochs may grow).
_RESUME_KEYS = (
    "frozen_encoder",  # absent (None) unless set
    "precision",  # absent (None) for fp32
    "supplement",  # likewise
    "arch",
    "data",
    "size",
    "frame_sizes",
    "seed",
    "n_train",
    "n_val",
    "val_fraction",
    "batch_size",
    "lr",
    "lam",
    "weight_decay",
    "class_weighting",
    "augment",
    "model_kwargs",
    "split",
    "teacher",
    "T",
    "alpha_kd",
    "beta_pixel",
    "gamma_feat",
    "aux_weight",
    "warmup_steps",
    "pos_weight",
    "presence_weight",  # absent (None) unless set
    "batch_dice",  # likewise
)
# What a run saved before the one trainer (issue #15, 2026-12-02) did without recording it: no
# teacher, no deep supervision, no warm-up (that trainer is bit-identical to the old one there),
# so such a run resumes under these values.
_RESUME_LEGACY = {
    "T": 4.0,
    "alpha_kd": 0.0,
    "beta_pixel": 0.0,
    "gamma_feat": 0.0,
    "aux_weight": 0.0,
    "warmup_steps": 0,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        BackendUnavailableError: CUDA asked for but not usable here.
        InputError: an unknown device string.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or a "
                "CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{dev} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type != "cpu":
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _size(
    size: int | Sequence[int] | None, default: tuple[int, int], divisor: int
) -> tuple[int, int]:
    if size is None:
        hw = default
    elif isinstance(size, int | np.integer) and not isinstance(size, bool):
        hw = (int(size), int(size))
    else:
        try:
            h, w = (int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InputError(f"size must be an int or (h, w), got {size!r}") from None
        hw = (h, w)
    if min(hw) < divisor or hw[0] % divisor or hw[1] % divisor:
        raise InputError(f"size {hw} must be positive multiples of {divisor} for this model")
    return hw


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


#: CPU flags (``/proc/cpuinfo``) of bfloat16 arithmetic in hardware: AVX-512 BF16 and AMX on
#: x86-64 (Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later), ``bf16`` on Armv8.6+.
#: Elsewhere torch emulates bf16 and is slower than fp32, so ``precision="bf16"`` is refused.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _precision(precision: str, dev: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: what ``train(precision=...)`` runs on ``dev``."""
    if precision not in ("fp32", "bf16", "auto"):
        raise InputError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if dev.type == "cuda":
        ok, where = torch.cuda.is_bf16_supported(), f"CUDA device {torch.cuda.get_device_name(dev)}"
    elif dev.type == "cpu":
        from sdk.cpu import cpu_flags, cpu_model

        ok = any(f in cpu_flags() for f in _BF16_CPU_FLAGS)
        where = f"CPU {cpu_model()}"
    else:
        ok, where = False, f"device {dev}"
    if ok:
        return "bf16"
    if precision == "auto":
        return "fp32"
    raise InputError(
        f"precision='bf16': the {where} has no bfloat16 arithmetic in hardware (CPU flags "
        f"{', '.join(_BF16_CPU_FLAGS)}), where bf16 is emulated and slower than fp32; use "
        "precision='fp32', or 'auto' to take bf16 only where it is fast"
    )


def _fp32(obj: Any) -> Any:
    """``obj`` (a tensor, or a dict / list / tuple of them) with floating tensors in float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _fp32(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_fp32(v) for v in obj)
    return obj


def _mask_hw(net: nn.Module, hw: tuple[int, int], dev: torch.device) -> tuple[int, int]:
    """The mask grid ``net`` predicts for an ``hw`` input: one probe forward in eval mode (a
    student's and a teacher's grids may differ: nmtnet's 256x256 against edge_s's 64x64)."""
    x = net.example_input(1, hw)
    net.eval()
    with torch.no_grad():
        h, w = net(x.to(dev))["mask_logits"].shape[-2:]
    return int(h), int(w)


def _loader(
    ds: MultiTaskDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int,
    pin: bool,
) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=num_workers,
        drop_last=shuffle and len(ds) > batch_size,
        pin_memory=pin,
        persistent_workers=False,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    criterion: MultiTaskLoss | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Validation metrics of ``model`` over ``loader`` (items ``(x, mask, label)``).

    Returns a JSON-safe dict: ``dice``, ``iou`` (means over frames, masks at the model's mask
    resolution, both-empty frames count 1; None for a model without ``mask_logits``, a slab
    classifier whose ``x`` is ``(volume, prompt)``), ``dice_lesion`` (mean over frames with a
    lesion; None without any), ``accuracy``, ``macro_auc`` (None when undefined),
    ``sensitivity`` / ``specificity`` (per class, None where undefined), ``confusion``, and the
    validation losses when a criterion is given.
    """
    model.eval()
    dev = torch.device(device)
    dices: list[float] = []
    ious: list[float] = []
    lesion: list[bool] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    sums: dict[str, float] = {}
    n = 0
    for x, m, y, *_ in loader:
        x, m, y = _to(x, dev), m.to(dev), y.to(dev)
        out = _forward(model, x)
        if criterion is not None:
            _, parts = criterion(out, m, y)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(y)
        n += len(y)
        if "mask_logits" in out:  # a slab classifier has none: no mask metrics
            pred = (torch.sigmoid(out["mask_logits"]) > 0.5).cpu().numpy()
            true = (m > 0.5).cpu().numpy()
            for p, t in zip(pred, true, strict=True):
                dices.append(metrics.dice(p[0], t[0]))
                ious.append(metrics.iou(p[0], t[0]))
                lesion.append(bool(t.any()))
        probs.append(torch.softmax(out["class_logits"].float(), 1).cpu().numpy())
        labels.append(y.cpu().numpy())
    if n == 0:
        raise InputError("the validation split is empty; add data or lower val_fraction")
    y_true = np.concatenate(labels)
    p = np.concatenate(probs)
    k = p.shape[1]
    y_pred = p.argmax(1)
    pc = metrics.per_class(y_true, y_pred, k)
    auc = metrics.macro_auc(y_true, p)

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in a]

    res: dict[str, Any] = {
        "dice": float(np.mean(dices)) if dices else None,
        "iou": float(np.mean(ious)) if ious else None,
        # Lesion frames only: the mean above counts every correctly empty normal frame as 1.
        "dice_lesion": float(np.mean(np.asarray(dices)[lesion])) if any(lesion) else None,
        "accuracy": metrics.accuracy(y_true, y_pred),
        "macro_auc": None if not np.isfinite(auc) else auc,
        "sensitivity": clean(pc["sensitivity"]),
        "specificity": clean(pc["specificity"]),
        "confusion": metrics.confusion_matrix(y_true, y_pred, k).tolist(),
    }
    res.update({f"loss_{k}": v / n for k, v in sums.items()})
    return res


class _PairDataset(Dataset):
    """Items ``(x, mask, label, x_teacher)``; ``x_teacher`` is an empty tensor when there is no
    teacher to run or it takes exactly the student's input (no second preprocessing)."""

    def __init__(self, student: MultiTaskDataset, teacher: MultiTaskDataset | None) -> None:
        self.student, self.teacher = student, teacher

    def set_epoch(self, epoch: int) -> None:
        self.student.set_epoch(epoch)
        if self.teacher is not None:
            self.teacher.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.student)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        x, m, y = self.student[index]
        xt = self.teacher[index][0] if self.teacher is not None else torch.empty(0)
        return x, m, y, xt


def _to(x: Any, dev: torch.device, pin: bool = False) -> Any:
    """A batch's input on ``dev``: one tensor, or the inputs of a multi-input model."""
    if isinstance(x, list | tuple):
        return tuple(t.to(dev, non_blocking=pin) for t in x)
    return x.to(dev, non_blocking=pin)


def _forward(model: nn.Module, x: Any) -> dict[str, torch.Tensor]:
    return model(*x) if isinstance(x, tuple) else model(x)


def _outputs(model: nn.Module, x: Any, train_outputs: bool) -> dict[str, torch.Tensor]:
    """``forward_train`` (the contract's outputs plus ``aux_mask_logits``) when deep
    supervision asks for it, else ``forward``."""
    return model.forward_train(x) if train_outputs else _forward(model, x)


def _train_epoch(
    model: nn.Module,
    teacher: nn.Module | None,
    loader: DataLoader,
    criterion: TrainingLoss,
    opt: torch.optim.Optimizer,
    dev: torch.device,
    desc: str,
    progress: bool,
    lr_at: Any,
    bf16: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; returns the sample-weighted mean of each loss part.
    ``lr_at(i)`` is the learning rate of the epoch's ``i``-th step (warm-up, cosine).
    ``bf16``: the forward passes under bfloat16 autocast (channels-last 4-D inputs on a CPU);
    the losses, the gradients' accumulation and the weights stay float32."""
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    pin = dev.type == "cuda"
    aux = criterion.aux_weight > 0
    cl = bf16 and dev.type == "cpu"
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch")
    for i, (x, m, y, xt) in enumerate(bar):
        x, m, y = _to(x, dev, pin), m.to(dev, non_blocking=pin), y.to(dev)
        if cl and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        t_out = None
        if teacher is not None:
            # Frozen teacher (eval mode, no graph): gradients reach the student only.
            with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                t_out = _fp32(teacher(x if xt.numel() == 0 else xt.to(dev)))
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            outputs = _outputs(model, x, aux)
        total, parts = criterion(_fp32(outputs), m, y, t_out)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * len(y)
        seen += len(y)
        post = {"loss": f"{parts['total']:.3f}"}
        if "kd_pixel" in parts and teacher is not None:
            post["kd"] = f"{parts['kd_pixel']:.3f}"
        bar.set_postfix(**post)
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _frozen_teacher(path: Path, dev: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher checkpoint in eval mode without gradients, and its record for the run."""
    ck = load_checkpoint(path, device=dev)  # ModelError for a config that does not fit
    teacher = ck.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x0 = teacher.example_input(1, tuple(teacher.input_size))
    if isinstance(x0, tuple):
        raise InputError(
            f"teacher {ck.meta['arch']} takes {len(x0)} inputs; distillation feeds "
            "single-input teachers only"
        )
    info = {
        "path": str(path),
        "arch": ck.meta["arch"],
        "config": ck.meta.get("config", {}),
        "epoch": ck.epoch,
        "weights_sha256": ck.meta.get("weights_sha256"),
        "input_size": list(teacher.input_size),
        "input_channels": list(teacher.input_channels),
        "val_at_training": ck.train.get("val"),
    }
    return teacher, info


def _lr_schedule(lr: float, epochs: int, steps_per_epoch: int, warmup_steps: int) -> Any:
    """``lr_at(epoch)(i)``: cosine decay per epoch times a linear warm-up over the first
    ``warmup_steps`` optimizer steps of the run; a pure function of (epoch, step), so a
    resumed run follows the same schedule."""

    def at_epoch(epoch: int) -> Any:
        base = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

        def at(i: int) -> float:
            step = epoch * steps_per_epoch + i
            return base * min(1.0, (step + 1) / warmup_steps) if warmup_steps else base

        return at

    return at_epoch


def _summary_line(desc: str, record: dict[str, Any]) -> str:
    val = record["val"]
    auc = "n/a" if val["macro_auc"] is None else f"{val['macro_auc']:.3f}"
    seg = "" if val["dice"] is None else f"dice {val['dice']:.3f} iou {val['iou']:.3f} "
    return (
        f"{desc}: loss {record['train'].get('total', float('nan')):.4f} "
        f"val {seg}acc {val['accuracy']:.3f} auc {auc} ({record['seconds']:.1f} s)"
    )


def _score(val: dict[str, Any]) -> float:
    """Model selection: mean of Dice and accuracy (both in [0, 1]); accuracy alone for a model
    without a mask (a slab classifier)."""
    if val["dice"] is None:
        return float(val["accuracy"])
    return 0.5 * (val["dice"] + val["accuracy"])


def _plot(history: list[dict[str, Any]], path: Path, title: str) -> None:
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] + 1 for h in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    # Train and validation on the same scale: the task loss; the total (with deep supervision
    # and KD terms) dashed when it differs.
    task = [h["train"].get("task", h["train"]["total"]) for h in history]
    ax1.plot(ep, task, "o-", label="train")
    ax1.plot(ep, [h["val"]["loss_total"] for h in history], "o-", label="validation")
    if any("task" in h["train"] for h in history):
        ax1.plot(ep, [h["train"]["total"] for h in history], "o--", label="train total (+aux/KD)")
    ax1.set(xlabel="epoch", ylabel="λ(BCE + Dice) + (1 - λ)CE", title="loss")
    ax1.legend()
    for key in ("dice", "iou", "accuracy", "macro_auc"):
        vals = [np.nan if h["val"][key] is None else h["val"][key] for h in history]
        ax2.plot(ep, vals, "o-", label=key)
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _frame_sizes_json(frame_sizes: Sequence[tuple[int, int]] | None) -> list[list[int]] | None:
    """``frame_sizes`` validated, as JSON (None stays None: frames at the model's size)."""
    return None if frame_sizes is None else [list(s) for s in data_frame_sizes(frame_sizes)]


#: Synthetic validation frames (and slabs) come from the stream ``seed + VAL_SEED_OFFSET``: no
#: frame is shared with training.
VAL_SEED_OFFSET = 7_919_003


def _n_val(n_val: int | None, n_train: int, val_fraction: float, n_classes: int) -> int:
    """Synthetic validation size: ``n_val``, else ``val_fraction`` of training, at least one per
    class."""
    nv = n_val if n_val is not None else max(n_classes, round(n_train * val_fraction))
    return _positive_int(nv, "n_val")


def _data(
    data: str | Path,
    class_names: Sequence[str],
    size: tuple[int, int] | Sequence[tuple[int, int]],
    n_train: int,
    n_val: int | None,
    val_fraction: float,
    seed: int,
    split: Any = None,
) -> tuple[FrameProvider, FrameProvider]:
    """(train, validation) frames; ``size`` is the phantoms' size or size mix."""
    if str(data) == "synthetic":
        nv = _n_val(n_val, n_train, val_fraction, len(class_names))
        return (
            SyntheticFrames(n_train, size, seed, class_names, split=split),
            SyntheticFrames(nv, size, seed + VAL_SEED_OFFSET, class_names, split=split),
        )
    frames = open_frames(data, class_names, seed=seed)
    tr, va = stratified_split(frames.labels, val_fraction, seed)
    return FrameSubset(frames, tr), FrameSubset(frames, va)


def _check_slab_run(
    arch: str,
    model: nn.Module,
    x0: tuple[torch.Tensor, ...],
    data: Any,
    split: Any,
    teacher: nn.Module | None,
    frozen_encoder: bool,
    aux_weight: float,
    augment: bool | str,
) -> None:
    """What a slab classifier's run supports: two inputs (volume, mask prompt), class logits
    only, synthetic cine slabs (:mod:`export.slab_data`), augmentation on or off (the slab's
    own: flip, gain / gamma, prompt perturbation), no teacher / split / frozen encoder / deep
    supervision / per-frame ultrasound augmentation -- anything else is refused by name rather
    than ignored."""
    if len(x0) != 2 or "mask_logits" in model.output_names:
        raise InputError(
            f"{arch} takes {len(x0)} inputs and returns {list(model.output_names)}; train() "
            "feeds one frame, or a (volume, mask prompt) slab to a class-only model"
        )
    refused = {
        "data other than 'synthetic' (slabs are drawn from sdk.synthetic.cine)": str(data)
        != "synthetic",
        "split": split is not None,
        "teacher": teacher is not None,
        "frozen_encoder": frozen_encoder,
        "aux_weight": aux_weight > 0,
        "augment='ultrasound' (slabs: augment=True, export.slab_data)": augment == "ultrasound",
    }
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise InputError(f"{arch} is a slab classifier; its runs take no {', '.join(bad)}")


def _slabs(
    model: nn.Module,
    size: tuple[int, int] | Sequence[tuple[int, int]],
    n_train: int,
    n_val: int | None,
    val_fraction: float,
    seed: int,
) -> tuple[CineSlabs, CineSlabs]:
    """(train, validation) cine slabs of the model's depth, validation from another stream."""
    names = model.class_names
    nv = _n_val(n_val, n_train, val_fraction, len(names))
    depth = int(model.input_depth)
    return (
        CineSlabs(n_train, depth, size, seed, names),
        CineSlabs(nv, depth, size, seed + VAL_SEED_OFFSET, names),
    )


def _split_json(split: Any, data: str | os.PathLike[str]) -> Any:
    """``split`` as the run records it (None, a name, or the split's dict); refused for
    folder data, whose frames have no generator factors to select."""
    if split is None:
        return None
    if str(data) != "synthetic":
        raise InputError(f"split selects synthetic phantoms; {data} is a dataset folder")
    if isinstance(split, str):
        resolve_split(split)  # an unknown name fails here, before anything is written
        return split
    return json.loads(json.dumps(resolve_split(split).to_dict()))


#: Seed stream of supplement group ``k`` (0-based): ``seed + SUPPLEMENT_SEED_OFFSET * (k + 1)``,
#: apart from the training stream (``seed``) and the validation one (``VAL_SEED_OFFSET``).
SUPPLEMENT_SEED_OFFSET = 5_003_011


def _supplement_json(
    supplement: Sequence[Mapping[str, Any]] | None, data: Any, n_train: int
) -> list[dict[str, Any]]:
    """``supplement`` checked and as the run records it: ``[{"n": int, "split": dict}]``."""
    if not supplement:
        return []
    if str(data) != "synthetic":
        raise InputError(f"supplement draws synthetic phantoms; {data} is a dataset folder")
    if isinstance(supplement, Mapping) or not isinstance(supplement, Sequence):
        raise InputError(
            'supplement is a list of {"n": N, "split": SPLIT} groups, got '
            f"{type(supplement).__name__}"
        )
    out: list[dict[str, Any]] = []
    for k, g in enumerate(supplement):
        if not isinstance(g, Mapping) or set(g) != {"n", "split"}:
            raise InputError(f'supplement group {k} must be {{"n": N, "split": SPLIT}}, got {g!r}')
        n = _positive_int(g["n"], f"supplement group {k}'s n")
        sp = resolve_split(g["split"])
        if sp is None:
            raise InputError(f"supplement group {k} needs a split (the region to draw from)")
        out.append({"n": n, "split": json.loads(json.dumps(sp.to_dict()))})
    total = sum(g["n"] for g in out)
    if total >= n_train:
        raise InputError(
            f"the supplement's {total} frames replace training frames and must leave some of "
            f"the n_train={n_train}; lower them or raise n_train"
        )
    return out


def _supplement(
    frames: FrameProvider,
    groups: list[dict[str, Any]],
    class_names: Sequence[str],
    sizes: Any,
    seed: int,
    split: Any,
) -> FrameProvider:
    """The first ``len(frames) - sum(n)`` training phantoms followed by each group's, drawn in
    its split intersected with the run's (``train(supplement=...)``)."""
    base = resolve_split(split)
    keep = len(frames) - sum(g["n"] for g in groups)
    parts: list[FrameProvider] = [FrameSubset(frames, range(keep))]
    for k, g in enumerate(groups):
        sp = synthetic.Split.from_dict(g["split"])
        if base is not None:
            sp = sp.intersect(base)
        seed_k = seed + SUPPLEMENT_SEED_OFFSET * (k + 1)
        parts.append(SyntheticFrames(g["n"], sizes, seed_k, class_names, split=sp))
    return ConcatFrames(parts)


class _FrozenEncoder:
    """``model.encode`` with the encoder frozen (``train(frozen_encoder=True)``): no gradient,
    eval mode (BatchNorm statistics kept), and each distinct input computed once -- the outputs
    are kept in memory under a hash of the input sample's bytes and reused on every later epoch
    and validation pass. Installed as an instance attribute, so the model's state dict, its
    checkpoint and its export are those of the plain model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.encode = model.encode  # the bound method of the class
        self.store: dict[bytes, Any] = {}
        for p in model.encoder.parameters():
            p.requires_grad_(False)

    @staticmethod
    def _key(x: torch.Tensor) -> bytes:
        import hashlib

        a = x.detach().cpu().contiguous().numpy()
        return hashlib.blake2b(
            a.tobytes(), digest_size=16, person=str(a.shape).encode()[:16]
        ).digest()

    def __call__(self, x: torch.Tensor) -> Any:
        keys = [self._key(x[i]) for i in range(len(x))]
        miss = sorted({i for i, k in enumerate(keys) if k not in self.store})
        if miss:
            enc = self.model.encoder
            was = enc.training
            enc.eval()
            try:
                with torch.no_grad():
                    out = self.encode(x[miss])
            finally:
                enc.train(was)
            for j, i in enumerate(miss):
                self.store[keys[i]] = _map_tensors(out, lambda t, j=j: t[j].detach().clone())
        return _stack([self.store[k] for k in keys], x.device)


def _map_tensors(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, list | tuple):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    raise InputError(f"frozen_encoder: encode() returned a {type(obj).__name__}")


def _stack(items: list[Any], dev: torch.device) -> Any:
    """Per-sample cached structures (tensors in nested tuples / lists) -> one batch."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(items).to(dev)
    return type(first)(_stack([it[i] for it in items], dev) for i in range(len(first)))


def _resume_point(
    resumed: Any, run: dict[str, Any], out: Path, keys: tuple[str, ...] = ()
) -> tuple[int, list[dict[str, Any]], float]:
    """(first epoch to run, metrics history before it, best score so far) of a resumed run;
    refuses to resume with settings that differ from the saved run's."""
    if resumed is None:
        return 0, [], -math.inf
    saved = dict(resumed.train.get("run", {}))
    if "alpha_kd" not in saved and saved.get("teacher") is None:
        saved = {**_RESUME_LEGACY, **saved}  # a run of the trainer before these settings
    diff = {
        k: (saved.get(k), run.get(k)) for k in keys or _RESUME_KEYS if saved.get(k) != run.get(k)
    }
    if diff:
        raise InputError(
            f"cannot resume {out}: settings differ from the saved run "
            f"(saved, given): {diff}; resume with the saved settings"
        )
    start = resumed.epoch + 1
    history: list[dict[str, Any]] = []
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        history = [h for h in json.loads(metrics_path.read_text())["epochs"] if h["epoch"] < start]
    return start, history, max((_score(h["val"]) for h in history), default=-math.inf)


def train(
    arch: str,
    data: str | os.PathLike[str] = "synthetic",
    out_dir: str | os.PathLike[str] = "runs/train",
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "auto",
    *,
    size: int | tuple[int, int] | None = None,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
    n_train: int = 600,
    n_val: int | None = None,
    val_fraction: float = 0.2,
    lam: float = 0.6,
    weight_decay: float = 1e-4,
    class_weighting: bool = True,
    augment: bool | str = True,
    model_kwargs: dict[str, Any] | None = None,
    num_workers: int = 0,
    threads: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    split: Any = None,
    teacher: str | os.PathLike[str] | None = None,
    T: float = 4.0,
    alpha_kd: float | None = None,
    beta_pixel: float | None = None,
    gamma_feat: float = 0.0,
    aux_weight: float = 0.0,
    warmup_steps: int = 0,
    pos_weight: float | None = None,
    frozen_encoder: bool = False,
    supplement: Sequence[Mapping[str, Any]] | None = None,
    precision: str = "fp32",
    presence_weight: float = 0.0,
    batch_dice: bool = False,
) -> Path:
    """Train ``arch`` on ``data`` (optionally distilling ``teacher``); return the JSON of its
    best checkpoint.

    Args:
        arch: a registered architecture (:func:`export.models.list_models`).
        data: ``"synthetic"``, a BUSI folder, a folder with ``labels.csv`` or a CSV file.
        out_dir: run folder (created). Refused if it already holds a run, unless ``resume``.
        epochs: total epochs of the run (a resumed run continues up to it).
        batch_size, lr, weight_decay: AdamW settings; the learning rate decays on a cosine.
        seed: model init, data order, augmentation, synthetic frames and the split.
        resume: continue from ``out_dir/last`` with the same settings (``epochs`` may grow);
            starts afresh when ``out_dir`` holds no checkpoint yet.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``.
        size: input side or ``(h, w)`` (default: the teacher's input size with a teacher, else
            the model's ``input_size``); synthetic frames are drawn at this size unless
            ``frame_sizes`` says otherwise.
        frame_sizes: phantom sizes ``[(H, W), ...]`` to draw synthetic frames at (each frame
            one of them, by its seed), e.g. scanner sizes, so the model learns from what the
            serving path makes of such frames (default: ``size``).
        n_train, n_val: synthetic frame counts (n_val default ``val_fraction * n_train``).
        val_fraction: held-out fraction of a folder dataset (stratified by class).
        lam: λ of ``λ L_seg + (1 - λ) L_cls``.
        class_weighting: balanced class weights in the CE (from the training split's counts).
        augment: random flips / rotation / crop / gain / speckle on the training frames;
            ``"ultrasound"`` adds :class:`export.us_augment.UltrasoundAugment`
            (:meth:`export.data.Augment.from_option`).
        model_kwargs: factory options (e.g. ``{"pretrained": False}``); with a teacher,
            ``class_names`` default to the teacher's.
        num_workers: DataLoader worker processes (0 = in the main process).
        threads: torch CPU threads for this call (restored after); None keeps torch's setting.
            On a CPU shared with other jobs, 1 is often fastest: OpenMP threads that wait on
            each other stall badly when cores are oversubscribed.
        progress: tqdm progress bars.
        stop_after: train at most this many epochs in this call, then return (a time-sliced
            job continues with ``resume=True``).
        split: synthetic data only: draw training and validation phantoms inside this region
            of the generator's factors (a :class:`sdk.synthetic.Split`, its dict, or a name
            such as ``"ood-train"``: every factor the OOD suite tests held out, so
            ``benchmarks/ood_suite.py`` scores the run on regions it never saw).
        teacher: a checkpoint of this function (stem, ``.json`` or ``.safetensors``) to
            distill; it is evaluated on the validation frames (``teacher_val`` in
            ``metrics.json``) and, when some KD weight is > 0, run frozen on every batch.
        T: softmax temperature of the class KD (> 0).
        alpha_kd, beta_pixel: weights of the class KD and the pixel KD (>= 0); default 1.0
            with a teacher, 0 without (both 0 with a teacher: the no-teacher baseline that
            records the teacher as its reference, on the same frames and budget).
        gamma_feat: weight of the feature KD (>= 0; both models must return ``features``).
        aux_weight: weight of the deep supervision on ``forward_train``'s ``aux_mask_logits``
            (>= 0; 0 trains on the contract's outputs alone).
        warmup_steps: linear learning-rate warm-up over this many first optimizer steps (0:
            none).
        pos_weight: weight of the lesion pixels in the mask BCE (None: 1).
        presence_weight: weight of the image-level lesion-presence term
            (:func:`export.losses.presence_loss`) in the segmentation loss (0: off). Aimed at
            false blobs on lesion-free frames, where the per-image soft Dice is flat. At 1 on
            nmtnet it cut such blobs (30 -> 23 % of normal frames) but halved the lesion masks
            and lost 11 Dice points (benchmarks/results/seed-presence-ab-nmtnet.md): off unless
            measured otherwise.
        batch_dice: the mask's soft Dice over the whole batch (nnU-Net's batch Dice,
            :func:`export.losses.dice_loss` ``batch``) instead of per image: a lesion-free
            frame's false pixels then enter the Dice's denominator (per image its Dice term is
            flat). Deep supervision follows it. On nmtnet at 600 x 10 it cut the blobs on
            normal frames (30 -> 10 %) but unmasked a third of the benign lesions, lesion Dice
            -11 points (benchmarks/results/seed-batch-dice-ab-nmtnet.md): off unless measured
            otherwise.
        frozen_encoder: keep the model's (pretrained) encoder as it is -- no gradient, eval
            mode -- and compute its outputs once per distinct input, reused on every epoch
            (:class:`_FrozenEncoder`); the training frames then keep the augmentation drawn for
            the first epoch, so each epoch sees the same views. For encoders too slow to train
            on a CPU: sam_mtl's LiteMedSAM TinyViT takes ~2.3 s a 256×256 frame on 2 cores,
            its decoder and head ~0.05 s. Models with an ``encoder`` and ``encode`` only
            (:class:`export.models._contract.EncoderDecoderModel`).
        supplement: synthetic data only: groups ``{"n": N, "split": SPLIT}`` of training
            phantoms drawn inside a region (a :class:`sdk.synthetic.Split` / its dict / a
            name), intersected with ``split``; they *replace* that many of the ``n_train``
            frames (the same frames seen, the same optimizer steps) and come from their own
            seed streams. Oversamples what the generator draws rarely -- e.g. hyperechoic
            masses, ~3 % of its lesions, which a model trained on the plain mix never outlines
            -- while each group keeps the generator's picture of it. The validation frames
            stay the plain mix (:func:`_supplement`).
        precision: ``"fp32"``; ``"bf16"``: the training forward passes (student and teacher)
            under bfloat16 autocast, in channels-last memory on a CPU -- the weights, the
            losses and the optimizer stay float32, validation runs in float32. 2.4-2.9x faster
            training steps for mtl_oca, nmtnet and acsnet on a 2-core Xeon with AMX
            (2026-12-03); refused where bf16 is not in hardware (:data:`_BF16_CPU_FLAGS`;
            emulated, it is slower). ``"auto"``: bf16 where it is in hardware, else fp32. The
            run records what ran; a resumed run must run the same.

    Returns:
        Path of ``out_dir/best.json`` (load it with :func:`export.checkpoint.load_checkpoint`).

    Raises:
        InputError: unknown arch, bad settings, KD weights without a teacher, teacher / student
            class names that differ, empty data, an occupied ``out_dir``, settings that differ
            from the run being resumed.
        ModelError: a teacher checkpoint that is missing, corrupt or does not fit its config.
        sdk.errors.SourceError: dataset folder problems.
        BackendUnavailableError: CUDA asked for and absent.
    """
    if arch not in list_models():
        raise InputError(f"unknown model {arch!r}; choose from {', '.join(list_models())}")
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    n_train = _positive_int(n_train, "n_train")
    num_workers = int(num_workers)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if stop_after is not None:
        stop_after = _positive_int(stop_after, "stop_after")
    if threads is not None:
        threads = _positive_int(threads, "threads")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise InputError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    supplement_json = _supplement_json(supplement, data, n_train)
    default_kd = 1.0 if teacher is not None else 0.0
    alpha_kd = default_kd if alpha_kd is None else alpha_kd
    beta_pixel = default_kd if beta_pixel is None else beta_pixel
    loss_args = dict(
        T=T, alpha_kd=alpha_kd, beta_pixel=beta_pixel, gamma_feat=gamma_feat, aux_weight=aux_weight
    )
    uses_teacher = TrainingLoss(
        MultiTaskLoss(lam, None, pos_weight, presence_weight, batch_dice), **loss_args
    ).uses_teacher
    if uses_teacher and teacher is None:
        raise InputError(
            "alpha_kd / beta_pixel / gamma_feat > 0 need a teacher checkpoint; pass teacher, or "
            "set them to 0 to train without one"
        )
    with _torch_threads(threads):
        dev = resolve_device(device)
        run_precision = _precision(precision, dev)
        out = Path(out_dir)
        _, last_js = checkpoint_paths(out / "last")
        model_kwargs = dict(model_kwargs or {})
        t_model: nn.Module | None = None
        t_info: dict[str, Any] | None = None
        if teacher is not None:
            t_model, t_info = _frozen_teacher(Path(teacher), dev)
            if "class_names" in model_defaults(arch):
                model_kwargs.setdefault("class_names", list(t_model.class_names))

        resumed = None
        if last_js.exists():
            if not resume:
                raise InputError(
                    f"{out} already holds a training run ({last_js.name}); pass resume=True "
                    "(--resume) to continue it, or choose another output folder"
                )
            resumed = load_checkpoint(last_js, device="cpu")
            model = resumed.model
        else:
            torch.manual_seed(seed)
            model = create_model(arch, **model_kwargs)
        if t_model is not None and tuple(model.class_names) != tuple(t_model.class_names):
            raise InputError(
                f"student classes {list(model.class_names)} differ from the teacher's "
                f"{list(t_model.class_names)}; KD needs the same classes in the same order "
                "(pass model_kwargs={'class_names': ...})"
            )
        if frozen_encoder and not (
            isinstance(getattr(model, "encoder", None), nn.Module) and hasattr(model, "encode")
        ):
            raise InputError(
                f"{arch} has no separate encoder (an `encoder` module and `encode`): "
                "frozen_encoder must be False"
            )
        if aux_weight > 0 and not getattr(model, "has_aux_masks", False):
            raise InputError(
                f"{arch} returns no auxiliary mask outputs from forward_train "
                "(has_aux_masks is False): aux_weight must be 0"
            )
        if gamma_feat > 0 and t_model is not None:
            lacking = [
                name
                for name, net in ((arch, model), (f"teacher {t_info['arch']}", t_model))
                if not getattr(net, "has_features", False)
            ]
            if lacking:
                raise InputError(
                    f"gamma_feat > 0 needs features from both models; {', '.join(lacking)} "
                    "returns none (no mask-guided pooling head): set gamma_feat=0"
                )
        default_hw = tuple(t_model.input_size) if t_model is not None else model.input_size
        hw = _size(size, default_hw, int(getattr(model, "size_divisor", 32)))
        model.input_size = hw
        run = {
            "arch": arch,
            "data": str(data),
            "size": list(hw),
            "frame_sizes": _frame_sizes_json(frame_sizes),
            "seed": int(seed),
            "n_train": n_train,
            "n_val": n_val,
            "val_fraction": float(val_fraction),
            "batch_size": batch_size,
            "lr": float(lr),
            "lam": float(lam),
            "weight_decay": float(weight_decay),
            "class_weighting": bool(class_weighting),
            "augment": augment if isinstance(augment, str) else bool(augment),
            "model_kwargs": json.loads(json.dumps(model_kwargs)),
            "epochs": epochs,
            "split": _split_json(split, data),
            "teacher": None if t_info is None else t_info["path"],
            "T": float(T),
            "alpha_kd": float(alpha_kd),
            "beta_pixel": float(beta_pixel),
            "gamma_feat": float(gamma_feat),
            "aux_weight": float(aux_weight),
            "warmup_steps": warmup_steps,
            "pos_weight": pos_weight,
        }
        if frozen_encoder:  # only when set: runs saved before the option resume unchanged
            run["frozen_encoder"] = True
        if supplement_json:  # likewise
            run["supplement"] = supplement_json
        if run_precision != "fp32":  # likewise
            run["precision"] = run_precision
        if presence_weight:  # likewise
            run["presence_weight"] = float(presence_weight)
        if batch_dice:  # likewise
            run["batch_dice"] = True
        start, history, best = _resume_point(resumed, run, out)
        out.mkdir(parents=True, exist_ok=True)

        x0 = model.example_input(1, hw)
        slab = isinstance(x0, tuple)  # a slab classifier: (volume, mask prompt) -> class
        if slab:
            _check_slab_run(
                arch, model, x0, data, split, t_model, frozen_encoder, aux_weight, augment
            )
            train_frames, val_frames = _slabs(
                model, frame_sizes or hw, n_train, n_val, val_fraction, seed
            )
        else:
            sizes = frame_sizes or hw
            train_frames, val_frames = _data(
                data, model.class_names, sizes, n_train, n_val, val_fraction, seed, split
            )
            if supplement_json:
                train_frames = _supplement(
                    train_frames, supplement_json, model.class_names, sizes, seed, split
                )
        if len(train_frames) == 0 or len(val_frames) == 0:
            raise InputError(f"{data}: no frame to train or validate on; add data")
        model.to(dev)
        if run_precision == "bf16" and dev.type == "cpu" and not slab:
            # oneDNN's bf16 convolutions are fastest channels-last (nmtnet's step 0.74 -> 0.54 s)
            model.to(memory_format=torch.channels_last)
        if frozen_encoder:
            model.encode = _FrozenEncoder(model)
        mask_hw = hw if slab else _mask_hw(model, hw, dev)
        aug = Augment.from_option(augment)

        def dataset(
            net: nn.Module,
            frames: Any,
            augmentation: Augment | None,
            mask_size: tuple[int, ...] = mask_hw,
        ) -> MultiTaskDataset | SlabDataset:
            norm = normalization(net)
            if slab:
                return SlabDataset(
                    frames,
                    tuple(net.input_size),
                    mean=norm["mean"],
                    std=norm["std"],
                    augment=augmentation is not None,
                    seed=seed,
                )
            return MultiTaskDataset(
                frames,
                input_size=tuple(net.input_size),
                input_channels=net.input_channels,
                mean=norm["mean"],
                std=norm["std"],
                mask_size=mask_size,
                augment=augmentation,
                seed=seed,
            )

        run_teacher = t_model if uses_teacher else None
        t_train_ds = None
        if run_teacher is not None:
            same_input = (
                tuple(run_teacher.input_size) == hw
                and tuple(run_teacher.input_channels) == tuple(model.input_channels)
                and normalization(run_teacher) == normalization(model)
            )
            # Same seed + same augmentation: the teacher sees the very frame the student sees.
            t_train_ds = None if same_input else dataset(run_teacher, train_frames, aug)
        train_ds = _PairDataset(dataset(model, train_frames, aug), t_train_ds)
        val_ds = dataset(model, val_frames, None)

        counts = np.bincount(np.asarray(train_frames.labels), minlength=len(model.class_names))
        weights = balanced_class_weights(counts.tolist()) if class_weighting else None
        criterion = TrainingLoss(
            MultiTaskLoss(lam, weights, pos_weight, presence_weight, batch_dice),
            report_kd=t_model is not None,
            **loss_args,
        ).to(dev)
        opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
        )
        if resumed is not None and resumed.optimizer_state is not None:
            opt.load_state_dict(resumed.optimizer_state)
        if dev.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        pin = dev.type == "cuda"
        summary: dict[str, Any] = {
            "train": describe(train_frames),
            "val": describe(val_frames),
            "class_weights": None if weights is None else weights.tolist(),
            "mask_size": list(mask_hw),
            "device": str(dev),
        }
        info_extra: dict[str, Any] = {}
        if t_model is not None:
            # The reference the report compares with: the teacher on the same val frames, its
            # masks scored at its own mask resolution (a teacher's mask may be finer than the
            # student's: nmtnet's 256x256 for edge_s's 64x64).
            t_mask_hw = _mask_hw(t_model, tuple(t_model.input_size), dev)
            t_val_ds = dataset(t_model, val_frames, None, t_mask_hw)
            t_val = evaluate(
                t_model, _loader(t_val_ds, batch_size, False, seed, 0, 0, pin), None, dev
            )
            summary.update(teacher=t_info, teacher_val=t_val)
            info_extra["distillation"] = {
                "teacher": t_info,
                "T": float(T),
                "alpha_kd": float(alpha_kd),
                "beta_pixel": float(beta_pixel),
                "gamma_feat": float(gamma_feat),
                "pixel_kd": "binary KL of sigma(student) to area-resized sigma(teacher)",
                "class_kd": "T^2 KL(softmax(t/T) || softmax(s/T))",
                "feature_kd": "similarity-preserving KD on lesion-pooled features",
                "teacher_val": t_val,
            }

        kind = "" if t_model is None else ("distill " if uses_teacher else "baseline ")
        steps = len(_loader(train_ds, batch_size, True, seed, 0, 0, pin))
        lr_at = _lr_schedule(float(lr), epochs, steps, warmup_steps)
        end = epochs if stop_after is None else min(epochs, start + stop_after)
        for epoch in range(start, end):
            t0 = time.perf_counter()
            torch.manual_seed(seed * 1_000_003 + epoch)
            train_ds.set_epoch(0 if frozen_encoder else epoch)  # frozen: the cached views
            loader = _loader(train_ds, batch_size, True, seed, epoch, num_workers, pin)
            desc = f"{kind}{arch} epoch {epoch + 1}/{epochs}"
            train_loss = _train_epoch(
                model,
                run_teacher,
                loader,
                criterion,
                opt,
                dev,
                desc,
                progress,
                lr_at(epoch),
                bf16=run_precision == "bf16",
            )
            val = evaluate(
                model,
                _loader(val_ds, batch_size, False, seed, 0, num_workers, pin),
                criterion.task,
                dev,
            )
            record = {
                "epoch": epoch,
                "lr": lr_at(epoch)(steps - 1),
                "seconds": time.perf_counter() - t0,
                "train": train_loss,
                "val": val,
            }
            history.append(record)
            info = {"run": run, "val": val, **info_extra}
            save_checkpoint(out / "last", model, epoch=epoch, optimizer=opt, train=info)
            if _score(val) > best:
                best = _score(val)
                save_checkpoint(out / "best", model, epoch=epoch, train=info)
            best_epoch = max(history, key=lambda h: _score(h["val"]))["epoch"]
            _write_json(
                out / "metrics.json",
                {"run": run, "data": summary, "best_epoch": best_epoch, "epochs": history},
            )
            _plot(history, out / "curves.png", _title(arch, data, t_info, run))
            if progress:
                tqdm.write(_summary_line(desc, record))
        if not (out / "best.json").exists():
            raise InputError(f"{out}: no epoch was trained (epochs={epochs} already reached?)")
        return out / "best.json"


def _title(arch: str, data: Any, t_info: dict[str, Any] | None, run: dict[str, Any]) -> str:
    if t_info is None:
        return f"{arch} on {data}"
    kd = f"T={run['T']:g}, α={run['alpha_kd']:g}, β={run['beta_pixel']:g}, γ={run['gamma_feat']:g}"
    return f"{arch} from teacher {t_info['arch']} ({kd}) on {data}"
