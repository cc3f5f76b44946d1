"""Independent physics-based check: sonoedge models scored on breast B-mode simulated by pymust.

Install (pymust is NOT a sonoedge dependency; it only feeds this benchmark)::

    pip install pymust          # PyMUST 0.1.9: numpy, scipy, matplotlib -- no torch, no numpy 1.x

Our models are trained, calibrated and tuned only on :mod:`sdk.synthetic` (a convolution model
of our own). Frames of MUST / SIMUS-family simulators are reserved for judging whether a model
holds beyond that generator, and are never used for training, calibration or tuning: this
script only *reads* model outputs and writes the table.

Each frame is made by pymust's own pipeline (PyMUST, the Python port of Damien Garcia's MUST):

1. ``pymust.getparam("L11-5v")``: Verasonics L11-5v linear array, 7.6 MHz, 128 elements, pitch
   0.3 mm (38.1 mm aperture = the image width), 77 % bandwidth; speed of sound 1540 m/s;
   **attenuation 0.5 dB/cm/MHz** (``param.attenuation``), sampling 4 x fc.
2. A breast-like medium: ``pymust.genscat`` places the scatterers (mean distance
   ``SimConfig.scatter_factor`` = 2.4 x the shortest -6 dB wavelength, ~3.9 k scatterers per
   frame, Rayleigh amplitudes); each scatterer's
   reflection coefficient is multiplied by the medium's reflectivity at its position
   (analytic, :func:`reflectivity_db`): skin (dermis), subcutaneous fat with Cooper's
   ligaments, a fibroglandular layer whose mean echogenicity and texture vary per frame (with
   hypoechoic fat lobules, in every class), retromammary fat, optionally the bright pectoral
   fascia and the striated pectoralis muscle below it.
3. ``pymust.simus`` (2-D, no elevation focusing; spectral components above -40 dB) for three
   steered plane waves, -5 / 0 / +5 deg (``pymust.txdelay(param, tilt)``), ``pymust.rf2iq``,
   ``pymust.tgc`` (pymust's automatic time-gain compensation, fitted on the samples of the
   image depth), ``pymust.dasmtx`` delay-and-sum matrices (optimal receive
   f-number, ``param.fnumber = None``; linear interpolation) on a Cartesian grid at **twice**
   the output resolution, coherent compounding of the angles, ``pymust.bmode`` log
   compression (50 dB dynamic range).
4. The B-mode image (600 x 800 for the default 300 x 400) is resized with ``cv2.INTER_AREA``
   (an exact 2 x 2 average) to the output frame, **300 x 400 uint8** (H x W; 0.095 mm pixels,
   38.1 mm wide, 28.6 mm deep from 0.3 mm below the probe face).

Lesions (mask and label come from the geometry only):

* ``benign``: circumscribed oval, parallel (wider than tall, tilt <= 12 deg), either anechoic
  (cyst: no scatterers inside) or hypoechoic solid (-8 to -15 dB, homogeneous).
* ``malignant``: taller than wide (vertical stretch 1.2-1.7), hypoechoic (-14 to -24 dB,
  heterogeneous inside), with an angular (polygonal), microlobulated or spiculated margin
  (5-10 tapering spikes, part of the lesion and of its mask), spiculated ones with an
  echogenic halo outside the lesion.
* ``normal``: no lesion (the anatomy, fat lobules included, is drawn the same way).

The true mask is the lesion region evaluated at the pixel centres of the beamforming grid (the
grid the B-mode image is produced on) and area-resized with the image (a pixel is lesion when
at least half of its 2 x 2 fine pixels are).

**Not modelled** -- and why:

* Posterior acoustic features (enhancement behind cysts, shadowing behind malignant masses):
  pymust's attenuation is a single scalar for the whole medium (``param.attenuation``,
  dB/cm/MHz, applied to every path), so a lesion cannot attenuate less or more than its
  surroundings. Faking it by dimming the scatterers behind a lesion would be our own model,
  not pymust's physics, so it is left out. Depth-dependent attenuation of the whole medium
  (and pymust's TGC compensating it) is modelled.
* Elevation (slice thickness) effects, speed-of-sound and density variations (refraction,
  phase aberration), reverberation, nonlinear propagation / harmonic imaging, electronic noise,
  focused line-by-line transmits and the speckle reduction / smoothing a scanner applies: the
  frames are 2-D plane-wave compounded images, not a particular scanner's processing chain.
* Calcifications, ducts, edema, architectural distortion.
* Scatterer density is reduced (``scatter_factor`` 2.4, about one scatterer per 0.3 mm^2) to
  keep a frame near 15-20 s of CPU: speckle is not fully developed, and with three plane waves
  the side lobes of bright tissue put some clutter into anechoic cysts (darker than any
  tissue, but not black).

Scores per model (through :class:`sdk.Analyzer`, the serving path): mean Dice over the frames
with a lesion (``Result.mask`` vs the true mask; an out-of-scope verdict's empty mask counts as
0), image accuracy (``Result.label``; ``out_of_scope`` counts as wrong), macro AUC of
``Result.raw_probs`` (one-vs-rest), the fraction flagged out of scope and mean ms per frame.

Run (simulated frames are cached under ``runs/independent/`` as .npz keyed by label, seed and
simulation settings, so a rerun only scores)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/independent_check.py \\
        --model new-fp32=sdk/models/default-fp32.onnx --model old-fp32=/tmp/old-fp32.onnx

writes ``benchmarks/results/independent-check.md`` / ``.json`` / ``.png`` (contact sheet: true
mask outline green, the first model's mask red).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    from sdk import metrics
except ImportError:  # `python benchmarks/independent_check.py` from a checkout, not installed
    sys.path.insert(0, str(REPO))
    from sdk import metrics

LABELS = ("normal", "benign", "malignant")
SEED = 20_261_203  # this check's own seed stream (not the training / report / OOD streams)
CACHE = REPO / "runs" / "independent"
RESULTS = REPO / "benchmarks" / "results"
SIM_VERSION = 2  # bump when the medium or the pipeline changes (invalidates the cache)


@dataclass(frozen=True)
class SimConfig:
    """Everything a simulated frame depends on besides its label and seed."""

    probe: str = "L11-5v"
    n_elements: int | None = None  # None: the probe's (128); fewer = a narrower, cheaper frame
    out_size: tuple[int, int] = (300, 400)  # output frame (H, W); the width spans the aperture
    grid_factor: int = 2  # beamforming grid = grid_factor x the output grid, then INTER_AREA
    z0_mm: float = 0.3  # depth of the first image row's top edge
    angles_deg: tuple[float, ...] = (-5.0, 0.0, 5.0)  # plane-wave tilts, coherently compounded
    scatter_factor: float = 2.4  # mean scatterer distance / shortest -6 dB wavelength
    attenuation_db_cm_mhz: float = 0.5
    dynamic_range_db: float = 50.0
    db_thresh: float = -40.0  # simus: spectral components above this level are simulated
    version: int = SIM_VERSION

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


DEFAULT_CONFIG = SimConfig()


# --------------------------------------------------------------------------- pymust set-up


def _pymust():
    try:
        import pymust
    except ImportError as exc:  # pragma: no cover - exercised by hand
        raise SystemExit(
            "pymust is not installed: pip install pymust  (see the docstring of "
            "benchmarks/independent_check.py)"
        ) from exc
    return pymust


def pymust_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pymust")
    except PackageNotFoundError:
        return "not installed"


def probe_param(cfg: SimConfig):
    """pymust PARAM of the probe, with this check's medium and sampling settings."""
    pymust = _pymust()
    param = pymust.getparam(cfg.probe)
    if cfg.n_elements is not None:
        param.Nelements = int(cfg.n_elements)
    param.c = 1540.0
    param.fs = 4.0 * param.fc
    param.attenuation = float(cfg.attenuation_db_cm_mhz)
    return param


