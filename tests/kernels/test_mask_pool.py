"""Mask-guided pooling + head: C++ == NumPy reference == plain formulas, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import sdk.kernels as K
import sdk.kernels.reference as R
from sdk.errors import InputError

# Each test runs on every instruction-set variant this CPU supports (tests/kernels/conftest.py).
pytestmark = pytest.mark.usefixtures("each_cpu_isa")


def make_head(rng: np.random.Generator, F: int, H: int = 16, C: int = 3) -> K.MLPHead:
    return K.MLPHead(
        rng.standard_normal((H, F)) * 0.3,
        rng.standard_normal(H) * 0.1,
        rng.standard_normal((C, H)) * 0.3,
        rng.standard_normal(C) * 0.1,
    )


@pytest.mark.parametrize(
    ("fshape", "mshape"),
    [
        ((4, 1, 1), (1, 1)),
        ((3, 1, 9), (1, 9)),
        ((8, 7, 13), (7, 13)),
        ((16, 8, 8), (64, 64)),
        ((5, 16, 16), (600, 800)),
        ((6, 13, 7), (5, 3)),
    ],
)
def test_cpp_equals_reference(rng, fshape, mshape) -> None:
    feats = rng.standard_normal(fshape).astype(np.float32)
    w = rng.random(mshape).astype(np.float32)
    k = min(3, mshape[0] * mshape[1])  # at most one lesion per mask pixel
    labels = rng.integers(0, k + 1, mshape).astype(np.int32)
    head = make_head(rng, fshape[0])
    a = K.pool_classify(feats, w, labels, num_labels=k, head=head)
    b = R.pool_classify(feats, w, labels, num_labels=k, head=head)
    assert a.pooled.shape == (k + 1, fshape[0]) and a.probs.shape == (k + 1, 3)
    np.testing.assert_allclose(a.pooled, b.pooled, atol=2e-5)
    np.testing.assert_allclose(a.logits, b.logits, atol=2e-5)
    np.testing.assert_allclose(a.probs, b.probs, atol=2e-6)
    np.testing.assert_allclose(a.probs.sum(axis=1), 1.0, atol=1e-6)


def test_same_grid_is_weighted_average(rng) -> None:
    feats = rng.standard_normal((5, 12, 10)).astype(np.float32)
    w = rng.random((12, 10)).astype(np.float32)
    labels = np.zeros((12, 10), np.int32)
    labels[2:6, 3:8] = 1
    labels[8:11, 1:4] = 2
    got = K.mask_guided_pool(feats, w, labels)
    for k in (1, 2):
        wk = w * (labels == k)
        expect = (feats * wk).sum(axis=(1, 2)) / (wk.sum() + 1e-6)
        np.testing.assert_allclose(got[k - 1], expect, rtol=1e-5, atol=1e-5)
    image = K.mask_guided_pool(feats, w)
    np.testing.assert_allclose(
        image[0], (feats * w).sum(axis=(1, 2)) / (w.sum() + 1e-6), rtol=1e-5, atol=1e-5
    )


def test_coarse_features_pool_like_upsampled(cv2_exact, rng) -> None:
    feats = rng.standard_normal((3, 8, 8)).astype(np.float32)
    w = rng.random((64, 64)).astype(np.float32)
    up = np.stack(
        [cv2_exact.resize(f, (64, 64), interpolation=cv2_exact.INTER_LINEAR) for f in feats]
    )
    expect = (up * w).sum(axis=(1, 2)) / (w.sum() + 1e-6)
    np.testing.assert_allclose(K.mask_guided_pool(feats, w)[0], expect, rtol=1e-5, atol=1e-6)


def test_two_lesions_get_their_own_features(rng) -> None:
    feats = np.zeros((2, 32, 32), np.float32)
    feats[0, :, :16] = 1.0  # left lesion signal
    feats[1, :, 16:] = 1.0  # right lesion signal
    w = np.zeros((32, 32), np.float32)
    labels = np.zeros((32, 32), np.int32)
    w[10:20, 2:10] = 0.9
    labels[10:20, 2:10] = 1
    w[10:20, 22:30] = 0.8
    labels[10:20, 22:30] = 2
    pooled = K.mask_guided_pool(feats, w, labels)
    np.testing.assert_allclose(pooled, [[1, 0], [0, 1]], atol=1e-5)


def test_empty_lesion_pools_to_zero(rng) -> None:
    feats = rng.standard_normal((4, 8, 8)).astype(np.float32)
    w = rng.random((8, 8)).astype(np.float32)
    labels = np.zeros((8, 8), np.int32)
    labels[0, 0] = 1
    pooled = K.mask_guided_pool(feats, w, labels, num_labels=2)  # label 2 absent
    assert pooled.shape == (2, 4)
    np.testing.assert_array_equal(pooled[1], 0.0)


def test_head_matches_numpy_formula(rng) -> None:
    head = make_head(rng, 6)
    feats = rng.standard_normal((6, 4, 4)).astype(np.float32)
    w = np.ones((4, 4), np.float32)
    res = K.pool_classify(feats, w, head=head)
    x = res.pooled[0].astype(np.float64)
    logits = head.w2 @ np.maximum(head.w1 @ x + head.b1, 0) + head.b2
    p = np.exp(logits - logits.max())
    np.testing.assert_allclose(res.probs[0], p / p.sum(), atol=1e-6)


BAD = [
    ({"features": np.zeros((4, 4), np.float32)}, "features"),
    ({"features": np.zeros((0, 4, 4), np.float32)}, "empty"),
    ({"features": np.zeros((2, 4, 4), np.int32)}, "float"),
    ({"weights": np.zeros((4, 4, 1), np.float32)}, "weights"),
    ({"weights": np.full((4, 4), np.nan, np.float32)}, "weights"),
    ({"weights": np.full((4, 4), 1.5, np.float32)}, "weights"),
    ({"weights": np.full((4, 4), -0.1, np.float32)}, "weights"),
    ({"labels": np.zeros((3, 4), np.int32)}, "labels"),
    ({"labels": np.zeros((4, 4), np.float32)}, "labels"),
    ({"labels": np.full((4, 4), 5, np.int32), "num_labels": 2}, "labels"),
    ({"labels": np.full((4, 4), -1, np.int32)}, "labels"),
    ({"num_labels": 3}, "num_labels"),
    ({"eps": 0.0}, "eps"),
    ({"head": "mlp"}, "head"),
    # issue #14: refused on the caller's values, before narrowing to int32 (2**32 + 1 -> 1)
    ({"labels": np.full((4, 4), 2**32 + 1, np.int64), "num_labels": 1}, "labels"),
    ({"labels": np.full((4, 4), 2**32 + 1, np.uint64)}, "mask pixels"),
    ({"labels": np.zeros((4, 4), np.int32), "num_labels": 2_000_000}, "num_labels"),
    ({"features": np.full((2, 4, 4), np.nan, np.float32)}, "NaN or inf"),
    ({"features": np.full((2, 4, 4), -np.inf, np.float32)}, "NaN or inf"),
    ({"features": np.zeros((64, 4, 0), np.float32)}, "empty"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD)
@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_bad_input(impl, kwargs, match) -> None:
    args = {"features": np.zeros((2, 4, 4), np.float32), "weights": np.ones((4, 4), np.float32)}
    with pytest.raises(InputError, match=match):
        impl.pool_classify(**(args | kwargs))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_non_finite_features_refused_with_a_head(rng, impl, bad) -> None:
    """The C++ head's ReLU turned a NaN into 0 and answered softmax(b2) (issue #14: 'normal
    {0.369, 0.331, 0.3}'); the reference answered NaN. Both refuse now, whichever pixel."""
    head = make_head(rng, 4)
    feats = rng.standard_normal((4, 6, 6)).astype(np.float32)
    feats[3, 5, 2] = bad
    labels = np.zeros((12, 12), np.int32)
    labels[2:5, 2:5] = 1
    with pytest.raises(InputError, match="features contain NaN or inf"):
        impl.pool_classify(feats, np.ones((12, 12), np.float32), labels, head=head)


def test_head_shape_errors(rng) -> None:
    with pytest.raises(InputError, match="b1"):
        K.MLPHead(np.zeros((4, 3)), np.zeros(5), np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(InputError, match="w2"):
        K.MLPHead(np.zeros((4, 3)), np.zeros(4), np.zeros((2, 5)), np.zeros(2))
    with pytest.raises(InputError, match="NaN"):
        K.MLPHead(np.full((4, 3), np.nan), np.zeros(4), np.zeros((2, 4)), np.zeros(2))
    head = make_head(rng, 7)
    with pytest.raises(InputError, match="features"):
        K.pool_classify(np.zeros((3, 4, 4), np.float32), np.ones((4, 4), np.float32), head=head)
