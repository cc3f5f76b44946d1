"""Knowledge distillation: a trained teacher checkpoint → a student checkpoint (issue #5).

NNCF 3 removed its knowledge distillation, so this is ours. The student minimizes

    L = L_task + alpha_kd · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + beta_pixel · L_pixel

* ``L_task``: the training loss of :mod:`export.train` (:class:`export.losses.MultiTaskLoss`,
  ``λ (BCE + Dice) + (1 - λ) CE`` with balanced class weights) on the ground truth.
* class KD (Hinton et al., 2015): KL divergence between the temperature-softened class
  distributions; the ``T²`` factor keeps its gradient scale independent of ``T``.
* pixel KD on the mask logits: the teacher's lesion probability ``σ(m_t)``, resampled to the
  student's mask grid (area averaging when shrinking, bilinear when enlarging), is a soft target
  for the student's logits under a **binary cross-entropy**, reported minus the target's
  entropy (i.e. the per-pixel binary KL: 0 when the student matches, same gradient as BCE).
  BCE rather than MSE on logits because: (1) it compares probabilities, so background pixels
  where the teacher says -15 and the student -8 (both "no lesion") cost ~nothing, whereas MSE
  on logits would spend the student's small capacity matching confidence it cannot use;
  (2) it is bounded per pixel and on the same scale as the task BCE, so ``beta_pixel`` ~ 1 is
  a sensible default without tuning; (3) teachers with a higher-resolution mask are averaged
  in probability space, which is what the student's coarser cell should predict.

Teacher and student may differ in input channels, normalization and size: each batch carries
the same (augmented) frames preprocessed twice by :func:`sdk.kernels.preprocess`, once per
model. Augmentation randomness is a function of ``(seed, epoch, index)`` only
(:class:`export.data.MultiTaskDataset`), so both datasets see the very same augmented frame.

With ``alpha_kd = beta_pixel = 0`` the teacher is not run at all: the same student, frames,
seed, schedule and budget, trained on the task loss alone -- the no-teacher baseline the report
compares against.

Outputs in ``out_dir`` (as :func:`export.train.train`): ``last`` / ``best`` checkpoints,
``metrics.json`` (with the teacher's validation metrics on the same frames) and ``curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from export.checkpoint import checkpoint_paths, load_checkpoint, normalization, save_checkpoint
from export.data import Augment, MultiTaskDataset, describe
from export.losses import MultiTaskLoss, balanced_class_weights
from export.models import create_model, list_models, model_defaults
from export.train import (
    _data,
    _frame_sizes_json,
    _loader,
    _plot,
    _positive_int,
    _resume_point,
    _score,
    _size,
    _summary_line,
    _torch_threads,
    _write_json,
    evaluate,
    resolve_device,
)
from sdk.errors import InputError

__all__ = ["DistillLoss", "class_kd_loss", "distill", "pixel_kd_loss", "resize_probs"]

# Settings that must be equal when resuming (epochs may grow).
_RESUME_KEYS = (
    "arch",
    "teacher",
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
    "T",
    "alpha_kd",
    "beta_pixel",
)


def resize_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample probabilities ``(B, 1, h, w)`` to ``size``: area averaging when shrinking (the
    fraction of a coarse cell the teacher calls lesion), bilinear when enlarging."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    if probs.shape[-2] >= size[0] and probs.shape[-1] >= size[1]:
        return F.interpolate(probs, size=size, mode="area")
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Pixel-mean binary KL ``KL(Bern(p_t) ‖ Bern(σ(s)))`` with ``p_t = σ(teacher)`` resized to
    the student's grid.

    Args:
        student_logits: float ``(B, 1, hs, ws)``.
        teacher_logits: float ``(B, 1, ht, wt)`` (any size; no gradient flows into it).

    Returns:
        scalar >= 0 (0 iff the student's probabilities equal the teacher's on every cell).
    """
    if student_logits.ndim != 4 or teacher_logits.ndim != 4:
        raise InputError(
            f"mask logits must be (B, 1, h, w); got student {tuple(student_logits.shape)}, "
            f"teacher {tuple(teacher_logits.shape)}"
        )
    p = resize_probs(torch.sigmoid(teacher_logits.detach().float()), student_logits.shape[-2:])
    p = p.clamp(0.0, 1.0)
    bce = F.binary_cross_entropy_with_logits(student_logits.float(), p)
    # Subtracting the target's entropy turns BCE into the binary KL: same gradient, but the
    # logged value reads 0 at a perfect match instead of the teacher's own uncertainty.
    eps = 1e-7
    pc = p.clamp(eps, 1.0 - eps)
    entropy = -(pc * pc.log() + (1.0 - pc) * (1.0 - pc).log()).mean()
    return bce - entropy


