"""Multi-task losses of the seeds: segmentation + classification, weighted by λ.

Prompt-free SAM multi-task (seed 001, eq. 4-8)::

    L_seg   = L_BCE + L_Dice                                   (BCE on logits, soft Dice)
    L_Dice  = 1 - (2 Σ y ŷ + ε) / (Σ y + Σ ŷ + ε),   ε = 1e-6  (per image, then batch mean)
    L_cls   = CE(class_logits, label; class weights)
    L_total = λ L_seg + (1 - λ) L_cls,               λ = 0.6

MTL-OCA (seed 003) uses λ = 0.5 in this form (L = L_s + L_c up to a factor 2). Class weights
counter the imbalance of BUSI (437 benign / 210 malignant / 133 normal): "balanced" inverse
frequency, ``w_k = N / (K n_k)`` (:func:`balanced_class_weights`).

Shapes: ``mask_logits`` / ``mask`` float ``(B, 1, h, w)`` (targets in [0, 1]; soft targets from
area-resized masks are fine), ``class_logits`` ``(B, K)``, ``labels`` int64 ``(B,)``.

:class:`TrainingLoss` is what :func:`export.train.train` minimizes, with or without a teacher::

    L = L_total                                   (above, on the ground truth)
      + aux_weight · mean_i L_seg(aux_i, mask↓)   deep supervision (``aux_mask_logits`` of
                                                  ``forward_train``: NMTNet's side outputs,
                                                  MTL-OCA's soft object regions, α = 0.4)
      + alpha_kd · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))     class KD (Hinton et al. 2015)
      + beta_pixel · KL(Bern(σ(m_t)↓) ‖ Bern(σ(m_s)))           pixel KD on the mask
      + gamma_feat · ‖G_s - G_t‖² / B²                          feature KD (similarity-preserving,
                                                  Tung & Mori 2019) on the lesion-pooled features

Pixel KD: the teacher's lesion probability, resampled to the student's mask grid (area averaging
when shrinking, bilinear when enlarging), is a soft target for the student's logits under a
**binary cross-entropy**, reported minus the target's entropy (the per-pixel binary KL: 0 when
the student matches, same gradient as BCE). BCE rather than MSE on logits: it compares
probabilities, so background pixels where the teacher says -15 and the student -8 cost ~nothing
(MSE would spend the student's small capacity on confidence it cannot use); it is bounded per
pixel and on the task BCE's scale, so ``beta_pixel`` ~ 1 needs no tuning; teachers with a finer
mask are averaged in probability space, which is what the student's coarser cell should predict.

Feature KD compares, within the batch, which frames' pooled features look alike (the B×B
cosine-similarity matrices of student and teacher): no projection layer to train and keep, and
any two feature widths compare. The features are pooled over the ground-truth lesion (over the
whole map on frames without one), as the SDK's mask-guided head pools them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sdk.errors import InputError

__all__ = [
    "DICE_EPS",
    "MultiTaskLoss",
    "TrainingLoss",
    "balanced_class_weights",
    "bce_loss",
    "ce_loss",
    "class_kd_loss",
    "dice_loss",
    "feature_kd_loss",
    "lesion_pooled",
    "pixel_kd_loss",
    "resize_probs",
    "seg_loss",
]

DICE_EPS = 1e-6


def _check_mask_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape or logits.ndim != 4 or logits.shape[1] != 1:
        raise InputError(
            f"mask logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be "
            "(B, 1, h, w); resize the target masks to the model's mask resolution"
        )


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Pixel-mean binary cross-entropy on logits (seed 001 eq. 5), numerically stable;
    ``pos_weight`` multiplies the lesion pixels' term (None: 1)."""
    _check_mask_pair(logits, target)
    pw = None if pos_weight is None else logits.new_tensor(float(pos_weight))
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pw)


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS, *, batch: bool = False
) -> torch.Tensor:
    """Soft Dice loss per image, averaged over the batch (seed 001 eq. 6), ŷ = sigmoid(logits);
    ``batch``: one Dice over the whole batch as a single volume (nnU-Net's "batch Dice").

    Per image, an image whose target and prediction are both empty scores ~0 only when
    Σŷ ≪ eps; on lesion-free images the term is ~1 and nearly flat, and BCE does the work. Over
    the batch, a lesion-free image's false pixels enter the shared denominator: they cost what
    a false pixel of a lesion image costs.
    """
    _check_mask_pair(logits, target)
    axis = 0 if batch else 1  # flattened to (N,) or (B, N)
    p = torch.sigmoid(logits).flatten(axis)
    y = target.to(p.dtype).flatten(axis)
    dice = (2.0 * (p * y).sum(axis) + eps) / (y.sum(axis) + p.sum(axis) + eps)
    return (1.0 - dice).mean()


