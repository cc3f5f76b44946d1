"""Scanner clutter: the text, depth scale, focus marker and calipers real frames carry.

Everything is drawn outside the scan region except the calipers, which scanners put on the image
at the lesion's extremities (as in BUSI). The mask is never changed by clutter.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from sdk.synthetic._geometry import ScanGeometry

__all__ = ["draw"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, value: int = 220) -> None:
    cv2.putText(img, text, org, _FONT, scale, value, 1, cv2.LINE_AA)


def _depth_to_row(geom: ScanGeometry, depth_mm: float) -> int:
    """Output row of a depth on the central beam."""
    y0 = geom.box[0]
    if geom.kind == "linear":
        return round(y0 + depth_mm / geom.pixel_mm)
    z_top = geom.radius_mm * math.cos(geom.sector_rad / 2.0) - geom.radius_mm
    return round(y0 + (depth_mm - z_top) / geom.pixel_mm)


def _cross(img: np.ndarray, x: int, y: int, r: int) -> None:
    cv2.line(img, (x - r, y), (x + r, y), 255, 1)
    cv2.line(img, (x, y - r), (x, y + r), 255, 1)


def draw(
    image: np.ndarray, geom: ScanGeometry, params: Any, info: dict[str, Any], mask: np.ndarray
) -> None:
    """Draw scanner clutter on ``image`` (uint8 (h, w)) in place."""
    h, w = image.shape
    y0, _y1, x0, x1 = geom.box
    scale = max(min(h, w) / 700.0, 0.28)
    line_h = max(int(22 * scale * 1.4), 7)
    probe = "L12-5" if geom.kind == "linear" else "C5-2"
    _text(image, f"{probe} {params.frequency_mhz:.1f}MHz", (2, min(line_h, y0 - 2)), scale)
    _text(image, "BREAST", (w // 2 - int(40 * scale * 1.6), min(line_h, y0 - 2)), scale)
    _text(
        image,
        f"G{params.gain_db:+.0f} DR{params.dynamic_range_db:.0f}",
        (int(0.72 * w), min(line_h, y0 - 2)),
        scale,
        180,
    )
    _text(image, f"D{params.depth_mm / 10.0:.1f}cm", (int(0.78 * w), h - 3), scale, 180)

    # Depth scale on the right: a tick every 5 mm, labelled every centimetre.
    xs = x1 + 2
    step = 5.0
    d = 0.0
    while d <= params.depth_mm + 1e-6:
        row = _depth_to_row(geom, d)
        if 0 <= row < h:
            major = round(d) % 10 == 0
            cv2.line(image, (xs, row), (xs + (5 if major else 2), row), 200, 1)
            if major and d > 0:
                _text(image, f"{int(d // 10)}", (xs + 6, min(row + 4, h - 1)), scale * 0.9, 200)
        d += step
    # Focal-zone marker: a small triangle at mid depth.
    fr = _depth_to_row(geom, 0.5 * params.depth_mm)
    tri = np.array([[xs, fr], [xs + 5, fr - 3], [xs + 5, fr + 3]], np.int32)
    cv2.fillConvexPoly(image, tri, 230)
    # Orientation marker at the top-left corner of the scan region.
    cv2.circle(image, (x0 + 4, max(y0 - 4, 2)), 2, 255, -1)

    # Calipers on every lesion: horizontal and vertical extent through the centroid.
    texts = []
    for k, les in enumerate(info.get("lesions", []), start=1):
        ys, xs_ = np.nonzero(mask == les["id"])
        if xs_.size < 4:
            continue
        cy, cx = round(ys.mean()), round(xs_.mean())
        row = xs_[ys == cy] if np.any(ys == cy) else xs_
        col = ys[xs_ == cx] if np.any(xs_ == cx) else ys
        r = max(int(3 * scale * 2), 2)
        _cross(image, int(row.min()), cy, r)
        _cross(image, int(row.max()), cy, r)
        _cross(image, cx, int(col.min()), r)
        _cross(image, cx, int(col.max()), r)
        d1 = (row.max() - row.min()) * geom.pixel_mm / 10.0
        d2 = (col.max() - col.min()) * geom.pixel_mm / 10.0
        texts.append(f"{k}:{d1:.2f}x{d2:.2f}cm")
    if texts:
        _text(image, " ".join(texts), (2, h - 3), scale, 230)
