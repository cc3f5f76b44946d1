"""benchmarks/default_overlays.py: the contact sheet of the default on fresh phantoms."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

import sdk


def test_tile_draws_the_true_outline_over_the_overlay(load_benchmark):
    from sdk import synthetic

    mod = load_benchmark("default_overlays")
    analyzer = sdk.Analyzer()
    size = (240, 320)
    img = mod.tile(analyzer, mod.SEED_BASE, "benign", size)
    assert img.shape == (*size, 3) and img.dtype == np.uint8
    image, mask, _ = synthetic.phantom("benign", size, mod.SEED_BASE, style="scanner")
    base = analyzer.run(image).overlay(image)
    changed = (img != base).any(axis=2)
    changed[-40:, :200] = False  # the "truth ..." caption
    # What the tile adds to Result.overlay is the true outline: on the mask's border, nowhere else.
    m = (mask > 0).astype(np.uint8)
    border = cv2.dilate(m, np.ones((5, 5), np.uint8)) - cv2.erode(m, np.ones((5, 5), np.uint8))
    assert changed.sum() > 20
    assert not (changed & (border == 0)).any()


def test_sheet_written_whole_and_arguments_checked(load_benchmark, tmp_path, monkeypatch):
    mod = load_benchmark("default_overlays")
    out = tmp_path / "sheet.png"
    monkeypatch.setattr(
        sys, "argv", ["x", "--n", "2", "--cols", "2", "--tile-width", "160", "--out", str(out)]
    )
    mod.main()
    sheet = cv2.imread(str(out))
    assert sheet.shape == (120, 320, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no .part file left
    monkeypatch.setattr(sys, "argv", ["x", "--n", "3", "--cols", "2"])
    with pytest.raises(SystemExit):
        mod.main()
