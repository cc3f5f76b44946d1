"""benchmarks/independent_check.py: one tiny pymust frame (skipped without pymust) and its scoring.

pymust is not a sonoedge dependency (``pip install pymust``); the scoring tests need only NumPy.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def ic(load_benchmark):
    return load_benchmark("independent_check")


def _pred(mask, label="benign", in_scope=True):
    return {
        "mask": mask,
        "label": label,
        "raw_probs": {"benign": 0.6, "malignant": 0.3, "normal": 0.1},
        "in_scope": in_scope,
        "ms": 1.0,
    }


def test_scoring_dice_perfect_and_empty(ic):
    truth = np.zeros((30, 40), np.uint8)
    truth[10:20, 12:25] = 1
    truths = [{"mask": truth, "label": "benign"}]
    perfect = ic.summarize([_pred(truth.copy())], truths)
    assert perfect["dice"] == 1.0
    assert perfect["accuracy"] == 1.0
    empty = ic.summarize([_pred(np.zeros_like(truth))], truths)
    assert empty["dice"] == 0.0
    # An out-of-scope verdict (empty mask, label out_of_scope): Dice 0 and a wrong label.
    oos = ic.summarize([_pred(np.zeros_like(truth), "out_of_scope", False)], truths)
    assert oos["dice"] == 0.0 and oos["accuracy"] == 0.0 and oos["flagged"] == 1.0
    # Normal frames do not enter Dice.
    normal = {"mask": np.zeros_like(truth), "label": "normal"}
    two = ic.summarize([_pred(truth.copy()), _pred(truth.copy())], [truths[0], normal])
    assert two["dice"] == 1.0 and two["dice_frames"] == 1 and two["accuracy"] == 0.5


def test_tiny_pymust_frame(ic):
    pytest.importorskip("pymust")
    cfg = replace(
        ic.DEFAULT_CONFIG,
        n_elements=32,  # 9.3 mm aperture
        out_size=(48, 64),
        angles_deg=(0.0,),
        scatter_factor=1.5,
    )
    param = ic.probe_param(cfg)
    grid = ic.make_grid(cfg, param)
    width_mm, depth_mm = grid.width_m * 1e3, (grid.z0_m + grid.depth_m) * 1e3
    scene = ic.make_scene("benign", 7, width_mm, depth_mm)
    # A hypoechoic (-20 dB) oval in the middle of the frame.
    scene.lesion = {
        "shape": "oval",
        "kind": "solid",
        "a": 2.2,
        "b": 1.4,
        "tilt": 0.0,
        "contrast_db": -20.0,
        "cx": 0.0,
        "cz": 0.5 * depth_mm,
        "extent": 2.2,
    }
    image, mask, _ = ic.simulate("benign", 7, cfg, scene=scene)
    assert image.shape == (48, 64) and image.dtype == np.uint8
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    # The mask is the drawn oval: its area matches pi a b on the output grid.
    px = grid.spacing_mm
    assert abs(mask.sum() * px**2 / (np.pi * 2.2 * 1.4) - 1) < 0.1
    # The lesion is darker than the tissue around it (a 2-pixel ring outside the mask).
    ring = cv2.dilate(mask, np.ones((9, 9), np.uint8)) - cv2.dilate(mask, np.ones((5, 5), np.uint8))
    inside = image[cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0].astype(float).mean()
    outside = image[ring > 0].astype(float).mean()
    assert inside < outside - 15, (inside, outside)
