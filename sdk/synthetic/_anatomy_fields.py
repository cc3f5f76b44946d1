"""Breast anatomy of ``style="scanner"`` phantoms, from random fields rather than primitives.

The layers (skin, subcutaneous fat, fibroglandular tissue, retromammary fat, pectoral muscle,
chest wall) have smooth random boundaries and textures built from band-limited Gaussian random
fields:

* fat: mildly hypoechoic, lobular (a smooth field of a few millimetres), crossed by septa and
  Cooper's ligaments drawn as the zero level set of an anisotropic random field (thin echogenic
  curves that branch and meander, never a Voronoi cell with a bright rim);
* fibroglandular tissue: echogenic, heterogeneous, with fat lobules where a smooth field exceeds
  the quantile that gives the composition's fat fraction (fatty ... extremely dense), a ragged
  anterior surface from the same field, occasional ducts;
* muscle: hypoechoic with fibrillar striations (a field stretched laterally), bright fasciae;
* chest wall, when in view: intercostal muscle, ribs (ragged ovals, bright anterior cortex,
  opaque: their shadow comes from the attenuation raster), pleura and lung.

Levels in dB re the reference tissue, as :mod:`sdk.synthetic._anatomy` (subcutaneous fat
about -10 dB, gland -2..+5 dB: fat is hypoechoic to gland in B-mode, Stavros 2004,
*Breast Ultrasound*, ch. 3).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from sdk.synthetic._anatomy import ECHO_DB, Tissue, _curve

__all__ = ["FAT_FRACTION", "GLAND_MM", "build_breast_fields"]

#: Fraction of the fibroglandular layer occupied by fat lobules, per ACR composition.
FAT_FRACTION = {"fatty": 0.65, "scattered": 0.45, "heterogeneous": 0.25, "dense": 0.08}
#: Thickness range (mm) of the fibroglandular layer per composition.
GLAND_MM = {
    "fatty": (2.0, 7.0),
    "scattered": (5.0, 15.0),
    "heterogeneous": (8.0, 22.0),
    "dense": (10.0, 28.0),
}
_RIB_ATTENUATION = 40.0
_LUNG_ATTENUATION = 1.5


def _noise(rng: np.random.Generator, shape: tuple[int, int], sx: float, sz: float) -> np.ndarray:
    """Unit-variance smooth Gaussian random field, correlation sigmas ``(sz, sx)`` pixels:
    white noise on a grid decimated to ~2 coarse pixels per sigma, blurred and normalised
    there (the variance of the coarse field; cheap), then resized up bilinearly."""
    fz, fx = max(sz / 2.0, 1.0), max(sx / 2.0, 1.0)
    ch, cw = max(int(shape[0] / fz) + 2, 2), max(int(shape[1] / fx) + 2, 2)
    f = rng.standard_normal((ch, cw), dtype=np.float32)
    f = cv2.GaussianBlur(f, (0, 0), sigmaX=min(sx, 2.0), sigmaY=min(sz, 2.0))
    std = float(f.std())
    if std > 0:
        f *= np.float32(1.0 / std)
    return cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _band(zs: np.ndarray, lo: float, hi: float) -> slice:
    z = zs[:, 0]
    i0 = int(np.searchsorted(z, lo, "left")) - 1
    i1 = int(np.searchsorted(z, hi, "right")) + 1
    return slice(max(i0, 0), min(max(i1, 0), z.size))


def build_breast_fields(
    rng: np.random.Generator,
    x_min: float,
    x_max: float,
    z_max: float,
    res: float,
    f: dict[str, Any],
) -> Tissue:
    """Draw one breast over ``[x_min, x_max] x [0, z_max]`` mm at ``res`` mm per pixel.

    ``f`` holds the frame factors (``skin_mm``, ``fat_mm``, ``muscle_mm``, ``composition``,
    ``attenuation_db_cm_mhz``); the glandular thickness, levels and textures are drawn here
    (recorded in ``Tissue.layers``).
    """
    nx = math.ceil((x_max - x_min) / res)
    nz = math.ceil(z_max / res)
    xs = (x_min + (np.arange(nx, dtype=np.float32) + 0.5) * res)[None, :]
    zs = ((np.arange(nz, dtype=np.float32) + 0.5) * res)[:, None]
    px = 1.0 / res
    comp = str(f["composition"])

    skin_b = float(f["skin_mm"]) + _curve(rng, nx, res, 15.0, 0.12)
    fat_t = float(f["fat_mm"])
    fat_b = skin_b + np.maximum(fat_t * (1.0 + _curve(rng, nx, res, 18.0, 0.22)), 0.8)
    g_lo, g_hi = GLAND_MM[comp]
    gland_t = rng.uniform(g_lo, g_hi)
    gland_b = fat_b + np.maximum(gland_t + _curve(rng, nx, res, 20.0, 0.2 * gland_t), 1.5)
    retro_b = gland_b + rng.uniform(0.5, 4.0) + np.abs(_curve(rng, nx, res, 12.0, 0.8))
    muscle_b = retro_b + float(f["muscle_mm"]) + _curve(rng, nx, res, 25.0, 1.0)
    pleura_b = muscle_b + rng.uniform(4.0, 8.0)

    fat_level = ECHO_DB["fat"] + rng.uniform(-1.5, 1.5)
    gland_level = rng.uniform(-2.0, 5.0)
    muscle_level = ECHO_DB["muscle"] + rng.uniform(-2.5, 1.5)
    db = np.full((nz, nx), fat_level, np.float32)
    atten = np.full((nz, nx), float(f["attenuation_db_cm_mhz"]), np.float32)

    # Fat everywhere above the muscle: lobular modulation and septa / Cooper's ligaments as the
    # zero set of an anisotropic field (thin meandering echogenic curves).
    top = _band(zs, 0.0, float(retro_b.max()))
    n_top = top.stop
    lob = _noise(rng, (n_top, nx), rng.uniform(2.0, 4.0) * px, rng.uniform(1.2, 2.5) * px)
    stretch = rng.uniform(0.8, 1.6)
    sep_scale = rng.uniform(2.0, 4.5) * px
    sep = _noise(rng, (n_top, nx), sep_scale * stretch, sep_scale)
    width = rng.uniform(0.04, 0.09)
    septa = np.exp(-((sep / width) ** 2))
    sep_db = rng.uniform(4.0, 9.0)
    db[top] = fat_level + 1.2 * lob + sep_db * septa

    # Fibroglandular layer: fat lobules where a smooth field exceeds the composition's
    # quantile; the same field makes the anterior / posterior surfaces ragged.
    gl = _band(zs, float(fat_b.min()) - 3.0, float(gland_b.max()) + 3.0)
    z = zs[gl]
    n_gl = z.shape[0]
    if n_gl:
        islands = _noise(rng, (n_gl, nx), rng.uniform(2.0, 4.0) * px, rng.uniform(1.0, 2.0) * px)
        texture = _noise(rng, (n_gl, nx), rng.uniform(0.5, 1.2) * px, rng.uniform(0.3, 0.7) * px)
        thr = NormalDist().inv_cdf(1.0 - FAT_FRACTION[comp])
        fatness = _smoothstep((islands - thr) / 0.35 + 0.5)
        inside = _smoothstep((z - fat_b + 1.2 * islands) / 1.0) * _smoothstep(
            (gland_b - z + 1.2 * islands) / 1.0
        )
        gland_db = gland_level + rng.uniform(1.5, 3.5) * texture
        w = inside * (1.0 - fatness)
        db[gl] = db[gl] * (1.0 - w) + gland_db * w
        if rng.random() < 0.35:  # ducts: thin anechoic channels running towards the nipple
            duct = _noise(rng, (n_gl, nx), rng.uniform(6.0, 12.0) * px, 1.2 * px)
            tube = np.exp(-((duct / 0.06) ** 2)) * inside * (1.0 - fatness)
            db[gl] += (ECHO_DB["duct"] - gland_level) * tube

    # Pectoral muscle: fibrillar striations, fasciae as bright interrupted lines.
    mu = _band(zs, float(retro_b.min()), float(muscle_b.max()))
    z = zs[mu]
    if z.shape[0]:
        fib = _noise(rng, (z.shape[0], nx), rng.uniform(6.0, 12.0) * px, rng.uniform(0.2, 0.4) * px)
        in_muscle = _smoothstep((z - retro_b) / 0.4) * _smoothstep((muscle_b - z) / 0.4)
        muscle_db = muscle_level + 6.0 * np.clip(fib - 0.6, 0.0, None)
        db[mu] = db[mu] * (1.0 - in_muscle) + muscle_db * in_muscle
    for line in (retro_b, muscle_b):
        band = _band(zs, float(line.min()) - 1.0, float(line.max()) + 1.0)
        level = rng.uniform(0.0, 6.0) + 3.0 * _curve(rng, nx, res, 6.0, 1.0)
        prof = np.exp(-(((zs[band] - line) / rng.uniform(0.15, 0.35)) ** 2))
        db[band] = np.maximum(db[band], level * prof + db[band] * (1.0 - prof))

    # Chest wall (below the muscle): intercostal muscle, pleura, lung, ribs.
    cw = _band(zs, float(muscle_b.min()), math.inf)
    z = zs[cw]
    if z.shape[0]:
        below = z >= muscle_b
        db[cw][below] = ECHO_DB["intercostal"] + rng.uniform(-2.0, 2.0)
        pleura = np.abs(z - pleura_b) < 0.3
        db[cw][below & pleura] = ECHO_DB["pleura"]
        lung = z > pleura_b + 0.3
        db[cw][lung] = ECHO_DB["lung"]
        atten[cw][lung] = _LUNG_ATTENUATION
        spacing = rng.uniform(22.0, 34.0)
        x_rib = x_min + rng.uniform(0.0, spacing)
        if rng.random() < 0.6:  # an intercostal view: no rib under the probe
            x_rib = math.inf
        while x_rib < x_max + 8.0:
            half_w, half_h = rng.uniform(6.0, 11.0), rng.uniform(2.0, 3.5)
            j = min(max(int((x_rib - x_min) / res), 0), nx - 1)
            zc = float(muscle_b[j]) + half_h + rng.uniform(0.5, 2.0)
            tilt = rng.uniform(-0.15, 0.15)
            j0 = max(int((x_rib - half_w - 2.0 - x_min) / res), 0)
            j1 = min(int((x_rib + half_w + 2.0 - x_min) / res) + 1, nx)
            i0 = min(max(int((zc - half_h - 2.0) / res), 0), nz)
            i1 = min(int((zc + half_h + 2.0) / res) + 1, nz)
            if j1 > j0 and i1 > i0:
                win = (slice(i0, i1), slice(j0, j1))
                dx = xs[:, j0:j1] - x_rib
                dz = zs[i0:i1] - zc - tilt * dx
                rag = 0.08 * _noise(rng, (i1 - i0, j1 - j0), 1.5 * px, 1.5 * px)
                rr = np.hypot(dx / half_w, dz / half_h) + rag
                body = rr < 1.0
                # Bright anterior cortex over the middle of the rib only (the beam meets the
                # flanks obliquely), brightness varying along it; cartilage (p = 0.3) is a
                # hypoechoic oval that lets some sound through.
                cortex = (rr >= 0.93) & (rr < 1.0 + 0.35 / half_h) & (dz < 0)
                cortex &= np.abs(dx) < 0.75 * half_w
                cartilage = rng.random() < 0.3
                db[win][body] = ECHO_DB["rib"] + (6.0 if cartilage else 0.0)
                atten[win][body] = 2.0 if cartilage else _RIB_ATTENUATION
                if not cartilage:
                    shade = rng.uniform(-6.0, 0.0) + 2.0 * rag / 0.08
                    db[win][cortex] = (ECHO_DB["rib_cortex"] + shade)[cortex]
            x_rib += spacing

    # Skin: bright entry echo and dermis (over everything above).
    sk = _band(zs, 0.0, float(skin_b.max()) + 0.5)
    z = zs[sk]
    dermis = _smoothstep((skin_b - z) / 0.25)
    skin_db = ECHO_DB["skin"] + rng.uniform(-2.0, 2.0)
    db[sk] = db[sk] * (1.0 - dermis) + skin_db * dermis
    db[sk] = np.maximum(db[sk], ECHO_DB["skin_entry"] * np.exp(-(((z - 0.15) / 0.25) ** 2)))

    layers = {
        "skin_mm": float(skin_b.mean()),
        "fat_mm": float(fat_b.mean()),
        "gland_mm": float(gland_b.mean()),
        "retromammary_mm": float(retro_b.mean()),
        "muscle_mm": float(muscle_b.mean()),
        "pleura_mm": float(pleura_b.mean()),
        "gland_thickness_mm": float(gland_t),
        "fat_level_db": float(fat_level),
        "gland_level_db": float(gland_level),
    }
    bounds = {"skin": skin_b, "fat": fat_b, "gland": gland_b, "muscle": muscle_b}
    return Tissue(np.ascontiguousarray(db), atten, x_min, res, layers, bounds)


def specular_raster(tissue: Tissue, strength_db: float) -> np.ndarray:
    """Coherent (specular) echo amplitude of the tissue interfaces: the axial gradient of the
    amplitude reflectivity, per mm, times ``10^(strength_db / 20)`` (float32, same shape).

    A beam meets an interface at near-normal incidence mostly where the tissue changes along
    the beam (axial derivative); its phase is the same along the interface (a continuous line
    in the image, unlike speckle)."""
    amp = cv2.exp(tissue.echo_db * np.float32(math.log(10.0) / 20.0))
    grad = cv2.Sobel(amp, cv2.CV_32F, 0, 1, ksize=3) / np.float32(8.0 * tissue.res)
    return np.abs(grad) * np.float32(10.0 ** (strength_db / 20.0) * 0.3)
