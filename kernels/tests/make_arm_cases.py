#!/usr/bin/env python3
"""Cases of the aarch64 cross-check (.ci/arm-check), computed on the host by the NumPy reference.

Writes into a folder: raw little-endian arrays (one ``.bin`` per array) and ``manifest.txt``,
one case per line: ``<kind> <name> key=value ...`` (floats as exact hex literals, lists
comma-separated, arrays as file names). ``kernels/tests/arm_driver.cpp``, cross-built for
aarch64 and run under qemu, reads them, calls the C++ kernels the way ``kernels/src/bindings.cpp``
does and compares.

Arguments go through the same checks as :mod:`sdk.kernels` (``_validate.preprocess_spec`` & co.),
so the native code receives exactly what the Python wrapper would pass it; expected outputs come
from :mod:`sdk.kernels.reference`. Tolerances are the ones ``tests/kernels/`` holds the x86 build
to against the same reference (named next to each use below).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

import sdk.kernels.reference as R
from sdk.kernels import MLPHead, _pool_args, _squeeze_logits
from sdk.kernels import _validate as V

# tests/kernels/test_preprocess.py::test_cpp_equals_reference (atol=2e-6, rtol=0) and
# ::test_roi_normalization_and_out (atol=1e-5 with mean (0.5, 0.1), std (0.25, 0.05): the
# normalization multiplies the error by 1/std).
PRE_ATOL = 2e-6
PRE_ATOL_NORMALIZED = 1e-5
# tests/kernels/test_preprocess.py::test_gradient_magnitude_equals_scipy: max error / max |ref|
# below 1e-4; a 1x1 image (no gradient) within 1e-6 of the input's scale.
GRAD_RSCALE = 1e-4
GRAD_FLAT = 1e-6
# tests/kernels/test_mask_pool.py::test_cpp_equals_reference.
POOL_ATOL, LOGITS_ATOL, PROBS_ATOL = 2e-5, 2e-5, 2e-6
# tests/kernels/test_mask_post.py::agree: a pixel may differ only within 1e-5 of the threshold.
POST_NEAR = 1e-5
# tests/kernels/test_components.py::same: prob atol 1e-6; labels, stats, contours exact.
COMP_PROB_ATOL = 1e-6


def rng_for(name: str) -> np.random.Generator:
    """Reproducible inputs per case, as tests/conftest.py's rng fixture."""
    return np.random.default_rng(zlib.crc32(name.encode()))


class Cases:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[str] = []
        self.kinds: dict[str, int] = {}

    def add(self, kind: str, name: str, **fields: Any) -> None:
        if " " in name or "=" in name:
            raise ValueError(f"case name {name!r} must not contain spaces or '='")
        idx = len(self.lines)
        parts = [kind, name]
        for key, v in fields.items():
            parts.append(f"{key}={self._value(idx, key, v)}")
        self.lines.append(" ".join(parts))
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def _value(self, idx: int, key: str, v: Any) -> str:
        if isinstance(v, np.ndarray):
            fn = f"{idx:04d}_{key}.bin"
            np.ascontiguousarray(v).tofile(self.root / fn)
            return fn
        if isinstance(v, bool):
            return str(int(v))
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating):
            return float(v).hex()  # exact: strtod reads hex literals
        if isinstance(v, list | tuple):
            return ",".join(self._value(idx, key, x) for x in v)
        raise TypeError(f"{key}: {type(v).__name__}")

    def write(self) -> None:
        text = f"sonoedge-arm-cases 1 {len(self.lines)}\n" + "\n".join(self.lines) + "\n"
        (self.root / "manifest.txt").write_text(text)