@dataclass
class Grid:
    """Beamforming grid (pixel centres, metres) and the output grid it is area-resized to."""

    x: np.ndarray  # (Wf,)
    z: np.ndarray  # (Hf,)
    out_size: tuple[int, int]
    width_m: float
    depth_m: float
    z0_m: float

    @property
    def spacing_mm(self) -> float:
        return 1e3 * self.width_m / self.out_size[1]


def make_grid(cfg: SimConfig, param: Any) -> Grid:
    h, w = cfg.out_size
    width = (param.Nelements - 1) * param.pitch
    dx = width / (w * cfg.grid_factor)
    z0 = cfg.z0_mm * 1e-3
    x = -width / 2 + (np.arange(w * cfg.grid_factor) + 0.5) * dx
    z = z0 + (np.arange(h * cfg.grid_factor) + 0.5) * dx
    return Grid(x, z, (h, w), width, h * width / w, z0)


# --------------------------------------------------------------------------- the medium


@dataclass
class Scene:
    """Geometry of one frame in millimetres (x lateral, 0 at the probe centre; z depth)."""

    label: str
    width: float
    depth: float  # bottom of the image
    skin: float
    fat: tuple[float, float, float, float]  # base depth, amplitude, wavelength, phase
    gland: tuple[float, float, float, float]  # bottom of the gland layer, same wave terms
    fascia: float | None  # depth of the pectoral fascia (None: not in this frame)
    gland_db: float
    gland_texture_db: float
    fat_db: float
    ligaments: list[tuple[float, float, float]]  # x at the gland top, slope dx/dz, curvature
    lobules: list[tuple[float, float, float, float, float]]  # cx, cz, a, b, tilt (rad)
    lesion: dict[str, Any] | None
    texture_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _wave(x: np.ndarray, w: tuple[float, float, float, float]) -> np.ndarray:
    base, amp, wl, ph = w
    return base + amp * np.sin(2 * np.pi * x / wl + ph)


