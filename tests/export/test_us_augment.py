"""Tests of export.us_augment and of the ultrasound option of export.data.Augment."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from export.data import Augment, SyntheticFrames
from export.us_augment import UltrasoundAugment
from sdk import synthetic
from sdk.errors import InputError

ALWAYS = UltrasoundAugment(
    p_depth=1.0, p_shadow=1.0, p_haze=1.0, p_blur=1.0, p_speckle=1.0, p_annotation=1.0
)


def test_ultrasound_augment_changes_frame_and_outline_deterministically() -> None:
    img, ids, _ = synthetic.phantom("malignant", (160, 192), seed=3, style="scanner")
    mask = (ids > 0).astype(np.uint8)
    a_img, a_mask = ALWAYS(img, mask, np.random.default_rng([1, 2, 3]))
    b_img, b_mask = ALWAYS(img, mask, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert a_img.shape == img.shape and a_img.dtype == np.uint8
    assert set(np.unique(a_mask)) <= {0, 1} and a_mask.any()
    assert not np.array_equal(a_img, img) and not np.array_equal(a_mask, mask)
    inter = (a_mask & mask).sum()
    assert inter / (a_mask | mask).sum() > 0.5  # a reader's outline, not another lesion


def test_ultrasound_augment_keeps_black_outside_the_fan() -> None:
    img, ids, _ = synthetic.phantom("benign", (128, 160), seed=1, geometry="curvilinear")
    out, _ = ALWAYS(img, (ids > 0).astype(np.uint8), np.random.default_rng(0))
    assert (out[img == 0] == 0).all()


def test_augment_from_option() -> None:
    assert Augment.from_option(False) is None
    assert Augment.from_option(True) == Augment()
    assert Augment.from_option("ultrasound").ultrasound == UltrasoundAugment()
    with pytest.raises(InputError, match="ultrasound"):
        Augment.from_option("fancy")


def test_synthetic_frames_styles_and_splits() -> None:
    frames = SyntheticFrames(6, (64, 64), seed=2, split="descriptors-test")
    assert frames.style == "scanner"
    names = frames.class_names
    assert all(names[k] in ("benign", "malignant") for k in frames.labels)
    for i in range(len(frames)):
        image, mask, label = frames.get(i)
        assert image.shape == (64, 64) and mask.any() and names[label] != "normal"
    classic = SyntheticFrames(3, (64, 64), seed=2, style="classic")
    assert classic.get(0)[0].shape == (64, 64)
    with pytest.raises(InputError, match="unknown split"):
        SyntheticFrames(3, (64, 64), split="nope")
    with pytest.raises(InputError, match="style='scanner'"):
        SyntheticFrames(3, (64, 64), style="classic", split="ood-train")