# ---- preprocess ---------------------------------------------------------------------------------
def frame_fields(f: np.ndarray) -> dict[str, Any]:
    """The bytes a (checked) frame view spans, from its first pixel, with its strides: what the
    bindings hand the kernel as a FrameView (any non-negative strides)."""
    assert f.dtype == np.uint8 and min(f.strides) >= 0
    span = 1 + sum((n - 1) * s for n, s in zip(f.shape, f.strides, strict=True))
    raw = np.lib.stride_tricks.as_strided(f, shape=(span,), strides=(1,)).copy()
    return {
        "frame": raw,
        "fh": f.shape[0],
        "fw": f.shape[1],
        "fc": f.shape[2] if f.ndim == 3 else 1,
        "rs": f.strides[0],
        "cs": f.strides[1],
        "chs": f.strides[2] if f.ndim == 3 else 1,
    }


def preprocess_case(
    cs: Cases,
    name: str,
    frame: np.ndarray,
    size: tuple[int, int],
    channels: tuple[str, ...] = ("image", "gdm"),
    sigma: float = 1.0,
    roi: tuple[int, int, int, int] | None = None,
    mean: Any = 0.0,
    std: Any = 1.0,
    dtype: Any = np.float32,
    color: str = "bgr",
    interpolation: str = "auto",
    atol: float | None = None,
) -> None:
    f, s = V.preprocess_spec(
        frame, size, channels, sigma, roi, mean, std, dtype, color, interpolation
    )
    want = R.preprocess(
        frame,
        size=size,
        channels=channels,
        sigma=sigma,
        roi=roi,
        mean=mean,
        std=std,
        dtype=np.float32,
        color=color,
        interpolation=interpolation,
    )
    normalized = any(m != 0.0 for m in s.mean) or any(v != 1.0 for v in s.std)
    if atol is None:
        atol = PRE_ATOL_NORMALIZED if normalized else PRE_ATOL
    cs.add(
        "preprocess",
        name,
        **frame_fields(f),
        color=V.COLOR_CODES[s.color],
        roi=s.roi,
        out=s.size,
        kinds=s.kinds,
        mean=s.mean,
        inv_std=s.inv_std,
        sigma=s.sigma,
        interp=V.INTERP_CODES[s.interp],
        dtype=0 if s.dtype == np.float32 else 1,
        threads=(1, 2),
        expect=want,
        atol=atol,
    )