def make_scene(label: str, seed: int, width_mm: float, depth_mm: float) -> Scene:
    """Draw a breast-like scene; every length scales with the frame (width_mm x depth_mm)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    rng = np.random.default_rng(seed)
    s = width_mm / 38.1  # lengths below are for the 38.1 mm-wide L11-5v frame
    d = depth_mm
    skin = rng.uniform(1.2, 2.0) * s
    fat_base = skin + rng.uniform(0.10, 0.22) * d
    fat = (fat_base, rng.uniform(0.4, 1.4) * s, rng.uniform(15, 45) * s, rng.uniform(0, 2 * np.pi))
    gland_bottom = fat_base + rng.uniform(0.38, 0.55) * d
    gland = (gland_bottom, rng.uniform(0.5, 1.8) * s, rng.uniform(15, 45) * s, rng.uniform(0, 6.3))
    fascia = gland_bottom + rng.uniform(0.06, 0.14) * d
    if rng.random() < 0.3 or fascia > d - 1.0 * s:
        fascia = None
    n_lig = int(rng.integers(1, 4))
    ligaments = [
        (
            float(rng.uniform(-0.45, 0.45) * width_mm),
            float(rng.uniform(-0.9, 0.9)),
            float(rng.uniform(-0.08, 0.08) / s),
        )
        for _ in range(n_lig)
    ]
    lobules = []
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(1.2, 3.0) * s
        lobules.append(
            (
                float(rng.uniform(-0.4, 0.4) * width_mm),
                float(rng.uniform(fat_base + 0.15 * d, gland_bottom - 0.08 * d)),
                float(a),
                float(a * rng.uniform(0.35, 0.55)),
                float(rng.uniform(-0.2, 0.2)),
            )
        )
    lesion = None
    if label != "normal":
        lesion = _draw_lesion(label, rng, s, width_mm, fat_base, gland_bottom, d)
        # A lobule overlapping the lesion would change its drawn contrast: drop those.
        lobules = [
            lb
            for lb in lobules
            if math.hypot(lb[0] - lesion["cx"], lb[1] - lesion["cz"]) > lb[2] + lesion["extent"]
        ]
    return Scene(
        label=label,
        width=width_mm,
        depth=depth_mm,
        skin=float(skin),
        fat=tuple(float(v) for v in fat),
        gland=tuple(float(v) for v in gland),
        fascia=None if fascia is None else float(fascia),
        gland_db=float(rng.uniform(-3.0, 2.0)),
        gland_texture_db=float(rng.uniform(1.5, 4.5)),
        fat_db=float(rng.uniform(-13.0, -8.0)),
        ligaments=ligaments,
        lobules=lobules,
        lesion=lesion,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _draw_lesion(
    label: str,
    rng: np.random.Generator,
    s: float,
    width: float,
    top: float,
    bottom: float,
    d: float,
) -> dict[str, Any]:
    if label == "benign":
        kind = "cyst" if rng.random() < 0.4 else "solid"
        a = rng.uniform(3.0, 7.0) * s  # half-width
        b = a * rng.uniform(0.45, 0.78)  # half-height: wider than tall (parallel)
        les: dict[str, Any] = {
            "shape": "oval",
            "kind": kind,
            "a": float(a),
            "b": float(b),
            "tilt": float(rng.uniform(-0.21, 0.21)),
            "contrast_db": None if kind == "cyst" else float(rng.uniform(-15.0, -8.0)),
        }
        half_w, half_h = a, b
    else:
        margin = str(rng.choice(["angular", "microlobulated", "spiculated"]))
        r0 = rng.uniform(2.6, 5.5) * s
        tall = rng.uniform(1.2, 1.7)  # taller than wide
        les = {
            "shape": "irregular",
            "kind": margin,
            "r0": float(r0),
            "tall": float(tall),
            "tilt": float(rng.uniform(-0.25, 0.25)),
            "contrast_db": float(rng.uniform(-24.0, -14.0)),
            "halo_db": float(rng.uniform(2.0, 5.0)) if margin == "spiculated" else 0.0,
        }
        if margin == "angular":
            n = int(rng.integers(6, 11))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            les["vertices"] = [ang.tolist(), rng.uniform(0.7, 1.3, n).tolist()]
        else:
            k = np.arange(2, 13)
            amp = rng.uniform(0.0, 1.0, k.size) * (0.16 if margin == "microlobulated" else 0.1)
            amp /= np.sqrt(k / 2.0)
            phase = rng.uniform(0, 2 * np.pi, k.size)
            les["harmonics"] = [k.tolist(), amp.tolist(), phase.tolist()]
        if margin == "spiculated":
            n = int(rng.integers(5, 11))
            les["spikes"] = [
                rng.uniform(0, 2 * np.pi, n).tolist(),
                rng.uniform(0.3, 0.8, n).tolist(),  # length / r0
                rng.uniform(0.1, 0.2, n).tolist(),  # half-width (rad) at the base
            ]
        extent = 1.0 + max(les.get("spikes", [[0], [0]])[1])
        if margin == "angular":
            extent = max(les["vertices"][1])
        half_w, half_h = r0 * extent, r0 * extent * tall
    half_w, half_h = float(half_w), float(half_h)
    # Centre inside the gland where possible, always fully inside the frame.
    z_lo = max(top + 0.3 * half_h, half_h + 2.0 * s)
    z_hi = min(bottom, d - half_h - 1.5 * s)
    cz = rng.uniform(z_lo, max(z_lo, z_hi))
    cx = rng.uniform(-1, 1) * max(0.0, width / 2 - half_w - 2.0 * s)
    les.update(cx=float(cx), cz=float(cz), extent=float(max(half_w, half_h)))
    return les


def _angdiff(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((a - b + np.pi) % (2 * np.pi) - np.pi)


def lesion_inside(scene: Scene, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Boolean: the lesion region at (x, z) mm (all False for a normal frame)."""
    les = scene.lesion
    if les is None:
        return np.zeros(np.broadcast(x, z).shape, bool)
    return _lesion_rho(les, x, z) <= 1.0


