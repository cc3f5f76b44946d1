"""``style="scanner"`` phantoms: randomized probe, speckle, scanner processing, anatomy, lesions.

The same convolution model as the classic phantoms (:mod:`sdk.synthetic._scene`), widened:

1. the frame factors and the lesions' BI-RADS descriptors are drawn first
   (:mod:`sdk.synthetic._factors`), redrawn until the split (if any) accepts them;
2. anatomy from random fields (:mod:`sdk.synthetic._anatomy_fields`), lesions from their
   descriptors (:func:`sdk.synthetic._lesions.draw_lesion_birads`), echogenicity relative to fat;
3. scatterers: circular complex Gaussian, thinned to ``scatterer_density`` per resolution cell
   (K-like, pre-Rayleigh speckle when sparse), plus coherent specular echoes of the interfaces
   and near-field haze; round-trip attenuation at the effective frequency (1.5 f0 harmonic);
4. PSF: Gaussian pulse from the fractional bandwidth, lateral beam width varying with depth
   around the transmit focus (pulse-echo = transmit x dynamic-receive beam); spatial
   compounding averages the intensities of ``compounding`` steered views (scatterers shifted,
   shadows cast along each view's direction);
5. TGC (compensation ratio + slider offsets), gain, log compression at the dynamic range, grey
   map gamma, speckle-reduction filtering, scan conversion.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from sdk.errors import InputError
from sdk.synthetic._acoustics import (
    SPEED_OF_SOUND_MM_PER_US,
    axial_kernel,
    convolve_psf_banded,
    lateral_kernel,
    log_compress,
)
from sdk.synthetic._anatomy import build_tissue
from sdk.synthetic._anatomy_fields import build_breast_fields, specular_raster
from sdk.synthetic._factors import FRAME_FACTORS, draw_frame_factors, draw_lesion_descriptors
from sdk.synthetic._geometry import Pose, make_geometry
from sdk.synthetic._lesions import Lesion, draw_lesion_birads
from sdk.synthetic._scene import no_room, try_place
from sdk.synthetic._splits import Split

__all__ = ["ScannerSetup", "build_scanner_scene", "render_scanner"]

_LN10_20 = math.log(10.0) / 20.0
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_HEADROOM_DB = 27.0
_N_BANDS = 8
_EDGE_SHADOW_ATTEN = 3.0  # extra dB/cm/MHz in the refraction strips at a mass's lateral edges
_SRI = {"off": None, "low": (15.0, 1.5, 1), "mid": (28.0, 2.0, 1), "high": (40.0, 2.5, 2)}

#: Frame factors a caller may fix through phantom keywords of the same name: every frame factor
#: but the label (which has its own argument).
FACTOR_KNOBS: tuple[str, ...] = tuple(f for f in FRAME_FACTORS if f != "label")


@dataclass(eq=False)
class ScannerSetup:
    """Per-scene acoustics of a scanner-style phantom (all on the acoustic grid)."""

    axial_re: np.ndarray
    axial_im: np.ndarray
    bands: tuple[tuple[int, int, np.ndarray], ...]
    tgc: np.ndarray  # (n_samples, 1) float32 amplitude gain
    f_eff_mhz: float  # attenuation frequency (1.5 f0 with harmonics)
    occupancy: float  # probability that a sample holds a scatterer (1: fully developed)
    spec: np.ndarray = field(repr=False)  # specular raster (world grid)
    haze: np.ndarray | None = field(repr=False, default=None)  # (n_samples, 1) amplitude
    angles: tuple[float, ...] = (0.0,)
    shifts: tuple[tuple[int, int], ...] = ((0, 0),)
    lut: np.ndarray | None = field(repr=False, default=None)  # grey map (256,) uint8
    sri: tuple[float, float, int] | None = None
    fat_power: float = 0.1
    psf_info: dict[str, float] = field(default_factory=dict)


def _given_factors(p: Any) -> dict[str, Any]:
    given = getattr(p, "_given", set())
    return {k: getattr(p, k) for k in FACTOR_KNOBS if k in given and hasattr(p, k)}


def _lesion_overrides(p: Any) -> dict[str, Any]:
    d = dict(p.lesion_descriptors or {})
    if p.cyst is not None and "echo_pattern" not in d:
        d["echo_pattern"] = "anechoic" if p.cyst else "hypoechoic"
    if p.lesion_size_mm is not None:
        d["size_mm"] = float(p.lesion_size_mm)
    if p.calcifications is not None:
        d["calcifications"] = int(p.calcifications) > 0
    return d


_MAX_DRAWS = 20_000


def _draw_factors(
    rng: np.random.Generator,
    label: str,
    p: Any,
    lesion_labels: list[str],
    split: Split | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    given = _given_factors(p)
    over = _lesion_overrides(p)
    # A draw costs ~60 us. 20,000 (was 2,000 until 2026-12-03; frames accepted earlier are
    # unchanged) lets rare regions through: hyperechoic malignant lesions inside OOD_TRAIN are
    # ~0.1 % of draws (export.train's supplement), which 2,000 draws missed ~1 time in 10.
    for _ in range(_MAX_DRAWS):
        f = draw_frame_factors(rng, label, given)
        descs = [draw_lesion_descriptors(rng, lab, over) for lab in lesion_labels]
        if split is None or split.accepts(f, descs):
            return f, descs
    raise InputError(
        f"split {split.name if split else ''!r} admits no {label!r} frame with the fixed "
        f"parameters {sorted(given)} in {_MAX_DRAWS} draws; loosen the split or the fixed "
        "parameters"
    )


def _bands(
    geom: Any, f: dict[str, Any], wavelength: float, lateral_scale: float
) -> tuple[tuple[tuple[int, int, np.ndarray], ...], list[float]]:
    """Depth bands of the lateral PSF and their sigmas (mm): pulse-echo = transmit (Gaussian
    beam focused at ``focal_depth_mm``, depth of field 7 lambda F#^2) x receive (dynamic focus,
    constant F#), so the width is ``sigma / sqrt(2)`` at the focus and tends to ``sigma``
    away from it; a curvilinear probe's lines also spread with depth."""
    f_num = float(f["f_number"])
    one_way = 1.41 * wavelength * f_num * _FWHM_TO_SIGMA * lateral_scale  # mm
    z_r = 3.5 * wavelength * f_num * f_num
    zf = float(f["focal_depth_mm"])
    edges = np.linspace(0, geom.n_samples, _N_BANDS + 1).round().astype(int)
    out = []
    sigmas = []
    for i in range(_N_BANDS):
        r0, r1 = int(edges[i]), int(edges[i + 1])
        if r1 <= r0:
            continue
        z = (0.5 * (r0 + r1)) * geom.sample_mm
        s_t = one_way * math.sqrt(1.0 + ((z - zf) / z_r) ** 2)
        s_pe = one_way * s_t / math.sqrt(one_way**2 + s_t**2)
        if geom.kind == "linear":
            line_mm = geom.pixel_mm
        else:
            line_mm = (geom.radius_mm + z) * geom.sector_rad / geom.n_lines
        out.append((r0, r1, lateral_kernel(round(s_pe / line_mm, 2))))
        sigmas.append(s_pe)
    return tuple(out), sigmas


def build_scanner_scene(
    rng: np.random.Generator,
    label: str,
    size: tuple[int, int],
    params: Any,
    split: Split | None = None,
    x_extent: tuple[float, float] | None = None,
    lesion_x: tuple[float, float] | None = None,
) -> Any:
    """Draw the factors, tissue and lesions of one scanner-style scene (see module docstring)."""
    from sdk.synthetic._scene import Scene

    p0 = params
    if label == "normal":
        labels: list[str] = []
    elif p0.lesion_labels is not None:
        labels = list(p0.lesion_labels)
    else:
        labels = [label] * p0.n_lesions
    if label != "normal" and not labels:
        raise InputError(f"label {label!r} needs at least one lesion (n_lesions >= 1)")
    f, descs = _draw_factors(rng, label, p0, labels, split)

    p = copy.copy(p0)
    for k in ("geometry", "depth_mm", "frequency_mhz", "gain_db", "dynamic_range_db"):
        setattr(p, k, f[k])
    p.noise_db = float(f["noise_db"])
    p.attenuation_db_cm_mhz = float(f["attenuation_db_cm_mhz"])
    if p.lesion_depth_mm is not None and not 0.0 < p.lesion_depth_mm < p.depth_mm:
        raise InputError(f"lesion_depth_mm={p.lesion_depth_mm} must be in (0, depth_mm)")
    freq = float(f["frequency_mhz"])
    harmonic = bool(f["harmonic"])
    f_eff = 1.5 * freq if harmonic else freq
    if "tgc_db_cm" not in getattr(p0, "_given", set()):
        p.tgc_db_cm = float(f["tgc_compensation"]) * 2.0 * p.attenuation_db_cm_mhz * f_eff

    geom = make_geometry(
        p.geometry, tuple(size), float(p.depth_mm), p.margins(size), p.radius_mm, p.sector_deg
    )
    if p.geometry == "linear":
        half = geom.width_mm / 2.0
    else:
        half = (p.radius_mm + p.depth_mm) * math.sin(geom.sector_rad / 2.0 + 0.1)
    lo, hi = (-half, half) if x_extent is None else (x_extent[0] - half, x_extent[1] + half)
    # Tissue rasters 2x coarser than the samples (floored at 0.12 mm): the PSF, not the
    # raster, sets the finest detail of the image.
    res = max(2.0 * min(geom.pixel_mm, geom.sample_mm), 0.12)
    if p.tissue == "homogeneous":
        tissue = build_tissue(rng, lo - 5.0, hi + 5.0, float(p.depth_mm) + 5.0, res, "homogeneous")
        tissue.atten[:] = p.attenuation_db_cm_mhz
        fat_db = 0.0
    else:
        tissue = build_breast_fields(rng, lo - 5.0, hi + 5.0, float(p.depth_mm) + 5.0, res, f)
        fat_db = tissue.layers["fat_level_db"]
    power = cv2.exp(tissue.echo_db * np.float32(math.log(10.0) / 10.0))  # SIMD, not libm
    fat_power = 10.0 ** (fat_db / 10.0)

    fit_fan = lesion_x is None
    if lesion_x is None:
        margin = 0.35 * half
        lesion_x = (-half + margin, half - margin)
    lesions = _place(rng, p, tissue, descs, lesion_x, fit_fan, geom)
    for les in lesions:
        les.surround_power = fat_power
        thickness_cm = max(les.height_mm, 0.5) / 10.0
        delta = -les.posterior_db / (2.0 * f_eff * thickness_cm)
        les.attenuation = max(p.attenuation_db_cm_mhz + delta, 0.0)

    # PSF: axial from the bandwidth (Gaussian pulse, 0.88 lambda / B), lateral per depth band.
    wavelength = SPEED_OF_SOUND_MM_PER_US / freq
    ax_fwhm = 0.88 / float(f["fractional_bandwidth"]) * (1.25 if harmonic else 1.0)
    ax_re, ax_im, s_ax = axial_kernel(freq, geom.sample_mm, round(ax_fwhm, 3))
    bands, sigmas = _bands(geom, f, wavelength, 1.0 / 1.4 if harmonic else 1.0)

    depth_cm = (np.arange(geom.n_samples, dtype=np.float32) + 0.5) * geom.sample_mm / 10.0
    sliders = np.asarray(f["tgc_sliders_db"], dtype=np.float32)
    slider_db = np.interp(
        depth_cm, np.linspace(0.0, p.depth_mm / 10.0, sliders.size), sliders
    ).astype(np.float32)
    # The TGC ramp saturates at the amplifier's range: beyond it the image darkens with depth.
    ramp = np.minimum(p.tgc_db_cm * depth_cm, float(f["tgc_range_db"]))
    tgc = np.exp(_LN10_20 * (ramp + slider_db)).astype(np.float32)

    # Scatterers per resolution cell -> occupancy of an acoustic sample.
    lat_samples = max(float(np.median(sigmas)) / geom.pixel_mm, 1.0)
    cell = (2.355 * s_ax) * (2.355 * lat_samples)
    occupancy = min(1.0, float(f["scatterer_density"]) / max(cell, 1.0))

    haze_db = float(f["haze_db"]) - (15.0 if harmonic else 0.0)
    z_h = rng.uniform(4.0, 12.0)
    haze = (
        10.0 ** (haze_db / 20.0) * np.exp(-(depth_cm * 10.0) / z_h) * np.sqrt(fat_power)
    ).astype(np.float32)

    n_views = int(f["compounding"])
    steer = float(f["steer_deg"])
    angles = tuple(np.linspace(-steer, steer, n_views)) if n_views > 1 else (0.0,)
    angles = tuple(sorted(angles, key=abs))  # the straight view first (it carries the state)
    shifts = tuple((int(7 * k), int(11 * k + 3 * (k > 0))) for k in range(len(angles)))

    gamma = float(f["gray_gamma"])
    lut = None
    if abs(gamma - 1.0) > 1e-3:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    setup = ScannerSetup(
        ax_re,
        ax_im,
        bands,
        tgc.reshape(-1, 1),
        f_eff,
        occupancy,
        specular_raster(tissue, float(f["specular_db"])),
        haze.reshape(-1, 1),
        angles,
        shifts,
        lut,
        _SRI[str(f["speckle_reduction"])],
        fat_power,
        {
            "sigma_axial_samples": round(s_ax, 4),
            "sigma_lateral_min_mm": round(min(sigmas), 4),
            "sigma_lateral_max_mm": round(max(sigmas), 4),
            "axial_fwhm_wavelengths": round(ax_fwhm, 4),
            "occupancy": round(occupancy, 4),
        },
    )
    scene = Scene(p, geom, tissue, lesions, None, tgc.reshape(-1, 1), power)
    scene.factors = f
    scene.scanner = setup
    return scene


def _place(
    rng: np.random.Generator,
    p: Any,
    tissue: Any,
    descs: list[dict[str, Any]],
    x_range: tuple[float, float],
    fit_fan: bool,
    geom: Any,
) -> list[Lesion]:
    lesions: list[Lesion] = []
    layers = tissue.layers
    skin = layers.get("skin_mm", 1.0)
    for d in descs:
        d["size_mm"] = min(float(d["size_mm"]), 0.45 * float(p.depth_mm))  # fits the frame
        for _attempt in range(60):
            les = draw_lesion_birads(
                rng, d, 0.0, 0.0, p.contrast_db, p.posterior_db, p.calcifications
            )
            half_h = les.height_mm / 2.0
            if p.lesion_depth_mm is not None:
                cz = p.lesion_depth_mm
            else:
                top = skin + half_h + 1.0
                deep = layers.get("gland_mm", 0.6 * p.depth_mm) + 2.0
                bottom = min(deep, p.depth_mm - half_h - 2.0)
                cz = rng.uniform(min(top, bottom), max(top, bottom))
            cz = max(cz, half_h + skin + 0.5)
            if try_place(rng, p, les, cz, x_range, fit_fan, lesions):
                break
        else:
            raise no_room(len(descs))
    return lesions


@lru_cache(maxsize=32)
def _shear_maps(shape: tuple[int, int], shift_per_row: float) -> tuple[np.ndarray, ...]:
    """remap maps (x, y) that shear a ``shape`` grid by ``shift_per_row`` columns per row, and
    back (read-only)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fwd = (xx + yy * np.float32(shift_per_row), yy)
    inv = (xx - yy * np.float32(shift_per_row), yy)
    maps = (*fwd, *inv)
    for m in maps:
        m.setflags(write=False)
    return maps


def _steered_cum(atten: np.ndarray, tan_px: float) -> np.ndarray:
    """Attenuation accumulated along a beam steered by ``tan_px`` columns per row, on a grid
    halved in both axes (shadows are smooth) and resized back (float32, atten's shape)."""
    h, w = atten.shape
    small = cv2.resize(atten, (max(w // 2, 1), max(h // 2, 1)), interpolation=cv2.INTER_AREA)
    fx, fy, ix, iy = _shear_maps(small.shape, tan_px)
    border = cv2.BORDER_REPLICATE
    sheared = cv2.remap(small, fx, fy, cv2.INTER_LINEAR, borderMode=border)
    cum = np.cumsum(sheared, axis=0, dtype=np.float32) * np.float32(2.0)
    back = cv2.remap(cum, ix, iy, cv2.INTER_LINEAR, borderMode=border)
    return cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR)


def _smooth01(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _paint_lesions(
    scene: Any,
    xa: np.ndarray,
    za: np.ndarray,
    power: np.ndarray,
    atten: np.ndarray,
    spec: np.ndarray,
    elevation_mm: float,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], list[tuple[float, float, float, float]]]:
    from sdk.synthetic._scene import _lesion_pixels

    pflat, aflat = power.reshape(-1), atten.reshape(-1)
    ac_ids = np.zeros(power.shape, np.uint8)
    painted: list[tuple[int, np.ndarray]] = []
    points: list[tuple[float, float, float, float]] = []
    for lid, les in enumerate(scene.lesions, start=1):
        s = les.scale_at(elevation_mm)
        if s <= 0.0:
            continue
        cap = 0.45 / min(les.a, les.b) if les.capsule_db else 0.0
        ext = max(les.edge_width, les.halo_width, cap, 0.12 if les.edge_shadows else 0.0)
        near, q, u, v = _lesion_pixels(
            les, xa, za, s, pad=0.6 + ext * les.bound * s, cuts=(1.0, 1.0 + cap)
        )
        if near.size == 0:
            continue
        inside = q < 1.0
        idx = near[inside]
        ui, vi = u[inside], v[inside]
        level = les.contrast_db + les.texture(ui, vi)
        if les.solid_db is not None:  # complex cystic-solid: solid where the pattern is high
            pat = np.zeros_like(ui)
            for ku, kv, ph in les.texture_k:
                pat += np.cos(ku * ui + kv * vi + ph)
            pat *= math.sqrt(2.0 / max(len(les.texture_k), 1))
            pat += 1.5 * (np.hypot(ui, vi) - 0.6)  # solid parts cling to the wall
            level = np.where(pat > les.solid_threshold, les.solid_db, level)
        lesion_power = les.surround_power * np.power(10.0, level / 10.0)
        if les.edge_width > 0.0:
            e = les.edge_width
            band = q < 1.0 + e
            bidx = near[band]
            w = _smooth01((1.0 + e - q[band]) / (2.0 * e))
            mean_in = float(np.mean(lesion_power)) if lesion_power.size else les.surround_power
            full = np.full(bidx.size, mean_in, np.float32)
            full[inside[band]] = lesion_power
            pflat[bidx] = w * full + (1.0 - w) * pflat[bidx]
        else:
            pflat[idx] = lesion_power
        if cap:
            ring = near[(q >= 1.0) & (q < 1.0 + cap)]
            pflat[ring] = les.surround_power * 10.0 ** (les.capsule_db / 10.0)
        if les.halo_db:
            sel = (q >= 1.0) & (q < 1.0 + les.halo_width)
            fade = 1.0 - (q[sel] - 1.0) / les.halo_width
            pflat[near[sel]] *= np.power(10.0, les.halo_db * fade / 10.0).astype(np.float32)
        ac_ids.reshape(-1)[idx] = lid
        painted.append((lid, idx))
        aflat[idx] = les.attenuation
        spec.reshape(-1)[idx] = 0.0  # no tissue interface inside the mass
        if les.edge_shadows:
            rr = np.hypot(u, v)
            side = (np.abs(u) > 0.95 * rr) & (q > 0.92) & (q < 1.08)
            aflat[near[side]] += _EDGE_SHADOW_ATTEN
        if len(les.calcs) and s > 0.5:
            c, sn = math.cos(les.angle), math.sin(les.angle)
            for nu, nv, amp_db, phase in les.calcs:
                uu, vv = nu * les.a * s, nv * les.b * s
                points.append(
                    (
                        les.cx + uu * c - vv * sn,
                        les.cz + uu * sn + vv * c,
                        math.sqrt(les.surround_power) * 10.0 ** (amp_db / 20.0),
                        phase,
                    )
                )
    return ac_ids, painted, points


def render_scanner(
    scene: Any,
    pose: Pose,
    rng: np.random.Generator,
    elevation_mm: float = 0.0,
    speckle: Any = None,
    correlation: float = 0.0,
    keep_envelope: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[int], Any, np.ndarray | None]:
    """Render one scanner-style frame; same contract as :func:`sdk.synthetic._scene.render`."""
    from sdk.synthetic._scene import (
        SpeckleState,
        _add_noise,
        _cumsum_rows,
        _present,
        _sample_rasters,
        _track,
        lesion_mask,
    )

    p, geom, tissue, su = scene.params, scene.geom, scene.tissue, scene.scanner
    xa, za = geom.world("acoustic", pose)
    power, atten, spec = _sample_rasters((scene.power, tissue.atten, su.spec), tissue, xa, za)
    ac_ids, painted, points = _paint_lesions(scene, xa, za, power, atten, spec, elevation_mm)

    k_att = np.float32(-_LN10_20 * 2.0 * su.f_eff_mhz * geom.sample_mm / 10.0)
    cum = _cumsum_rows(atten)
    cum -= 0.5 * atten
    amp = np.sqrt(power)

    shape = (geom.n_samples, geom.n_lines)
    fresh = rng.standard_normal((2, *shape), dtype=np.float32)
    fresh *= np.float32(math.sqrt(0.5))
    if speckle is not None and correlation > 0.0:
        s_re, s_im = _track(scene, speckle, pose, xa, za, fresh, correlation)
    else:
        s_re, s_im = fresh[0], fresh[1]
    state = SpeckleState(s_re, s_im, pose)
    if su.occupancy < 0.999:  # sparse scatterers: K-like, pre-Rayleigh speckle
        keep = rng.random(shape, dtype=np.float32) < np.float32(su.occupancy)
        g = keep.astype(np.float32) * np.float32(1.0 / math.sqrt(su.occupancy))
        s_re, s_im = s_re * g, s_im * g

    pts = None
    if points:
        arr = np.asarray(points, dtype=np.float64)
        a_b, b_b = geom.world_to_beam(arr[:, 0], arr[:, 1], pose)
        row, col = geom.beam_to_index(a_b, b_b)
        ri, ci = np.rint(row).astype(int), np.rint(col).astype(int)
        ok = (ri >= 0) & (ri < shape[0]) & (ci >= 0) & (ci < shape[1])
        pts = (ri[ok], ci[ok], arr[ok, 2], arr[ok, 3])

    lateral_mm = (
        geom.pixel_mm
        if geom.kind == "linear"
        else ((geom.radius_mm + geom.depth_mm / 2.0) * geom.sector_rad / geom.n_lines)
    )
    noise = float(10.0 ** (p.noise_db / 20.0))
    # Near-field haze: clutter uncorrelated with the tissue (the imaginary scatterer part
    # shifted half a frame), the same in every view (reverberation follows the face).
    haze = None
    if su.haze is not None:
        haze = np.roll(s_im, (shape[0] // 2, shape[1] // 3), axis=(0, 1))
        haze *= su.haze
    env2 = None
    for k, (angle, (dy, dx)) in enumerate(zip(su.angles, su.shifts, strict=True)):
        if angle == 0.0:
            trans = np.exp(cum * k_att)
        else:
            tan_px = math.tan(math.radians(angle)) * geom.sample_mm / lateral_mm
            trans = np.exp(_steered_cum(atten, tan_px) * k_att)
        a = amp * trans
        if k == 0:
            v_re, v_im = s_re, s_im
        else:
            v_re = np.roll(s_re, (dy, dx), axis=(0, 1))
            v_im = np.roll(s_im, (dy, dx), axis=(0, 1))
        f_re = v_re * a
        f_im = v_im * a
        f_re += spec * trans * np.float32(1.0 if angle == 0.0 else 0.5)
        if haze is not None:
            f_re += haze
        if pts is not None:
            ri, ci, amp_pt, ph = pts
            t = trans[ri, ci] * amp_pt
            np.add.at(f_re, (ri, ci), (t * np.cos(ph)).astype(np.float32))
            np.add.at(f_im, (ri, ci), (t * np.sin(ph)).astype(np.float32))
        i_re, i_im = convolve_psf_banded(f_re, f_im, su.axial_re, su.axial_im, su.bands)
        if noise > 0:
            _add_noise(i_re, i_im, noise, rng)
        e2 = cv2.magnitude(i_re, i_im)
        e2 *= e2
        env2 = e2 if env2 is None else cv2.add(env2, e2)
    env = cv2.sqrt(env2 * np.float32(1.0 / len(su.angles)))
    env *= su.tgc
    img_ac = log_compress(env, p.dynamic_range_db, p.gain_db, headroom_db=_HEADROOM_DB)
    if su.lut is not None:
        img_ac = cv2.LUT(img_ac, su.lut)
    if su.sri is not None:
        sigma_c, sigma_s, passes = su.sri
        for _ in range(passes):
            img_ac = cv2.bilateralFilter(img_ac, 5, sigma_c, sigma_s)

    h, w = geom.size
    y0, y1, x0, x1 = geom.box
    image = np.zeros((h, w), np.uint8)
    if geom.kind == "linear":
        image[y0:y1, x0:x1] = img_ac
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = ac_ids
        present = _present(ac_ids, painted)
    else:
        image[y0:y1, x0:x1] = cv2.remap(
            img_ac,
            geom.scan_map_x,
            geom.scan_map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        mask, present = lesion_mask(scene, pose, elevation_mm)
    return image, mask, present, state, (env if keep_envelope else None)
