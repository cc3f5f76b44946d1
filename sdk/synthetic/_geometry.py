"""Probe geometry: acoustic (beam) grid, output image grid, scan conversion, probe pose.

Two coordinate systems matter:

* the *acoustic grid* ``(n_samples, n_lines)``: rows are depth samples along a beam, columns are
  beams. The physics (scatterers, PSF, attenuation along the beam, TGC) happens here.
* the *output grid* ``(h, w)``: the displayed frame. For a linear probe the scan region of the
  output *is* the acoustic grid; for a curvilinear probe the acoustic grid is a polar grid that is
  scan-converted into a fan, black outside.

World (tissue) coordinates are millimetres: ``X`` lateral, ``Z`` depth below the skin. A linear
probe maps beam ``(x, z)`` through a rigid in-plane motion (translation ``tx``, tilt ``phi``). A
curvilinear probe is modelled with the skin conforming to the convex face: ``Z`` is the depth
along the beam and ``X = tx + (R + r) sin(theta + phi)``, locally isometric near the fan axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from sdk.errors import InputError

__all__ = ["Pose", "ScanGeometry", "make_geometry"]


@dataclass(frozen=True)
class Pose:
    """Probe pose in the world: lateral translation ``tx_mm`` and in-plane tilt ``tilt_rad``."""

    tx_mm: float = 0.0
    tilt_rad: float = 0.0


_REST = Pose()


@dataclass(frozen=True, eq=False)
class ScanGeometry:
    """Everything about the probe and the frame layout that does not depend on the tissue.

    Built once per parameter set by :func:`make_geometry` (cached), so the per-frame cost is only
    the pose transform and the remaps.
    """

    kind: str
    size: tuple[int, int]
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the scan region's bounding box (pixels)
    depth_mm: float
    pixel_mm: float  # isotropic output pixel size (mm)
    radius_mm: float  # curvilinear radius of curvature (0 for linear)
    sector_rad: float  # curvilinear fan angle (0 for linear)
    n_samples: int
    n_lines: int
    sample_mm: float  # distance between depth samples along a beam (mm)
    # Beam-frame coordinates of the acoustic samples: (x, z) for linear, (theta, r) for convex.
    ac_a: np.ndarray = field(repr=False)
    ac_b: np.ndarray = field(repr=False)
    # Beam-frame coordinates of the output pixels inside the box (same convention) + FOV mask.
    out_a: np.ndarray = field(repr=False)
    out_b: np.ndarray = field(repr=False)
    fov: np.ndarray = field(repr=False)  # bool (h, w): inside the scan region
    # cv2.remap maps from output box pixels to acoustic indices (curvilinear only).
    scan_map_x: np.ndarray | None = field(repr=False, default=None)
    scan_map_y: np.ndarray | None = field(repr=False, default=None)
    # World coordinates of both grids under the rest pose, filled on first use by world().
    _rest: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        repr=False, default_factory=dict, init=False
    )

    @property
    def width_mm(self) -> float:
        """Lateral extent of the scan region at the face (mm): aperture or arc length."""
        if self.kind == "linear":
            return self.n_lines * self.pixel_mm
        return self.radius_mm * self.sector_rad

    def to_world(self, a: np.ndarray, b: np.ndarray, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Beam-frame coordinates -> world millimetres ``(X, Z)`` (float32 arrays)."""
        if self.kind == "linear":
            c, s = math.cos(pose.tilt_rad), math.sin(pose.tilt_rad)
            xw = pose.tx_mm + a * c + b * s
            zw = b * c - a * s
        else:
            xw = pose.tx_mm + (self.radius_mm + b) * np.sin(a + pose.tilt_rad)
            zw = b
        return xw.astype(np.float32, copy=False), np.asarray(zw, dtype=np.float32)

    def world(self, grid: str, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """World millimetres of the ``"acoustic"`` samples or the ``"output"`` box pixels.

        The rest pose (``Pose()``: every single phantom) is computed once per geometry and
        returned read-only (the same values :meth:`to_world` gives; saves ~0.3 ms per grid and
        frame at 256 x 256); a moving probe (cine) is transformed every call.
        """
        a, b = (self.ac_a, self.ac_b) if grid == "acoustic" else (self.out_a, self.out_b)
        if pose != _REST:
            return self.to_world(a, b, pose)
        cached = self._rest.get(grid)
        if cached is None:
            xw, zw = self.to_world(a, b, pose)
            xw, zw = np.array(xw), np.array(zw)  # own copies: never views of ac_* / out_*
            xw.setflags(write=False)
            zw.setflags(write=False)
            cached = self._rest[grid] = (xw, zw)
        return cached

    def world_to_beam(
        self, xw: np.ndarray, zw: np.ndarray, pose: Pose
    ) -> tuple[np.ndarray, np.ndarray]:
        """World millimetres -> beam-frame coordinates (inverse of :meth:`to_world`)."""
        if self.kind == "linear":
            c, s = math.cos(pose.tilt_rad), math.sin(pose.tilt_rad)
            dx = xw - pose.tx_mm
            return dx * c - zw * s, dx * s + zw * c
        ratio = np.clip((xw - pose.tx_mm) / (self.radius_mm + zw), -1.0, 1.0)
        return np.arcsin(ratio) - pose.tilt_rad, zw

    def beam_to_index(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Beam-frame coordinates -> fractional acoustic indices ``(row, col)``."""
        row = b / self.sample_mm - 0.5
        if self.kind == "linear":
            col = a / self.pixel_mm + self.n_lines / 2.0 - 0.5
        else:
            col = (a + self.sector_rad / 2.0) / (self.sector_rad / self.n_lines) - 0.5
        return row, col


def _fan_layout(
    box_h: int, box_w: int, depth: float, radius: float, sector: float
) -> tuple[float, float, float]:
    """Isotropic pixel size and the fan's offset (mm) so it fits the box, centred, top-aligned."""
    half = sector / 2.0
    z_top = radius * math.cos(half) - radius  # the face's corners are above the contact point
    height = depth - z_top
    width = 2.0 * (radius + depth) * math.sin(half)
    pixel = max(height / box_h, width / box_w)
    x_left = -box_w * pixel / 2.0
    return pixel, x_left, z_top


@lru_cache(maxsize=16)
def make_geometry(
    kind: str,
    size: tuple[int, int],
    depth_mm: float,
    margins: tuple[int, int, int, int] = (0, 0, 0, 0),
    radius_mm: float = 40.0,
    sector_deg: float = 45.0,
) -> ScanGeometry:
    """Build (and cache) the geometry of one probe / frame layout.

    Args:
        kind: ``"linear"`` or ``"curvilinear"``.
        size: output frame ``(h, w)`` in pixels.
        depth_mm: imaging depth below the face (mm).
        margins: ``(top, bottom, left, right)`` pixels kept outside the scan region (for text).
        radius_mm: curvilinear radius of curvature (mm).
        sector_deg: curvilinear fan angle (degrees).
    """
    h, w = size
    top, bottom, left, right = margins
    y0, y1, x0, x1 = top, h - bottom, left, w - right
    box_h, box_w = y1 - y0, x1 - x0
    if box_h < 16 or box_w < 16:
        raise InputError(f"frame size {size} with margins {margins} leaves no room to image")
    fov = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
    if kind == "linear":
        pixel = depth_mm / box_h
        n_samples, n_lines = box_h, box_w
        ac_b = (yy + 0.5) * pixel
        ac_a = (xx + 0.5 - box_w / 2.0) * pixel
        fov[y0:y1, x0:x1] = True
        return ScanGeometry(
            kind,
            (h, w),
            (y0, y1, x0, x1),
            depth_mm,
            pixel,
            0.0,
            0.0,
            n_samples,
            n_lines,
            pixel,
            ac_a,
            ac_b,
            ac_a,
            ac_b,
            fov,
        )
    if kind != "curvilinear":
        raise InputError(f"geometry must be 'linear' or 'curvilinear', got {kind!r}")
    sector = math.radians(sector_deg)
    pixel, x_left, z_top = _fan_layout(box_h, box_w, depth_mm, radius_mm, sector)
    n_samples, n_lines = box_h, box_w
    sample = depth_mm / n_samples
    ac_b = (yy + 0.5) * sample
    ac_a = (xx + 0.5) * (sector / n_lines) - sector / 2.0
    # Output pixel centres in the probe frame (apex of the fan at (0, -R)).
    px = x_left + (xx + 0.5) * pixel
    pz = z_top + (yy + 0.5) * pixel
    theta = np.arctan2(px, pz + radius_mm)
    r = np.hypot(px, pz + radius_mm) - radius_mm
    inside = (np.abs(theta) <= sector / 2.0) & (r >= 0.0) & (r <= depth_mm)
    fov[y0:y1, x0:x1] = inside
    map_y = (r / sample - 0.5).astype(np.float32)
    map_x = ((theta + sector / 2.0) / (sector / n_lines) - 0.5).astype(np.float32)
    # Pixels outside the fan read from far outside the acoustic grid -> border value (black).
    map_x[~inside] = -10.0
    map_y[~inside] = -10.0
    map_x, map_y = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)  # fixed-point maps: ~2x faster
    return ScanGeometry(
        kind,
        (h, w),
        (y0, y1, x0, x1),
        depth_mm,
        pixel,
        radius_mm,
        sector,
        n_samples,
        n_lines,
        sample,
        ac_a,
        ac_b,
        theta.astype(np.float32),
        r.astype(np.float32),
        fov,
        map_x,
        map_y,
    )
