"""Lesion components kernel: C++ == flood-fill reference == OpenCV's components, and bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import sdk.kernels as K
import sdk.kernels.reference as R
from sdk.errors import InputError


def same(a: K.Components, b: K.Components) -> None:
    np.testing.assert_allclose(a.prob, b.prob, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.stats, b.stats)
    assert len(a.contours) == len(b.contours) == a.count
    for ca, cb in zip(a.contours, b.contours, strict=True):
        assert ca.dtype == np.int32 and ca.shape[1] == 2
        np.testing.assert_array_equal(ca, cb)  # same points, same start, same order


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (7, 13), (32, 32), (64, 48)])
@pytest.mark.parametrize("bias", [-4.0, -1.0, 0.0, 2.0])
def test_cpp_equals_reference(rng, shape, bias) -> None:
    logits = (rng.standard_normal(shape) * 3 + bias).astype(np.float32)
    same(K.lesion_components(logits), R.lesion_components(logits))


@pytest.mark.parametrize("min_area", [0.0, 6.0, 24.0, 1e9])
def test_min_area_in_frame_pixels(rng, min_area) -> None:
    logits = (rng.standard_normal((40, 40)) * 3 - 1).astype(np.float32)
    got = K.lesion_components(logits, 0.4, cell_size=(2.0, 3.0), min_area=min_area)
    same(got, R.lesion_components(logits, 0.4, cell_size=(2.0, 3.0), min_area=min_area))
    assert (got.stats[:, 4] * 6.0 >= min_area).all()
    assert got.labels.max(initial=0) == got.count


def test_same_components_as_opencv(rng) -> None:
    """Same partition and statistics as cv2.connectedComponentsWithStats (8-connected); OpenCV
    numbers them in its own scan order, so the comparison is per component."""
    for _ in range(50):
        logits = (rng.standard_normal((31, 29)) * 3 - 1).astype(np.float32)
        got = K.lesion_components(logits)
        fg = (1 / (1 + np.exp(-logits.astype(np.float64))) > 0.5).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        assert got.count == n - 1
        for k in range(1, n):
            ours = np.unique(got.labels[lab == k])
            assert len(ours) == 1 and ours[0] > 0
            np.testing.assert_array_equal(got.stats[ours[0] - 1], stats[k])


@pytest.mark.parametrize("seed", range(4))
def test_borders_equal_opencv_on_irregular_shapes(seed) -> None:
    """Spiky, holed, one-pixel-wide and single-pixel components: the traced borders equal
    findContours point for point."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        logits = (rng.standard_normal((h, w)) * 3 - rng.uniform(-3, 3)).astype(np.float32)
        same(K.lesion_components(logits), R.lesion_components(logits))


def test_diagonal_touch_is_one_component_and_rings_keep_their_islands() -> None:
    on, off = 5.0, -5.0
    diag = np.full((4, 4), off, np.float32)
    diag[[0, 1, 2, 3], [0, 1, 2, 3]] = on
    assert K.lesion_components(diag).count == 1
    ring = np.full((7, 7), off, np.float32)
    ring[1:6, 1:6] = on
    ring[2:5, 2:5] = off
    ring[3, 3] = on  # an island in the hole
    c = K.lesion_components(ring)
    assert c.count == 2 and c.labels[3, 3] == 2 and c.stats[1].tolist() == [3, 3, 1, 1, 1]


def test_batch_dims_and_empty_mask() -> None:
    c = K.lesion_components(np.full((1, 1, 8, 8), -3.0, np.float32))
    assert c.count == 0 and c.stats.shape == (0, 5) and not c.labels.any()
    assert c.prob.shape == (8, 8) and c.prob.dtype == np.float32


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_non_finite_logits_are_refused(impl, bad) -> None:
    logits = np.zeros((5, 5), np.float32)
    logits[2, 3] = bad
    with pytest.raises(InputError, match="NaN or inf"):
        impl.lesion_components(logits)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"logits": [[0.0]]}, "numpy.ndarray"),
        ({"logits": np.zeros((2, 2, 2), np.float32)}, "2 dimensions"),
        ({"logits": np.zeros((3, 3), np.int32)}, "float"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"cell_size": (1.0,)}, "cell_size"),
        ({"cell_size": (0.0, 1.0)}, "cell_size"),
        ({"min_area": float("nan")}, "min_area"),
    ],
)
def test_bad_input(kwargs, match) -> None:
    args = {"logits": np.zeros((4, 4), np.float32)} | kwargs
    with pytest.raises(InputError, match=match):
        K.lesion_components(**args)


def test_borders_in_frame_pixels(rng) -> None:
    """The Analyzer's call: borders mapped to frame pixels at the cell centres through the ROI,
    rounded as numpy.rint rounds."""
    logits = (rng.standard_normal((32, 32)) * 3 - 1).astype(np.float32)
    grid = K.lesion_components(logits, 0.5, (25.0, 18.75))
    x0, y0, sx, sy = 40, 30, 25.0, 18.75
    *_, frame = K._native().components_cpu(logits, 0.5, sx, sy, 0.0, True, x0, y0)
    assert len(frame) == grid.count > 0
    for g, f in zip(grid.contours, frame, strict=True):
        want = np.stack([np.rint(x0 + (g[:, 0] + 0.5) * sx), np.rint(y0 + (g[:, 1] + 0.5) * sy)], 1)
        np.testing.assert_array_equal(f, want.astype(np.int32))