def class_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float
) -> torch.Tensor:
    """``T² · KL(softmax(t / T) ‖ softmax(s / T))``, mean over the batch.

    Args:
        student_logits, teacher_logits: float ``(B, K)``.
        T: temperature > 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"student class logits {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} differ; both must be (B, K) over the same classes"
        )
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_t = F.log_softmax(teacher_logits.detach().float() / T, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (T * T)


class DistillLoss(nn.Module):
    """``L_task + alpha_kd · class KD + beta_pixel · pixel KD`` (see the module docstring).

    ``forward(student_out, mask, labels, teacher_out)`` → ``(total, parts)``, ``parts`` the
    detached ``{"bce", "dice", "seg", "cls", "task", "kd_cls", "kd_pixel", "total"}`` floats.
    ``teacher_out`` may be None only when both KD weights are 0.
    """

    def __init__(self, task: MultiTaskLoss, T: float, alpha_kd: float, beta_pixel: float) -> None:
        super().__init__()
        for name, v in (("alpha_kd", alpha_kd), ("beta_pixel", beta_pixel)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(T, int | float) and math.isfinite(T) and T > 0):
            raise InputError(f"T (temperature) must be a positive number, got {T!r}")
        self.task, self.T = task, float(T)
        self.alpha_kd, self.beta_pixel = float(alpha_kd), float(beta_pixel)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha_kd > 0 or self.beta_pixel > 0

    def forward(
        self,
        student_out: dict[str, torch.Tensor],
        mask: torch.Tensor,
        labels: torch.Tensor,
        teacher_out: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        task, parts = self.task(student_out, mask, labels)
        zero = task.new_zeros(())
        kd_cls = kd_pix = zero
        if self.uses_teacher:
            if teacher_out is None:
                raise InputError("KD weights are non-zero but no teacher outputs were given")
            kd_cls = class_kd_loss(student_out["class_logits"], teacher_out["class_logits"], self.T)
            kd_pix = pixel_kd_loss(student_out["mask_logits"], teacher_out["mask_logits"])
        total = task + self.alpha_kd * kd_cls + self.beta_pixel * kd_pix
        parts = {
            **{k: v for k, v in parts.items() if k != "total"},
            "task": float(task.detach()),
            "kd_cls": float(kd_cls.detach()),
            "kd_pixel": float(kd_pix.detach()),
            "total": float(total.detach()),
        }
        return total, parts


class _PairDataset(Dataset):
    """Items ``(x_student, mask, label, x_teacher)``; ``x_teacher`` is an empty tensor when the
    teacher takes exactly the student's input (no second preprocessing) or is not run."""

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


def _distill_epoch(
    student: nn.Module,
    teacher: nn.Module | None,
    loader: Any,
    criterion: DistillLoss,
    opt: torch.optim.Optimizer,
    dev: torch.device,
    desc: str,
    progress: bool,
) -> dict[str, float]:
    """One pass; returns the sample-weighted mean of every loss part."""
    student.train()
    sums: dict[str, float] = {}
    seen = 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch")
    for x, m, y, xt in bar:
        x, m, y = x.to(dev), m.to(dev), y.to(dev)
        t_out = None
        if teacher is not None:
            # The teacher is frozen (eval mode, no graph): gradients reach the student only.
            with torch.no_grad():
                t_out = teacher(x if xt.numel() == 0 else xt.to(dev))
        total, parts = criterion(student(x), m, y, t_out)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{parts['total']:.3f}", kd=f"{parts['kd_pixel']:.3f}")
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _frozen_teacher(path: Path, dev: torch.device) -> tuple[nn.Module, dict[str, Any]]:
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


