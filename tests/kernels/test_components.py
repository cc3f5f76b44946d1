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


# ---- lesion outlines at frame resolution ------------------------------------------------------
def same_outlines(a: K.Outlines, b: K.Outlines) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.areas, b.areas)
    assert len(a.contours) == len(b.contours) == a.count
    for pa, pb in zip(a.contours, b.contours, strict=True):
        assert len(pa) == len(pb)
        for ca, cb in zip(pa, pb, strict=True):
            assert ca.dtype == np.int32 and ca.shape[1] == 2
            np.testing.assert_array_equal(ca, cb)  # same points, same start, same order


def _case(rng, grid, frame, roi=None, bias=0.0, threshold=0.5):
    lg = (rng.standard_normal(grid) * 3 + bias).astype(np.float32)
    comp = K.lesion_components(lg, threshold)
    mask = K.postprocess_mask(lg, frame, roi, threshold)
    return lg, comp, mask


@pytest.mark.parametrize(
    ("grid", "frame", "roi"),
    [
        ((1, 1), (1, 1), None),
        ((4, 5), (40, 50), None),
        ((7, 13), (7, 13), None),  # scale 1: one tap per pixel
        ((32, 32), (600, 800), None),
        ((32, 32), (600, 800), (40, 30, 700, 520)),
        ((32, 32), (16, 20), None),  # downscale: cells the blend skips
        ((5, 3), (9, 17), (2, 1, 13, 7)),
        ((64, 48), (300, 400), (0, 0, 1, 1)),
    ],
)
@pytest.mark.parametrize("bias", [-3.0, -1.0, 1.0])
def test_outlines_cpp_equals_reference(rng, grid, frame, roi, bias) -> None:
    _, comp, mask = _case(rng, grid, frame, roi, bias)
    got = K.lesion_outlines(mask, comp.labels, roi, comp.count)
    same_outlines(got, R.lesion_outlines(mask, comp.labels, roi, comp.count))


def test_outlines_random_geometries_equal_reference(rng) -> None:
    for i in range(150):
        h, w = (int(v) for v in rng.integers(1, 20, 2))
        H, W = (int(v) for v in rng.integers(1, 120, 2))
        roi = None
        if i % 2:
            x0, y0 = int(rng.integers(0, W)), int(rng.integers(0, H))
            roi = (x0, y0, int(rng.integers(1, W - x0 + 1)), int(rng.integers(1, H - y0 + 1)))
        _, comp, mask = _case(rng, (h, w), (H, W), roi, float(rng.uniform(-3, 2)))
        same_outlines(
            K.lesion_outlines(mask, comp.labels, roi), R.lesion_outlines(mask, comp.labels, roi)
        )