def _lesion_rho(les: dict[str, Any], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Normalized radius: < 1 inside the lesion, 1 on its margin."""
    dx, dz = np.asarray(x) - les["cx"], np.asarray(z) - les["cz"]
    c, s_ = math.cos(les["tilt"]), math.sin(les["tilt"])
    u, v = c * dx + s_ * dz, -s_ * dx + c * dz
    if les["shape"] == "oval":
        return np.hypot(u / les["a"], v / les["b"])
    v = v / les["tall"]
    th = np.arctan2(v, u)
    rho = np.hypot(u, v)
    r = _margin_radius(les, th)
    return rho / r


def _margin_radius(les: dict[str, Any], th: np.ndarray) -> np.ndarray:
    r0 = les["r0"]
    if "vertices" in les:  # angular: radius piecewise linear between vertices (sharp corners)
        ang, rad = np.asarray(les["vertices"][0]), np.asarray(les["vertices"][1])
        ang = np.concatenate([ang - 2 * np.pi, ang, ang + 2 * np.pi])
        rad = np.concatenate([rad, rad, rad])
        return r0 * np.interp(np.mod(th, 2 * np.pi), ang, rad)
    k, amp, ph = (np.asarray(v) for v in les["harmonics"])
    r = 1.0 + np.tensordot(np.cos(np.multiply.outer(th, k) + ph), amp, axes=([-1], [0]))
    if "spikes" in les:
        for a, length, hw in zip(*les["spikes"], strict=True):
            r = r + length * np.clip(1.0 - _angdiff(th, a) / hw, 0.0, None)
    return r0 * r


def _texture(seed: int, width: float, depth: float, corr_mm: float) -> Any:
    """A smooth zero-mean unit-variance random field, sampled at (x, z) mm."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    step = 0.2
    nz, nx = int(depth / step) + 8, int(width / step) + 8
    g = gaussian_filter(np.random.default_rng(seed).standard_normal((nz, nx)), corr_mm / step)
    g = (g - g.mean()) / (g.std() + 1e-12)

    def at(x: np.ndarray, z: np.ndarray) -> np.ndarray:
        rows = (np.asarray(z) + 2.0) / step
        cols = (np.asarray(x) + width / 2 + 2.0) / step
        return map_coordinates(g, [rows, cols], order=1, mode="nearest")

    return at


def reflectivity_db(scene: Scene, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean reflectivity (dB, amplitude) of the medium at (x, z) mm; -inf = no scatterers."""
    x, z = np.asarray(x, float), np.asarray(z, float)
    s = scene.width / 38.1
    tex = _texture(scene.texture_seed, scene.width, scene.depth + 3, 1.2 * s)
    tex2 = _texture(scene.texture_seed + 1, scene.width, scene.depth + 3, 0.5 * s)
    fat_top = _wave(x, scene.fat)
    gland_bot = _wave(x, scene.gland)
    out = np.full(x.shape, scene.fat_db)  # subcutaneous and retromammary fat
    # Fat lobulation: mild texture in the fat too.
    out += 1.5 * tex2(x, z)
    gland = (z >= fat_top) & (z < gland_bot)
    out[gland] = scene.gland_db + scene.gland_texture_db * tex(x[gland], z[gland])
    out[gland] += 1.5 * tex2(x[gland], z[gland])
    out[z < scene.skin] = 2.0 + 1.0 * tex2(x[z < scene.skin], z[z < scene.skin])
    # Cooper's ligaments: thin bright curves from the gland's top up through the fat.
    for x0, slope, curv in scene.ligaments:
        zz = z - _wave(np.full_like(x, x0), scene.fat)
        xl = x0 + slope * zz + curv * zz**2
        dist = np.abs(x - xl) / math.sqrt(1 + slope**2)
        sel = (dist < 0.18 * s) & (z > scene.skin) & (z < fat_top + 0.5 * s)
        out[sel] = scene.gland_db + 4.0
    # Fat lobules inside the gland.
    for cx, cz, a, b, tilt in scene.lobules:
        c, sn = math.cos(tilt), math.sin(tilt)
        u, v = c * (x - cx) + sn * (z - cz), -sn * (x - cx) + c * (z - cz)
        sel = np.hypot(u / a, v / b) < 1
        out[sel] = scene.fat_db + 1.5 * tex2(x[sel], z[sel])
    if scene.fascia is not None:
        fz = scene.fascia + (_wave(x, scene.gland) - scene.gland[0]) * 0.6
        muscle = z > fz
        out[muscle] = -5.0 + 4.0 * np.sin(2 * np.pi * (z[muscle] - 0.15 * x[muscle]) / (1.1 * s))
        out[np.abs(z - fz) < 0.3 * s] = 6.0
    les = scene.lesion
    if les is not None:
        rho = _lesion_rho(les, x, z)
        inside = rho <= 1.0
        if les.get("halo_db"):
            halo = (rho > 1.0) & (rho < 1.0 + 0.9 * s / les["r0"])
            out[halo] += les["halo_db"]
        if les["kind"] == "cyst":
            out[inside] = -np.inf
        elif les["shape"] == "oval":
            out[inside] = scene.gland_db + les["contrast_db"] + 0.8 * tex2(x[inside], z[inside])
        else:  # malignant: heterogeneous inside
            out[inside] = scene.gland_db + les["contrast_db"] + 3.0 * tex2(x[inside], z[inside])
    return out


# --------------------------------------------------------------------------- simulation

_DAS_CACHE: dict[tuple, Any] = {}


def _das_matrix(
    cfg: SimConfig,
    param: Any,
    grid: Grid,
    dels: np.ndarray,
    n_t: int,
    angle: float,
    cache: Path | None,
):
    """pymust.dasmtx for one transmit, kept in memory and (when ``cache``) on disk: it depends
    only on the configuration, and building it costs more CPU than simulating a transmit."""
    import scipy.sparse

    key = (cfg.key(), angle, n_t)
    if key in _DAS_CACHE:
        return _DAS_CACHE[key]
    path = None if cache is None else cache / f"das-{cfg.key()}-{angle:+.2f}-{n_t}.npz"
    if path is not None and path.exists():
        M = scipy.sparse.load_npz(path).tocsr()
    else:
        pymust = _pymust()
        p = copy.deepcopy(param)
        p.fnumber = None  # pymust picks the receive f-number from the element directivity
        X, Z = np.meshgrid(grid.x, grid.z)
        M = pymust.dasmtx(1j * np.array([n_t, param.Nelements]), X, Z, dels, p).tocsr()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            scipy.sparse.save_npz(tmp, M, compressed=False)
            tmp.replace(path)
    if len(_DAS_CACHE) >= 8:
        _DAS_CACHE.clear()
    _DAS_CACHE[key] = M
    return M


def simulate(
    label: str,
    seed: int,
    cfg: SimConfig = DEFAULT_CONFIG,
    scene: Scene | None = None,
    das_cache: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One frame: (image uint8 (H, W), mask uint8 0/1 (H, W), info). ``scene``: a drawn
    :class:`Scene` instead of the one ``seed`` draws; ``das_cache``: folder for the DAS matrices."""
    pymust = _pymust()
    t0, c0 = time.perf_counter(), time.process_time()
    param = probe_param(cfg)
    grid = make_grid(cfg, param)
    if scene is None:
        scene = make_scene(label, seed, grid.width_m * 1e3, (grid.z0_m + grid.depth_m) * 1e3)
    lam_min = param.c / (param.fc * (1 + param.bandwidth / 200))
    state = np.random.get_state()  # noqa: NPY002 -- genscat and tgc draw from NumPy's global generator
    try:
        np.random.seed(seed % 2**32)  # noqa: NPY002
        image, mask, n_scat = _simulate_seeded(pymust, cfg, param, grid, scene, lam_min, das_cache)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    info = {
        "label": label,
        "seed": int(seed),
        "lesion": scene.lesion,
        "n_scatterers": n_scat,
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
        "pixel_mm": round(grid.spacing_mm, 4),
    }
    return image, mask, info


def _simulate_seeded(
    pymust, cfg: SimConfig, param, grid: Grid, scene: Scene, lam_min: float, das_cache: Path | None
):
    from pymust import utils

    box_w = grid.width_m + 2e-3
    box_z0, box_z1 = 0.1e-3, grid.z0_m + grid.depth_m + 1.0e-3
    xs, _, zs, rc = pymust.genscat(
        np.array([box_w, box_z1 - box_z0]), float(cfg.scatter_factor * lam_min)
    )
    zs = zs + box_z0
    amp = 10.0 ** (reflectivity_db(scene, xs * 1e3, zs * 1e3) / 20.0)
    keep = amp > 0
    xs, zs, rc = xs[keep], zs[keep], (rc * amp)[keep]

    opt = utils.Options()
    opt.dBThresh = cfg.db_thresh
    opt.ElementSplitting = 1
    opt.WaitBar = False
    # IQ length: the longest round trip any pixel needs (+ margin), fixed so that the DAS
    # matrices are shared by every frame of this configuration.
    far = math.hypot(grid.width_m, grid.z0_m + grid.depth_m)
    n_t = math.ceil(param.fs * (2.2 * far / param.c + 4e-6))
    n_img = math.ceil(param.fs * 2 * (grid.z0_m + grid.depth_m) / param.c)
    iq_sum = 0
    for a in cfg.angles_deg:
        p = copy.deepcopy(param)
        dels = pymust.txdelay(p, float(np.deg2rad(a)))
        rf, _ = pymust.simus(xs, zs, rc, dels, p, opt)
        iq = pymust.rf2iq(rf, copy.deepcopy(param))
        buf = np.zeros((n_t, param.Nelements), np.complex128)
        m = min(n_t, iq.shape[0])
        buf[:m] = iq[:m]
        # pymust.tgc fits an exponential decay to the mean envelope; fitted on the samples of
        # the image's depth (later samples only carry oblique paths and would bias the fit),
        # its gain is then extended along the same exponential to the whole record.
        gain = np.asarray(pymust.tgc(buf[:n_img])[1], float).ravel()
        rate = math.log(gain[-1] / gain[0]) / (n_img - 1)
        buf *= (gain[0] * np.exp(rate * np.arange(n_t)))[:, None]
        M = _das_matrix(cfg, param, grid, dels, n_t, float(a), das_cache)
        iq_sum = iq_sum + (M @ buf.flatten(order="F")).reshape(
            (grid.z.size, grid.x.size), order="F"
        )
    with np.errstate(divide="ignore"):  # log10(0) where no echo reaches: clipped to 0
        bmode = pymust.bmode(iq_sum, cfg.dynamic_range_db)
    h, w = cfg.out_size
    image = cv2.resize(bmode, (w, h), interpolation=cv2.INTER_AREA)
    X, Z = np.meshgrid(grid.x * 1e3, grid.z * 1e3)
    fine = lesion_inside(scene, X, Z).astype(np.float32)
    mask = (cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)
    return image, mask, int(xs.size)


def cached_frame(
    label: str, seed: int, cfg: SimConfig = DEFAULT_CONFIG, cache: Path | None = CACHE
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`simulate`, read from / written to ``cache`` (.npz keyed by label, seed, settings)."""
    path = None if cache is None else cache / f"{cfg.key()}-{label}-{seed}.npz"
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        info = json.loads(str(z["info"]))
        info["cached"] = True
        return z["image"], z["mask"], info
    image, mask, info = simulate(label, seed, cfg, das_cache=cache)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=image, mask=mask, info=json.dumps(info))
        tmp.replace(path)
    info["cached"] = False
    return image, mask, info


def frame_seeds(n_per_class: int) -> list[tuple[str, int]]:
    """The fixed (label, seed) list: n per class, interleaved."""
    out = []
    for i in range(n_per_class):
        for c, label in enumerate(LABELS):
            seed = int(np.random.SeedSequence([SEED, c, i]).generate_state(1)[0])
            out.append((label, seed))
    return out


# --------------------------------------------------------------------------- scoring


def summarize(preds: Sequence[dict[str, Any]], truths: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scores of one model from per-frame predictions and truths (pure function).

    ``preds[i]``: ``mask`` (H, W), ``label``, ``raw_probs`` (class -> probability), ``in_scope``,
    ``ms``. ``truths[i]``: ``mask`` (H, W), ``label``. Dice is the mean over frames whose true
    mask is non-empty (an out-of-scope verdict's all-zero mask scores 0 there); accuracy counts
    ``out_of_scope`` as wrong; macro AUC is one-vs-rest on ``raw_probs`` over the classes present.
    """
    if len(preds) != len(truths) or not preds:
        raise ValueError("preds and truths must be non-empty and of the same length")
    names = list(preds[0]["raw_probs"]) or list(LABELS)
    dices, y_true, y_pred, scores = [], [], [], []
    for p, t in zip(preds, truths, strict=True):
        if np.asarray(t["mask"]).any():
            dices.append(metrics.dice(np.asarray(p["mask"]) > 0, np.asarray(t["mask"]) > 0))
        y_true.append(names.index(t["label"]))
        y_pred.append(names.index(p["label"]) if p["label"] in names else len(names))
        scores.append([float(p["raw_probs"].get(c, 0.0)) for c in names])
    y_true_a = np.asarray(y_true)
    per_class = {}
    for k, c in enumerate(names):
        sel = y_true_a == k
        if sel.any():
            per_class[c] = float(np.mean(np.asarray(y_pred)[sel] == k))
    return {
        "n": len(preds),
        "dice": float(np.mean(dices)) if dices else math.nan,
        "dice_frames": len(dices),
        "accuracy": metrics.accuracy(y_true, y_pred),
        "macro_auc": float(metrics.macro_auc(y_true_a, np.asarray(scores))),
        "flagged": float(np.mean([not p["in_scope"] for p in preds])),
        "ms_per_frame": float(np.mean([p["ms"] for p in preds])),
        "recall_per_class": per_class,
        "confusion": _confusion(names, y_true, y_pred),
    }


def _confusion(names: list[str], y_true: list[int], y_pred: list[int]) -> dict[str, dict[str, int]]:
    cols = [*names, "out_of_scope"]
    out = {t: dict.fromkeys(cols, 0) for t in names}
    for t, p in zip(y_true, y_pred, strict=True):
        out[names[t]][cols[p]] += 1
    return out


Frames = list[tuple[np.ndarray, np.ndarray, dict[str, Any]]]


def run_model(
    path: Path, frames: Frames, threads: int, refiner: bool | Path = False
) -> list[dict[str, Any]]:
    from sdk import Analyzer

    an = Analyzer(path, threads=threads, refiner=refiner)
    an.load()
    an.run(frames[0][0])  # warm-up (not timed)
    preds = []
    for image, _, _ in frames:
        t = time.perf_counter()
        res = an.run(image)
        ms = 1e3 * (time.perf_counter() - t)
        preds.append(
            {
                "mask": res.mask,
                "label": res.label,
                "raw_probs": dict(res.raw_probs),
                "in_scope": bool(res.in_scope),
                "ms": ms,
                "scope_score": res.scope_score,
            }
        )
    an.close()
    return preds


# --------------------------------------------------------------------------- reporting


def contact_sheet(
    frames, preds_by_model: dict[str, list[dict]], per_class: int = 4, scale: float = 0.75
) -> np.ndarray:
    """Rows = classes, columns = frames (``scale`` x their size): true mask green, the first
    model's mask red, every model's label."""
    first = next(iter(preds_by_model))
    tiles = []
    for label in LABELS:
        idx = [i for i, f in enumerate(frames) if f[2]["label"] == label][:per_class]
        row = []
        for i in idx:
            image, mask, info = frames[i]
            h, w = (round(scale * n) for n in image.shape)
            rgb = cv2.cvtColor(
                cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR
            )
            for m, color in ((preds_by_model[first][i]["mask"], (0, 0, 255)), (mask, (0, 255, 0))):
                m = cv2.resize((np.asarray(m) > 0).astype(np.uint8), (w, h), cv2.INTER_NEAREST)
                cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(rgb, cs, -1, color, 1)
            kind = (info.get("lesion") or {}).get("kind", "")
            lines = [f"true: {label} {kind}".rstrip()]
            for name, preds in preds_by_model.items():
                p = preds[i]
                conf = p["raw_probs"].get(p["label"], None)
                c = "" if conf is None else f" (raw p {conf:.2f})"
                lines.append(f"{name}: {p['label']}{c}")
            for k, txt in enumerate(lines):
                y = 12 + 12 * k
                cv2.putText(rgb, txt, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 3)
                color = (0, 255, 0) if k == 0 else (80, 180, 255)
                cv2.putText(rgb, txt, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, color, 1)
            row.append(cv2.copyMakeBorder(rgb, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(40, 40, 40)))
        while len(row) < per_class:
            row.append(np.zeros_like(row[0]))
        tiles.append(np.hstack(row))
    return np.vstack(tiles)


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    cfg = meta["config"]
    lines = [
        "# Independent check: pymust (MUST) simulated breast B-mode",
        "",
        "Frames simulated with **pymust** "
        f"{meta['pymust_version']} (Python port of MUST; never used for training, calibration"
        " or tuning), scored through `sdk.Analyzer`. Script: `benchmarks/independent_check.py`"
        " (its docstring lists what the frames model and what they do not).",
        "",
        f"- Command: `{meta['command']}`",
        *(f"- {note}" for note in meta.get("notes", [])),
        f"- CPU: {meta['cpu']}",
        f"- Frames: {meta['n_frames']} ({meta['n_per_class']} normal / benign / malignant), "
        f"{cfg['out_size'][0]}x{cfg['out_size'][1]} uint8, {meta['pixel_mm']} mm pixels; seed"
        f" stream {SEED}; probe {cfg['probe']} ({meta['n_elements']} elements), "
        f"{len(cfg['angles_deg'])} plane waves {list(cfg['angles_deg'])} deg coherently "
        f"compounded, attenuation {cfg['attenuation_db_cm_mhz']} dB/cm/MHz + pymust TGC, "
        f"{cfg['dynamic_range_db']:.0f} dB dynamic range; mean {meta['mean_scatterers']:.0f}"
        f" scatterers per frame.",
        f"- Simulation: median {meta['sim_cpu_seconds_per_frame_median']:.1f} s CPU "
        f"({meta['sim_seconds_per_frame_median']:.1f} s wall) per frame, "
        f"{meta['sim_cpu_seconds_total'] / 60:.1f} CPU-minutes for all {meta['n_frames']} "
        "(one thread, `OMP_NUM_THREADS=1 nice -n 19`, on a 2-core machine shared with training"
        " jobs; the first frame of a fresh cache also builds the three DAS matrices, ~50 s CPU"
        " once); frames cached under `runs/independent/`.",
        "- Dice: mean over the lesion frames (`Result.mask` vs the true mask; an out-of-scope"
        " verdict's empty mask scores 0); accuracy: `Result.label` (out_of_scope = wrong);"
        " macro AUC: `Result.raw_probs`, one-vs-rest; flagged: fraction with"
        " `in_scope` False; ms/frame: wall time of `Analyzer.run` (threads=1, shared CPU).",
        "- **Not modelled**: posterior enhancement / shadowing (pymust's attenuation is one"
        " scalar for the whole medium, so a lesion cannot attenuate differently from its"
        " surroundings), elevation effects, sound-speed variations, reverberation, electronic"
        " noise, scanner post-processing; speckle from a reduced scatterer density.",
        "",
        "| model | file sha256 | Dice | accuracy | macro AUC | flagged | recall N / B / M "
        "| ms/frame |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        rc = r["recall_per_class"]
        rec = " / ".join(f"{rc.get(c, math.nan):.2f}" for c in LABELS)
        lines.append(
            f"| {r['model']} (`{r['path']}`) | `{r['sha256'][:12]}` | {r['dice']:.3f} | "
            f"{r['accuracy']:.3f} | {r['macro_auc']:.3f} | {r['flagged']:.2f} | {rec} | "
            f"{r['ms_per_frame']:.1f} |"
        )
    lines += ["", "Confusion (rows = truth, columns = `Result.label`):", ""]
    for r in rows:
        lines.append(f"**{r['model']}**")
        lines.append("")
        cols = list(next(iter(r["confusion"].values())))
        lines.append("| truth \\ label | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for t, row in r["confusion"].items():
            lines.append(f"| {t} | " + " | ".join(str(row[c]) for c in cols) + " |")
        lines.append("")
    lines.append(
        f"Contact sheet: `independent-check.png` (true mask green, `{rows[0]['model']}`'s mask"
        " red; every model's `Result.label` with its `raw_probs` value for that label -- a"
        " lesion label follows the mask, so it can come with a low raw probability)."
    )
    return "\n".join(lines) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_model(arg: str) -> tuple[str, Path]:
    name, sep, path = arg.partition("=")
    if not sep:
        path, name = arg, Path(arg).stem
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="an .onnx model (repeatable); default: the shipped default-fp32 and default-int8",
    )
    ap.add_argument(
        "--with-refiner",
        action="store_true",
        help="also score every model with the embedded lesion refiner (rows NAME+refiner)",
    )
    ap.add_argument(
        "--refiner",
        type=Path,
        default=None,
        metavar="PATH",
        help="with --with-refiner: this refiner .onnx instead of the embedded one",
    )
    ap.add_argument("--n", type=int, default=20, help="frames per class (N, B, M)")
    ap.add_argument("--threads", type=int, default=1, help="Analyzer threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--simulate-only", action="store_true", help="fill the cache and stop")
    ap.add_argument(
        "--cached-only", action="store_true", help="score cached frames only (never simulate)"
    )
    ap.add_argument("--note", action="append", default=[], help="a report line (repeatable)")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from sdk.cpu import describe

    cfg = DEFAULT_CONFIG
    models = [_parse_model(m) for m in args.model] or [
        ("default-fp32", REPO / "sdk/models/default-fp32.onnx"),
        ("default-int8", REPO / "sdk/models/default-int8.onnx"),
    ]
    frames = []
    for label, seed in tqdm(frame_seeds(args.n), desc="pymust frames", unit="frame"):
        path = args.cache / f"{cfg.key()}-{label}-{seed}.npz"
        if args.cached_only and not path.exists():
            raise SystemExit(f"{path} is not cached (--cached-only)")
        frames.append(cached_frame(label, seed, cfg, args.cache))
    sim_s = [f[2]["seconds"] for f in frames]
    sim_cpu = [f[2].get("cpu_seconds", math.nan) for f in frames]
    if args.simulate_only:
        print(
            f"{len(frames)} frames; when simulated: median {np.median(sim_s):.1f} s wall, "
            f"{np.median(sim_cpu):.1f} s CPU per frame"
        )
        return
    truths = [{"mask": m, "label": i["label"]} for _, m, i in frames]
    rows, preds_by_model = [], {}
    runs = [(name, path, False) for name, path in models]
    if args.refiner is not None and not args.with_refiner:
        ap.error("--refiner needs --with-refiner")
    if args.with_refiner:
        ref: bool | Path = args.refiner or True
        runs = [
            r
            for name, path in models
            for r in ((name, path, False), (f"{name}+refiner", path, ref))
        ]
    for name, path, refined in runs:
        preds = run_model(path, frames, args.threads, refined)
        preds_by_model[name] = preds
        row = {"model": name, "path": str(path), "sha256": _sha256(path)}
        if refined:
            from sdk import default_refiner

            rp = default_refiner() if refined is True else Path(refined)
            row["refiner"] = {"path": str(rp), "sha256": _sha256(rp)}
        row.update(summarize(preds, truths))
        rows.append(row)
        print(
            f"{name:20s} dice {row['dice']:.3f} acc {row['accuracy']:.3f} "
            f"auc {row['macro_auc']:.3f} flagged {row['flagged']:.2f} "
            f"{row['ms_per_frame']:.1f} ms/frame",
            flush=True,
        )
    param = probe_param(cfg)
    meta = {
        "command": "python "
        + " ".join(
            shlex.quote(a)
            for a in ["benchmarks/independent_check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "cpu": describe(),
        "pymust_version": pymust_version(),
        "n_per_class": args.n,
        "n_frames": len(frames),
        "config": asdict(cfg),
        "config_key": cfg.key(),
        "n_elements": int(param.Nelements),
        "pixel_mm": frames[0][2]["pixel_mm"],
        "mean_scatterers": float(np.mean([f[2]["n_scatterers"] for f in frames])),
        "sim_seconds_per_frame_median": float(np.median(sim_s)),
        "sim_cpu_seconds_per_frame_median": float(np.median(sim_cpu)),
        "sim_cpu_seconds_per_frame_mean": float(np.mean(sim_cpu)),
        "sim_cpu_seconds_total": float(np.sum(sim_cpu)),
        "seed_stream": SEED,
        "notes": list(args.note),
    }
    per_frame = []
    for i, (_, mask, info) in enumerate(frames):
        rec = {
            "label": info["label"],
            "seed": info["seed"],
            "kind": (info.get("lesion") or {}).get("kind"),
            "lesion_px": int(mask.sum()),
        }
        for name, preds in preds_by_model.items():
            p = preds[i]
            rec[name] = {
                "label": p["label"],
                "dice": metrics.dice(p["mask"] > 0, mask > 0) if mask.any() else None,
                "raw_probs": {k: round(v, 4) for k, v in p["raw_probs"].items()},
            }
        per_frame.append(rec)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "independent-check.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "frames": per_frame}, indent=2) + "\n"
    )
    (args.out / "independent-check.md").write_text(_markdown(meta, rows))
    cv2.imwrite(str(args.out / "independent-check.png"), contact_sheet(frames, preds_by_model))
    print(args.out / "independent-check.md")


if __name__ == "__main__":
    main()