def _checked(v: object, name: str, *, positive: bool = False, what: str | None = None) -> float:
    """``v`` as a float if it is a finite real number (not a bool), > 0 when ``positive``, else
    >= 0; otherwise an InputError naming ``name`` (``what``: the expectation it states)."""
    if isinstance(v, bool) or not (
        isinstance(v, int | float) and math.isfinite(v) and (v > 0 if positive else v >= 0)
    ):
        what = what or ("a positive number" if positive else "a finite number >= 0")
        raise InputError(f"{name} must be {what}, got {v!r}")
    return float(v)


def presence_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Image-level lesion presence: BCE of each image's largest mask logit against "the target
    has a lesion pixel" (multiple-instance max pooling). On a lesion-free image its gradient
    reaches the most confident false pixel -- where :func:`dice_loss` is flat and the pixel-mean
    BCE weighs a small false blob by its area only."""
    _check_mask_pair(logits, target)
    peak = logits.flatten(1).amax(1)
    has = (target.flatten(1) > 0.5).any(1).to(peak.dtype)
    return F.binary_cross_entropy_with_logits(peak, has)


def seg_loss(
    logits: torch.Tensor, target: torch.Tensor, *, batch_dice: bool = False
) -> torch.Tensor:
    """``L_BCE + L_Dice`` (``batch_dice``: :func:`dice_loss` over the batch)."""
    return bce_loss(logits, target) + dice_loss(logits, target, batch=batch_dice)


def ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy, optionally class-weighted: ``Σ_i w_{y_i} CE_i / Σ_i w_{y_i}`` (PyTorch's
    weighted mean, so the loss scale does not depend on the batch's class mix)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise InputError(
            f"class logits {tuple(logits.shape)} must be (B, K) and labels {tuple(labels.shape)} "
            "(B,)"
        )
    if class_weights is not None and class_weights.shape != logits.shape[1:]:
        raise InputError(
            f"class_weights must have one entry per class ({logits.shape[1]}), "
            f"got {tuple(class_weights.shape)}"
        )
    w = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
    return F.cross_entropy(logits, labels.long(), weight=w)


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """``w_k = N / (K n_k)`` from per-class training counts (1 for every class when balanced).

    A class with no training sample gets weight 0 (it never occurs as a target anyway).

    Returns:
        float32 ``(K,)``.
    """
    c = torch.as_tensor(list(counts), dtype=torch.float64)
    if c.ndim != 1 or c.numel() < 2 or (c < 0).any() or c.sum() <= 0:
        raise InputError(f"counts must be >= 2 non-negative class counts, not all 0; got {counts}")
    w = torch.where(c > 0, c.sum() / (c.numel() * c.clamp(min=1)), torch.zeros_like(c))
    return w.float()


class MultiTaskLoss(nn.Module):
    """``λ (BCE + Dice [+ w_p presence]) + (1 - λ) CE_w`` over a model's output dict.

    Args:
        lam: λ in [0, 1] (seed 001: 0.6).
        class_weights: float ``(K,)`` CE weights, or None for plain CE.
        pos_weight: weight of the lesion pixels in the BCE (None: 1).
        presence_weight: weight w_p of :func:`presence_loss` in the segmentation term (0: off,
            the parts then carry no ``"presence"``).
        batch_dice: the Dice term over the whole batch (:func:`dice_loss` ``batch``), not per
            image; deep supervision (:class:`TrainingLoss`) follows it.

    ``forward(outputs, mask, labels)`` → ``(total, parts)`` with ``parts`` the detached
    ``{"bce", "dice", "seg", "cls", "total"}`` as Python floats. A model without
    ``mask_logits`` (a slab classifier) trains on the CE alone (``{"cls", "total"}``; λ does not
    apply).
    """

    def __init__(
        self,
        lam: float = 0.6,
        class_weights: torch.Tensor | None = None,
        pos_weight: float | None = None,
        presence_weight: float = 0.0,
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_dice, bool):
            raise InputError(f"batch_dice must be True or False, got {batch_dice!r}")
        self.batch_dice = batch_dice
        if not 0.0 <= float(lam) <= 1.0:
            raise InputError(f"lam (λ) must be in [0, 1], got {lam}")
        self.presence_weight = _checked(presence_weight, "presence_weight")
        self.lam = float(lam)
        self.pos_weight = (
            None
            if pos_weight is None
            else _checked(pos_weight, "pos_weight", positive=True, what="a positive number or None")
        )
        self.register_buffer(
            "class_weights", None if class_weights is None else class_weights.float().clone()
        )

    def forward(
        self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cls = ce_loss(outputs["class_logits"], labels, self.class_weights)
        if "mask_logits" not in outputs:  # a slab classifier (class logits only): CE alone
            return cls, {"cls": float(cls.detach()), "total": float(cls.detach())}
        bce = bce_loss(outputs["mask_logits"], mask, self.pos_weight)
        dsc = dice_loss(outputs["mask_logits"], mask, batch=self.batch_dice)
        seg = bce + dsc
        parts = {"bce": bce, "dice": dsc}
        if self.presence_weight > 0:
            parts["presence"] = presence_loss(outputs["mask_logits"], mask)
            seg = seg + self.presence_weight * parts["presence"]
        total = self.lam * seg + (1.0 - self.lam) * cls
        parts |= {"seg": seg, "cls": cls, "total": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}


def resize_probs(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample probabilities ``(B, 1, h, w)`` to ``size``: area averaging when shrinking (the
    fraction of a coarse cell that is lesion), bilinear when enlarging."""
    size = (int(size[0]), int(size[1]))
    if tuple(probs.shape[-2:]) == size:
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


