"""Tests of sdk.synthetic: physics figures, ground truth, determinism, cine, dataset, CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import cv2
import numpy as np
import pytest

from sdk import synthetic
from sdk.errors import InputError
from sdk.synthetic import _acoustics, _lesions, _scene, cli
from sdk.synthetic._geometry import Pose, make_geometry

SIZE = (192, 192)


def _moments(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.var()), float(ys.var())


# --- physics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("frequency", [5.0, 10.0, 15.0])
def test_envelope_is_rayleigh_in_homogeneous_tissue(frequency: float) -> None:
    iq = synthetic.simulate_iq(np.ones((256, 256), np.float32), seed=3, frequency_mhz=frequency)
    env = np.abs(iq)
    ratio = env.mean() / env.std()
    assert ratio == pytest.approx(synthetic.RAYLEIGH_MEAN_TO_STD, rel=0.10)
    # E|IQ|^2 equals the echogenicity (unit-energy PSF): 1 within sampling error.
    assert np.mean(env**2) == pytest.approx(1.0, rel=0.1)


def test_envelope_scales_with_echogenicity() -> None:
    e = np.ones((256, 256), np.float32)
    e[:, 128:] = 0.01  # -20 dB
    env = np.abs(synthetic.simulate_iq(e, seed=1))
    rms_dark = np.sqrt(np.mean(env[:, 150:] ** 2))
    rms_bright = np.sqrt(np.mean(env[:, :100] ** 2))
    ratio_db = 20 * np.log10(rms_dark / rms_bright)
    assert ratio_db == pytest.approx(-20.0, abs=1.0)


def test_displayed_speckle_decompresses_to_rayleigh() -> None:
    """The full pipeline (PSF, TGC, log compression) keeps Rayleigh statistics: undo the log
    compression of a homogeneous phantom band and check mean / std of the envelope."""
    image, mask, info = synthetic.phantom(
        "normal", (256, 256), seed=5, tissue="homogeneous", noise_db=-200.0
    )
    assert not mask.any()
    d = info["display"]
    band = image[60:120].astype(np.float64)
    level_db = band * d["dynamic_range_db"] / 255.0 - d["dynamic_range_db"] + d["headroom_db"]
    env = 10.0 ** (level_db / 20.0)
    assert (band > 0).mean() > 0.995 and (band < 255).mean() > 0.995  # no clipping to speak of
    assert env.mean() / env.std() == pytest.approx(synthetic.RAYLEIGH_MEAN_TO_STD, rel=0.10)


def test_contrast_knob_is_honoured_in_homogeneous_tissue() -> None:
    for target in (-6.0, -12.0, -18.0):
        image, mask, _ = synthetic.phantom(
            "benign",
            (256, 256),
            seed=2,
            tissue="homogeneous",
            contrast_db=target,
            cyst=False,
            lesion_size_mm=14.0,
        )
        measured = synthetic.lesion_contrast_db(image, mask)
        assert measured == pytest.approx(target, abs=2.5), target


def test_contrast_ranges_per_class() -> None:
    by_kind: dict[str, list[float]] = {}
    for seed in range(14):
        for label in ("benign", "malignant"):
            image, mask, info = synthetic.phantom(
                label, SIZE, seed=seed, cyst=(seed % 3 == 0) if label == "benign" else None
            )
            for les in info["lesions"]:
                c = synthetic.lesion_contrast_db(image, mask, les["id"])
                lo, hi = synthetic.CONTRAST_RANGES_DB[les["kind"]]
                assert lo <= c <= hi, (label, seed, les["kind"], c)
                by_kind.setdefault(les["kind"], []).append(c)
    means = {k: float(np.mean(v)) for k, v in by_kind.items()}
    assert set(means) == {"solid", "cyst", "irregular"}
    # Anechoic cysts are darkest, malignant darker than benign solid lesions.
    assert means["cyst"] < means["irregular"] < means["solid"] < 0


def test_posterior_enhancement_and_shadowing() -> None:
    """Below a cyst the echoes are brighter than beside it; below a malignant lesion darker."""

    def posterior_db(label: str, seed: int, **kw: object) -> float:
        image, _mask, info = synthetic.phantom(
            label, (256, 256), seed=seed, tissue="homogeneous", **kw
        )
        x0, _y0, x1, y1 = info["lesions"][0]["bbox"]
        w = x1 - x0
        cx = (x0 + x1) // 2
        rows = slice(y1 + 4, min(y1 + 40, 250))
        below = image[rows, cx - w // 6 : cx + w // 6].astype(float).mean()
        side = (
            np.concatenate(
                [
                    image[rows, max(x0 - 30, 0) : max(x0 - 10, 1)].ravel(),
                    image[rows, x1 + 10 : x1 + 30].ravel(),
                ]
            )
            .astype(float)
            .mean()
        )
        return (below - side) * 60.0 / 255.0

    assert posterior_db("benign", 1, cyst=True, lesion_depth_mm=12.0, lesion_size_mm=10.0) > 4
    assert (
        posterior_db("malignant", 1, posterior_db=-15.0, lesion_depth_mm=12.0, lesion_size_mm=12.0)
        < -8
    )


# --- ground truth -----------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["linear", "curvilinear"])
def test_phantom_outputs_and_mask_label_consistency(geometry: str) -> None:
    for label in synthetic.LABELS:
        image, mask, info = synthetic.phantom(label, SIZE, seed=11, geometry=geometry)
        assert image.shape == SIZE and image.dtype == np.uint8
        assert mask.shape == SIZE and mask.dtype == np.uint8
        assert info["label"] == label
        json.dumps(info)  # JSON-safe
        ids = sorted(int(v) for v in np.unique(mask) if v)
        assert ids == [d["id"] for d in info["lesions"]]
        if label == "normal":
            assert not mask.any() and info["lesions"] == []
        else:
            assert ids == [1]
            les = info["lesions"][0]
            assert les["label"] == label
            ys, xs = np.nonzero(mask == 1)
            assert les["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert les["area_px"] == xs.size
            for key in ("center_mm", "axes_mm", "angle_deg", "depth_mm", "contrast_db"):
                assert key in les
        # Everything in the params was recorded after defaults.
        assert info["params"]["geometry"] == geometry
        assert info["params"]["frequency_mhz"] > 0


def test_curvilinear_is_black_outside_the_fan_and_mask_inside_it() -> None:
    image, mask, _info = synthetic.phantom("malignant", (256, 256), seed=4, geometry="curvilinear")
    # The top corners and the bottom corners are outside a 45 degree fan.
    for corner in (image[:20, :20], image[:20, -20:], image[-10:, :10], image[-10:, -10:]):
        assert corner.max() == 0
    assert mask.any()
    # Black (outside the fan) pixels are never lesion: the fan covers the mask.
    fan = cv2.dilate((image > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert not (mask.astype(bool) & ~fan).any()


def test_mask_is_exact_lesion_region() -> None:
    """With no tissue texture the lesion is the only dark region: its mask matches the dark
    blob of a low-noise anechoic cyst closely (PSF blur only on the margin)."""
    image, mask, _ = synthetic.phantom(
        "benign",
        (256, 256),
        seed=8,
        tissue="homogeneous",
        cyst=True,
        noise_db=-200.0,
        lesion_size_mm=16.0,
    )
    dark = cv2.medianBlur(image, 5) < 40
    lesion = mask > 0
    inter = (dark & lesion).sum()
    iou = inter / (dark | lesion).sum()
    assert iou > 0.85


def test_geometry_descriptors() -> None:
    for seed in range(8):
        _, mask, info = synthetic.phantom("benign", SIZE, seed=seed)
        vx, vz = _moments(mask)
        assert vx > vz, seed  # parallel: wider than tall
        assert info["lesions"][0]["orientation"] == "parallel"
        _, mask, info = synthetic.phantom("malignant", SIZE, seed=seed)
        vx, vz = _moments(mask)
        assert vz > vx, seed  # not parallel: taller than wide
        assert info["lesions"][0]["orientation"] == "not parallel"
        assert info["lesions"][0]["margin"] == "spiculated"


def test_malignant_margin_is_irregular_benign_smooth() -> None:
    """Solidity (area / convex hull area): spiculated margins leave a lot of hull empty."""

    def solidity(mask: np.ndarray) -> float:
        cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(cs, key=cv2.contourArea)
        return cv2.contourArea(c) / cv2.contourArea(cv2.convexHull(c))

    ben = [solidity(synthetic.phantom("benign", SIZE, seed=s)[1]) for s in range(6)]
    mal = [solidity(synthetic.phantom("malignant", SIZE, seed=s)[1]) for s in range(6)]
    assert min(ben) > 0.95
    assert max(mal) < min(ben) and np.mean(mal) < 0.9


def test_calcifications_are_bright_spots_inside_malignant_lesions() -> None:
    image, mask, info = synthetic.phantom(
        "malignant", (256, 256), seed=3, calcifications=6, tissue="homogeneous"
    )
    assert info["lesions"][0]["calcifications"] == 6
    inside = image[mask > 0]
    assert inside.max() > np.percentile(image[mask == 0], 99)
    image0, mask0, _ = synthetic.phantom(
        "malignant", (256, 256), seed=3, calcifications=0, tissue="homogeneous"
    )
    assert image[mask > 0].max() > image0[mask0 > 0].max() + 20


def test_several_lesions_and_mixed_labels() -> None:
    _image, mask, info = synthetic.phantom(
        "benign", (256, 256), seed=2, lesion_labels=["benign", "malignant"], lesion_size_mm=8.0
    )
    assert sorted(int(v) for v in np.unique(mask) if v) == [1, 2]
    assert [d["label"] for d in info["lesions"]] == ["benign", "malignant"]
    assert info["label"] == "malignant"  # the worst lesion decides the frame label
    _, mask3, info3 = synthetic.phantom(
        "benign", (256, 256), seed=2, n_lesions=3, lesion_size_mm=7.0
    )
    assert info3["n_lesions"] == 3 and mask3.max() == 3


def test_knobs_change_the_image() -> None:
    base, _, _ = synthetic.phantom("benign", SIZE, seed=1)
    bright, _, _ = synthetic.phantom("benign", SIZE, seed=1, gain_db=10.0)
    assert bright.mean() > base.mean() + 20
    _deep, mask, info = synthetic.phantom("benign", SIZE, seed=1, lesion_depth_mm=25.0)
    assert info["lesions"][0]["depth_mm"] == pytest.approx(25.0)
    ys, _ = np.nonzero(mask)
    assert ys.mean() * info["pixel_spacing_mm"][0] == pytest.approx(25.0, abs=1.5)
    _, mask_big, _ = synthetic.phantom("benign", SIZE, seed=1, lesion_size_mm=16.0)
    _, mask_small, _ = synthetic.phantom("benign", SIZE, seed=1, lesion_size_mm=6.0)
    assert mask_big.sum() > 4 * mask_small.sum()
    # Higher frequency: finer speckle (higher mean gradient energy) in homogeneous tissue.
    lo, _, _ = synthetic.phantom("normal", SIZE, seed=1, tissue="homogeneous", frequency_mhz=4)
    hi, _, _ = synthetic.phantom("normal", SIZE, seed=1, tissue="homogeneous", frequency_mhz=14)

    def grain(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img[40:100].astype(float), axis=1)).mean())

    assert grain(hi) > 1.2 * grain(lo)


def test_clutter_is_drawn_outside_the_scan_region_and_keeps_the_mask() -> None:
    plain, _mask_p, _info_p = synthetic.phantom("benign", (256, 256), seed=6)
    image, mask, info = synthetic.phantom("benign", (256, 256), seed=6, clutter=True)
    y0, y1, x0, x1 = info["scan_box"]
    assert (y0, x0) > (0, 0)
    outside = np.ones(image.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert image[outside].max() > 150  # text and depth scale
    assert plain[:y0].max() > 0 and mask.any()
    assert info["lesions"][0]["area_px"] == int((mask > 0).sum())
    assert not mask[outside].any()


def test_determinism_by_seed() -> None:
    a = synthetic.phantom("malignant", SIZE, seed=42)
    b = synthetic.phantom("malignant", SIZE, seed=42)
    c = synthetic.phantom("malignant", SIZE, seed=43)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": "cancer"}, "label"),
        ({"size": (8, 8)}, "size"),
        ({"bogus_knob": 1}, "unknown phantom parameter"),
        ({"geometry": "phased"}, "geometry"),
        ({"depth_mm": 1.0}, "depth_mm"),
        ({"lesion_labels": ["weird"]}, "lesion_labels"),
        ({"label": "benign", "n_lesions": 0}, "at least one lesion"),
    ],
)
def test_bad_phantom_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        synthetic.phantom(**kwargs)


# --- fast paths give what the plain expressions give ------------------------------------------


@pytest.mark.parametrize("shape", [(256, 256), (120, 200), (97, 131)])
def test_convolve_psf_matches_four_single_channel_filters(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, *shape), dtype=np.float32)
    psf = _acoustics.make_psf(10.0, 0.15, 0.2)
    b = cv2.BORDER_REFLECT_101

    def sep(x: np.ndarray, ax: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(x, cv2.CV_32F, psf.lateral, ax, borderType=b)

    ref_re = sep(s[0], psf.axial_re) - sep(s[1], psf.axial_im)
    ref_im = sep(s[0], psf.axial_im) + sep(s[1], psf.axial_re)
    re, im = _acoustics.convolve_psf(s[0], s[1], psf)
    if shape[1] % 8 == 0:  # no SIMD tail in either: the same sums
        assert np.array_equal(re, ref_re) and np.array_equal(im, ref_im)
    scale = float(np.abs(ref_re).max())
    assert np.abs(re - ref_re).max() <= 1e-6 * scale and np.abs(im - ref_im).max() <= 1e-6 * scale
    # The reused workspace never leaks into results already returned.
    keep = re.copy()
    _acoustics.convolve_psf(s[1], s[0], psf)
    assert np.array_equal(re, keep)


def test_log_compress_matches_log10_expression() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        env = rng.rayleigh(1.0, (128, 128)) * 10.0 ** rng.uniform(-4.0, 1.0, (128, 1))
        env = env.astype(np.float32)
        env[0, :6] = [0.0, 1e-13, 1e-12, np.float32(10 ** (-33 / 20)), 1e30, 1.0]
        dr, gain = float(rng.choice([10.0, 40.0, 60.0, 120.0])), float(rng.uniform(-20, 20))
        scale = 255.0 / dr
        level = np.log10(np.maximum(env, 1e-12), dtype=np.float32)
        level *= 20.0 * scale
        level += (gain - 27.0 + dr) * scale + 0.5
        ref = np.clip(level, 0.0, 255.0).astype(np.uint8)
        assert np.array_equal(_acoustics.log_compress(env, dr, gain, 27.0), ref)


def test_lesion_radius_ratio_gives_the_reference_decisions() -> None:
    rng = np.random.default_rng(2)
    for k in range(40):
        les = _lesions.draw_lesion(rng, "malignant" if k % 2 else "benign", 1.0, 10.0)
        x = rng.uniform(-15, 17, 20_000).astype(np.float32)
        z = rng.uniform(-6, 26, 20_000).astype(np.float32)
        scale = float(rng.choice([1.0, 0.8, 0.3]))
        cuts = (1.0, 1.0 + 0.45 / min(les.a, les.b), 1.15, 2.0)
        ref = les.normalised_radius(x, z) / scale
        q = les.radius_ratio(*les.local(x, z), cuts, scale)
        for c in cuts:
            assert np.array_equal(q < c, ref < c) and np.array_equal(q > c, ref > c)
        assert np.abs(q / np.maximum(ref, 1e-6) - 1.0).max() < 0.05


def test_malignant_margin_matches_bumps_over_the_whole_table() -> None:
    def reference(rng: np.random.Generator, n_spicules: int, angular: float) -> np.ndarray:
        phi = _lesions._PHI
        m = _lesions._smooth_table(rng, range(3, 9), 0.12)
        for _ in range(int(rng.integers(3, 6))):
            d = np.angle(np.exp(1j * (phi - rng.uniform(-math.pi, math.pi))))
            m += angular * np.clip(1.0 - np.abs(d) / rng.uniform(0.35, 0.7), 0.0, None) ** 2
        for _ in range(n_spicules):
            d = np.angle(np.exp(1j * (phi - rng.uniform(-math.pi, math.pi))))
            width = math.radians(rng.uniform(2.0, 8.0))
            m += rng.uniform(0.25, 0.7) * np.clip(1.0 - np.abs(d) / width, 0.0, None) ** 1.5
        return m

    for seed in range(200):
        a = _lesions._irregular_table(np.random.default_rng(seed), 5 + seed % 9, 0.15)
        b = reference(np.random.default_rng(seed), 5 + seed % 9, 0.15)
        assert np.array_equal(a, b), seed


def test_lesion_outline_at_table_nodes_matches_interpolation() -> None:
    rng = np.random.default_rng(5)
    for label in ("benign", "malignant"):
        les = _lesions.draw_lesion(rng, label, 2.0, 9.0)
        for n in (720, 360):
            phi = np.linspace(-math.pi, math.pi, n, endpoint=False)
            m = np.interp(phi, _lesions._PHI, les.table, period=2.0 * math.pi) * 0.7
            u, v = les.a * m * np.cos(phi), les.b * m * np.sin(phi)
            c, s = math.cos(les.angle), math.sin(les.angle)
            ref = np.stack([les.cx + u * c - v * s, les.cz + u * s + v * c], axis=1)
            assert np.array_equal(les.outline(n, 0.7), ref)


def test_attenuation_cumsum_and_noise_blocks_match_numpy() -> None:
    rng = np.random.default_rng(3)
    atten = rng.uniform(0.3, 40.0, (150, 97)).astype(np.float32)
    assert np.array_equal(_scene._cumsum_rows(atten), np.cumsum(atten, axis=0, dtype=np.float32))
    i_re = rng.standard_normal((64, 48), dtype=np.float32)
    i_im = rng.standard_normal((64, 48), dtype=np.float32)
    amp = np.float32(10.0 ** (-55.0 / 20.0))
    draws = np.random.default_rng(4)
    dy, dx = int(draws.integers(64)), int(draws.integers(48))
    rolled = np.roll(_scene._noise_bank((64, 48)), (dy, dx), axis=(1, 2))
    ref_re, ref_im = i_re + rolled[0] * amp, i_im + rolled[1] * amp
    _scene._add_noise(i_re, i_im, float(amp), np.random.default_rng(4))
    assert np.array_equal(i_re, ref_re) and np.array_equal(i_im, ref_im)


@pytest.mark.parametrize("kind", ["linear", "curvilinear"])
def test_rest_pose_world_coordinates_are_cached_read_only(kind: str) -> None:
    geom = make_geometry(kind, (96, 112), 40.0)
    for grid, (a, b) in (
        ("acoustic", (geom.ac_a, geom.ac_b)),
        ("output", (geom.out_a, geom.out_b)),
    ):
        xw, zw = geom.world(grid, Pose())
        ref_x, ref_z = geom.to_world(a, b, Pose())
        assert np.array_equal(xw, ref_x) and np.array_equal(zw, ref_z)
        assert not xw.flags.writeable and geom.world(grid, Pose())[0] is xw
        moved = Pose(1.5, 0.05)
        assert np.array_equal(geom.world(grid, moved)[0], geom.to_world(a, b, moved)[0])


# --- cine -------------------------------------------------------------------------------------


def test_cine_motion_and_lesion_entering_and_leaving() -> None:
    frames = list(synthetic.cine(24, "malignant", (160, 160), seed=3))
    assert len(frames) == 24
    labels = [info["label"] for _, _, info in frames]
    assert labels[0] == "normal" and labels[-1] == "normal" and "malignant" in labels
    first = labels.index("malignant")
    last = len(labels) - 1 - labels[::-1].index("malignant")
    assert all(lab == "malignant" for lab in labels[first : last + 1])
    for k, (_, mask, info) in enumerate(frames):
        assert (info["label"] == "normal") == (not mask.any())
        assert info["frame"] == k
        assert set(np.unique(mask)) <= {0, 1}  # stable id of the scene's only lesion
    # The probe moves: lateral position strictly increasing, tilt varies.
    tx = [info["pose"]["tx_mm"] for _, _, info in frames]
    assert all(b > a for a, b in itertools.pairwise(tx))
    assert np.ptp([info["pose"]["tilt_deg"] for _, _, info in frames]) > 1.0
    # The lesion moves across the frame against the probe motion.
    cols = [np.nonzero(m)[1].mean() for _, m, _ in frames if m.any()]
    assert cols[0] > cols[-1] + 40
    times = [info["time_s"] for _, _, info in frames]
    assert times[1] == pytest.approx(1 / 20)


def _tissue_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(float) - a.mean()
    b = b.astype(float) - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def test_cine_speckle_decorrelation() -> None:
    """Frozen probe: frame-to-frame correlation of the envelope follows speckle_correlation."""

    def corr(rho: float) -> float:
        frames = list(
            synthetic.cine(
                3,
                "normal",
                (128, 128),
                seed=1,
                sweep_mm=0.0,
                tilt_deg=0.0,
                speckle_correlation=rho,
                tissue="homogeneous",
                noise_db=-200.0,
            )
        )
        return _tissue_corr(frames[1][0][20:100], frames[2][0][20:100])

    c_hi, c_mid, c_lo = corr(0.98), corr(0.7), corr(0.0)
    assert c_hi > 0.9
    assert c_lo < 0.1
    assert c_lo < c_mid < c_hi


def test_cine_elevational_drift_shrinks_the_lesion() -> None:
    frames = list(
        synthetic.cine(
            9, "benign", (160, 160), seed=2, sweep_mm=0.0, tilt_deg=0.0, elevation_mm=25.0
        )
    )
    areas = [int(m.sum()) for _, m, _ in frames]
    assert areas[0] == 0 and areas[-1] == 0  # the plane starts and ends off the lesion
    assert max(areas) == areas[4] > 0


# --- dataset ----------------------------------------------------------------------------------


def test_dataset_in_memory_is_deterministic_and_balanced() -> None:
    a = list(synthetic.dataset(n=10, balance=(0.5, 0.3, 0.2), size=(96, 96), seed=7))
    b = list(synthetic.dataset(n=10, balance=(0.5, 0.3, 0.2), size=(96, 96), seed=7))
    assert len(a) == 10
    labels = [info["label"] for _, _, info in a]
    assert labels.count("benign") == 5 and labels.count("malignant") == 3
    assert labels.count("normal") == 2
    for (ia, ma, fa), (ib, mb, fb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb) and fa == fb
    # Each sample is reproducible alone from the seed it records.
    image, _mask, _ = synthetic.phantom(labels[3], (96, 96), seed=a[3][2]["seed"])
    assert np.array_equal(image, a[3][0])


def test_dataset_rejects_bad_balance() -> None:
    with pytest.raises(InputError, match="balance"):
        synthetic.dataset(n=3, balance=(1.0, -1.0, 0.5))
    with pytest.raises(InputError, match="balance"):
        synthetic.dataset(n=3, balance=(1.0, 1.0))


# --- CLI --------------------------------------------------------------------------------------


def test_cli_writes_contact_sheet_and_cine(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="sonoedge")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(
        ["phantom", "--out", str(tmp_path), "--size", "96", "--frames", "6", "--per-class", "1"]
    )
    assert cli.run(args) == 0
    sheet = cv2.imread(str(tmp_path / "phantoms.png"))
    assert sheet.shape == (2 * 96, 3 * 96, 3)
    # Contours drawn in colour (green benign, red malignant) on a grey frame.
    b, g, r = (sheet[..., i].astype(int) for i in range(3))
    assert ((g - r > 100) & (g - b > 100)).any() and ((r - g > 100) & (r - b > 100)).any()
    gif = tmp_path / "cine.gif"
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    ok, anim = cv2.imreadanimation(str(gif))
    assert ok and len(anim.frames) == 6
    out = capsys.readouterr().out
    assert str(tmp_path / "phantoms.png") in out and str(gif) in out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


# --- style="scanner": randomized factors, splits, annotation noise -----------------------------


def _decompressed(image: np.ndarray, info: dict, rows: slice) -> np.ndarray:
    d = info["display"]
    band = image[rows].astype(np.float64)
    return 10.0 ** ((band * d["dynamic_range_db"] / 255.0 - d["dynamic_range_db"]) / 20.0)


_PLAIN = dict(
    style="scanner",
    tissue="homogeneous",
    compounding=1,
    speckle_reduction="off",
    gray_gamma=1.0,
    haze_db=-200.0,
    noise_db=-200.0,
    gain_db=0.0,
    dynamic_range_db=80.0,
    harmonic=False,
    specular_db=-200.0,
    geometry="linear",
    depth_mm=30.0,
    tgc_sliders_db=[0.0] * 8,
    tgc_compensation=1.0,
)


def test_scanner_phantom_records_every_factor_and_is_deterministic() -> None:
    a = synthetic.phantom("malignant", (128, 160), seed=4, style="scanner")
    b = synthetic.phantom("malignant", (128, 160), seed=4, style="scanner")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    info = a[2]
    json.dumps(info)
    assert info["style"] == "scanner"
    assert set(synthetic.FRAME_FACTORS) <= set(info["factors"])
    les = info["lesions"][0]
    for name in ("shape", "orientation", "margin", "echo_pattern", "posterior", "size_mm"):
        assert name in les, name
    c = synthetic.phantom("malignant", (128, 160), seed=5, style="scanner")
    assert not np.array_equal(a[0], c[0])


def test_scanner_fixed_factors_are_honoured() -> None:
    _, _, info = synthetic.phantom(
        "benign",
        (96, 96),
        seed=1,
        style="scanner",
        compounding=3,
        frequency_mhz=14.0,
        geometry="curvilinear",
        lesion_descriptors={"margin": "spiculated", "posterior": "shadowing"},
    )
    f = info["factors"]
    assert (f["compounding"], f["frequency_mhz"], f["geometry"]) == (3, 14.0, "curvilinear")
    assert info["lesions"][0]["margin"] == "spiculated"
    assert info["lesions"][0]["posterior"] == "shadowing"
    assert info["lesions"][0]["posterior_db"] < -5.0


def test_sparse_scatterers_give_pre_rayleigh_speckle() -> None:
    """Fully developed speckle: envelope mean / std ~ 1.91 (Rayleigh); a few scatterers per
    resolution cell: a heavier tail (K-like), mean / std well below it."""
    ratios = {}
    for density in (100.0, 2.0):
        img, _, info = synthetic.phantom(
            "normal", (256, 256), seed=3, scatterer_density=density, **_PLAIN
        )
        env = _decompressed(img, info, slice(40, 200))
        ratios[density] = env.mean() / env.std()
    assert ratios[100.0] == pytest.approx(synthetic.RAYLEIGH_MEAN_TO_STD, rel=0.12)
    assert ratios[2.0] < 0.9 * ratios[100.0]  # measured 1.63 vs 1.91


def test_compounding_reduces_speckle_and_beam_widens_off_focus() -> None:
    std = {}
    for n in (1, 5):
        kw = dict(_PLAIN, compounding=n, scatterer_density=100.0)
        img, _, info = synthetic.phantom("normal", (200, 200), seed=2, **kw)
        std[n] = float(img[40:160, 40:160].astype(np.float64).std())
    assert std[5] < 0.75 * std[1]  # incoherent average of decorrelated views
    psf = info["psf"]
    assert psf["sigma_lateral_min_mm"] < psf["sigma_lateral_max_mm"]


def test_descriptors_are_drawn_independently_with_class_dependent_rates() -> None:
    from sdk.synthetic._factors import draw_lesion_descriptors

    rng = np.random.default_rng(0)
    draws = {
        lab: [draw_lesion_descriptors(rng, lab) for _ in range(600)]
        for lab in ("benign", "malignant")
    }

    def rate(lab: str, key: str, value: str) -> float:
        return float(np.mean([d[key] == value for d in draws[lab]]))

    # Real series: some benign masses shadow, some cancers look circumscribed.
    assert (
        0.05
        < rate("benign", "posterior", "shadowing")
        < rate("malignant", "posterior", "shadowing")
    )
    assert (
        0.03
        < rate("malignant", "margin", "circumscribed")
        < rate("benign", "margin", "circumscribed")
    )
    assert rate("malignant", "margin", "spiculated") > rate("benign", "margin", "spiculated") > 0
    assert rate("benign", "echo_pattern", "isoechoic") > 0.05
    assert rate("benign", "echo_pattern", "complex") > 0.02
    # Independence: the posterior rate does not depend on the margin drawn.
    mal = draws["malignant"]
    spic = [d["posterior"] == "shadowing" for d in mal if d["margin"] == "spiculated"]
    other = [d["posterior"] == "shadowing" for d in mal if d["margin"] != "spiculated"]
    assert abs(np.mean(spic) - np.mean(other)) < 0.15


@pytest.mark.parametrize("name", sorted(synthetic.OOD_SPLITS))
def test_ood_splits_include_and_exclude_what_they_say(name: str) -> None:
    train, test = synthetic.OOD_SPLITS[name]
    for seed in range(4):
        for label in test.labels or synthetic.LABELS:
            _, _, info = synthetic.phantom(label, (64, 64), seed=seed, style="scanner", split=test)
            assert test.accepts(info["factors"], info["lesions"])
            assert not train.accepts(info["factors"], info["lesions"])
            assert not synthetic.OOD_TRAIN.accepts(info["factors"], info["lesions"])
        for label in ("benign", "malignant"):
            _, _, info = synthetic.phantom(
                label, (64, 64), seed=seed, style="scanner", split=synthetic.OOD_TRAIN
            )
            assert train.accepts(info["factors"], info["lesions"])
            assert not test.accepts(info["factors"], info["lesions"])


def test_split_rules_ranges_lesion_conditions_and_round_trip() -> None:
    s = synthetic.Split(
        "x",
        include=({"frequency_mhz": {"min": 7, "max": 12}},),
        exclude=({"lesion.label": ["benign"], "lesion.posterior": ["shadowing"]},),
    )
    ben_shadow = [{"label": "benign", "posterior": "shadowing"}]
    assert s.accepts({"frequency_mhz": 9.0}, [])
    assert not s.accepts({"frequency_mhz": 13.0}, [])
    assert not s.accepts({"frequency_mhz": 9.0}, ben_shadow)
    assert s.accepts({"frequency_mhz": 9.0}, [{"label": "malignant", "posterior": "shadowing"}])
    again = synthetic.Split.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.to_dict() == s.to_dict()
    with pytest.raises(InputError, match="unknown split factor"):
        synthetic.Split("bad", include=({"nope": [1]},))
    with pytest.raises(InputError, match="style='scanner'"):
        synthetic.phantom("benign", (64, 64), split=s)
    impossible = synthetic.Split("none", include=({"compounding": [7]},))
    with pytest.raises(InputError, match="admits no"):
        synthetic.phantom("benign", (64, 64), style="scanner", split=impossible)


def test_split_intersection_accepts_what_both_accept() -> None:
    """Split.intersect: a frame is accepted iff both splits accept it (checked on drawn
    factors of many frames), labels keep the first split's cycle, clashes are refused."""
    echo = synthetic.Split(
        "hyper",
        include=({"lesion.echo_pattern": ["hyperechoic", "isoechoic"]},),
        labels=("benign", "benign", "malignant"),
    )
    both = echo.intersect(synthetic.OOD_TRAIN)
    assert both.labels == ("benign", "benign", "malignant")
    assert both.include == (
        {"lesion.echo_pattern": ["hyperechoic", "isoechoic"], "geometry": ["linear"]},
    )
    assert len(both.exclude) == len(synthetic.OOD_TRAIN.exclude)
    seen = {True: 0, False: 0}
    for seed in range(120):
        label = ("benign", "malignant")[seed % 2]
        _, _, info = synthetic.phantom(label, (48, 48), seed=seed, style="scanner")
        f, les = {**info["factors"], "label": label}, info["lesions"]
        want = echo.accepts(f, les) and synthetic.OOD_TRAIN.accepts(f, les)
        assert both.accepts(f, les) == want
        seen[want] += 1
    assert seen[True] > 0 and seen[False] > 0  # both outcomes exercised
    _, _, info = synthetic.phantom("malignant", (64, 64), seed=3, style="scanner", split=both)
    assert any(x["echo_pattern"] in ("hyperechoic", "isoechoic") for x in info["lesions"])
    assert info["factors"]["geometry"] == "linear"
    assert echo.intersect(synthetic.OOD_TRAIN, name="x").name == "x"
    with pytest.raises(InputError, match="no common image label"):
        echo.intersect(synthetic.Split("n", labels=("normal",)))
    lin, cur = (synthetic.Split(n, include=({"geometry": [n]},)) for n in ("linear", "curvilinear"))
    with pytest.raises(InputError, match="differently"):
        lin.intersect(cur)
    assert lin.intersect(lin).include == lin.include
    with pytest.raises(InputError, match="intersects a Split"):
        lin.intersect({"name": "x"})  # type: ignore[arg-type]


