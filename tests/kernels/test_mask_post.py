"""Mask post-process: C++ == NumPy reference (== cv2 resize of sigmoid), ROI handling, errors."""

from __future__ import annotations

import numpy as np
import pytest

import sdk.kernels as K
import sdk.kernels.reference as R
from sdk.errors import InputError

# Each test runs on every instruction-set variant this CPU supports (tests/kernels/conftest.py).
pytestmark = pytest.mark.usefixtures("each_cpu_isa")


def agree(got: np.ndarray, logits, shape, roi=None, threshold=0.5, value=1) -> None:
    """Equal to the reference except where the probability is within rounding of the threshold."""
    ref, prob = R.postprocess_mask_prob(logits, shape, roi, threshold, value)
    diff = got != ref
    assert not diff.any() or np.abs(prob[diff] - threshold).max() < 1e-5


@pytest.mark.parametrize(
    ("lshape", "fshape", "roi"),
    [
        ((1, 1), (1, 1), None),
        ((1, 9), (3, 20), None),
        ((7, 13), (7, 13), None),
        ((64, 64), (600, 800), None),
        ((64, 64), (600, 800), (40, 30, 700, 520)),
        ((256, 256), (480, 640), (0, 0, 1, 1)),
        ((5, 3), (9, 17), (2, 1, 13, 7)),
    ],
)
def test_cpp_equals_reference(rng, lshape, fshape, roi) -> None:
    logits = (rng.standard_normal(lshape) * 4).astype(np.float32)
    got = K.postprocess_mask(logits, fshape, roi=roi)
    assert got.shape == fshape and got.dtype == np.uint8
    agree(got, logits, fshape, roi)
    if roi is not None:
        x, y, w, h = roi
        outside = np.ones(fshape, bool)
        outside[y : y + h, x : x + w] = False
        assert not got[outside].any()


@pytest.mark.parametrize(
    "blobs",
    [
        [],  # nothing above the threshold: every row is cleared without a blend
        [(10, 12, 4, 5)],  # one small lesion: only its rows / columns are blended
        [(0, 0, 3, 3)],  # touching the top-left corner
        [(29, 28, 3, 4)],  # touching the bottom-right corner
        [(2, 3, 3, 3), (25, 27, 4, 2)],  # two far apart: the column span covers both
    ],
)
@pytest.mark.parametrize("roi", [None, (40, 30, 700, 520)])
def test_sparse_masks_equal_reference(rng, blobs, roi) -> None:
    """The kernel blends only where a probability above the threshold can reach; the rest of the
    (pre-filled) output must still be cleared and the blended part equal the reference."""
    logits = (rng.standard_normal((32, 32)) - 6).astype(np.float32)
    for x, y, w, h in blobs:
        logits[y : y + h, x : x + w] = 3 + rng.standard_normal((h, w)).astype(np.float32)
    out = np.full((600, 800), 9, np.uint8)
    got = K.postprocess_mask(logits, (600, 800), roi=roi, out=out)
    agree(got, logits, (600, 800), roi)
    assert got.any() == bool(blobs)


def test_matches_opencv_resize_of_probabilities(cv2_exact, rng) -> None:
    logits = (rng.standard_normal((64, 64)) * 3).astype(np.float32)
    prob = cv2_exact.resize(
        1 / (1 + np.exp(-logits)), (800, 600), interpolation=cv2_exact.INTER_LINEAR
    )
    got = K.postprocess_mask(logits, (600, 800), value=255)
    ref = np.where(prob > 0.5, 255, 0)
    diff = got != ref
    assert diff.mean() < 1e-4 and (not diff.any() or np.abs(prob[diff] - 0.5).max() < 1e-5)


def test_threshold_value_out_and_batch_dims(rng) -> None:
    logits = (rng.standard_normal((1, 1, 32, 32)) * 3).astype(np.float32)
    out = np.full((100, 120), 7, np.uint8)
    res = K.postprocess_mask(logits, (100, 120, 3), threshold=0.8, value=255, out=out, threads=2)
    assert res is out and set(np.unique(out)) <= {0, 255}
    agree(out, logits[0, 0], (100, 120), threshold=0.8, value=255)
    low = K.postprocess_mask(logits, (100, 120), threshold=0.2)
    assert low.sum() >= (out > 0).sum()


def test_strided_out_rows(rng) -> None:
    logits = rng.standard_normal((16, 16)).astype(np.float32)
    big = np.zeros((50, 80), np.uint8)
    view = big[:, 10:70]
    K.postprocess_mask(logits, (50, 60), out=view)
    np.testing.assert_array_equal(view, K.postprocess_mask(logits, (50, 60)))
    assert not big[:, :10].any() and not big[:, 70:].any()


BAD = [
    ({"logits": np.zeros((4,), np.float32)}, "logits"),
    ({"logits": np.zeros((2, 4, 4), np.float32)}, "logits"),
    ({"logits": np.zeros((0, 4), np.float32)}, "empty"),
    ({"logits": np.full((4, 4), np.nan, np.float32)}, "NaN"),
    ({"logits": [[0.0]]}, "numpy"),
    ({"frame_shape": (0, 10)}, "frame_shape"),
    ({"frame_shape": 10}, "frame_shape"),
    ({"roi": (0, 0, 100, 100)}, "roi"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"value": 0}, "value"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD)
def test_bad_input(kwargs, match) -> None:
    args = {"logits": np.zeros((4, 4), np.float32), "frame_shape": (20, 30)} | kwargs
    with pytest.raises(InputError, match=match):
        K.postprocess_mask(**args)


def test_bad_out() -> None:
    logits = np.zeros((4, 4), np.float32)
    for out in (
        np.zeros((20, 31), np.uint8),
        np.zeros((20, 30), np.int32),
        np.zeros((20, 60), np.uint8)[:, ::2],
    ):
        with pytest.raises(InputError, match="out"):
            K.postprocess_mask(logits, (20, 30), out=out)
