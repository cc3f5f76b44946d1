"""The randomized factors of a ``style="scanner"`` phantom: what is drawn, from which range, why.

Every factor is drawn per frame from ``rng`` unless the caller fixes it (a phantom keyword), and
every drawn value is returned in ``info["factors"]`` (frame factors) and in each
``info["lesions"][k]`` (BI-RADS descriptors), so a split (:mod:`sdk.synthetic._splits`) can hold
any of them out of training.

Ranges and where they come from (approximate, rounded; a prior to randomize over, not a fit):

* Probe. ``frequency_mhz``: linear 5-15 MHz, curvilinear 3.5-9 MHz (breast linear arrays
  L12-5 / L15-7 / L18-5, convex C9-4 / C5-2; Szabo, *Diagnostic Ultrasound Imaging*, 2nd ed.,
  2014, ch. 1 and 7). ``fractional_bandwidth`` (-6 dB, two-way) 0.5-0.9 (broadband PZT /
  single-crystal arrays, Szabo ch. 5): the axial PSF is a Gaussian pulse whose -6 dB length is
  ``0.883 / (B f0)`` s (time-bandwidth product of a Gaussian), i.e. ``0.88 lambda / B`` of
  depth: 1.0-1.8 wavelengths. ``f_number`` 1.2-3 (dynamic receive, fixed transmit focus):
  lateral -6 dB width ``~1.0 lambda F#`` at the focus (Szabo ch. 6), widening as a Gaussian beam
  with depth of field ``7 lambda F#^2`` around ``focal_depth_mm`` (30-80 % of the depth: users
  put the focus at the region of interest).
* Scatterers. ``scatterer_density`` (scatterers per resolution cell, log-uniform 2-30, and
  fully developed speckle, density >= 10, in ~40 % of frames): below ~10 per cell the envelope is
  no longer Rayleigh but K / Nakagami distributed (pre-Rayleigh, Nakagami m < 1; Jakeman 1980,
  Shankar, *IEEE TUFFC* 47 (2000) 727 and *Phys. Med. Biol.* 46 (2001) 3075; Burckhardt,
  *IEEE Trans. Sonics Ultrason.* 25 (1978) 1: Rayleigh limit, SNR 1.91). ``specular_db`` -12 to
  +6 dB: coherent (specular) echoes from the interfaces of the tissue model (skin, fascia,
  ligaments, capsules), proportional to the axial gradient of the tissue amplitude
  (Wagner, Insana and Brown, *JOSA A* 4 (1987) 910: diffuse + coherent components).
* Attenuation ``attenuation_db_cm_mhz`` 0.3-0.8 (breast fat / parenchyma, Szabo table B.1;
  Goss et al., *JASA* 64 (1978) 423): deep echoes of a high-frequency probe fall into the
  noise, as on scanners (penetration limit). ``harmonic`` (tissue harmonic imaging,
  p = 0.5): receive at 2 f0 with a narrower beam (lateral width / 1.4) and lower side-lobe
  haze (-15 dB), a longer pulse (narrower receive band, axial x 1.25) and an effective
  attenuation frequency of 1.5 f0 (Ward, Baker and Humphrey, *JASA* 101 (1997) 143; Szabo ch. 12).
* Scanner processing. ``gain_db`` -6 to +8, ``dynamic_range_db`` 45-75 (breast presets
  50-70 dB), ``tgc_compensation`` 0.7-1.15 of the true round-trip attenuation (operators under-
  or over-compensate) and ``tgc_sliders_db`` eight slide-pot offsets of N(0, 2) dB across the
  depth, the TGC's total range ``tgc_range_db`` 40-60 dB, ``gray_gamma`` 0.75-1.35
  (post-processing grey map), ``noise_db`` -90 to -70 dB electronic noise re the tissue echo
  at the face (front ends span ~100 dB; Szabo ch. 10). ``compounding`` 1 / 3 / 5 steered views at
  ``steer_deg`` 5-15 whole degrees, incoherently averaged (Jespersen, Wilhjelm and Sillesen,
  *Ultrason. Imaging* 20 (1998) 81; Entrekin et al., *Semin. US CT MR* 22 (2001) 50).
  ``speckle_reduction`` off / low / mid / high: edge-preserving smoothing of the log image
  (SRI / SRAD-like; Yu and Acton, *IEEE TIP* 11 (2002) 1260). ``haze_db`` -40 to -15 dB
  near-field reverberation clutter (fundamental imaging; -15 dB less with harmonics).
* Anatomy. ``composition`` fatty / scattered / heterogeneous / extremely dense with ACR
  BI-RADS population frequencies ~10 / 40 / 40 / 10 % (ACR BI-RADS Atlas 5th ed., 2013;
  Sprague et al., *JNCI* 106 (2014) dju255): sets the glandular thickness and the fat fraction
  inside it. ``skin_mm`` 1.0-2.5, ``fat_mm`` log-uniform 2-20 (subcutaneous fat, thin to
  thick), ``muscle_mm`` 4-14 (pectoralis major); ribs, pleura and muscle are in view only when
  the chest wall lies within ``depth_mm`` (5 mm presets: linear 25-50 mm, curvilinear 35-60 mm).
* Lesions (:data:`DESCRIPTOR_PROBS`): BI-RADS US lexicon descriptors (shape, orientation,
  margin, echo pattern, posterior features, calcifications) drawn *independently* per lesion
  with class-dependent probabilities, rounded from the descriptor frequencies of benign and
  malignant masses in Stavros et al., *Radiology* 196 (1995) 123 and Hong et al., *AJR* 184
  (2005) 1260: a benign mass can shadow, a malignant one can be circumscribed and parallel.
  Echogenicity is relative to subcutaneous fat, as the lexicon defines it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DESCRIPTOR_PROBS",
    "FRAME_FACTORS",
    "LESION_FACTORS",
    "draw_frame_factors",
    "draw_lesion_descriptors",
]

#: Frame-level factors a split can name (see the module docstring for ranges and sources).
FRAME_FACTORS: tuple[str, ...] = (
    "label",
    "geometry",
    "depth_mm",
    "frequency_mhz",
    "fractional_bandwidth",
    "f_number",
    "focal_depth_mm",
    "harmonic",
    "scatterer_density",
    "specular_db",
    "attenuation_db_cm_mhz",
    "tgc_compensation",
    "tgc_sliders_db",
    "gain_db",
    "dynamic_range_db",
    "gray_gamma",
    "noise_db",
    "tgc_range_db",
    "compounding",
    "steer_deg",
    "speckle_reduction",
    "haze_db",
    "composition",
    "skin_mm",
    "fat_mm",
    "muscle_mm",
)

#: Per-lesion descriptors a split can name as ``"lesion.<name>"``.
LESION_FACTORS: tuple[str, ...] = (
    "label",
    "shape",
    "orientation",
    "margin",
    "echo_pattern",
    "posterior",
    "calcifications",
    "size_mm",
    "capsule",
    "halo",
    "edge_shadows",
)

#: Class-dependent probabilities of each BI-RADS descriptor, drawn independently (rounded from
#: Stavros 1995 and Hong 2005; see the module docstring). ``complex`` = complex cystic and solid.
DESCRIPTOR_PROBS: dict[str, dict[str, dict[str, float]]] = {
    "benign": {
        "shape": {"oval": 0.70, "round": 0.15, "irregular": 0.15},
        "orientation": {"parallel": 0.90, "not parallel": 0.10},
        "margin": {
            "circumscribed": 0.65,
            "indistinct": 0.17,
            "microlobulated": 0.08,
            "angular": 0.06,
            "spiculated": 0.04,
        },
        "echo_pattern": {
            "anechoic": 0.22,
            "hypoechoic": 0.48,
            "isoechoic": 0.12,
            "hyperechoic": 0.04,
            "complex": 0.07,
            "heterogeneous": 0.07,
        },
        "posterior": {"none": 0.45, "enhancement": 0.38, "shadowing": 0.12, "combined": 0.05},
        "calcifications": {"yes": 0.08, "no": 0.92},
    },
    "malignant": {
        "shape": {"irregular": 0.65, "oval": 0.20, "round": 0.15},
        "orientation": {"not parallel": 0.45, "parallel": 0.55},
        "margin": {
            "circumscribed": 0.10,
            "indistinct": 0.33,
            "angular": 0.20,
            "microlobulated": 0.15,
            "spiculated": 0.22,
        },
        "echo_pattern": {
            "anechoic": 0.0,
            "hypoechoic": 0.62,
            "isoechoic": 0.08,
            "hyperechoic": 0.02,
            "complex": 0.10,
            "heterogeneous": 0.18,
        },
        "posterior": {"none": 0.37, "enhancement": 0.15, "shadowing": 0.40, "combined": 0.08},
        "calcifications": {"yes": 0.40, "no": 0.60},
    },
}

_COMPOSITION = {"fatty": 0.10, "scattered": 0.40, "heterogeneous": 0.40, "dense": 0.10}
_SPECKLE_REDUCTION = {"off": 0.4, "low": 0.3, "mid": 0.2, "high": 0.1}
_COMPOUNDING = {1: 0.50, 3: 0.35, 5: 0.15}


def _choice(rng: np.random.Generator, probs: dict[Any, float]) -> Any:
    """One key of ``probs`` (weights summing to 1) by one uniform draw (plain Python: a
    NumPy cumsum per draw cost more than the draw)."""
    r = rng.random() * sum(probs.values())
    acc = 0.0
    last = None
    for key, w in probs.items():
        acc += w
        if w > 0.0:
            last = key
            if r < acc:
                return key
    return last


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_frame_factors(
    rng: np.random.Generator, label: str, given: dict[str, Any]
) -> dict[str, Any]:
    """One draw of every frame factor; values in ``given`` are kept as they are.

    Every factor is drawn (in a fixed order) even when it is given, so fixing one factor does
    not change the draws of the others for a seed.
    """
    f: dict[str, Any] = {"label": label}
    geometry = "curvilinear" if rng.random() < 0.25 else "linear"
    f["geometry"] = given.get("geometry", geometry)
    curved = f["geometry"] == "curvilinear"
    # Depth presets come in 5 mm steps on scanners (and a geometry is cached per depth).
    depth = float(5 * rng.integers(7, 13) if curved else 5 * rng.integers(5, 11))
    freq = rng.uniform(3.5, 9.0) if curved else rng.uniform(5.0, 15.0)
    draws: dict[str, Any] = {
        "depth_mm": round(depth, 3),
        "frequency_mhz": round(freq, 3),
        "fractional_bandwidth": round(rng.uniform(0.5, 0.9), 3),
        "f_number": round(rng.uniform(1.2, 3.0), 3),
        "focal_frac": rng.uniform(0.3, 0.8),
        "harmonic": bool(rng.random() < 0.5),
        "scatterer_density": round(
            100.0 if rng.random() < 0.4 else _log_uniform(rng, 2.0, 30.0), 3
        ),
        "specular_db": round(rng.uniform(-12.0, 6.0), 2),
        "attenuation_db_cm_mhz": round(rng.uniform(0.3, 0.8), 3),
        "tgc_compensation": round(rng.uniform(0.7, 1.15), 3),
        "tgc_sliders_db": [round(float(v), 2) for v in rng.normal(0.0, 2.0, 8)],
        "gain_db": round(rng.uniform(-6.0, 8.0), 2),
        "dynamic_range_db": round(rng.uniform(45.0, 75.0), 2),
        "gray_gamma": round(rng.uniform(0.75, 1.35), 3),
        "noise_db": round(rng.uniform(-90.0, -70.0), 2),
        "tgc_range_db": round(rng.uniform(40.0, 60.0), 2),
        "compounding": int(_choice(rng, _COMPOUNDING)),
        "steer_deg": float(rng.integers(5, 16)),  # whole degrees, as scanners steer
        "speckle_reduction": _choice(rng, _SPECKLE_REDUCTION),
        "haze_db": round(rng.uniform(-40.0, -15.0), 2),
        "composition": _choice(rng, _COMPOSITION),
        "skin_mm": round(rng.uniform(1.0, 2.5), 3),
        "fat_mm": round(_log_uniform(rng, 2.0, 20.0), 3),
        "muscle_mm": round(rng.uniform(4.0, 14.0), 3),
    }
    focal_frac = draws.pop("focal_frac")
    for k, v in draws.items():
        f[k] = given[k] if given.get(k) is not None else v
    if given.get("focal_depth_mm") is not None:
        f["focal_depth_mm"] = float(given["focal_depth_mm"])
    else:
        f["focal_depth_mm"] = round(focal_frac * float(f["depth_mm"]), 3)
    if f["compounding"] == 1:
        f["steer_deg"] = 0.0
    return f


def draw_lesion_descriptors(
    rng: np.random.Generator, label: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """BI-RADS descriptors of one lesion of class ``label``, each drawn independently from
    :data:`DESCRIPTOR_PROBS`; ``given`` fixes some of them. Also ``size_mm`` (largest diameter,
    log-uniform: benign 5-25 mm, malignant 6-30 mm), ``capsule`` (thin echogenic capsule of a
    circumscribed mass, p = 0.5), ``halo`` (echogenic halo of an indistinct / spiculated mass,
    p = 0.4) and ``edge_shadows`` (refraction shadows at the lateral edges of a smooth mass,
    p = 0.3; always with ``combined`` posterior features)."""
    given = given or {}
    probs = DESCRIPTOR_PROBS[label]
    d: dict[str, Any] = {"label": label}
    for name in ("shape", "orientation", "margin", "echo_pattern", "posterior"):
        d[name] = _choice(rng, probs[name])
    d["calcifications"] = _choice(rng, probs["calcifications"]) == "yes"
    lo, hi = (5.0, 25.0) if label == "benign" else (6.0, 30.0)
    d["size_mm"] = round(_log_uniform(rng, lo, hi), 3)
    capsule, halo, edge = rng.random(3)
    for k, v in given.items():
        if v is not None:
            d[k] = v
    smooth = d["margin"] in ("circumscribed", "microlobulated")
    d["capsule"] = bool(d["margin"] == "circumscribed" and capsule < 0.5)
    d["halo"] = bool(d["margin"] in ("indistinct", "spiculated", "angular") and halo < 0.4)
    d["edge_shadows"] = bool(d["posterior"] == "combined" or (smooth and edge < 0.3))
    return d
