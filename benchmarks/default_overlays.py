"""A contact sheet of a model on fresh 600x800 scanner-style phantoms, the true outline in green.

What the README and ``sdk/models/REPORT.md`` show as ``docs/default-model-overlays.png``: each
tile is ``Result.overlay`` (the model's tint, outlines and labels, exactly as ``sonoedge demo``
draws them) with the phantom's true lesion outline drawn over it in thin green and the true
label written in the corner. The frames are drawn from their own seed stream (62,000,000+),
never used for training, calibration or any other report, and the labels cycle through
benign / malignant / normal, so the sheet is not picked for flattering frames.

Usage::

    python benchmarks/default_overlays.py                       # the embedded FP32 default
    python benchmarks/default_overlays.py --model runs/demo8/edge_s.onnx --out /tmp/sheet.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import sdk
from export._files import writing
from sdk import synthetic

SEED_BASE = 62_000_000
LABELS = ("benign", "malignant", "normal")


def tile(analyzer: sdk.Analyzer, seed: int, label: str, size: tuple[int, int]) -> np.ndarray:
    """One annotated frame: the model's overlay, the true outline (green) and the true label."""
    image, mask, info = synthetic.phantom(label, size, seed, style="scanner")
    res = analyzer.run(image)
    img = res.overlay(image)
    contours, _ = cv2.findContours(
        (mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(img, contours, -1, (0, 255, 0), 1, cv2.LINE_AA)
    h = img.shape[0]
    text = f"truth {info['label']}"
    for colour, thickness in (((0, 0, 0), 4), ((0, 255, 0), 2)):  # dark rim, then green
        cv2.putText(
            img, text, (8, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.8, colour, thickness, cv2.LINE_AA
        )
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="an .onnx artifact (default: the embedded FP32)")
    ap.add_argument("--n", type=int, default=8, help="tiles (a multiple of --cols)")
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--tile-width", type=int, default=400, help="pixels per tile in the sheet")
    ap.add_argument("--out", default="docs/default-model-overlays.png")
    a = ap.parse_args()
    if a.n <= 0 or a.cols <= 0 or a.n % a.cols:
        ap.error("--n must be a positive multiple of --cols")
    analyzer = sdk.Analyzer(a.model) if a.model else sdk.Analyzer()
    size = (600, 800)
    tw = a.tile_width
    th = round(tw * size[0] / size[1])
    tiles = []
    for i in range(a.n):
        img = tile(analyzer, SEED_BASE + i, LABELS[i % len(LABELS)], size)
        tiles.append(cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA))
    rows = [np.hstack(tiles[r * a.cols : (r + 1) * a.cols]) for r in range(a.n // a.cols)]
    sheet = np.vstack(rows)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out) as tmp:  # no half-written picture on failure
        if not cv2.imwrite(str(tmp), sheet):
            raise OSError(f"could not write {out}")
    print(out)


if __name__ == "__main__":
    main()
