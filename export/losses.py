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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sdk.errors import InputError

__all__ = [
    "DICE_EPS",
    "MultiTaskLoss",
    "balanced_class_weights",
    "bce_loss",
    "ce_loss",
    "dice_loss",
    "seg_loss",
]

DICE_EPS = 1e-6


def _check_mask_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape or logits.ndim != 4 or logits.shape[1] != 1:
        raise InputError(
            f"mask logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be "
            "(B, 1, h, w); resize the target masks to the model's mask resolution"
        )


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean binary cross-entropy on logits (seed 001 eq. 5), numerically stable."""
    _check_mask_pair(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Soft Dice loss per image, averaged over the batch (seed 001 eq. 6), ŷ = sigmoid(logits).

    An image whose target and prediction are both empty scores ~0 only when Σŷ ≪ eps; on
    lesion-free images the term is ~1 and nearly flat, and BCE does the work.
    """
    _check_mask_pair(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    y = target.to(p.dtype).flatten(1)
    dice = (2.0 * (p * y).sum(1) + eps) / (y.sum(1) + p.sum(1) + eps)
    return (1.0 - dice).mean()


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_BCE + L_Dice``."""
    return bce_loss(logits, target) + dice_loss(logits, target)


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
    """``λ (BCE + Dice) + (1 - λ) CE_w`` over a model's output dict.

    Args:
        lam: λ in [0, 1] (seed 001: 0.6).
        class_weights: float ``(K,)`` CE weights, or None for plain CE.

    ``forward(outputs, mask, labels)`` → ``(total, parts)`` with ``parts`` the detached
    ``{"bce", "dice", "seg", "cls", "total"}`` as Python floats.
    """

    def __init__(self, lam: float = 0.6, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(lam) <= 1.0:
            raise InputError(f"lam (λ) must be in [0, 1], got {lam}")
        self.lam = float(lam)
        self.register_buffer(
            "class_weights", None if class_weights is None else class_weights.float().clone()
        )

    def forward(
        self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        bce = bce_loss(outputs["mask_logits"], mask)
        dsc = dice_loss(outputs["mask_logits"], mask)
        cls = ce_loss(outputs["class_logits"], labels, self.class_weights)
        seg = bce + dsc
        total = self.lam * seg + (1.0 - self.lam) * cls
        parts = {"bce": bce, "dice": dsc, "seg": seg, "cls": cls, "total": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}