def distill(
    teacher_ckpt: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    student: str = "edge_s",
    data: str | os.PathLike[str] = "synthetic",
    epochs: int = 12,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "auto",
    *,
    T: float = 4.0,
    alpha_kd: float = 1.0,
    beta_pixel: float = 1.0,
    size: int | tuple[int, int] | None = None,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
    n_train: int = 600,
    n_val: int | None = None,
    val_fraction: float = 0.2,
    lam: float = 0.6,
    weight_decay: float = 1e-4,
    class_weighting: bool = True,
    augment: bool = True,
    student_kwargs: dict[str, Any] | None = None,
    num_workers: int = 0,
    threads: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train ``student`` on ``data`` with the teacher's soft targets; return its best checkpoint.

    Args:
        teacher_ckpt: a checkpoint of :func:`export.train.train` (stem, ``.json`` or
            ``.safetensors``). May be None only for the no-teacher baseline
            (``alpha_kd = beta_pixel = 0``); when given with zero weights it is recorded as the
            reference and used for the defaults (size, class names) but never run.
        out_dir: run folder; refused if it already holds a run, unless ``resume``.
        student: a registered architecture (default the edge student).
        data: ``"synthetic"`` or a dataset folder, as :func:`export.train.train` (same seed and
            counts as the teacher's run give the same frames).
        epochs, batch_size, lr, weight_decay, seed, device, lam, class_weighting, augment,
        num_workers, threads, progress, stop_after, n_train, n_val, val_fraction: as
            :func:`export.train.train` (AdamW, cosine decay per epoch, deterministic by seed).
        T: softmax temperature of the class KD (> 0).
        alpha_kd: weight of ``T² · KL`` on the class logits (>= 0).
        beta_pixel: weight of the pixel KD on the mask logits (>= 0).
        size: student input side or ``(h, w)``; default the teacher's input size (else the
            student's own).
        frame_sizes: phantom size mix, as :func:`export.train.train`.
        student_kwargs: student factory options; ``class_names`` default to the teacher's.

    Returns:
        ``out_dir/best.json``.

    Raises:
        InputError: bad settings, KD weights without a teacher, teacher / student class names
            that differ, an occupied ``out_dir``, settings that differ from a resumed run.
        ModelError: a teacher checkpoint that is missing, corrupt or whose config does not
            match its architecture.
    """
    if student not in list_models():
        raise InputError(f"unknown student {student!r}; choose from {', '.join(list_models())}")
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    n_train = _positive_int(n_train, "n_train")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if stop_after is not None:
        stop_after = _positive_int(stop_after, "stop_after")
    if threads is not None:
        threads = _positive_int(threads, "threads")
    criterion_check = DistillLoss(MultiTaskLoss(lam), T, alpha_kd, beta_pixel)  # validates
    uses_teacher = criterion_check.uses_teacher
    if uses_teacher and teacher_ckpt is None:
        raise InputError(
            "alpha_kd / beta_pixel > 0 need a teacher checkpoint; pass teacher_ckpt, or set "
            "both to 0 for the no-teacher baseline"
        )

    with _torch_threads(threads):
        dev = resolve_device(device)
        out = Path(out_dir)
        _, last_js = checkpoint_paths(out / "last")
        teacher: nn.Module | None = None
        t_info: dict[str, Any] | None = None
        if teacher_ckpt is not None:
            teacher, t_info = _frozen_teacher(Path(teacher_ckpt), dev)

        kwargs = dict(student_kwargs or {})
        if teacher is not None and "class_names" in model_defaults(student):
            kwargs.setdefault("class_names", list(teacher.class_names))
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
            model = create_model(student, **kwargs)
        if teacher is not None and tuple(model.class_names) != tuple(teacher.class_names):
            raise InputError(
                f"student classes {list(model.class_names)} differ from the teacher's "
                f"{list(teacher.class_names)}; KD needs the same classes in the same order "
                "(pass student_kwargs={'class_names': ...})"
            )
        default_hw = tuple(teacher.input_size) if teacher is not None else model.input_size
        hw = _size(size, default_hw, int(getattr(model, "size_divisor", 32)))
        model.input_size = hw
        run = {
            "arch": student,
            "teacher": None if t_info is None else t_info["path"],
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
            "augment": bool(augment),
            "model_kwargs": json.loads(json.dumps(kwargs)),
            "T": float(T),
            "alpha_kd": float(alpha_kd),
            "beta_pixel": float(beta_pixel),
            "epochs": epochs,
        }
        start, history, best = _resume_point(resumed, run, out, _RESUME_KEYS)
        out.mkdir(parents=True, exist_ok=True)

        train_frames, val_frames = _data(
            data, model.class_names, frame_sizes or hw, n_train, n_val, val_fraction, seed
        )
        if len(train_frames) == 0 or len(val_frames) == 0:
            raise InputError(f"{data}: no frame to train or validate on; add data")
        x0 = model.example_input(1, hw)
        if isinstance(x0, tuple):
            raise InputError(f"{student} takes {len(x0)} inputs; distill() feeds one input")
        model.to(dev).eval()
        with torch.no_grad():
            mask_hw = tuple(model(x0.to(dev))["mask_logits"].shape[-2:])
        aug = Augment() if augment else None

        def dataset(net: nn.Module, frames: Any, augmentation: Augment | None) -> MultiTaskDataset:
            norm = normalization(net)
            return MultiTaskDataset(
                frames,
                input_size=tuple(net.input_size),
                input_channels=net.input_channels,
                mean=norm["mean"],
                std=norm["std"],
                mask_size=mask_hw,
                augment=augmentation,
                seed=seed,
            )

        train_ds = dataset(model, train_frames, aug)
        t_train_ds = None
        run_teacher = teacher if uses_teacher else None
        if run_teacher is not None:
            same_input = (
                tuple(run_teacher.input_size) == hw
                and tuple(run_teacher.input_channels) == tuple(model.input_channels)
                and normalization(run_teacher) == normalization(model)
            )
            # Same seed + same Augment: the teacher sees the very frame the student sees.
            t_train_ds = None if same_input else dataset(run_teacher, train_frames, aug)
        pair_ds = _PairDataset(train_ds, t_train_ds)
        val_ds = dataset(model, val_frames, None)

        counts = np.bincount(np.asarray(train_frames.labels), minlength=len(model.class_names))
        weights = balanced_class_weights(counts.tolist()) if class_weighting else None
        criterion = DistillLoss(MultiTaskLoss(lam, weights), T, alpha_kd, beta_pixel).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        if resumed is not None and resumed.optimizer_state is not None:
            opt.load_state_dict(resumed.optimizer_state)
        pin = dev.type == "cuda"

        teacher_val = None
        if teacher is not None:
            # The reference the report compares with: the teacher on the student's val frames.
            t_val_ds = dataset(teacher, val_frames, None)
            teacher_val = evaluate(
                teacher, _loader(t_val_ds, batch_size, False, seed, 0, num_workers, pin), None, dev
            )
        summary = {
            "train": describe(train_frames),
            "val": describe(val_frames),
            "class_weights": None if weights is None else weights.tolist(),
            "mask_size": list(mask_hw),
            "device": str(dev),
            "teacher": t_info,
            "teacher_val": teacher_val,
        }
        distillation = {
            "teacher": t_info,
            "T": float(T),
            "alpha_kd": float(alpha_kd),
            "beta_pixel": float(beta_pixel),
            "pixel_kd": "binary KL of sigma(student) to area-resized sigma(teacher)",
            "class_kd": "T^2 KL(softmax(t/T) || softmax(s/T))",
            "teacher_val": teacher_val,
        }

        end = epochs if stop_after is None else min(epochs, start + stop_after)
        kind = "distill" if uses_teacher else "baseline"
        for epoch in range(start, end):
            t0 = time.perf_counter()
            lr_e = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
            for g in opt.param_groups:
                g["lr"] = lr_e
            torch.manual_seed(seed * 1_000_003 + epoch)
            pair_ds.set_epoch(epoch)
            loader = _loader(pair_ds, batch_size, True, seed, epoch, num_workers, pin)
            desc = f"{kind} {student} epoch {epoch + 1}/{epochs}"
            train_loss = _distill_epoch(
                model, run_teacher, loader, criterion, opt, dev, desc, progress
            )
            val = evaluate(
                model,
                _loader(val_ds, batch_size, False, seed, 0, num_workers, pin),
                criterion.task,
                dev,
            )
            record = {
                "epoch": epoch,
                "lr": lr_e,
                "seconds": time.perf_counter() - t0,
                "train": train_loss,
                "val": val,
            }
            history.append(record)
            info = {"run": run, "val": val, "distillation": distillation}
            save_checkpoint(out / "last", model, epoch=epoch, optimizer=opt, train=info)
            if _score(val) > best:
                best = _score(val)
                save_checkpoint(out / "best", model, epoch=epoch, train=info)
            best_epoch = max(history, key=lambda h: _score(h["val"]))["epoch"]
            _write_json(
                out / "metrics.json",
                {"run": run, "data": summary, "best_epoch": best_epoch, "epochs": history},
            )
            title = f"{student} ({kind}, T={T:g}, α={alpha_kd:g}, β={beta_pixel:g}) on {data}"
            _plot(history, out / "curves.png", title)
            if progress:
                tqdm.write(_summary_line(desc, record))
        if not (out / "best.json").exists():
            raise InputError(f"{out}: no epoch was trained (epochs={epochs} already reached?)")
        return out / "best.json"