def lesion_pooled(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, F)``: ``features`` ``(B, F, h, w)`` averaged over the lesion of ``mask``
    ``(B, 1, H, W)`` (area-resized to the feature grid), over the whole map where the frame
    has no lesion."""
    w = resize_probs(mask.to(features.dtype), features.shape[-2:])
    area = w.sum(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    w = torch.where(area > 1e-3, w, torch.ones_like(w))
    return (features * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))


def feature_kd_loss(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD: ``‖G_s - G_t‖²_F / B²`` with ``G`` the batch's cosine
    similarity matrix of the pooled features (``(B, Fs)`` and ``(B, Ft)``, widths may differ).
    0 for a batch of one frame (nothing to relate)."""
    if student_pooled.ndim != 2 or teacher_pooled.ndim != 2:
        raise InputError(
            f"pooled features must be (B, F); got student {tuple(student_pooled.shape)}, "
            f"teacher {tuple(teacher_pooled.shape)}"
        )
    if student_pooled.shape[0] != teacher_pooled.shape[0]:
        raise InputError("student and teacher features must cover the same batch")
    s = F.normalize(student_pooled.float(), dim=1)
    t = F.normalize(teacher_pooled.detach().float(), dim=1)
    b = s.shape[0]
    return ((s @ s.T - t @ t.T) ** 2).sum() / (b * b)


