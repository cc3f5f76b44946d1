"""Knowledge distillation: a trained teacher checkpoint → a student checkpoint (issue #5).

NNCF 3 removed its knowledge distillation, so this is ours. :func:`distill` is
:func:`export.train.train` with a teacher (one trainer, one epoch loop); the student minimizes

    L = L_task + alpha_kd · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + beta_pixel · L_pixel
        (+ gamma_feat · feature KD)

with the terms of :class:`export.losses.TrainingLoss` (the module docstring of
:mod:`export.losses` says why the pixel term is a binary KL on probabilities). Teacher and
student may differ in input channels, normalization and size: each batch carries the same
(augmented) frames preprocessed once per model; augmentation randomness is a function of
``(seed, epoch, index)`` only, so both see the very same augmented frame.

With ``alpha_kd = beta_pixel = gamma_feat = 0`` the teacher is not run at all: the same student,
frames, seed, schedule and budget, trained on the task loss alone -- the no-teacher baseline the
report compares against.

Outputs in ``out_dir`` (as :func:`export.train.train`): ``last`` / ``best`` checkpoints,
``metrics.json`` (with the teacher's validation metrics on the same frames) and ``curves.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from export.losses import (
    MultiTaskLoss,
    TrainingLoss,
    class_kd_loss,
    feature_kd_loss,
    pixel_kd_loss,
    resize_probs,
)
from export.models import list_models
from export.train import train
from sdk.errors import InputError

__all__ = [
    "DistillLoss",
    "class_kd_loss",
    "distill",
    "feature_kd_loss",
    "pixel_kd_loss",
    "resize_probs",
]


class DistillLoss(TrainingLoss):
    """``L_task + alpha_kd · class KD + beta_pixel · pixel KD`` (a :class:`TrainingLoss` that
    always reports the KD parts). ``forward(student_out, mask, labels, teacher_out)`` →
    ``(total, parts)``; ``teacher_out`` may be None only when both KD weights are 0."""

    def __init__(self, task: MultiTaskLoss, T: float, alpha_kd: float, beta_pixel: float) -> None:
        super().__init__(task, T=T, alpha_kd=alpha_kd, beta_pixel=beta_pixel, report_kd=True)


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
    gamma_feat: float = 0.0,
    student_kwargs: dict[str, Any] | None = None,
    size: int | tuple[int, int] | None = None,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
    **train_kwargs: Any,
) -> Path:
    """Train ``student`` on ``data`` with the teacher's soft targets; return its best checkpoint.

    Args:
        teacher_ckpt: a checkpoint of :func:`export.train.train` (stem, ``.json`` or
            ``.safetensors``). May be None only for the no-teacher baseline (all KD weights
            0); when given with zero weights it is recorded as the reference and used for the
            defaults (size, class names) but never run.
        out_dir: run folder; refused if it already holds a run, unless ``resume``.
        student: a registered architecture (default the edge student).
        T, alpha_kd, beta_pixel, gamma_feat: the KD terms (:class:`export.losses.TrainingLoss`).
        student_kwargs: student factory options; ``class_names`` default to the teacher's.
        size: student input side or ``(h, w)``; default the teacher's input size (else the
            student's own).
        data, epochs, batch_size, lr, seed, resume, device, frame_sizes, **train_kwargs: as
            :func:`export.train.train` (``n_train``, ``n_val``, ``augment``, ``split``,
            ``aux_weight``, ``warmup_steps``, ``threads``, ``progress``, ``stop_after`` ...;
            the same seed and counts as the teacher's run give the same frames).

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
    return train(
        student,
        data,
        out_dir,
        epochs,
        batch_size,
        lr,
        seed,
        resume,
        device,
        size=size,
        frame_sizes=frame_sizes,
        model_kwargs=student_kwargs,
        teacher=teacher_ckpt,
        T=T,
        alpha_kd=alpha_kd,
        beta_pixel=beta_pixel,
        gamma_feat=gamma_feat,
        **train_kwargs,
    )
