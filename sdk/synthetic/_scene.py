"""A scene (tissue + lesions in world mm) and its rendering into one B-mode frame.

Rendering of one frame, all on the acoustic grid:

1. sample the tissue rasters at the world position of every acoustic sample (probe pose);
2. overwrite lesion samples analytically (echo, texture, capsule, attenuation);
3. scatterers ``S`` (circular complex Gaussian; partially correlated with the previous frame in
   a cine), amplitude ``sqrt(power)`` times the round-trip attenuation accumulated along the beam;
   add micro-calcifications as point scatterers;
4. convolve with the complex PSF, add electronic noise, take the envelope, apply TGC;
5. log-compress to uint8, scan-convert (curvilinear), draw the optional scanner clutter.

The mask is evaluated on the output grid with the same analytic lesion test, so it is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from sdk.errors import InputError
from sdk.synthetic import _clutter
from sdk.synthetic._acoustics import convolve_psf, log_compress, make_psf
from sdk.synthetic._anatomy import SOFT_TISSUE_ATTENUATION, Tissue, build_tissue
from sdk.synthetic._geometry import Pose, ScanGeometry, make_geometry
from sdk.synthetic._lesions import Lesion, draw_lesion, spread_ratio

__all__ = ["LABELS", "PhantomParams", "Scene", "SpeckleState", "build_scene", "render"]

LABELS: tuple[str, ...] = ("benign", "malignant", "normal")
_LN10_20 = math.log(10.0) / 20.0


@dataclass
class PhantomParams:
    """Every knob of a phantom. ``None`` means "drawn per scene" or "probe default"."""

    geometry: str = "linear"
    depth_mm: float | None = None  # linear 40, curvilinear 55
    frequency_mhz: float | None = None  # linear 10, curvilinear 6
    radius_mm: float = 40.0
    sector_deg: float = 45.0
    n_lesions: int = 1
    lesion_labels: list[str] | None = None
    lesion_size_mm: float | None = None
    lesion_depth_mm: float | None = None
    contrast_db: float | None = None
    posterior_db: float | None = None
    cyst: bool | None = None
    calcifications: int | None = None
    gain_db: float = 0.0
    dynamic_range_db: float = 60.0
    noise_db: float = -55.0
    attenuation_db_cm_mhz: float = SOFT_TISSUE_ATTENUATION
    tgc_db_cm: float | None = None
    clutter: bool = False
    tissue: str = "breast"
    # style="scanner" (sdk.synthetic._scanner): every factor below and the ones above that the
    # caller does not pass are drawn per frame (sdk.synthetic._factors has the ranges);
    # "classic" is the original stylized phantom, unchanged.
    style: str = "classic"
    fractional_bandwidth: float | None = None
    f_number: float | None = None
    focal_depth_mm: float | None = None
    harmonic: bool | None = None
    scatterer_density: float | None = None
    specular_db: float | None = None
    tgc_compensation: float | None = None
    tgc_sliders_db: list[float] | None = None
    gray_gamma: float | None = None
    compounding: int | None = None
    steer_deg: float | None = None
    speckle_reduction: str | None = None
    haze_db: float | None = None
    composition: str | None = None
    skin_mm: float | None = None
    fat_mm: float | None = None
    muscle_mm: float | None = None
    lesion_descriptors: dict[str, Any] | None = None
    annotation_noise: float = 0.0

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> PhantomParams:
        """Validate user keyword arguments (no silent rewrite: unknown names are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(
                f"unknown phantom parameter(s) {unknown}; valid names: {sorted(names)}"
            )
        p = cls(**kwargs)
        p._given = set(kwargs)  # the knobs the caller fixed (scanner style draws the others)
        p.resolve()
        return p

    def resolve(self) -> None:
        """Fill probe defaults and check ranges."""
        if self.geometry not in ("linear", "curvilinear"):
            raise InputError(f"geometry must be 'linear' or 'curvilinear', got {self.geometry!r}")
        if self.style not in ("classic", "scanner"):
            raise InputError(f"style must be 'classic' or 'scanner', got {self.style!r}")
        if not 0.0 <= self.annotation_noise <= 10.0:
            raise InputError(f"annotation_noise={self.annotation_noise} must be in [0, 10] px")
        if self.tissue not in ("breast", "homogeneous"):
            raise InputError(f"tissue must be 'breast' or 'homogeneous', got {self.tissue!r}")
        curved = self.geometry == "curvilinear"
        if self.depth_mm is None:
            self.depth_mm = 55.0 if curved else 40.0
        if self.frequency_mhz is None:
            self.frequency_mhz = 6.0 if curved else 10.0
        checks = {
            "depth_mm": (self.depth_mm, 5.0, 300.0),
            "frequency_mhz": (self.frequency_mhz, 1.0, 30.0),
            "dynamic_range_db": (self.dynamic_range_db, 10.0, 120.0),
            "radius_mm": (self.radius_mm, 5.0, 200.0),
            "sector_deg": (self.sector_deg, 10.0, 150.0),
            "n_lesions": (self.n_lesions, 0, 8),
            "attenuation_db_cm_mhz": (self.attenuation_db_cm_mhz, 0.0, 5.0),
        }
        for name, (value, lo, hi) in checks.items():
            if not lo <= value <= hi:
                raise InputError(f"{name}={value} is outside [{lo}, {hi}]")
        if self.lesion_size_mm is not None and not 1.0 <= self.lesion_size_mm <= self.depth_mm:
            raise InputError(
                f"lesion_size_mm={self.lesion_size_mm} must be in [1, depth_mm={self.depth_mm}]"
            )
        if self.lesion_depth_mm is not None and not 0.0 < self.lesion_depth_mm < self.depth_mm:
            raise InputError(
                f"lesion_depth_mm={self.lesion_depth_mm} must be in (0, depth_mm={self.depth_mm})"
            )
        if self.lesion_labels is not None:
            self.lesion_labels = list(self.lesion_labels)
            bad = [x for x in self.lesion_labels if x not in ("benign", "malignant")]
            if bad:
                raise InputError(f"lesion_labels may hold 'benign' / 'malignant' only, got {bad}")
        if self.tgc_db_cm is None:
            # Real TGC under-compensates a little: images darken slightly with depth.
            self.tgc_db_cm = 0.85 * 2.0 * self.attenuation_db_cm_mhz * self.frequency_mhz

    def margins(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Pixels kept around the scan region for scanner text when ``clutter`` is on."""
        if not self.clutter:
            return (0, 0, 0, 0)
        h, w = size
        return (
            max(int(0.08 * h), 8),
            max(int(0.06 * h), 8),
            max(int(0.05 * w), 4),
            max(int(0.10 * w), 10),
        )


@dataclass(eq=False)
class Scene:
    """Tissue rasters, lesions and probe, in world millimetres."""

    params: PhantomParams
    geom: ScanGeometry
    tissue: Tissue
    lesions: list[Lesion]
    psf: Any
    tgc: np.ndarray = field(repr=False)  # (n_samples, 1) float32 amplitude gain per depth
    power: np.ndarray = field(repr=False)  # tissue raster as linear power
    factors: dict[str, Any] | None = None  # style="scanner": the drawn frame factors
    scanner: Any = None  # style="scanner": sdk.synthetic._scanner.ScannerSetup

    def lesion_info(self) -> list[dict[str, Any]]:
        """Static ground truth of every lesion (world geometry and drawn descriptors)."""
        out = []
        for i, les in enumerate(self.lesions, start=1):
            if les.descriptors is not None:
                out.append(_scanner_lesion_info(i, les))
                continue
            out.append(
                {
                    "id": i,
                    "label": les.label,
                    "kind": les.kind,
                    "shape": les.shape,
                    "margin": les.margin,
                    "orientation": "parallel" if _spread(les) < 1.0 else "not parallel",
                    "center_mm": [round(les.cx, 3), round(les.cz, 3)],
                    "depth_mm": round(les.cz, 3),
                    "axes_mm": [round(les.a, 3), round(les.b, 3)],
                    "angle_deg": round(math.degrees(les.angle), 3),
                    "width_mm": round(les.width_mm, 3),
                    "height_mm": round(les.height_mm, 3),
                    "contrast_db": round(les.contrast_db, 3),
                    "posterior_db": round(les.posterior_db, 3),
                    "echo_pattern": (
                        "anechoic"
                        if les.kind == "cyst"
                        else "heterogeneous hypoechoic"
                        if les.texture_db > 2
                        else "hypoechoic"
                    ),
                    "posterior": "enhancement" if les.posterior_db > 0 else "shadowing",
                    "calcifications": len(les.calcs),
                }
            )
        return out


def _scanner_lesion_info(i: int, les: Lesion) -> dict[str, Any]:
    d = les.descriptors or {}
    info = {
        "id": i,
        "label": les.label,
        "kind": les.kind,
        "center_mm": [round(les.cx, 3), round(les.cz, 3)],
        "depth_mm": round(les.cz, 3),
        "axes_mm": [round(les.a, 3), round(les.b, 3)],
        "angle_deg": round(math.degrees(les.angle), 3),
        "width_mm": round(les.width_mm, 3),
        "height_mm": round(les.height_mm, 3),
        "contrast_db": round(les.contrast_db, 3),
        "contrast_reference": "fat",
        "posterior_db": round(les.posterior_db, 3),
        "n_calcifications": len(les.calcs),
    }
    for k, v in d.items():
        if k != "label":
            info[k] = round(v, 3) if isinstance(v, float) else v
    return info


def _spread(les: Lesion) -> float:
    """The lesion's spread ratio: kept from its draw (measured 0.35 ms per lesion to redo)."""
    return les.spread if les.spread is not None else spread_ratio(les)


@dataclass(eq=False)
class SpeckleState:
    """Scatterer field of the previous frame (cine: partially correlated speckle)."""

    re: np.ndarray
    im: np.ndarray
    pose: Pose


def _place_lesions(
    rng: np.random.Generator,
    p: PhantomParams,
    tissue: Tissue,
    labels: list[str],
    x_range: tuple[float, float],
    fit_fan: bool = True,
) -> list[Lesion]:
    lesions: list[Lesion] = []
    layers = tissue.layers
    for label in labels:
        for _attempt in range(60):
            # Size first (so the depth range can keep the lesion below the skin).
            les = draw_lesion(
                rng,
                label,
                0.0,
                0.0,
                p.lesion_size_mm,
                p.contrast_db,
                p.posterior_db,
                p.cyst,
                p.calcifications,
            )
            half_h = les.height_mm / 2.0
            if p.lesion_depth_mm is not None:
                cz = p.lesion_depth_mm
            elif layers:
                top = layers["fat_mm"] + 0.5 * half_h
                bottom = min(layers["gland_mm"], p.depth_mm - half_h - 2.0)
                cz = rng.uniform(min(top, bottom), max(top, bottom))
            else:
                cz = rng.uniform(0.3 * p.depth_mm, 0.6 * p.depth_mm)
            cz = max(cz, half_h + (layers.get("skin_mm", 1.0) + 0.5))
            if try_place(rng, p, les, cz, x_range, fit_fan, lesions):
                break
        else:
            raise no_room(len(labels))
    return lesions


def try_place(
    rng: np.random.Generator,
    p: Any,
    les: Lesion,
    cz: float,
    x_range: tuple[float, float],
    fit_fan: bool,
    placed: list[Lesion],
) -> bool:
    """Draw the lateral centre of ``les`` at depth ``cz`` (inside a curvilinear fan when
    ``fit_fan``) and append it to ``placed`` when it overlaps none of them (both phantom
    styles place lesions this way)."""
    lo, hi = x_range
    if p.geometry == "curvilinear" and fit_fan:
        # The fan is narrow near the face: keep the lesion centre well inside it.
        half = 0.6 * (p.radius_mm + cz) * math.sin(math.radians(p.sector_deg) / 2.0)
        lo, hi = max(lo, -half), min(hi, half)
    cx = rng.uniform(lo, hi) if hi > lo else 0.5 * (lo + hi)
    les.cx, les.cz = float(cx), float(cz)
    if all(
        math.hypot(les.cx - o.cx, les.cz - o.cz) > 0.8 * (les.bound + o.bound) + 1.0 for o in placed
    ):
        placed.append(les)
        return True
    return False


def no_room(n: int) -> InputError:
    return InputError(
        f"could not fit {n} lesions without overlap; use fewer or smaller "
        "lesions (n_lesions / lesion_size_mm) or a larger frame (depth_mm)"
    )


def _finish_lesion(les: Lesion, tissue: Tissue, power: np.ndarray, p: PhantomParams) -> None:
    """Surround power (contrast reference) and attenuation giving the asked posterior effect."""
    res = tissue.res
    r = les.bound * 2.2 + 1.0
    j0 = max(int((les.cx - r - tissue.x_min) / res), 0)
    j1 = min(int((les.cx + r - tissue.x_min) / res) + 1, power.shape[1])
    i0 = max(int((les.cz - r) / res), 0)
    i1 = min(int((les.cz + r) / res) + 1, power.shape[0])
    xs = tissue.x_min + (np.arange(j0, j1, dtype=np.float32) + 0.5) * res
    zs = (np.arange(i0, i1, dtype=np.float32) + 0.5) * res
    # Reference: the tissue beside the lesion at its own depth (not above / below it, where
    # other layers and the posterior effects are): the contrast knob means "vs its neighbours".
    # The radius is evaluated on those rows only (a band of the patch; measured 0.8 -> 0.1 ms).
    beside = np.flatnonzero(np.abs(zs - les.cz) < 0.4 * max(les.height_mm, 1.0))
    ring = np.zeros((zs.size, xs.size), bool)
    if beside.size:
        rows = slice(beside[0], beside[-1] + 1)  # contiguous: |z - cz| < d on increasing z
        u, v = les.local(xs[None, :], zs[rows, None])
        q = les.radius_ratio(u, v, (1.15, 2.0))
        ring[rows] = (q > 1.15) & (q < 2.0)
    patch = power[i0:i1, j0:j1]
    les.surround_power = float(patch[ring].mean()) if ring.any() else 1.0
    # Extra one-way attenuation so that the round trip through the lesion's height changes the
    # echoes behind it by posterior_db at the probe frequency (never below 0: water).
    thickness_cm = max(les.height_mm, 0.5) / 10.0
    delta = -les.posterior_db / (2.0 * p.frequency_mhz * thickness_cm)
    les.attenuation = max(p.attenuation_db_cm_mhz + delta, 0.0)


def build_scene(
    rng: np.random.Generator,
    label: str,
    size: tuple[int, int],
    params: PhantomParams,
    x_extent: tuple[float, float] | None = None,
    lesion_x: tuple[float, float] | None = None,
) -> Scene:
    """Draw tissue and lesions for one scene.

    Args:
        rng: the scene's random generator.
        label: ``"normal"``, ``"benign"`` or ``"malignant"``.
        size: output frame ``(h, w)``.
        params: resolved :class:`PhantomParams`.
        x_extent: extra lateral world range (mm) the probe will visit (cine sweep).
        lesion_x: lateral range (mm) for lesion centres (default: inside the field of view).
    """
    if label not in LABELS:
        raise InputError(f"label must be one of {LABELS}, got {label!r}")
    p = params
    geom = make_geometry(
        p.geometry, tuple(size), float(p.depth_mm), p.margins(size), p.radius_mm, p.sector_deg
    )
    if p.geometry == "linear":
        half = geom.width_mm / 2.0
    else:
        half = (p.radius_mm + p.depth_mm) * math.sin(geom.sector_rad / 2.0 + 0.1)
    lo, hi = (-half, half) if x_extent is None else (x_extent[0] - half, x_extent[1] + half)
    # Tissue structure is smoother than the speckle: a raster ~1.6x coarser than the samples
    # (floored at 0.1 mm) is plenty and keeps building a scene cheap.
    res = max(1.6 * min(geom.pixel_mm, geom.sample_mm), 0.1)
    tissue = build_tissue(rng, lo - 5.0, hi + 5.0, float(p.depth_mm) + 5.0, res, p.tissue)
    power = tissue.power()

    if label == "normal":
        labels: list[str] = []
    elif p.lesion_labels is not None:
        labels = list(p.lesion_labels)
    else:
        labels = [label] * p.n_lesions
    if label != "normal" and not labels:
        raise InputError(f"label {label!r} needs at least one lesion (n_lesions >= 1)")
    fit_fan = lesion_x is None
    if lesion_x is None:
        margin = 0.45 * half  # lesion centres in the middle 55 % of the field of view
        lesion_x = (-half + margin, half - margin)
    lesions = _place_lesions(rng, p, tissue, labels, lesion_x, fit_fan)
    for les in lesions:
        _finish_lesion(les, tissue, power, p)

    lateral_mm = (
        geom.pixel_mm
        if p.geometry == "linear"
        else ((p.radius_mm + p.depth_mm / 2.0) * geom.sector_rad / geom.n_lines)
    )
    psf = make_psf(float(p.frequency_mhz), geom.sample_mm, lateral_mm)
    depth_cm = (np.arange(geom.n_samples, dtype=np.float32) + 0.5) * geom.sample_mm / 10.0
    tgc = np.exp(_LN10_20 * p.tgc_db_cm * depth_cm).astype(np.float32).reshape(-1, 1)
    return Scene(p, geom, tissue, lesions, psf, tgc, power)


def _sample_rasters(
    rasters: tuple[np.ndarray, ...], tissue: Tissue, xw: np.ndarray, zw: np.ndarray
) -> list[np.ndarray]:
    """Tissue rasters (bilinear) at world points ``(xw, zw)``; the maps are built once."""
    mx = (xw - tissue.x_min) / tissue.res - 0.5
    mz = zw / tissue.res - 0.5
    # Outside the raster (above the skin when tilted) is coupling gel: no echo, no attenuation.
    return [
        cv2.remap(r, mx, mz, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        for r in rasters
    ]


def _cumsum_rows(a: np.ndarray) -> np.ndarray:
    """``np.cumsum(a, axis=0)`` for float32 ``a``, bit for bit: the same sequential float32 sums
    per column, but one contiguous row at a time (NumPy accumulates down strided columns:
    measured 0.7 -> 0.45 ms at 256 x 256, 4.7 -> 2.9 ms at 600 x 800)."""
    out = np.empty_like(a)
    out[0] = a[0]
    for i in range(1, a.shape[0]):
        np.add(out[i - 1], a[i], out=out[i])
    return out


def _lesion_pixels(
    les: Lesion,
    xw: np.ndarray,
    zw: np.ndarray,
    scale: float,
    pad: float = 0.0,
    cuts: tuple[float, ...] = (1.0,),
):
    """Flat indices near the lesion and their normalised radius (scaled cross-section).

    The radius is exact (bit-identical to ``normalised_radius / scale``) near the values in
    ``cuts``: compare it only against those (see :meth:`Lesion.radius_ratio`).
    """
    r = les.bound * scale + pad
    near = np.flatnonzero((np.abs(xw - les.cx) < r).ravel() & (np.abs(zw - les.cz) < r).ravel())
    if near.size == 0:
        return near, np.zeros(0, np.float32), np.zeros(0), np.zeros(0)
    x = xw.ravel()[near]
    z = zw.ravel()[near]
    u, v = les.local(x, z)
    q = les.radius_ratio(u, v, cuts, scale)
    return near, q, u / scale, v / scale


def lesion_mask(
    scene: Scene, pose: Pose, elevation_mm: float = 0.0
) -> tuple[np.ndarray, list[int]]:
    """Exact instance mask on the output grid (uint8 (h, w), ids 1..K) and the ids present."""
    geom = scene.geom
    h, w = geom.size
    y0, y1, x0, x1 = geom.box
    mask = np.zeros((h, w), np.uint8)
    if not scene.lesions:
        return mask, []
    xo, zo = geom.world("output", pose)
    fov = geom.fov[y0:y1, x0:x1].ravel()
    box = np.zeros((y1 - y0, x1 - x0), np.uint8)  # contiguous: reshape(-1) must be a view
    flat = box.reshape(-1)
    painted = []
    for i, les in enumerate(scene.lesions, start=1):
        s = les.scale_at(elevation_mm)
        if s <= 0.0:
            continue
        near, q, _, _ = _lesion_pixels(les, xo, zo, s)
        hit = near[(q < 1.0) & fov[near]]
        flat[hit] = i
        painted.append((i, hit))
    mask[y0:y1, x0:x1] = box
    return mask, _present(box, painted)


def _present(ids: np.ndarray, painted: list[tuple[int, np.ndarray]]) -> list[int]:
    """Ids (ascending) still on ``ids`` after painting ``painted`` in order (a later lesion may
    cover an earlier one): looks at the painted pixels only, not the whole frame as
    ``np.unique`` did (measured 0.45 -> 0.01 ms at 256 x 256)."""
    flat = ids.reshape(-1)
    return sorted(i for i, hit in painted if hit.size and bool((flat[hit] == i).any()))


def render(
    scene: Scene,
    pose: Pose,
    rng: np.random.Generator,
    elevation_mm: float = 0.0,
    speckle: SpeckleState | None = None,
    correlation: float = 0.0,
    keep_envelope: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[int], SpeckleState, np.ndarray | None]:
    """Render one frame: ``(image uint8 (h, w), mask uint8 (h, w), ids present, speckle, env)``.

    ``speckle`` / ``correlation``: previous scatterers and their frame-to-frame correlation
    coefficient (elevational decorrelation); scatterers move with the tissue in-plane.
    ``env`` is the TGC-corrected envelope on the acoustic grid when ``keep_envelope``.
    """
    if scene.scanner is not None:
        from sdk.synthetic._scanner import render_scanner

        return render_scanner(scene, pose, rng, elevation_mm, speckle, correlation, keep_envelope)
    p, geom, tissue = scene.params, scene.geom, scene.tissue
    xa, za = geom.world("acoustic", pose)
    power, atten = _sample_rasters((scene.power, tissue.atten), tissue, xa, za)
    point_sources: list[tuple[float, float, float, float]] = []

    pflat, aflat = power.reshape(-1), atten.reshape(-1)
    ac_ids = np.zeros(power.shape, np.uint8)  # lesion ids on the acoustic grid
    painted: list[tuple[int, np.ndarray]] = []  # (id, its pixels) for the ids still present
    for lid, les in enumerate(scene.lesions, start=1):
        s = les.scale_at(elevation_mm)
        if s <= 0.0:
            continue
        cap = 0.45 / min(les.a, les.b) if les.capsule_db else 0.0
        near, q, u, v = _lesion_pixels(les, xa, za, s, pad=0.6, cuts=(1.0, 1.0 + cap))
        if near.size == 0:
            continue
        inside = q < 1.0
        idx = near[inside]
        level = les.contrast_db + les.texture(u[inside], v[inside])
        pflat[idx] = les.surround_power * np.power(10.0, level / 10.0)
        ac_ids.reshape(-1)[idx] = lid
        painted.append((lid, idx))
        aflat[idx] = les.attenuation
        if cap:
            ring = near[(q >= 1.0) & (q < 1.0 + cap)]
            pflat[ring] = les.surround_power * 10.0 ** (les.capsule_db / 10.0)
        if len(les.calcs) and s > 0.5:
            c, sn = math.cos(les.angle), math.sin(les.angle)
            for nu, nv, amp_db, phase in les.calcs:
                uu, vv = nu * les.a * s, nv * les.b * s
                point_sources.append(
                    (
                        les.cx + uu * c - vv * sn,
                        les.cz + uu * sn + vv * c,
                        math.sqrt(les.surround_power) * 10.0 ** (amp_db / 20.0),
                        phase,
                    )
                )

    # Round-trip amplitude attenuation, accumulated to the middle of each sample.
    depth_cm = geom.sample_mm / 10.0
    cum = _cumsum_rows(atten)
    cum -= 0.5 * atten
    trans = np.exp(cum * np.float32(-_LN10_20 * 2.0 * p.frequency_mhz * depth_cm))
    amp = np.sqrt(power) * trans

    shape = (geom.n_samples, geom.n_lines)
    fresh = rng.standard_normal((2, *shape), dtype=np.float32)
    fresh *= np.float32(math.sqrt(0.5))
    if speckle is not None and correlation > 0.0:
        s_re, s_im = _track(scene, speckle, pose, xa, za, fresh, correlation)
    else:
        s_re, s_im = fresh[0], fresh[1]
    state = SpeckleState(s_re, s_im, pose)
    f_re, f_im = s_re * amp, s_im * amp
    if point_sources:
        pts = np.asarray(point_sources, dtype=np.float64)
        a_b, b_b = geom.world_to_beam(pts[:, 0], pts[:, 1], pose)
        row, col = geom.beam_to_index(a_b, b_b)
        ri, ci = np.rint(row).astype(int), np.rint(col).astype(int)
        ok = (ri >= 0) & (ri < shape[0]) & (ci >= 0) & (ci < shape[1])
        for k in np.flatnonzero(ok):
            t = trans[ri[k], ci[k]] * pts[k, 2]
            f_re[ri[k], ci[k]] += t * math.cos(pts[k, 3])
            f_im[ri[k], ci[k]] += t * math.sin(pts[k, 3])

    i_re, i_im = convolve_psf(f_re, f_im, scene.psf)
    noise = np.float32(10.0 ** (p.noise_db / 20.0))
    if noise > 0:
        _add_noise(i_re, i_im, float(noise), rng)
    env = cv2.magnitude(i_re, i_im)
    env *= scene.tgc
    img_ac = log_compress(env, p.dynamic_range_db, p.gain_db, headroom_db=_HEADROOM_DB)

    h, w = geom.size
    y0, y1, x0, x1 = geom.box
    image = np.zeros((h, w), np.uint8)
    if geom.kind == "linear":
        image[y0:y1, x0:x1] = img_ac
    else:
        image[y0:y1, x0:x1] = cv2.remap(
            img_ac,
            geom.scan_map_x,
            geom.scan_map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    if geom.kind == "linear":
        # The acoustic grid is the output grid: the lesion test already ran on these pixels.
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = ac_ids
        present = _present(ac_ids, painted)
    else:
        mask, present = lesion_mask(scene, pose, elevation_mm)
    return image, mask, present, state, (env if keep_envelope else None)


_HEADROOM_DB = 27.0


@lru_cache(maxsize=8)
def _noise_bank(shape: tuple[int, int]) -> np.ndarray:
    """The fixed circular complex white-noise bank (float32, read-only)."""
    bank = np.random.default_rng(0x5EED).standard_normal((2, *shape), dtype=np.float32)
    bank *= np.float32(math.sqrt(0.5))
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=4)
def _scaled_noise_bank(shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """The bank times the noise amplitude (read-only): a knob that changes per frame costs one
    multiply of the bank, never a new draw."""
    bank = _noise_bank(shape) * np.float32(amplitude)
    bank.setflags(write=False)
    return bank


def _add_noise(
    i_re: np.ndarray, i_im: np.ndarray, amplitude: float, rng: np.random.Generator
) -> None:
    """Add circular complex white noise of RMS ``amplitude`` to ``(i_re, i_im)``, in place.

    The noise is a fixed bank under a random cyclic shift per frame: a cyclic shift of white
    Gaussian noise is white Gaussian noise, and this saves drawing 2 x H x W normals per frame
    (~1.5 ms at 256 x 256) on a term far below the tissue echo. The shifted bank is added as its
    four wrapped blocks (no ``np.roll`` copy) and is cached already scaled: the same float32
    products and sums as ``i += roll(bank) * amplitude``, bit for bit (0.3 -> 0.05 ms at 256^2).
    """
    h, w = i_re.shape
    bank = _scaled_noise_bank((h, w), amplitude)
    dy, dx = int(rng.integers(h)), int(rng.integers(w))
    # roll by (dy, dx): out[i, j] = bank[(i - dy) % h, (j - dx) % w]
    row_blocks = ((slice(dy, h), slice(0, h - dy)), (slice(0, dy), slice(h - dy, h)))
    col_blocks = ((slice(dx, w), slice(0, w - dx)), (slice(0, dx), slice(w - dx, w)))
    for out_rows, src_rows in row_blocks:
        for out_cols, src_cols in col_blocks:
            i_re[out_rows, out_cols] += bank[0, src_rows, src_cols]
            i_im[out_rows, out_cols] += bank[1, src_rows, src_cols]


def _track(
    scene: Scene,
    prev: SpeckleState,
    pose: Pose,
    xa: np.ndarray,
    za: np.ndarray,
    fresh: np.ndarray,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Scatterers of the previous frame moved with the tissue, mixed with new ones (AR(1))."""
    geom = scene.geom
    a_b, b_b = geom.world_to_beam(xa, za, prev.pose)
    row, col = geom.beam_to_index(a_b, b_b)
    row = row.astype(np.float32)
    col = col.astype(np.float32)
    both = cv2.merge([prev.re, prev.im])
    moved = cv2.remap(
        both,
        col,
        row,
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(np.nan, np.nan, 0, 0),
    )
    m_re, m_im = moved[..., 0], moved[..., 1]
    new = np.isnan(m_re)
    k = np.float32(math.sqrt(1.0 - rho * rho))
    # rho * moved + k * fresh, with the fresh value where nothing moved in: the same float32
    # products and sum as np.where(new, fresh, rho * m + k * fresh), built in place (no extra
    # temporaries, no final copy; measured 0.6 -> 0.3 ms at 256 x 256).
    out = []
    for moved_part, fresh_part in ((m_re, fresh[0]), (m_im, fresh[1])):
        o = np.multiply(moved_part, np.float32(rho))
        o += k * fresh_part
        np.copyto(o, fresh_part, where=new)
        out.append(o)
    return out[0], out[1]


def frame_info(
    scene: Scene,
    mask: np.ndarray,
    present: list[int],
    pose: Pose,
    seed: Any,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-safe ground truth of one frame."""
    geom, p = scene.geom, scene.params
    static = scene.lesion_info()
    lesions = []
    for lid in present:
        ys, xs = np.nonzero(mask == lid)
        d = dict(static[lid - 1])
        d["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        d["area_px"] = int(xs.size)
        d["centroid_px"] = [round(float(xs.mean()), 2), round(float(ys.mean()), 2)]
        # Lesion centre in output pixels (may fall outside the frame when clipped).
        a_b, b_b = geom.world_to_beam(
            np.array([d["center_mm"][0]]), np.array([d["center_mm"][1]]), pose
        )
        d["center_px"] = [round(float(v), 2) for v in _beam_to_pixel(geom, a_b, b_b)]
        lesions.append(d)
    labels = {d["label"] for d in lesions}
    label = "malignant" if "malignant" in labels else "benign" if labels else "normal"
    info: dict[str, Any] = {
        "label": label,
        "lesions": lesions,
        "n_lesions": len(lesions),
        "seed": seed,
        "geometry": geom.kind,
        "size": [int(geom.size[0]), int(geom.size[1])],
        "pixel_spacing_mm": [round(geom.pixel_mm, 6), round(geom.pixel_mm, 6)],
        "scan_box": [int(v) for v in geom.box],
        "layers_mm": {k: round(v, 3) for k, v in scene.tissue.layers.items()},
        "pose": {"tx_mm": round(pose.tx_mm, 4), "tilt_deg": round(math.degrees(pose.tilt_rad), 4)},
        # _jsonable copies containers, so a shallow field read gives the same dict as asdict()
        # (which deep-copies first; measured 0.3 -> 0.05 ms).
        "params": _jsonable({f.name: getattr(p, f.name) for f in fields(p)}),
        "psf": (
            dict(scene.scanner.psf_info)
            if scene.scanner is not None
            else {
                "sigma_axial_samples": round(scene.psf.sigma_axial, 4),
                "sigma_lateral_samples": round(scene.psf.sigma_lateral, 4),
            }
        ),
        "display": {
            "dynamic_range_db": p.dynamic_range_db,
            "gain_db": p.gain_db,
            "headroom_db": _HEADROOM_DB,
        },
    }
    if scene.factors is not None:
        info["style"] = "scanner"
        info["factors"] = _jsonable(scene.factors)
    if extra:
        info.update(extra)
    return info


def _beam_to_pixel(geom: ScanGeometry, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    y0, _, x0, _ = geom.box
    if geom.kind == "linear":
        row, col = geom.beam_to_index(a, b)
        return float(col[0]) + x0 + 0.5, float(row[0]) + y0 + 0.5
    # Curvilinear: beam (theta, r) -> probe-frame Cartesian -> output pixel.
    r_tot = geom.radius_mm + float(b[0])
    px = r_tot * math.sin(float(a[0]))
    pz = r_tot * math.cos(float(a[0])) - geom.radius_mm
    half = geom.sector_rad / 2.0
    z_top = geom.radius_mm * math.cos(half) - geom.radius_mm
    box_w = geom.box[3] - geom.box[2]
    x_left = -box_w * geom.pixel_mm / 2.0
    return x0 + (px - x_left) / geom.pixel_mm, y0 + (pz - z_top) / geom.pixel_mm


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def draw_clutter(image: np.ndarray, mask: np.ndarray, scene: Scene, info: dict[str, Any]) -> None:
    """Scanner annotations around (and calipers on) the image, in place."""
    _clutter.draw(image, scene.geom, scene.params, info, mask)