class TrainingLoss(nn.Module):
    """The trainer's loss (module docstring): the task loss plus optional deep supervision and
    knowledge distillation.

    ``forward(outputs, mask, labels, teacher_out=None)`` → ``(total, parts)``. ``outputs`` may
    carry ``aux_mask_logits`` (a sequence of ``(B, 1, h_i, w_i)``) and ``features``;
    ``teacher_out`` is needed when a KD weight is > 0. ``parts`` holds the detached floats of
    the task loss (``bce``, ``dice``, ``seg``, ``cls``), ``task``, then ``aux`` when
    ``aux_weight`` > 0, ``kd_cls`` / ``kd_pixel`` / ``kd_feat`` when ``report_kd`` (a teacher is
    attached, even at zero weights: the no-teacher baseline logs zeros), and ``total``.
    """

    def __init__(
        self,
        task: MultiTaskLoss,
        *,
        T: float = 4.0,
        alpha_kd: float = 0.0,
        beta_pixel: float = 0.0,
        gamma_feat: float = 0.0,
        aux_weight: float = 0.0,
        report_kd: bool = False,
    ) -> None:
        super().__init__()
        weights = (
            ("alpha_kd", alpha_kd),
            ("beta_pixel", beta_pixel),
            ("gamma_feat", gamma_feat),
            ("aux_weight", aux_weight),
        )
        for name, v in weights:
            _checked(v, name)
        self.task, self.T = task, _checked(T, "T (temperature)", positive=True)
        self.alpha_kd, self.beta_pixel = float(alpha_kd), float(beta_pixel)
        self.gamma_feat, self.aux_weight = float(gamma_feat), float(aux_weight)
        self.report_kd = bool(report_kd) or self.uses_teacher

    @property
    def uses_teacher(self) -> bool:
        """Whether the teacher must run (some KD weight > 0)."""
        return self.alpha_kd > 0 or self.beta_pixel > 0 or self.gamma_feat > 0

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        mask: torch.Tensor,
        labels: torch.Tensor,
        teacher_out: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        task, parts = self.task(outputs, mask, labels)
        total = task
        out = {k: v for k, v in parts.items() if k != "total"}
        out["task"] = parts["total"]
        if self.aux_weight > 0:
            aux_logits = outputs.get("aux_mask_logits") or ()
            if not aux_logits:
                raise InputError(
                    "aux_weight > 0 but the model returns no aux_mask_logits from forward_train; "
                    "set aux_weight=0 for this architecture"
                )
            bd = self.task.batch_dice
            aux = sum(
                seg_loss(a, resize_probs(mask.to(a.dtype), a.shape[-2:]), batch_dice=bd)
                for a in aux_logits
            ) / len(aux_logits)
            total = total + self.aux_weight * aux
            out["aux"] = float(aux.detach())
        if self.report_kd:
            zero = task.new_zeros(())
            kd_cls = kd_pix = kd_feat = zero
            if self.uses_teacher:
                if teacher_out is None:
                    raise InputError("KD weights are non-zero but no teacher outputs were given")
                if self.alpha_kd > 0:
                    kd_cls = class_kd_loss(
                        outputs["class_logits"], teacher_out["class_logits"], self.T
                    )
                if self.beta_pixel > 0:
                    kd_pix = pixel_kd_loss(outputs["mask_logits"], teacher_out["mask_logits"])
                if self.gamma_feat > 0:
                    kd_feat = feature_kd_loss(
                        lesion_pooled(outputs["features"], mask),
                        lesion_pooled(teacher_out["features"], mask),
                    )
            total = (
                total
                + self.alpha_kd * kd_cls
                + self.beta_pixel * kd_pix
                + self.gamma_feat * kd_feat
            )
            out.update(
                kd_cls=float(kd_cls.detach()),
                kd_pixel=float(kd_pix.detach()),
                kd_feat=float(kd_feat.detach()),
            )
        out["total"] = float(total.detach())
        return total, out
