"""sdk.metrics: small cases worked out by hand (the arithmetic is in the comments), the empty-mask
conventions, input errors, and properties on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdk import metrics as M
from sdk.errors import InputError

# Two 3x3 squares in a 7x7 frame, the second shifted right by 2 columns.
#   pred   rows 1-3, cols 1-3        target rows 1-3, cols 3-5
# Surfaces (4-connected border): the 8 pixels around each centre ((2,2) and (2,4) are interior).
SQ_PRED = np.zeros((7, 7), bool)
SQ_PRED[1:4, 1:4] = True
SQ_TARGET = np.zeros((7, 7), bool)
SQ_TARGET[1:4, 3:6] = True


def test_dice_iou_by_hand() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    target = np.array([[1, 0, 0], [0, 1, 1]])
    # |P| = 3, |T| = 3, P∩T = {(0,0), (1,1)} = 2, P∪T = {(0,0),(0,1),(1,1),(1,2)} = 4
    assert M.dice(pred, target) == pytest.approx(2 * 2 / (3 + 3))  # 2/3
    assert M.iou(pred, target) == pytest.approx(2 / 4)
    # Squares: 9 px each, overlap = column 3, rows 1-3 = 3 px; union = 9 + 9 - 3 = 15.
    assert M.dice(SQ_PRED, SQ_TARGET) == pytest.approx(2 * 3 / 18)  # 1/3
    assert M.iou(SQ_PRED, SQ_TARGET) == pytest.approx(3 / 15)  # 0.2


def test_surface_distances_by_hand() -> None:
    d_pt, d_tp = M.surface_distances(SQ_PRED, SQ_TARGET)
    # pred surface → nearest target surface pixel:
    #   (1,1)→(1,3) 2  (1,2)→(1,3) 1  (1,3) 0  (2,1)→(2,3) 2  (2,3) 0  (3,1) 2  (3,2) 1  (3,3) 0
    assert sorted(d_pt) == [0, 0, 0, 1, 1, 2, 2, 2]
    # and by symmetry target → pred: (1,3) 0 (1,4) 1 (1,5) 2 (2,3) 0 (2,5) 2 (3,3) 0 (3,4) 1 (3,5) 2
    assert sorted(d_tp) == [0, 0, 0, 1, 1, 2, 2, 2]


def test_hd95_by_hand() -> None:
    # Pooled 16 distances: six 0, four 1, six 2; the 95th percentile sits at position
    # 0.95 * 15 = 14.25 between sorted[14] = 2 and sorted[15] = 2 → 2.
    assert M.hd95(SQ_PRED, SQ_TARGET) == pytest.approx(2.0)
    # With spacing (dy, dx) = (1.0, 0.5) mm every nearest pair stays the horizontal one (e.g.
    # (1,1)→(1,3) = 2 x 0.5 = 1.0 mm vs (1,1)→(2,3) = sqrt(1² + 1²) mm), so all halve → 1 mm.
    assert M.hd95(SQ_PRED, SQ_TARGET, spacing=(1.0, 0.5)) == pytest.approx(1.0)
    # Interpolation case, a 1x5 row: pred = {0}, target = {0, 4}. Surfaces are the pixels
    # themselves. pred→target: [0]; target→pred: [0, 4]. Pooled sorted [0, 0, 4]: position
    # 0.95 * 2 = 1.9 → 0 + 0.9 * (4 - 0) = 3.6.
    pred = np.array([[1, 0, 0, 0, 0]], bool)
    target = np.array([[1, 0, 0, 0, 1]], bool)
    assert M.hd95(pred, target) == pytest.approx(3.6)
    # Scalar spacing 0.25 mm/px scales it: 0.9 mm.
    assert M.hd95(pred, target, spacing=0.25) == pytest.approx(0.9)


def test_nsd_by_hand() -> None:
    # Distances as in test_surface_distances_by_hand, 8 + 8 surface pixels.
    # τ = 0: three 0 per side → 6/16;  τ = 1: five <= 1 per side → 10/16;  τ = 2: all → 1.
    assert M.nsd(SQ_PRED, SQ_TARGET, tolerance=0) == pytest.approx(6 / 16)
    assert M.nsd(SQ_PRED, SQ_TARGET, tolerance=1) == pytest.approx(10 / 16)
    assert M.nsd(SQ_PRED, SQ_TARGET, tolerance=2) == pytest.approx(1.0)
    # In mm at dx = 0.5: the distances halve, so τ = 0.5 mm is τ = 1 px.
    assert M.nsd(SQ_PRED, SQ_TARGET, 0.5, spacing=(1.0, 0.5)) == pytest.approx(10 / 16)


def test_empty_masks() -> None:
    empty = np.zeros((4, 4), np.uint8)
    one = empty.copy()
    one[1, 1] = 1
    # Both empty: a correct "no lesion".
    assert M.dice(empty, empty) == 1.0
    assert M.iou(empty, empty) == 1.0
    assert M.hd95(empty, empty) == 0.0
    assert M.nsd(empty, empty) == 1.0
    # Exactly one empty, either way round.
    for a, b in ((one, empty), (empty, one)):
        assert M.dice(a, b) == 0.0
        assert M.iou(a, b) == 0.0
        assert M.hd95(a, b) == math.inf
        assert M.nsd(a, b) == 0.0
    with pytest.raises(InputError, match="non-empty"):
        M.surface_distances(one, empty)


def test_classification_by_hand() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # Correct: samples 0, 2, 3, 4 → 4/6.
    assert M.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    cm = M.confusion_matrix(y_true, y_pred)
    # true 0 → pred {0, 1}; true 1 → pred {1, 1}; true 2 → pred {2, 0}
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    r = M.per_class(y_true, y_pred)
    # class 0: TP 1, FN 1, FP 1 (true 2 → 0), TN 6 - 3 = 3
    # class 1: TP 2, FN 0, FP 1 (true 0 → 1), TN 3
    # class 2: TP 1, FN 1, FP 0,              TN 4
    np.testing.assert_allclose(r["sensitivity"], [1 / 2, 2 / 2, 1 / 2])
    np.testing.assert_allclose(r["specificity"], [3 / 4, 3 / 4, 4 / 4])
    np.testing.assert_allclose(r["precision"], [1 / 2, 2 / 3, 1 / 1])
    # F1 = 2TP / (2TP + FP + FN): 2/4, 4/5, 2/3
    np.testing.assert_allclose(r["f1"], [2 / 4, 4 / 5, 2 / 3])
    np.testing.assert_array_equal(r["support"], [2, 2, 2])
    # A class never seen in y_true (class 3 with num_classes=4) has no sensitivity: nan, not 0.
    r4 = M.per_class(y_true, y_pred, num_classes=4)
    assert math.isnan(r4["sensitivity"][3]) and r4["specificity"][3] == 1.0


def test_auc_by_hand() -> None:
    y = [0, 0, 1, 1]
    s1 = np.array([0.1, 0.4, 0.35, 0.8])
    scores = np.stack([1 - s1, s1], axis=1)
    # Class 1: positives {0.35, 0.8} vs negatives {0.1, 0.4}: pairs won 0.35>0.1, 0.8>0.1,
    # 0.8>0.4 (0.35<0.4 lost) → 3/4. Class 0 on 1 - s1 mirrors it → 3/4. Macro = 0.75.
    np.testing.assert_allclose(M.auc_ovr(y, scores), [0.75, 0.75])
    assert M.macro_auc(y, scores) == pytest.approx(0.75)
    # A tie between the one positive and the one negative counts 1/2:
    # ranks (1.5, 1.5), R_pos = 1.5, AUC = (1.5 - 1*2/2) / (1*1) = 0.5.
    assert M.auc_ovr([0, 1], [[0.5, 0.5], [0.5, 0.5]])[1] == pytest.approx(0.5)
    # 3 classes, class 2 absent from y_true: its AUC is undefined, the macro skips it.
    sc = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    a = M.auc_ovr([0, 1, 1], sc)
    # class 0: positive 0.8 vs negatives {0.3, 0.6} → 2/2 = 1
    # class 1: positives {0.6, 0.3} vs negative 0.1 → 2/2 = 1
    assert a[0] == 1.0 and a[1] == 1.0 and math.isnan(a[2])
    assert M.macro_auc([0, 1, 1], sc) == 1.0
    assert math.isnan(M.macro_auc([1, 1], [[0.2, 0.8], [0.4, 0.6]]))


def test_input_errors() -> None:
    m = np.zeros((4, 4), bool)
    with pytest.raises(InputError, match="same shape"):
        M.dice(m, np.zeros((4, 5), bool))
    with pytest.raises(InputError, match="threshold"):
        M.dice(np.full((4, 4), 0.7), m)
    with pytest.raises(InputError, match="numpy"):
        M.iou([[1, 0]], m)
    with pytest.raises(InputError, match="spacing"):
        M.hd95(m, m, spacing=(1.0, -1.0))
    with pytest.raises(InputError, match="spacing"):
        M.hd95(m, m, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="tolerance"):
        M.nsd(m, m, tolerance=-1)
    with pytest.raises(InputError, match="samples"):
        M.accuracy([0, 1], [0])
    with pytest.raises(InputError, match="integer"):
        M.accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(InputError, match="outside"):
        M.confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(InputError, match="NaN"):
        M.auc_ovr([0, 1], [[np.nan, 1.0], [0.0, 1.0]])
    with pytest.raises(InputError, match="scores"):
        M.auc_ovr([0, 1], [0.2, 0.8])


# --------------------------------------------------------------------------- properties


def _blob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
    ry, rx = rng.uniform(3, 7, 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1 + 0.3 * rng.random(shape)


def test_overlap_properties(rng) -> None:
    for _ in range(20):
        a, b = _blob(rng, (40, 48)), _blob(rng, (40, 48))
        d, j = M.dice(a, b), M.iou(a, b)
        assert 0.0 <= j <= d <= 1.0
        assert d == pytest.approx(M.dice(b, a))
        assert d == pytest.approx(2 * j / (1 + j))  # Dice and IoU are one function of the other
        assert M.dice(a, a) == 1.0 and M.hd95(a, a) == 0.0 and M.nsd(a, a, 0) == 1.0


def test_surface_properties(rng) -> None:
    for _ in range(10):
        a = _blob(rng, (40, 48))
        dy, dx = rng.integers(-3, 4, 2)
        b = np.roll(a, (dy, dx), axis=(0, 1))  # the blob stays clear of the borders
        h = M.hd95(a, b)
        # A translation moves every surface pixel by |(dy, dx)|: no distance exceeds it.
        assert h <= math.hypot(dy, dx) + 1e-12
        assert h == pytest.approx(M.hd95(b, a))
        assert M.nsd(a, b, tolerance=math.hypot(dy, dx)) == 1.0


def test_surface_distances_match_scipy_edt(rng) -> None:
    ndi = pytest.importorskip("scipy.ndimage")
    for _ in range(5):
        a, b = _blob(rng, (36, 30)), _blob(rng, (36, 30))
        spacing = (0.7, 0.3)

        def surf(m: np.ndarray) -> np.ndarray:
            return m & ~ndi.binary_erosion(m, border_value=0)

        sa, sb = surf(a), surf(b)
        # EDT of the complement of b's surface = distance to b's nearest surface pixel.
        dist_b = ndi.distance_transform_edt(~sb, sampling=spacing)
        dist_a = ndi.distance_transform_edt(~sa, sampling=spacing)
        d_ab, d_ba = M.surface_distances(a, b, spacing)
        np.testing.assert_allclose(np.sort(d_ab), np.sort(dist_b[sa]), rtol=1e-12)
        np.testing.assert_allclose(np.sort(d_ba), np.sort(dist_a[sb]), rtol=1e-12)
        pooled = np.concatenate([dist_b[sa], dist_a[sb]])
        assert M.hd95(a, b, spacing) == pytest.approx(np.percentile(pooled, 95))


def test_auc_properties(rng) -> None:
    for _ in range(10):
        n, k = 40, 3
        y = rng.integers(0, k, n)
        s = rng.integers(0, 5, (n, k)).astype(float)  # coarse scores: many ties
        auc = M.auc_ovr(y, s)
        for c in range(k):
            pos, neg = s[y == c, c], s[y != c, c]
            if pos.size and neg.size:
                # Brute force: P(score_pos > score_neg) + P(tie) / 2 over all pairs.
                gt = (pos[:, None] > neg[None, :]).mean()
                eq = (pos[:, None] == neg[None, :]).mean()
                assert auc[c] == pytest.approx(gt + eq / 2)
        # Invariant to a strictly increasing transform of the scores.
        np.testing.assert_allclose(M.auc_ovr(y, np.exp(2 * s) - 1), auc)
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.7])
    assert M.auc_ovr(y, np.stack([-s, s], 1))[1] == 1.0  # perfect ranking
    assert M.auc_ovr(y, np.stack([s, -s], 1))[1] == 0.0  # reversed
