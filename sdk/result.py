"""What ``Analyzer.run`` returns for one frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["Lesion", "Result"]

_COLOURS = {"malignant": (60, 60, 255), "benign": (80, 220, 80), "normal": (200, 200, 200)}


@dataclass
class Lesion:
    """One lesion: a connected component of the model's mask grid and its region of ``Result.mask``.

    The region is the frame-resolution mask pixels blended from this lesion's grid cells
    (:func:`sdk.kernels.lesion_outlines`). ``bbox`` (x, y, w, h) and ``area_px`` are the
    region's, in frame pixels (``area_mm2`` only when the pixel spacing is known). ``contour``
    ((N, 2) int32 x, y frame pixels) is the outer border of the region traced on the mask
    (``cv2.findContours`` convention: the centres of the border pixels), so the filled contour is
    the mask; should the region split into several 8-connected pieces at frame resolution,
    ``contour`` is the largest and ``other_contours`` the rest, largest first.

    ``probs`` come from mask-guided pooling over this lesion (models with a features head), else
    from the image-level prediction (``per_lesion`` says which), with the label rule of
    :class:`Result` applied: a lesion is never ``"normal"``, its probabilities are renormalized
    over the other classes (``normal`` 0.0); ``raw_probs`` keeps the classifier's own values.
    A region whose ``raw_probs["normal"]`` exceeds the artifact's lesion gate
    (``thresholds.max_lesion_normal_prob``, fitted at export; 1.0 = off) is not a lesion at all:
    it is not listed and its pixels are not in ``Result.mask`` (without per-lesion probabilities
    every region carries the image's: a frame the classifier calls normal keeps no lesion).
    """

    id: int
    bbox: tuple[int, int, int, int]
    area_px: float
    contour: np.ndarray
    label: str
    probs: dict[str, float]
    per_lesion: bool
    area_mm2: float | None = None
    #: The classifier's probabilities for this lesion before the label rule (``normal`` kept).
    raw_probs: dict[str, float] = field(default_factory=dict)
    #: Outer borders of the region's other pieces, largest first (usually none; see ``contour``).
    other_contours: list[np.ndarray] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return self.probs[self.label]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bbox": list(self.bbox),
            "area_px": round(float(self.area_px), 2),
            "area_mm2": None if self.area_mm2 is None else round(float(self.area_mm2), 3),
            "label": self.label,
            "confidence": round(self.confidence, 5),
            "probs": {k: round(v, 5) for k, v in self.probs.items()},
            "raw_probs": {k: round(v, 5) for k, v in self.raw_probs.items()},
            "per_lesion": self.per_lesion,
            "contour": self.contour.astype(int).tolist(),
            "other_contours": [c.astype(int).tolist() for c in self.other_contours],
        }


@dataclass
class Result:
    """Analysis of one frame.

    ``mask``: uint8 (H, W) at the frame's resolution, 1 on lesion pixels (0 outside the ROI): the
    union of the lesions' regions, i.e. what their filled contours enclose (components too small
    for a lesion are not in it).

    **Label rule** (for models whose classes include ``"normal"``): a detected lesion is not
    normal, and the image is normal exactly when no lesion was detected.

    * ``Lesion.label`` / ``Lesion.probs``: the lesion's classifier probabilities renormalized
      over the classes other than ``normal`` (``normal`` 0.0), the label their argmax.
    * ``label`` / ``probs``: with no lesion, ``"normal"`` with ``{"normal": 1.0, others 0.0}``
      (a decision from the mask, not a calibrated probability); with lesions, the class and
      probabilities of the most suspicious lesion (highest ``malignant`` probability; the most
      confident lesion when there is no ``malignant`` class). With temporal smoothing the EMA
      runs over these per-frame probabilities and, on a frame with lesions, the smoothed values
      are renormalized over the lesion classes again, so the rule holds on every frame.
    * ``raw_probs``: the model's own image-level probabilities (its class head, or pooling over
      the whole image), before the rule and the smoothing; what accuracy / AUC / calibration
      are measured on.

    Models without a ``normal`` class: lesions keep their probabilities, and the image its
    (smoothed) image-level prediction.

    **Scope** (:mod:`sdk.scope`): ``in_scope`` says whether the frame looks like the breast
    B-mode the model was fitted on; ``scope_score`` in [0, 1] is the fraction of held-out
    training-distribution phantoms at least as far from the training features as this frame (a
    conformal p-value: ~uniform on in-distribution frames, near 0 far from them), and
    ``in_scope`` is False when the frame is farther than the held-out phantoms' 99th percentile
    (the artifact's ``scope.threshold``; ``scope_score`` below ~0.01). Artifacts without a
    fitted scope block: ``in_scope`` True, ``scope_score`` None. **When ``in_scope`` is False no
    diagnosis is claimed**: ``label`` is ``"out_of_scope"``, ``probs`` is empty (``confidence``
    0.0), ``lesions`` is empty and ``mask`` all zero; ``raw_probs`` still holds the model's
    image-level probabilities, and the temporal smoothing skips the frame.

    ``probs``, ``raw_probs`` and the lesions' probabilities are **calibrated**: the class logits
    are divided by the artifact's ``calibration.temperature`` (fitted at export on held-out
    phantoms; 1.0 for artifacts without the block) before the softmax. ``raw_probs`` are the
    image-level probabilities before the label rule, after the temperature.

    ``timings``: milliseconds per stage (preprocess, infer, postprocess, total;
    for a frame that shared a batched model call -- ``run_batch``, a backlogged ``stream`` --
    ``infer`` is its share of the call).
    """

    mask: np.ndarray
    label: str
    probs: dict[str, float]
    lesions: list[Lesion]
    frame_index: int
    timestamp: float | None
    timings: dict[str, float]
    roi: tuple[int, int, int, int]
    raw_probs: dict[str, float] = field(default_factory=dict)
    #: Whether the frame looks like breast B-mode (see the class docstring).
    in_scope: bool = True
    #: Scope p-value in [0, 1] (None: the artifact carries no fitted scope).
    scope_score: float | None = None
    #: The analyzed uint8 frame, only when the stream was asked to keep it (``keep_frames``).
    frame: np.ndarray | None = field(default=None, repr=False)

    @property
    def confidence(self) -> float:
        return self.probs.get(self.label, 0.0)  # 0.0 for "out_of_scope": nothing is claimed

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the mask as its size and foreground count, not its pixels)."""
        return {
            "frame_index": self.frame_index,
            "timestamp": self.timestamp,
            "label": self.label,
            "confidence": round(self.confidence, 5),
            "probs": {k: round(v, 5) for k, v in self.probs.items()},
            "raw_probs": {k: round(v, 5) for k, v in self.raw_probs.items()},
            "in_scope": bool(self.in_scope),
            "scope_score": None if self.scope_score is None else round(self.scope_score, 5),
            "mask": {"shape": list(self.mask.shape), "foreground_px": int(self.mask.sum())},
            "roi": list(self.roi),
            "lesions": [les.to_dict() for les in self.lesions],
            "timings_ms": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def overlay(self, frame: np.ndarray, alpha: float = 0.25) -> np.ndarray:
        """BGR uint8 copy of ``frame`` with the mask tinted, each lesion's outline (all its pieces)
        in its class colour, labels and confidences."""
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            img = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        else:
            img = np.ascontiguousarray(frame[..., :3]).copy()
        if img.dtype != np.uint8:
            raise TypeError("overlay needs the uint8 frame that was analyzed")
        if not self.in_scope:  # no lesion, no label: say what the frame is not
            s = "not breast B-mode"
            if self.scope_score is not None:
                s += f" (scope {self.scope_score:.2f})"
            _text(img, s, (8, 22), (0, 165, 255), 0.7, [])
            return img
        colour = _COLOURS.get(self.label, (255, 255, 0))
        if self.mask.any():
            tint = img.copy()
            tint[self.mask > 0] = colour
            img = cv2.addWeighted(tint, alpha, img, 1 - alpha, 0)
        taken: list[tuple[int, int, int, int]] = []  # label boxes drawn so far: never overprint
        _text(img, f"{self.label} {self.confidence:.0%}", (8, 22), colour, 0.7, taken)
        for les in self.lesions:
            c = _COLOURS.get(les.label, (255, 255, 0))
            # The outline runs through the centres of the region's border pixels: the tint and
            # the line cover the same pixels.
            cs = [les.contour, *les.other_contours]
            cv2.polylines(img, [p.reshape(-1, 1, 2) for p in cs], True, c, 2, cv2.LINE_AA)
            x, y, _, h = les.bbox
            # Above the lesion, else below it: the first place free of the other labels.
            _text(img, f"{les.label} {les.confidence:.0%}", (x, y - 6), c, 0.5, taken, y + h + 16)
        return img


def _text(
    img: np.ndarray,
    s: str,
    org: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float,
    taken: list[tuple[int, int, int, int]],
    alt_y: int | None = None,
) -> tuple[int, int, int, int]:
    """Draw ``s`` once, on a dark box, with its baseline at ``org`` (else at ``alt_y``, else
    moved down) so that the box stays inside the image and overlaps no box in ``taken``.

    One pass on a filled box: the usual "black outline, then colour" double pass draws two
    strings of different widths with OpenCV 5's font rendering ("malignant 1000%")."""
    H, W = img.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(s, font, scale, 1)
    pad = 3
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    x = int(min(max(org[0], 0), max(W - bw, 0)))

    def box_at(y_base: int) -> tuple[int, int, int, int]:
        top = int(min(max(y_base - th - pad, 0), max(H - bh, 0)))
        return (x, top, bw, bh)

    def free(b: tuple[int, int, int, int]) -> bool:
        return all(
            b[0] >= o[0] + o[2] or o[0] >= b[0] + b[2] or b[1] >= o[1] + o[3] or o[1] >= b[1] + b[3]
            for o in taken
        )

    tries = [org[1]] + ([alt_y] if alt_y is not None else [])
    box = next((b for b in (box_at(y) for y in tries) if free(b)), None)
    if box is None:  # stack below the lowest overlapping label
        box = box_at(org[1])
        while not free(box) and box[1] + bh < H:
            box = (box[0], max(o[1] + o[3] for o in taken if not free(box)), bw, bh)
    bx, by = box[0], box[1]
    cv2.rectangle(img, (bx, by), (bx + bw - 1, by + bh - 1), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, s, (bx + pad, by + pad + th), font, scale, colour, 1, cv2.LINE_AA)
    taken.append(box)
    return box