def _outside(region: np.ndarray) -> np.ndarray:
    """Pixels not in ``region`` that reach the frame's edge through 4-connected non-region
    pixels (the rest of the non-region pixels are holes)."""
    pad = np.pad((region == 0).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(pad, None, (0, 0), 2, flags=4)
    return pad[1:-1, 1:-1] == 2


@pytest.mark.parametrize("roi", [None, (40, 30, 700, 520)])
def test_regions_partition_the_mask_and_fill_their_outlines(rng, roi) -> None:
    """The lesions' regions partition the mask (no dropped component here), and each region's
    filled outlines are the region and its holes, nothing outside it."""
    for _ in range(10):
        _, comp, mask = _case(rng, (32, 32), (600, 800), roi, -2.0)
        out = K.lesion_outlines(mask, comp.labels, roi)
        ref = R.lesion_outlines(mask, comp.labels, roi)
        assert out.areas.sum() == mask.sum()
        ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
        for pieces, box, area in zip(out.contours, out.boxes, out.areas, strict=True):
            filled = np.zeros_like(mask)
            cv2.fillPoly(filled, [c.reshape(-1, 1, 2) for c in pieces], 1)
            x, y, w, h = box
            inside = (xs >= x) & (xs < x + w) & (ys >= y) & (ys < y + h)
            assert not (filled & ~inside).any()
            region = filled & mask  # at least the region: area pixels of the mask
            assert region.sum() >= area
            assert not (filled.astype(bool) & _outside(filled & mask)).any()
        same_outlines(out, ref)


def test_a_diagonal_link_splits_and_a_faint_cell_vanishes() -> None:
    """Two cells touching by a corner are one grid component but two pieces at frame
    resolution (the blend between them stays below the threshold): both pieces outlined, largest
    first. A single cell barely above the threshold leaves no pixel: an empty region."""
    lg = np.full((8, 8), -8.0, np.float32)
    lg[1:3, 1:3] = 8.0
    lg[3, 3] = 1.0  # one cell (sigmoid 0.73) touching the square by a corner
    lg[6, 6] = 0.01  # sigmoid 0.5025: above 0.5, blended away at 10x
    comp = K.lesion_components(lg)
    assert comp.count == 2
    mask = K.postprocess_mask(lg, (80, 80))
    out = K.lesion_outlines(mask, comp.labels)
    same_outlines(out, R.lesion_outlines(mask, comp.labels))
    assert len(out.contours[0]) == 2
    big, small = (cv2.contourArea(c) for c in out.contours[0])
    assert big > small > 0
    assert out.areas[1] == 0 and out.contours[1] == [] and out.boxes[1].tolist() == [0, 0, 0, 0]


def test_kept_logits_drop_small_components_from_the_mask(rng) -> None:
    """components_cpu's kept_logits: the cells of components below min_area at -inf, others
    untouched, so the mask of those logits is the kept lesions' regions."""
    lg = (rng.standard_normal((32, 32)) * 3 - 2).astype(np.float32)
    kept = np.empty_like(lg)
    prob, labels, stats, borders = K._native().components_cpu(
        lg, 0.5, 25.0, 18.75, 2000.0, False, 0.0, 0.0, False, kept
    )
    assert borders is None and 0 < len(stats) < K.lesion_components(lg).count
    dropped = (prob > 0.5) & (labels == 0)
    assert dropped.any() and np.isneginf(kept[dropped]).all()
    np.testing.assert_array_equal(kept[~dropped], lg[~dropped])
    mask = K.postprocess_mask(kept, (600, 800))
    out = K.lesion_outlines(mask, labels, None, len(stats))
    assert out.areas.sum() == mask.sum() > 0
    with pytest.raises(InputError, match="kept_logits"):
        K._native().components_cpu(lg, 0.5, 1.0, 1.0, 0.0, False, 0.0, 0.0, False, kept[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": [[0]]}, "uint8"),
        ({"mask": np.zeros((10, 10), np.float32)}, "uint8"),
        ({"mask": np.zeros((0, 10), np.uint8)}, "empty"),
        ({"labels": np.zeros((4, 4), np.float32)}, "integer"),
        ({"labels": np.zeros((4,), np.int32)}, "labels"),
        ({"labels": np.full((4, 4), -1, np.int32)}, r"\[0, num_labels"),
        ({"num_labels": 0, "labels": np.ones((4, 4), np.int32)}, r"\[0, num_labels=0\]"),
        ({"roi": (5, 5, 10, 10)}, "does not fit"),
        ({"roi": (0, 0, 0, 3)}, ">= 1"),
    ],
)
@pytest.mark.parametrize("impl", [K, R], ids=["cpp", "numpy"])
def test_outlines_bad_input(impl, kwargs, match) -> None:
    args = {"mask": np.zeros((10, 12), np.uint8), "labels": np.zeros((4, 4), np.int32)} | kwargs
    with pytest.raises(InputError, match=match):
        impl.lesion_outlines(**args)


def test_outlines_kernel_refuses_labels_out_of_range() -> None:
    """The C++ layer's own check (past the wrapper): a label above num_labels."""
    lab = np.zeros((4, 4), np.int32)
    lab[2, 1] = 3
    with pytest.raises(InputError, match=r"found 3 at \(2, 1\)"):
        K._native().lesion_outlines_cpu(np.zeros((8, 8), np.uint8), lab, 2, (0, 0, 8, 8))


def test_outlines_take_a_strided_mask_view(rng) -> None:
    _, comp, mask = _case(rng, (16, 16), (100, 120), None, -1.0)
    big = np.zeros((100, 200), np.uint8)
    big[:, 40:160] = mask
    view = big[:, 40:160]
    same_outlines(K.lesion_outlines(view, comp.labels), K.lesion_outlines(mask, comp.labels))


def test_sigmoid_within_two_ulp_of_float64_across_the_float_range() -> None:
    """The vectorized sigmoid (kernels/include/sonoedge/sigmoid_cpu.h): within 2.5 ulp of the
    exact (float64) sigmoid for |x| <= 87 -- measured 2.37 over 3 million points, absolute error
    < 1e-7 -- and the clamp's 1.6e-38 below -87 (libm's expf overflows there and gives 0): both
    far inside the 1e-6 every kernel test allows. Each instruction-set variant the CPU can run is
    checked (the dispatcher's levels)."""
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            np.linspace(-120, 120, 4001),
            rng.normal(0, 5, 4000),
            rng.normal(0, 1e-3, 2000),
            [0.0, -0.0, 87.0, -87.0, 88.7, -88.7, 1e30, -1e30],
        ]
    ).astype(np.float32)
    x = np.resize(x, (101, 100)).astype(np.float32)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    inside = np.abs(x) <= 87
    nat = K.native()
    active = nat.cpu_isa_active()
    try:
        for lv in range(nat.cpu_isa_supported() + 1):
            nat.cpu_isa_set(lv)
            got = K.lesion_components(x).prob.astype(np.float64)
            ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
            err = np.abs(got - want)
            assert (err[inside] <= 2.5 * ulp[inside]).all(), (lv, float(err[inside].max()))
            assert (err[~inside] <= 2e-38).all()
            assert got[x >= 87].min() == 1.0
    finally:
        nat.cpu_isa_set(active)
