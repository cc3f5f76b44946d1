"""Overlay labels: drawn once on a box, inside the image, never over another label (issue #14:
"malignant 1000%" from a double pass of two widths, "normalnormal" from labels overprinting)."""

from __future__ import annotations

import numpy as np

import sdk
from sdk import synthetic
from sdk.result import _text


def _overlap(a, b) -> bool:
    return not (
        a[0] >= b[0] + b[2] or b[0] >= a[0] + a[2] or a[1] >= b[1] + b[3] or b[1] >= a[1] + a[3]
    )


def test_labels_at_one_place_are_moved_apart_and_stay_inside() -> None:
    img = np.zeros((120, 200, 3), np.uint8)
    taken: list[tuple[int, int, int, int]] = []
    boxes = [_text(img, "malignant 100%", (8, 22), (0, 0, 255), 0.7, taken)]
    boxes.append(_text(img, "benign 97%", (10, 20), (0, 255, 0), 0.5, taken, 200))
    boxes.append(_text(img, "benign 55%", (150, 118), (0, 255, 0), 0.5, taken))
    for i, a in enumerate(boxes):
        x, y, w, h = a
        assert x >= 0 and y >= 0 and x + w <= 200 and y + h <= 120
        for b in boxes[i + 1 :]:
            assert not _overlap(a, b)
    # Everything drawn lies in the boxes: one pass, no outline spilling out of them.
    ys, xs = np.nonzero(img.any(axis=2))
    inside = np.zeros(img.shape[:2], bool)
    for x, y, w, h in boxes:
        inside[y : y + h, x : x + w] = True
    assert inside[ys, xs].all()


def test_one_text_pass_in_the_label_colour() -> None:
    """The label is exactly one putText in the label colour on a black box: the old black
    outline pass of another width ("malignant 1000%") would leave other pixels."""
    import cv2

    img = np.full((40, 220, 3), 128, np.uint8)
    x, y, w, h = _text(img, "malignant 100%", (4, 24), (0, 0, 255), 0.7, [])
    want = np.full_like(img, 128)
    cv2.rectangle(want, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), cv2.FILLED)
    (_, th), _ = cv2.getTextSize("malignant 100%", cv2.FONT_HERSHEY_SIMPLEX, 0.7, 1)
    cv2.putText(
        want,
        "malignant 100%",
        (x + 3, y + 3 + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.7,
        (0, 0, 255),
        1,
        cv2.LINE_AA,
    )
    assert np.array_equal(img, want)


def test_overlay_of_a_lesion_at_the_top_left_keeps_both_labels_readable() -> None:
    a = sdk.Analyzer().load()
    frame, _, _ = synthetic.phantom("malignant", size=(600, 800), seed=7)
    r = a.run(frame)
    assert r.lesions
    les = r.lesions[0]
    les.bbox = (0, 0, les.bbox[2], les.bbox[3])  # a lesion label that would sit on the image's
    img = r.overlay(frame)
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8
    taken: list[tuple[int, int, int, int]] = []
    _text(img.copy(), f"{r.label} {r.confidence:.0%}", (8, 22), (0, 0, 255), 0.7, taken)
    box = _text(img.copy(), "x", (0, -6), (0, 0, 255), 0.5, taken, les.bbox[3] + 16)
    assert not _overlap(taken[0], box)