def gray(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return rng_for(name).integers(0, 256, shape, dtype=np.uint8)


def preprocess_cases(cs: Cases) -> None:
    all4 = ("image", "gdm", "gdx", "gdy")
    # test_cpp_equals_reference: every source x output size, all four channels.
    for src in [(1, 1), (1, 17), (17, 1), (7, 13), (600, 800)]:
        for dst in [(1, 1), (5, 3), (32, 48), (256, 256)]:
            n = f"grid-{src[0]}x{src[1]}-to-{dst[0]}x{dst[1]}"
            preprocess_case(cs, n, gray(n, src), dst, all4, sigma=1.3)
    # test_banded_resize_tails_match_reference: partial 16-wide tiles and 4-row groups.
    for src, dst in [
        ((600, 800), (128, 128)),
        ((600, 800), (129, 131)),
        ((480, 640), (7, 17)),
        ((33, 1000), (5, 15)),
    ]:
        n = f"tails-{src[0]}x{src[1]}-to-{dst[0]}x{dst[1]}"
        preprocess_case(cs, n, gray(n, src), dst)
    # Explicit interpolation, down (linear and area) and up (linear).
    for interp in ("linear", "area"):
        for src, dst in [((600, 800), (256, 256)), ((7, 13), (3, 5)), ((9, 9), (3, 3))]:
            n = f"{interp}-{src[0]}x{src[1]}-to-{dst[0]}x{dst[1]}"
            preprocess_case(cs, n, gray(n, src), dst, interpolation=interp)
    for src, dst in [
        ((600, 800), (700, 900)),
        ((7, 13), (20, 40)),
        ((1, 1), (4, 4)),
        ((17, 1), (64, 64)),
    ]:
        n = f"upscale-{src[0]}x{src[1]}-to-{dst[0]}x{dst[1]}"
        preprocess_case(cs, n, gray(n, src), dst)
    # Colour frames: packed BGR / RGB / BGRA / RGBA.
    for layout, nch, color in [
        ("bgr", 3, "bgr"),
        ("rgb", 3, "rgb"),
        ("bgra", 4, "bgr"),
        ("rgba", 4, "rgb"),
    ]:
        n = f"color-{layout}-61x83"
        preprocess_case(cs, n, gray(n, (61, 83, nch)), (61, 83), color=color)
    n = "color-bgr-600x800-to-256x256-area"
    preprocess_case(cs, n, gray(n, (600, 800, 3)), (256, 256), all4, sigma=1.3)
    n = "color-bgra-600x800-to-129x131-linear"
    preprocess_case(cs, n, gray(n, (600, 800, 4)), (129, 131), interpolation="linear")
    n = "color-rgb-7x13-to-20x40"
    preprocess_case(cs, n, gray(n, (7, 13, 3)), (20, 40), all4, color="rgb")
    n = "color-bgr-1x1-to-4x4"
    preprocess_case(cs, n, gray(n, (1, 1, 3)), (4, 4))
    # Strided views (test_non_contiguous_frames and friends): the generic-stride paths.
    big = gray("views", (300, 400, 3))
    padded = gray("padded", (300, 448))[:, :400]  # contiguous pixels, padded rows
    planar = np.ascontiguousarray(big.transpose(2, 0, 1)).transpose(1, 2, 0)  # ch stride H*W
    views = {
        "view-bgr-step2x3": big[::2, ::3],
        "view-bgr-crop": big[10:200, 50:350],
        "view-gray-channel1": big[:, :, 1],
        "view-gray-fortran": np.asfortranarray(big[..., 0]),
        "view-hw1": big[..., 1:2],
        "view-gray-padded-rows": padded,
        "view-bgr-planar": planar,
        "view-bgr-flipped": big[::-1],  # negative stride: the wrapper copies it
    }
    for n, v in views.items():
        preprocess_case(cs, n, v, (40, 50))
    preprocess_case(cs, "view-gray-padded-rows-to-256x256", padded, (256, 256), all4)
    preprocess_case(
        cs, "view-bgr-planar-to-128x128-linear", planar, (128, 128), interpolation="linear"
    )
    # ROI and normalization (test_roi_normalization_and_out).
    n = "roi-bgr-norm-120x160"
    preprocess_case(
        cs,
        n,
        gray(n, (120, 160, 3)),
        (64, 64),
        roi=(10, 5, 100, 90),
        mean=(0.5, 0.1),
        std=(0.25, 0.05),
    )
    n = "roi-gray-600x800-area"
    preprocess_case(cs, n, gray(n, (600, 800)), (256, 256), all4, roi=(40, 30, 700, 520))
    n = "roi-gray-600x800-linear"
    preprocess_case(
        cs, n, gray(n, (600, 800)), (256, 256), roi=(40, 30, 700, 520), interpolation="linear"
    )
    n = "roi-1x1-to-4x4"
    preprocess_case(cs, n, gray(n, (20, 30)), (4, 4), roi=(7, 3, 1, 1))
    preprocess_case(cs, "roi-on-strided-bgr", big[::2, ::3], (32, 32), roi=(3, 4, 90, 120))
    # Every channel kind on its own and out of order (test_gradient_channels_equal_scipy).
    frame = gray("channels", (600, 800))
    for c in all4:
        preprocess_case(cs, f"channel-{c}-only", frame, (256, 256), (c,), sigma=1.5)
    preprocess_case(
        cs,
        "channels-gdm-gdx-gdy-image",
        frame,
        (256, 256),
        ("gdm", "gdx", "gdy", "image"),
        sigma=1.5,
    )
    # Gaussian scales up to the largest halo (sigma 8: radius 32).
    for sigma in (0.5, 2.0, 3.7, 8.0):
        preprocess_case(cs, f"sigma-{sigma}", frame, (64, 80), ("gdm", "gdx", "gdy"), sigma=sigma)
    # float16 output: checked bit for bit against the float32 output rounded to nearest even
    # (test_float16_output), the float32 output against the reference.
    preprocess_case(cs, "f16-600x800-norm", frame, (256, 256), dtype=np.float16, mean=0.5, std=0.25)
    n = "f16-7x13-all4"
    preprocess_case(cs, n, gray(n, (7, 13)), (5, 3), all4, dtype=np.float16)
    n = "f16-bgr-61x83-all4"
    preprocess_case(cs, n, gray(n, (61, 83, 3)), (61, 83), all4, dtype=np.float16)
    # Outputs down to 1e-4: half subnormals (below 6.1e-5) and their rounding.
    preprocess_case(cs, "f16-subnormal", frame, (64, 64), all4, dtype=np.float16, std=1e4)


# ---- gradient magnitude -------------------------------------------------------------------------
def gradient_cases(cs: Cases) -> None:
    shapes = [(1, 1), (1, 9), (7, 13), (256, 256)]
    combos = [(s, sg) for sg in (0.5, 1.0, 2.0, 3.7) for s in shapes]
    combos += [((17, 1), 1.0), ((40, 600), 8.0), ((129, 131), 1.3)]
    for shape, sigma in combos:
        n = f"gdmag-{shape[0]}x{shape[1]}-sigma{sigma}"
        img = (rng_for(n).random(shape) * 255).astype(np.float32)
        want = R.gaussian_gradient_magnitude(img, sigma)
        flat = shape == (1, 1)
        cs.add(
            "gradmag",
            n,
            img=img,
            h=shape[0],
            w=shape[1],
            sigma=V.check_sigma(sigma),
            threads=(1, 2),
            expect=want,
            atol=GRAD_FLAT * float(np.abs(img).max()) if flat else 0.0,
            rscale=0.0 if flat else GRAD_RSCALE,
        )


# ---- mask-guided pooling + head ----------------------------------------------------------------
def make_head(rng: np.random.Generator, F: int, H: int = 16, C: int = 3) -> MLPHead:
    return MLPHead(
        rng.standard_normal((H, F)) * 0.3,
        rng.standard_normal(H) * 0.1,
        rng.standard_normal((C, H)) * 0.3,
        rng.standard_normal(C) * 0.1,
    )


def pool_case(
    cs: Cases, name: str, feats, w, labels=None, num_labels=None, head=None, eps=1e-6
) -> None:
    f, wt, lab, k, h, e = _pool_args(feats, w, labels, num_labels, head, eps, values=False)
    ref = R.pool_classify(feats, w, labels, num_labels, head, eps)
    fields: dict[str, Any] = {
        "feat": f,
        "F": f.shape[0],
        "hf": f.shape[1],
        "wf": f.shape[2],
        "weights": wt,
        "hm": wt.shape[0],
        "wm": wt.shape[1],
        "num_labels": k,
        "eps": e,
        "expect_pooled": ref.pooled,
        "atol_pooled": POOL_ATOL,
    }
    if lab is not None:
        fields["labels"] = lab
    if h is not None:
        fields.update(
            w1=h.w1,
            b1=h.b1,
            w2=h.w2,
            b2=h.b2,
            hidden=h.hidden,
            classes=h.num_classes,
            expect_logits=ref.logits,
            expect_probs=ref.probs,
            atol_logits=LOGITS_ATOL,
            atol_probs=PROBS_ATOL,
        )
    cs.add("pool", name, **fields)


def pool_cases(cs: Cases) -> None:
    for fs, ms in [
        ((4, 1, 1), (1, 1)),
        ((3, 1, 9), (1, 9)),
        ((8, 7, 13), (7, 13)),
        ((16, 8, 8), (64, 64)),
        ((5, 16, 16), (600, 800)),
        ((6, 13, 7), (5, 3)),
        ((32, 64, 64), (256, 256)),
        ((64, 8, 8), (256, 256)),
    ]:
        n = f"pool-{fs[0]}x{fs[1]}x{fs[2]}-mask{ms[0]}x{ms[1]}"
        rng = rng_for(n)
        feats = rng.standard_normal(fs).astype(np.float32)
        w = rng.random(ms).astype(np.float32)
        # At most one lesion per mask pixel: the kernels refuse num_labels > mask pixels.
        k = min(3, ms[0] * ms[1])
        labels = rng.integers(0, k + 1, ms).astype(np.int32)
        pool_case(cs, n, feats, w, labels, k, make_head(rng, fs[0]))
    rng = rng_for("pool-extra")
    feats = rng.standard_normal((5, 16, 16)).astype(np.float32)
    w = rng.random((64, 64)).astype(np.float32)
    pool_case(cs, "pool-image-row-only", feats, w)
    pool_case(cs, "pool-image-row-head", feats, w, head=make_head(rng, 5, 8, 2))
    lab = np.zeros((64, 64), np.int32)
    lab[0, 0] = 1
    pool_case(cs, "pool-empty-lesion", feats, w, lab, 2)  # label 2 absent: pools to 0
    sparse = np.where(rng.random((64, 64)) < 0.9, 0.0, rng.random((64, 64))).astype(np.float32)
    sparse[:, :7] = 1.0  # exact 0 and 1 weights, mask rows with nothing to spread
    sparse[20:30] = 0.0
    lab = (rng.random((64, 64)) < 0.5).astype(np.int32) * 2
    pool_case(cs, "pool-sparse-weights", feats, sparse, lab, 2, make_head(rng, 5))
    same = rng.standard_normal((5, 12, 10)).astype(np.float32)
    lab = np.zeros((12, 10), np.int32)
    lab[2:6, 3:8] = 1
    lab[8:11, 1:4] = 2
    pool_case(cs, "pool-same-grid-two-lesions", same, rng.random((12, 10)).astype(np.float32), lab)


# ---- mask post-process --------------------------------------------------------------------------
def post_case(
    cs: Cases, name: str, logits, shape, roi=None, threshold=0.5, value=1, pad: int = 0
) -> None:
    lg = _squeeze_logits(logits)
    H, W = shape
    r = V.check_roi(roi, H, W)
    mask, prob = R.postprocess_mask_prob(logits, shape, roi, threshold, value)
    near = (np.abs(prob - threshold) < POST_NEAR).astype(np.uint8)
    cs.add(
        "maskpost",
        name,
        logits=lg,
        h=lg.shape[0],
        w=lg.shape[1],
        H=H,
        W=W,
        stride=W + pad,
        roi=r,
        threshold=V.check_float(threshold, "threshold"),
        value=value,
        threads=(1, 2),
        expect=mask,
        near=near,
    )


def post_cases(cs: Cases) -> None:
    for ls, fs, roi in [
        ((1, 1), (1, 1), None),
        ((1, 9), (3, 20), None),
        ((7, 13), (7, 13), None),
        ((64, 64), (600, 800), None),
        ((64, 64), (600, 800), (40, 30, 700, 520)),
        ((256, 256), (480, 640), (0, 0, 1, 1)),
        ((5, 3), (9, 17), (2, 1, 13, 7)),
        ((256, 256), (600, 800), None),
        ((32, 32), (16, 16), None),
    ]:
        n = f"post-{ls[0]}x{ls[1]}-to-{fs[0]}x{fs[1]}" + ("" if roi is None else "-roi")
        post_case(cs, n, (rng_for(n).standard_normal(ls) * 4).astype(np.float32), fs, roi)
    # test_sparse_masks_equal_reference: only where a probability above the threshold reaches.
    blobs = {
        "none": [],
        "one": [(10, 12, 4, 5)],
        "topleft": [(0, 0, 3, 3)],
        "bottomright": [(29, 28, 3, 4)],
        "two": [(2, 3, 3, 3), (25, 27, 4, 2)],
    }
    for bn, bl in blobs.items():
        for roi in (None, (40, 30, 700, 520)):
            n = f"post-sparse-{bn}" + ("" if roi is None else "-roi")
            rng = rng_for(n)
            lg = (rng.standard_normal((32, 32)) - 6).astype(np.float32)
            for x, y, w, h in bl:
                lg[y : y + h, x : x + w] = 3 + rng.standard_normal((h, w)).astype(np.float32)
            post_case(cs, n, lg, (600, 800), roi)
    lg = (rng_for("post-value").standard_normal((1, 1, 32, 32)) * 3).astype(np.float32)
    post_case(cs, "post-threshold0.8-value255", lg, (100, 120), threshold=0.8, value=255)
    post_case(cs, "post-threshold0.2", lg, (100, 120), threshold=0.2)
    post_case(cs, "post-threshold0", lg, (100, 120), threshold=0.0)
    post_case(cs, "post-threshold1", lg, (100, 120), threshold=1.0)
    post_case(cs, "post-strided-out-rows", lg[0, 0, :16, :16], (50, 60), pad=20)
    post_case(cs, "post-strided-out-roi", lg, (600, 800), (13, 7, 611, 409), pad=5)


# ---- lesion components --------------------------------------------------------------------------
def comp_case(cs: Cases, name: str, logits, threshold=0.5, cell=(1.0, 1.0), min_area=0.0):
    ref = R.lesion_components(logits, threshold, cell, min_area)
    lg = _squeeze_logits(logits)
    cnt = [c.astype(np.int32) for c in ref.contours]
    cs.add(
        "components",
        name,
        logits=lg,
        h=lg.shape[0],
        w=lg.shape[1],
        threshold=V.check_float(threshold, "threshold"),
        sx=float(cell[0]),
        sy=float(cell[1]),
        min_area=float(min_area),
        k=ref.count,
        expect_prob=ref.prob,
        expect_labels=ref.labels.astype(np.int32),
        expect_stats=ref.stats.astype(np.int32).reshape(-1),
        expect_npts=np.array([len(c) for c in cnt], np.int32),
        expect_pts=np.concatenate(cnt).reshape(-1) if cnt else np.zeros(0, np.int32),
        # tests/kernels/test_components.py::test_kept_logits_drop_small_components_from_the_mask
        expect_kept=np.where((ref.prob > threshold) & (ref.labels == 0), -np.inf, lg).astype(
            np.float32
        ),
        atol_prob=COMP_PROB_ATOL,
    )


def comp_cases(cs: Cases) -> None:
    for shape in [(1, 1), (1, 17), (17, 1), (7, 13), (32, 32), (64, 48)]:
        for bias in (-4.0, -1.0, 0.0, 2.0):
            n = f"comp-{shape[0]}x{shape[1]}-bias{bias}"
            comp_case(cs, n, (rng_for(n).standard_normal(shape) * 3 + bias).astype(np.float32))
    lg = (rng_for("comp-min-area").standard_normal((40, 40)) * 3 - 1).astype(np.float32)
    for min_area in (0.0, 6.0, 24.0, 1e9):
        comp_case(cs, f"comp-min-area-{min_area:g}", lg, 0.4, (2.0, 3.0), min_area)
    # test_borders_equal_opencv_on_irregular_shapes: spiky, holed, one-pixel-wide components.
    for seed in range(2):
        rng = np.random.default_rng(seed)
        for i in range(50):
            h, w = (int(v) for v in rng.integers(1, 24, 2))
            lg = (rng.standard_normal((h, w)) * 3 - rng.uniform(-3, 3)).astype(np.float32)
            comp_case(cs, f"comp-irregular-{seed}-{i}", lg)
    on, off = 5.0, -5.0
    diag = np.full((4, 4), off, np.float32)
    diag[[0, 1, 2, 3], [0, 1, 2, 3]] = on
    comp_case(cs, "comp-diagonal", diag)
    ring = np.full((7, 7), off, np.float32)
    ring[1:6, 1:6] = on
    ring[2:5, 2:5] = off
    ring[3, 3] = on
    comp_case(cs, "comp-ring-with-island", ring)
    comp_case(cs, "comp-empty-batch-dims", np.full((1, 1, 8, 8), -3.0, np.float32))
    lg = (rng_for("comp-256").standard_normal((256, 256)) * 2 - 2).astype(np.float32)
    comp_case(cs, "comp-256x256", lg, 0.3, (3.125, 2.34375), 20.0)


# ---- lesion outlines at frame resolution --------------------------------------------------------
def outline_case(cs: Cases, name: str, logits, frame, roi=None, threshold=0.5) -> None:
    """tests/kernels/test_components.py::same_outlines: boxes, areas, contours exact. The mask
    and labels come from the reference (the outline kernel's inputs are discrete)."""
    comp = R.lesion_components(logits, threshold)
    mask = R.postprocess_mask(logits, frame, roi, threshold)
    ref = R.lesion_outlines(mask, comp.labels, roi, comp.count)
    pieces = [c for cs_ in ref.contours for c in cs_]
    cs.add(
        "outlines",
        name,
        mask=mask,
        H=mask.shape[0],
        W=mask.shape[1],
        labels=comp.labels.astype(np.int32),
        h=comp.labels.shape[0],
        w=comp.labels.shape[1],
        k=comp.count,
        roi=V.check_roi(roi, mask.shape[0], mask.shape[1]),
        expect_boxes=ref.boxes.astype(np.int32).reshape(-1),
        expect_areas=ref.areas.astype(np.int64),
        expect_npieces=np.array([len(c) for c in ref.contours], np.int32),
        expect_npts=np.array([len(c) for c in pieces], np.int32),
        expect_pts=np.concatenate(pieces).reshape(-1).astype(np.int32)
        if pieces
        else np.zeros(0, np.int32),
    )


def outline_cases(cs: Cases) -> None:
    for grid, frame, roi in [
        ((1, 1), (1, 1), None),
        ((4, 5), (40, 50), None),
        ((7, 13), (7, 13), None),
        ((32, 32), (600, 800), None),
        ((32, 32), (600, 800), (40, 30, 700, 520)),
        ((32, 32), (16, 20), None),
        ((5, 3), (9, 17), (2, 1, 13, 7)),
    ]:
        for bias in (-3.0, -1.0, 1.0):
            n = f"outline-{grid[0]}x{grid[1]}-to-{frame[0]}x{frame[1]}-bias{bias}" + (
                "" if roi is None else "-roi"
            )
            lg = (rng_for(n).standard_normal(grid) * 3 + bias).astype(np.float32)
            outline_case(cs, n, lg, frame, roi)
    lg = np.full((8, 8), -8.0, np.float32)
    lg[1:3, 1:3] = 8.0
    lg[3, 3] = 1.0
    lg[6, 6] = 0.01
    outline_case(cs, "outline-diagonal-split-and-vanish", lg, (80, 80))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to write (created; must be empty)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if any(args.out.iterdir()):
        ap.error(f"{args.out} is not empty")
    cs = Cases(args.out)
    preprocess_cases(cs)
    gradient_cases(cs)
    pool_cases(cs)
    post_cases(cs)
    comp_cases(cs)
    outline_cases(cs)
    cs.write()
    summary = ", ".join(f"{k} {v}" for k, v in cs.kinds.items())
    print(f"arm-check: {len(cs.lines)} cases ({summary}) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
