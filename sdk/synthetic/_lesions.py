"""Lesions by BI-RADS descriptors, as analytic star-shaped regions in world millimetres.

A lesion is an ellipse (semi-axes ``a`` along its own lateral axis, ``b`` along its axial axis,
rotated by ``angle``) whose normalised radius is modulated by a periodic table ``m(phi)``: a point
is inside iff ``hypot(u / a, v / b) < m(atan2(v / b, u / a)) * s`` where ``s`` is the elevational
scale of the cross-section (1 in a single frame; < 1 when the imaging plane cuts the lesion off
centre in a cine). The same test rasterises the echo maps and the exact mask.

Class descriptors (defaults drawn per lesion; every one can be forced through the phantom knobs):

* benign: oval, *parallel* (wider than tall: width / height 1.3-2.0, long axis within 12 deg of
  horizontal), circumscribed smooth margin (low-order ripple <= 4 %, thin echogenic capsule),
  homogeneous hypoechoic (contrast -14 to -8 dB) or an anechoic cyst (-40 dB, p = 0.3),
  posterior enhancement (+2 to +6 dB, cysts +6 to +12 dB).
* malignant: irregular, *not parallel* (taller than wide: height / width 1.15-1.6, long axis
  within 20 deg of vertical), angular and spiculated margin, heterogeneous hypoechoic (contrast
  -20 to -12 dB with +-4 dB internal texture), posterior shadowing (-20 to -8 dB),
  micro-calcifications (2-10 bright punctate echoes, about one per 20 mm^2, +12 to +22 dB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from sdk.errors import InputError

__all__ = ["ECHO_PATTERN_DB", "POSTERIOR_DB", "Lesion", "draw_lesion", "draw_lesion_birads"]

_N_TABLE = 720
_PHI = np.linspace(-math.pi, math.pi, _N_TABLE, endpoint=False)
_PHASE_ERR_RAD = 5e-4  # bound on |cv2.phase - atan2| (measured max 1.7e-4 over 2e7 points)


@dataclass(eq=False)
class Lesion:
    """One lesion in the world. Lengths in mm, angles in radians, levels in dB."""

    label: str  # "benign" | "malignant"
    kind: str  # "solid" | "cyst" | "irregular"
    cx: float
    cz: float
    a: float  # semi-axis along the lesion's own lateral axis
    b: float  # semi-axis along its axial axis
    angle: float  # rotation of the lesion axes (0: a lateral, b axial)
    table: np.ndarray = field(repr=False)  # radius modulation m(phi), (_N_TABLE,) float32
    contrast_db: float = -10.0
    posterior_db: float = 0.0
    texture_db: float = 0.0
    texture_k: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3)))
    calcs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 4)))
    capsule_db: float = 0.0
    elevation_mm: float = 0.0  # lesion centre along the elevation axis (cine)
    thickness_mm: float = 10.0  # elevational half-thickness
    margin: str = "circumscribed"
    shape: str = "oval"
    # Filled by the scene: mean power of the surrounding tissue and derived attenuation.
    surround_power: float = 1.0
    attenuation: float = 0.5
    height_mm: float = 0.0
    width_mm: float = 0.0
    # spread_ratio() of the drawn shape (translation-invariant), kept by draw_lesion.
    spread: float | None = None
    # style="scanner" lesions (draw_lesion_birads): the BI-RADS descriptors as drawn, the
    # width of an indistinct margin's transition (normalised radius), an echogenic halo (dB
    # over the surround, its width in normalised radius), refraction shadows at the lateral
    # edges, and the solid part of a complex cystic-solid mass (level dB, texture threshold).
    descriptors: dict | None = None
    edge_width: float = 0.0
    halo_db: float = 0.0
    halo_width: float = 0.0
    edge_shadows: bool = False
    solid_db: float | None = None
    solid_threshold: float = 0.0

    @property
    def bound(self) -> float:
        """Radius of a circle around the centre that contains the whole lesion (mm)."""
        return max(self.a, self.b) * float(self.table.max())

    def scale_at(self, elevation_mm: float) -> float:
        """Cross-section scale when the imaging plane is at ``elevation_mm`` (0 = missed)."""
        e = (elevation_mm - self.elevation_mm) / self.thickness_mm
        return math.sqrt(1.0 - e * e) if abs(e) < 1.0 else 0.0

    def local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World -> normalised lesion coordinates ``(u / a, v / b)``."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dz = x - self.cx, z - self.cz
        return (dx * c + dz * s) / self.a, (-dx * s + dz * c) / self.b

    def normalised_radius(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``rho / m(phi)``: < 1 inside, 1 on the margin (unit elevational scale)."""
        u, v = self.local(x, z)
        rho = np.hypot(u, v)
        return rho / self.radius_at(np.arctan2(v, u))

    def radius_ratio(
        self, u: np.ndarray, v: np.ndarray, cuts: tuple[float, ...], scale: float = 1.0
    ) -> np.ndarray:
        """``normalised_radius / scale`` at normalised coordinates ``(u, v) = local(x, z)``,
        exact where it matters: bit-identical to ``normalised_radius(x, z) / scale`` for every
        value within ``tol`` of one of ``cuts``, an approximation closer than ``tol`` elsewhere,
        so ``q < c`` / ``q >= c`` for ``c`` in ``cuts`` give exactly the reference answers.

        NumPy's float32 ``arctan2`` and ``hypot`` are scalar libm calls (~40 ns / pixel): the
        angle and radius come from OpenCV's SIMD ``phase`` / ``magnitude`` first, and the exact
        expression is evaluated only on the thin band of pixels near a cut (measured: 1.5 ->
        0.25 ms for the lesion test of a malignant lesion at 256 x 256).
        """
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        t_ext, slope, bound = self._interp_table
        t_min = float(self.table.min())
        # Relative error of the approximation: the table's steepest slope times cv2.phase's
        # angle error (measured <= 1.7e-4 rad; 5e-4 assumed), over the smallest radius, plus
        # float32 rounding; doubled for margin.
        tol = 2.0 * (bound * _PHASE_ERR_RAD / t_min + 5e-6) if t_min > 0.0 else math.inf
        if tol > 0.05 or u.size < 64:  # a pathological table or a tiny patch: all exact
            return self._exact_ratio(u, v) / scale
        f = cv2.phase(u, v).reshape(u.shape)  # atan2(v, u) in [0, 2 pi]
        f *= np.float32(_N_TABLE / (2.0 * math.pi))  # table position in [0, _N_TABLE]
        i0 = np.floor(f)
        f -= i0
        i0 = i0.astype(np.intp)
        m = np.take(slope, i0)
        m *= f
        m += np.take(t_ext, i0)
        m *= np.float32(scale)
        q = cv2.magnitude(u, v).reshape(u.shape)
        q /= m
        near = np.abs(q - np.float32(cuts[0])) <= tol * cuts[0]
        for c in cuts[1:]:
            near |= np.abs(q - np.float32(c)) <= tol * c
        idx = np.flatnonzero(near)
        if idx.size:
            q.reshape(-1)[idx] = self._exact_ratio(u.reshape(-1)[idx], v.reshape(-1)[idx]) / scale
        return q

    def _exact_ratio(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``normalised_radius`` from ``(u, v)``: the reference expression, element for element."""
        return np.hypot(u, v) / self.radius_at(np.arctan2(v, u))

    @cached_property
    def _interp_table(self) -> tuple[np.ndarray, np.ndarray, float]:
        """For :meth:`radius_ratio`: the margin table re-indexed from phi = 0 (``cv2.phase``
        gives [0, 2 pi]) with the wrap-around entry, its slope per entry (0 after the last), and
        the steepest slope per radian. ``table`` is fixed once the lesion is drawn."""
        t = np.asarray(self.table, dtype=np.float32)
        t_ext = np.concatenate([t[_N_TABLE // 2 :], t[: _N_TABLE // 2 + 1]])
        slope = np.append(np.diff(t_ext), np.float32(0.0)).astype(np.float32)
        bound = float(np.abs(slope).max()) * _N_TABLE / (2.0 * math.pi)
        return t_ext, slope, bound

    def radius_at(self, phi: np.ndarray) -> np.ndarray:
        """Periodic linear interpolation of the margin table at angles ``phi`` in [-pi, pi]."""
        f = (phi + math.pi) * (_N_TABLE / (2.0 * math.pi))
        i0 = np.floor(f).astype(np.intp)
        w = (f - i0).astype(np.float32)
        i0 %= _N_TABLE
        i1 = i0 + 1
        i1[i1 == _N_TABLE] = 0
        t = self.table
        return t[i0] * (1.0 - w) + t[i1] * w

    def outline(self, n: int = 360, scale: float = 1.0) -> np.ndarray:
        """Margin polygon in world mm, ``(n, 2)`` columns ``(X, Z)``."""
        phi = np.linspace(-math.pi, math.pi, n, endpoint=False)
        if n in (_N_TABLE, _N_TABLE // 2):
            # These angles are exactly the table's nodes (every one / every other one), where
            # np.interp returns the table's values: read them (measured 0.14 -> 0.06 ms).
            m = self.table[:: _N_TABLE // n].astype(np.float64) * scale
        else:
            m = np.interp(phi, _PHI, self.table, period=2.0 * math.pi) * scale
        u, v = self.a * m * np.cos(phi), self.b * m * np.sin(phi)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + u * c - v * s, self.cz + u * s + v * c], axis=1)

    def texture(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Internal echo texture (dB, zero mean) at normalised coordinates."""
        if self.texture_db == 0.0 or len(self.texture_k) == 0:
            return np.zeros_like(u)
        acc = np.zeros_like(u)
        for ku, kv, ph in self.texture_k:
            acc += np.cos(ku * u + kv * v + ph)
        return acc * (self.texture_db * math.sqrt(2.0 / len(self.texture_k)))


def _smooth_table(rng: np.random.Generator, orders: range, amp: float) -> np.ndarray:
    m = np.ones(_N_TABLE)
    for k in orders:
        m += rng.uniform(0.3, 1.0) * amp / math.sqrt(k) * np.cos(k * _PHI + rng.uniform(0, 6.3))
    return m


def _within(centre: float, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Table entries within ``half_width`` of ``centre`` on the circle: ``(indices, d)`` with
    ``d = angle(exp(1j (phi - centre)))``, the wrapped offset, exactly as evaluated over the whole
    table.

    A bump ``clip(1 - |d| / w, 0) ** k`` is exactly 0 elsewhere (adding it there adds 0.0), so
    it is evaluated on these entries only: the complex exp / angle over all 720 entries per bump
    was most of the cost of a malignant margin (measured 0.9 -> 0.15 ms per lesion).
    """
    per_rad = _N_TABLE / (2.0 * math.pi)
    pos = (centre + math.pi) * per_rad  # fractional table index of the centre
    half = half_width * per_rad + 2.0  # two entries of slack: a superset of |d| < half_width
    if 2.0 * half + 2.0 >= _N_TABLE:  # a bump wider than the circle: every entry
        idx = np.arange(_N_TABLE)
    else:
        idx = np.arange(math.floor(pos - half), math.ceil(pos + half) + 1) % _N_TABLE
    return idx, np.angle(np.exp(1j * (_PHI[idx] - centre)))


def _irregular_table(rng: np.random.Generator, n_spicules: int, angular: float) -> np.ndarray:
    # Angular margin: a few sharp corners (|cos| peaks) plus mid-order irregularity.
    m = _smooth_table(rng, range(3, 9), 0.12)
    for _ in range(int(rng.integers(3, 6))):
        centre = rng.uniform(-math.pi, math.pi)
        width = rng.uniform(0.35, 0.7)
        idx, d = _within(centre, width)
        m[idx] += angular * np.clip(1.0 - np.abs(d) / width, 0.0, None) ** 2
    # Spicules: thin radial spikes, 2-8 degrees wide, 25-70 % of the radius long.
    for _ in range(n_spicules):
        centre = rng.uniform(-math.pi, math.pi)
        width = math.radians(rng.uniform(2.0, 8.0))
        idx, d = _within(centre, width)
        m[idx] += rng.uniform(0.25, 0.7) * np.clip(1.0 - np.abs(d) / width, 0.0, None) ** 1.5
    return m


def _draw_once(
    rng: np.random.Generator,
    label: str,
    cx: float,
    cz: float,
    size_mm: float | None = None,
    contrast_db: float | None = None,
    posterior_db: float | None = None,
    cyst: bool | None = None,
    calcifications: int | None = None,
) -> Lesion:
    """One draw of a lesion (no orientation check): see :func:`draw_lesion`."""
    if label == "benign":
        is_cyst = bool(rng.random() < 0.3) if cyst is None else bool(cyst)
        ratio = rng.uniform(1.3, 2.0)  # width / height
        size = rng.uniform(7.0, 16.0) if size_mm is None else float(size_mm)
        a = size / 2.0
        b = a / ratio
        angle = math.radians(rng.uniform(-12.0, 12.0))
        lobulated = (not is_cyst) and rng.random() < 0.3
        table = _smooth_table(rng, range(3, 5), 0.08 if lobulated else 0.04)
        if is_cyst:
            contrast = -40.0 if contrast_db is None else float(contrast_db)
            post = rng.uniform(6.0, 12.0) if posterior_db is None else float(posterior_db)
        else:
            contrast = rng.uniform(-14.0, -8.0) if contrast_db is None else float(contrast_db)
            post = rng.uniform(2.0, 6.0) if posterior_db is None else float(posterior_db)
        lesion = Lesion(
            label,
            "cyst" if is_cyst else "solid",
            cx,
            cz,
            a,
            b,
            angle,
            table.astype(np.float32),
            contrast,
            post,
            texture_db=0.0 if is_cyst else 1.0,
            capsule_db=0.0 if is_cyst else 5.0,
            margin="microlobulated" if lobulated else "circumscribed",
            shape="oval" if ratio > 1.15 else "round",
        )
    elif label == "malignant":
        ratio = rng.uniform(1.15, 1.6)  # height / width
        size = rng.uniform(8.0, 16.0) if size_mm is None else float(size_mm)
        b = size / 2.0
        a = b / ratio
        angle = math.radians(rng.uniform(-20.0, 20.0))
        n_spic = int(rng.integers(5, 14))
        table = _irregular_table(rng, n_spic, rng.uniform(0.08, 0.2))
        table /= np.percentile(table, 30)  # keep the ellipse as the lesion's bulk
        contrast = rng.uniform(-20.0, -12.0) if contrast_db is None else float(contrast_db)
        post = rng.uniform(-20.0, -8.0) if posterior_db is None else float(posterior_db)
        # ~1 calcification per 20 mm^2 of cross-section, 2 to 10.
        area = math.pi * a * b
        n_max = int(np.clip(area / 20.0, 2, 10))
        n_calc = int(rng.integers(2, n_max + 1)) if calcifications is None else int(calcifications)
        if n_calc < 0:
            raise InputError(f"calcifications must be >= 0, got {n_calc}")
        # Calcifications: normalised position inside the bulk, amplitude (dB), phase.
        rad = 0.75 * np.sqrt(rng.uniform(0.0, 1.0, n_calc))
        ang = rng.uniform(-math.pi, math.pi, n_calc)
        calcs = np.stack(
            [
                rad * np.cos(ang),
                rad * np.sin(ang),
                rng.uniform(12.0, 22.0, n_calc),
                rng.uniform(0.0, 2 * math.pi, n_calc),
            ],
            axis=1,
        )
        k = rng.uniform(2.0, 7.0, (3, 1)) * np.stack(
            [np.cos(t := rng.uniform(0, math.pi, 3)), np.sin(t)], axis=1
        )
        tex = np.concatenate([k, rng.uniform(0, 2 * math.pi, (3, 1))], axis=1)
        lesion = Lesion(
            label,
            "irregular",
            cx,
            cz,
            a,
            b,
            angle,
            table.astype(np.float32),
            contrast,
            post,
            texture_db=4.0,
            texture_k=tex,
            calcs=calcs,
            margin="spiculated",
            shape="irregular",
        )
    else:
        raise InputError(f"lesion label must be 'benign' or 'malignant', got {label!r}")
    pts = lesion.outline()
    lesion.width_mm = float(np.ptp(pts[:, 0]))
    lesion.height_mm = float(np.ptp(pts[:, 1]))
    lesion.thickness_mm = max(lesion.a, lesion.b)
    return lesion


def spread_ratio(lesion: Lesion) -> float:
    """sqrt(axial / lateral second moment) of the lesion region: > 1 is taller than wide."""
    m = cv2.moments(lesion.outline(720).astype(np.float32))
    return math.sqrt(m["mu02"] / m["mu20"]) if m["mu20"] > 0 else 1.0


def draw_lesion(
    rng: np.random.Generator,
    label: str,
    cx: float,
    cz: float,
    size_mm: float | None = None,
    contrast_db: float | None = None,
    posterior_db: float | None = None,
    cyst: bool | None = None,
    calcifications: int | None = None,
) -> Lesion:
    """Draw one lesion of class ``label`` centred at ``(cx, cz)`` mm (see module docstring).

    ``size_mm`` is the largest diameter of the underlying ellipse (default: benign 7-16 mm,
    malignant 8-16 mm, spicules extend beyond it). The margin's random lobulation / spicules can
    change the region's overall orientation, so the draw is repeated (same generator) until the
    region's second moments keep the class orientation by at least 10 %: benign wider than
    tall, malignant taller than wide.
    """
    for _ in range(50):
        lesion = _draw_once(
            rng, label, cx, cz, size_mm, contrast_db, posterior_db, cyst, calcifications
        )
        ratio = spread_ratio(lesion)
        if (ratio >= 1.1) if label == "malignant" else (ratio <= 1.0 / 1.1):
            lesion.spread = ratio
            return lesion
    # Practically unreachable (a few redraws at most), but never loop forever.
    raise InputError(f"could not draw a {label} lesion with its class orientation")


#: Echogenicity of each BI-RADS echo pattern, dB relative to subcutaneous fat (the lexicon's
#: reference): anechoic is a fluid (no scatterers; noise, haze and side lobes fill it),
#: "hyperechoic" is as echogenic as fibroglandular tissue (+12..+18 dB over fat here).
ECHO_PATTERN_DB: dict[str, tuple[float, float]] = {
    "anechoic": (-32.0, -26.0),
    "hypoechoic": (-14.0, -4.0),
    "isoechoic": (-1.5, 1.5),
    "hyperechoic": (10.0, 17.0),
    "heterogeneous": (-10.0, -2.0),
    "complex": (-32.0, -26.0),  # the cystic part; the solid part is drawn apart
}
#: Posterior acoustic feature -> change of the echoes behind the mass (dB, round trip).
POSTERIOR_DB: dict[str, tuple[float, float]] = {
    "none": (-1.5, 1.5),
    "enhancement": (3.0, 12.0),
    "shadowing": (-22.0, -6.0),
    "combined": (2.0, 8.0),  # enhancement behind the centre, refraction shadows at the edges
}


def _texture_waves(rng: np.random.Generator, n: int, k_lo: float, k_hi: float) -> np.ndarray:
    k = rng.uniform(k_lo, k_hi, (n, 1))
    t = rng.uniform(0.0, math.pi, n)
    return np.concatenate(
        [k * np.stack([np.cos(t), np.sin(t)], axis=1), rng.uniform(0, 2 * math.pi, (n, 1))],
        axis=1,
    )


def draw_lesion_birads(
    rng: np.random.Generator,
    d: dict,
    cx: float,
    cz: float,
    contrast_db: float | None = None,
    posterior_db: float | None = None,
    calcifications: int | None = None,
) -> Lesion:
    """A lesion that looks as the BI-RADS descriptors ``d`` say (from
    :func:`sdk.synthetic._factors.draw_lesion_descriptors`), whatever its class.

    Shape: oval (ellipse with <= 3 % low-order ripple), round (axis ratio <= 1.12), irregular
    (orders 2-6, 10-20 % ripple). Orientation: parallel (width / height 1.2-2.0 for an oval or
    irregular mass, long axis within 15 deg of horizontal) or not parallel (height / width
    1.05-1.5, within 20 deg of vertical). Margin: circumscribed (smooth), indistinct (a soft
    transition 15-35 % of the radius wide), microlobulated (8-20 small scallops), angular
    (3-5 sharp corners), spiculated (5-14 thin radial spikes). ``contrast_db`` (vs fat),
    ``posterior_db`` and ``calcifications`` (count) override the descriptor's draw.
    """
    size = float(d["size_mm"])
    shape, margin = d["shape"], d["margin"]
    if shape == "round":
        ratio = rng.uniform(1.0, 1.12)
    elif d["orientation"] == "parallel":
        ratio = rng.uniform(1.2, 2.0)
    else:
        ratio = rng.uniform(1.05, 1.5)
    parallel = d["orientation"] == "parallel"
    if parallel:
        a, b = size / 2.0, size / 2.0 / ratio
        angle = math.radians(rng.uniform(-15.0, 15.0))
    else:
        b, a = size / 2.0, size / 2.0 / ratio
        angle = math.radians(rng.uniform(-20.0, 20.0))
    if shape == "irregular":
        table = _smooth_table(rng, range(2, 7), rng.uniform(0.10, 0.20))
    else:
        table = _smooth_table(rng, range(2, 4), 0.03)
    if margin == "microlobulated":
        n_lob = int(rng.integers(8, 21))
        table += rng.uniform(0.04, 0.08) * np.clip(
            np.cos(n_lob * _PHI + rng.uniform(0, 6.3)), 0, None
        )
    elif margin == "angular":
        for _ in range(int(rng.integers(3, 6))):
            width = rng.uniform(0.35, 0.7)
            idx, dd = _within(rng.uniform(-math.pi, math.pi), width)
            table[idx] += rng.uniform(0.1, 0.25) * np.clip(1.0 - np.abs(dd) / width, 0.0, None) ** 2
    elif margin == "spiculated":
        for _ in range(int(rng.integers(5, 15))):
            width = math.radians(rng.uniform(2.0, 8.0))
            idx, dd = _within(rng.uniform(-math.pi, math.pi), width)
            table[idx] += (
                rng.uniform(0.25, 0.7) * np.clip(1.0 - np.abs(dd) / width, 0.0, None) ** 1.5
            )
        table /= np.percentile(table, 30)  # the ellipse stays the bulk, spicules stick out
    pattern = d["echo_pattern"]
    lo, hi = ECHO_PATTERN_DB[pattern]
    contrast = rng.uniform(lo, hi) if contrast_db is None else float(contrast_db)
    plo, phi_ = POSTERIOR_DB[d["posterior"]]
    post = rng.uniform(plo, phi_) if posterior_db is None else float(posterior_db)
    tex_db = {"heterogeneous": rng.uniform(3.0, 5.0), "hypoechoic": rng.uniform(0.5, 1.5)}
    lesion = Lesion(
        d["label"],
        "cyst" if pattern == "anechoic" else "irregular" if shape == "irregular" else "solid",
        cx,
        cz,
        a,
        b,
        angle,
        table.astype(np.float32),
        contrast,
        post,
        texture_db=tex_db.get(pattern, 0.0),
        texture_k=_texture_waves(rng, 4, 2.0, 8.0),
        capsule_db=rng.uniform(3.0, 7.0) if d["capsule"] else 0.0,
        margin=margin,
        shape=shape,
    )
    if d["calcifications"] or calcifications:
        n = int(rng.integers(1, 9)) if calcifications is None else int(calcifications)
        if n < 0:
            raise InputError(f"calcifications must be >= 0, got {n}")
        rad = 0.75 * np.sqrt(rng.uniform(0.0, 1.0, n))
        ang = rng.uniform(-math.pi, math.pi, n)
        lesion.calcs = np.stack(
            [
                rad * np.cos(ang),
                rad * np.sin(ang),
                rng.uniform(12.0, 22.0, n),
                rng.uniform(0.0, 2 * math.pi, n),
            ],
            axis=1,
        )
    if margin == "indistinct":
        lesion.edge_width = rng.uniform(0.15, 0.35)
    if d["halo"]:
        lesion.halo_db = rng.uniform(3.0, 8.0)
        lesion.halo_width = rng.uniform(0.15, 0.4)
    lesion.edge_shadows = bool(d["edge_shadows"])
    if pattern == "complex":
        lesion.solid_db = rng.uniform(-9.0, 0.0)
        lesion.solid_threshold = rng.uniform(-0.2, 0.8)
        lesion.texture_k = _texture_waves(rng, 5, 1.5, 4.5)
    lesion.descriptors = dict(d)
    pts = lesion.outline()
    lesion.width_mm = float(np.ptp(pts[:, 0]))
    lesion.height_mm = float(np.ptp(pts[:, 1]))
    lesion.thickness_mm = max(lesion.a, lesion.b)
    lesion.spread = 1.0 / ratio if parallel else ratio
    return lesion
