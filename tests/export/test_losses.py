"""export.losses against hand computations (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from export.losses import (  # noqa: E402
    MultiTaskLoss,
    TrainingLoss,
    balanced_class_weights,
    bce_loss,
    ce_loss,
    dice_loss,
    presence_loss,
    seg_loss,
)
from sdk.errors import InputError  # noqa: E402

# One image of two pixels: logits (0, ln 3) → probabilities (1/2, 3/4); target (1, 0).
LOGITS = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
TARGET = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)


def test_bce_by_hand() -> None:
    # pixel 1: -log(1/2) = ln 2; pixel 2: -log(1 - 3/4) = ln 4 = 2 ln 2 → mean 3/2 ln 2.
    assert float(bce_loss(LOGITS, TARGET)) == pytest.approx(1.5 * math.log(2.0), rel=1e-6)


def test_dice_by_hand() -> None:
    # 2 Σ y ŷ = 2 * (1 * 1/2) = 1; Σ y = 1; Σ ŷ = 1/2 + 3/4 = 5/4
    # → 1 - (1 + ε) / (9/4 + ε) = 1 - 4/9 = 5/9 (ε = 1e-6 negligible at 1e-6 rel).
    assert float(dice_loss(LOGITS, TARGET)) == pytest.approx(5 / 9, rel=1e-5)
    # Per image then batch mean: a second image, a perfect-ish prediction (logits ±20 → ŷ ≈ y),
    # has Dice loss ≈ 0, so the batch mean is (5/9 + 0) / 2.
    good = torch.tensor([20.0, -20.0]).view(1, 1, 1, 2)
    both = dice_loss(torch.cat([LOGITS, good]), torch.cat([TARGET, TARGET]))
    assert float(both) == pytest.approx(5 / 18, rel=1e-5)
    assert float(seg_loss(LOGITS, TARGET)) == pytest.approx(1.5 * math.log(2) + 5 / 9, rel=1e-5)


def test_batch_dice_by_hand() -> None:
    """One Dice over the batch: LOGITS / TARGET beside a lesion-free image predicting (1/2, 1/2).
    Σ y ŷ = 1/2, Σ y = 1, Σ ŷ = 5/4 + 1 = 9/4 → 1 - 1 / (13/4) = 9/13. Per image the empty
    image's term is 1 - ε / (1 + ε) ≈ 1 whatever it predicts; over the batch its false pixels
    carry a gradient."""
    empty = torch.zeros(1, 1, 1, 2)
    logits = torch.cat([LOGITS, empty]).requires_grad_(True)
    target = torch.cat([TARGET, torch.zeros(1, 1, 1, 2)])
    assert float(dice_loss(logits, target, batch=True)) == pytest.approx(9 / 13, rel=1e-5)
    assert float(dice_loss(LOGITS, TARGET, batch=True)) == pytest.approx(5 / 9, rel=1e-5)
    dice_loss(logits, target, batch=True).backward()
    assert (logits.grad[1] > 1e-3).all()  # the false pixels of the empty image are pushed down
    x = logits.detach().clone().requires_grad_(True)
    dice_loss(x, target).backward()
    assert (x.grad[1].abs() < 1e-5).all()  # per image: flat there
    assert float(seg_loss(logits, target, batch_dice=True)) == pytest.approx(
        float(bce_loss(logits, target)) + 9 / 13, rel=1e-5
    )
    out = {"mask_logits": logits.detach(), "class_logits": torch.zeros(2, 3)}
    _, parts = MultiTaskLoss(0.5, batch_dice=True)(out, target, torch.tensor([1, 0]))
    assert parts["dice"] == pytest.approx(9 / 13, rel=1e-5)
    with pytest.raises(InputError, match="batch_dice"):
        MultiTaskLoss(0.5, batch_dice=1)  # type: ignore[arg-type]


def test_deep_supervision_follows_batch_dice() -> None:
    """The aux masks take the task's Dice mode: an aux mask equal to the main one adds the same
    seg term, per image or over the batch."""
    logits = torch.cat([LOGITS, torch.zeros(1, 1, 1, 2)])
    target = torch.cat([TARGET, torch.zeros(1, 1, 1, 2)])
    out = {"mask_logits": logits, "class_logits": torch.zeros(2, 3), "aux_mask_logits": [logits]}
    for bd in (False, True):
        loss = TrainingLoss(MultiTaskLoss(0.5, batch_dice=bd), aux_weight=1.0)
        _, parts = loss(out, target, torch.tensor([1, 0]))
        assert parts["aux"] == pytest.approx(parts["seg"], rel=1e-6)
        assert parts["dice"] == pytest.approx(9 / 13 if bd else (5 / 9 + 1) / 2, rel=1e-5)


def test_weighted_ce_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [math.log(3.0), 0.0, 0.0]])
    labels = torch.tensor([2, 0])
    # sample 1: softmax = (1, 1, 2) / 4 → p(2) = 1/2 → CE = ln 2
    # sample 2: softmax = (3, 1, 1) / 5 → p(0) = 3/5 → CE = ln(5/3)
    assert float(ce_loss(logits, labels)) == pytest.approx(
        (math.log(2) + math.log(5 / 3)) / 2, rel=1e-6
    )
    w = torch.tensor([2.0, 1.0, 0.5])
    # weighted mean: (w2 ln 2 + w0 ln(5/3)) / (w2 + w0) = (0.5 ln 2 + 2 ln(5/3)) / 2.5
    expect = (0.5 * math.log(2) + 2 * math.log(5 / 3)) / 2.5
    assert float(ce_loss(logits, labels, w)) == pytest.approx(expect, rel=1e-6)


def test_balanced_class_weights_by_hand() -> None:
    # N = 4, K = 3: w = 4 / (3 n_k) → (4/6, 4/3, 4/3)
    expect = torch.tensor([2 / 3, 4 / 3, 4 / 3])
    torch.testing.assert_close(balanced_class_weights([2, 1, 1]), expect)
    # absent class → 0; N = 4: (4/9, 0, 4/3)
    torch.testing.assert_close(balanced_class_weights([3, 0, 1]), torch.tensor([4 / 9, 0.0, 4 / 3]))
    # balanced data → all ones
    torch.testing.assert_close(balanced_class_weights([5, 5, 5]), torch.ones(3))
    with pytest.raises(InputError):
        balanced_class_weights([0, 0, 0])


def test_multitask_total_by_hand() -> None:
    out = {"mask_logits": LOGITS, "class_logits": torch.tensor([[0.0, 0.0, math.log(2.0)]])}
    labels = torch.tensor([2])
    total, parts = MultiTaskLoss(lam=0.6)(out, TARGET, labels)
    seg = 1.5 * math.log(2) + 5 / 9
    cls = math.log(2)  # p(2) = 1/2
    # λ L_seg + (1 - λ) L_cls with λ = 0.6
    assert float(total) == pytest.approx(0.6 * seg + 0.4 * cls, rel=1e-5)
    assert parts["seg"] == pytest.approx(seg, rel=1e-5)
    assert parts["cls"] == pytest.approx(cls, rel=1e-6)
    assert parts["total"] == pytest.approx(float(total))
    # λ = 1 is segmentation alone, λ = 0 classification alone.
    assert float(MultiTaskLoss(1.0)(out, TARGET, labels)[0]) == pytest.approx(seg, rel=1e-5)
    assert float(MultiTaskLoss(0.0)(out, TARGET, labels)[0]) == pytest.approx(cls, rel=1e-6)


def test_loss_errors() -> None:
    with pytest.raises(InputError, match="mask resolution"):
        bce_loss(LOGITS, torch.zeros(1, 1, 2, 2))
    with pytest.raises(InputError, match="lam"):
        MultiTaskLoss(1.5)
    with pytest.raises(InputError, match="one entry per class"):
        ce_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2))


def test_pos_weight_weights_the_lesion_pixels() -> None:
    from export.losses import MultiTaskLoss, bce_loss

    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    ln2 = float(torch.log(torch.tensor(2.0)))
    # At p = 0.5 every pixel costs ln 2: the lesion pixel counts 4 times with pos_weight 4.
    assert float(bce_loss(logits, target)) == pytest.approx(ln2)
    assert float(bce_loss(logits, target, 4.0)) == pytest.approx((4 + 3) * ln2 / 4)
    for bad in (0.0, -1.0, float("nan"), True, "2"):
        with pytest.raises(InputError, match="pos_weight"):
            MultiTaskLoss(0.6, None, bad)  # type: ignore[arg-type]


def test_presence_by_hand() -> None:
    """The image's largest logit against 'has a lesion pixel': image 1 (target has one) peaks at
    ln 3 -> -log(3/4); image 2 (lesion-free) peaks at 0 -> -log(1/2); mean of the two."""
    logits = torch.cat([LOGITS, torch.tensor([0.0, -5.0]).view(1, 1, 1, 2)])
    target = torch.cat([TARGET, torch.zeros(1, 1, 1, 2)])
    want = (-math.log(0.75) - math.log(0.5)) / 2
    assert float(presence_loss(logits, target)) == pytest.approx(want, rel=1e-6)
    # On the lesion-free image the gradient reaches its peak pixel only (the false blob).
    x = logits.clone().requires_grad_(True)
    presence_loss(x, target).backward()
    g = x.grad.flatten(1)
    assert g[1, 0] > 0 and g[1, 1] == 0


def test_presence_weight_adds_to_the_segmentation_term() -> None:
    y = torch.tensor([0])
    cls = torch.zeros(1, 3)
    out = {"mask_logits": LOGITS, "class_logits": cls}
    plain_total, plain = MultiTaskLoss(0.5)(out, TARGET, y)
    total, parts = MultiTaskLoss(0.5, presence_weight=2.0)(out, TARGET, y)
    assert "presence" not in plain
    assert parts["presence"] == pytest.approx(-math.log(0.75), rel=1e-6)
    assert parts["seg"] == pytest.approx(plain["seg"] + 2.0 * parts["presence"], rel=1e-6)
    assert float(total) == pytest.approx(float(plain_total) + 0.5 * 2.0 * parts["presence"])
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(InputError, match="presence_weight"):
            MultiTaskLoss(0.5, presence_weight=bad)