def test_annotation_noise_perturbs_the_mask_not_the_image() -> None:
    img0, exact, _ = synthetic.phantom("benign", (192, 192), seed=6, style="scanner")
    img1, noisy, info = synthetic.phantom(
        "benign", (192, 192), seed=6, style="scanner", annotation_noise=2.0
    )
    assert np.array_equal(img0, img1)
    assert not np.array_equal(exact, noisy)
    assert set(np.unique(noisy)) == set(np.unique(exact))
    inter = ((exact > 0) & (noisy > 0)).sum()
    iou = inter / ((exact > 0) | (noisy > 0)).sum()
    assert 0.6 < iou < 1.0 and info["annotation"]["iou_vs_exact"] == pytest.approx(iou, abs=1e-3)
    same = synthetic.perturb_mask(exact, np.random.default_rng(0), 0.0)
    assert np.array_equal(same, exact)


def test_scanner_cine_and_curvilinear_fan() -> None:
    frames = list(
        synthetic.cine(3, "benign", (96, 128), seed=2, style="scanner", geometry="curvilinear")
    )
    assert len(frames) == 3
    img, _, info = frames[1]
    assert info["factors"]["geometry"] == "curvilinear"
    assert img[0, 0] == 0 and img[0, -1] == 0  # outside the fan
