"""The lesion gate (``Metadata.max_lesion_normal_prob``): a region its own mask-guided class
probabilities call normal tissue is not reported -- mask, outlines and lesions agree -- and the
export fit chooses the threshold within its lesion-Dice budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk import synthetic
from sdk.artifact import read_onnx_file_metadata

onnx = pytest.importorskip("onnx")


def _with_gate(src: Path, dst: Path, gate: float) -> Path:
    from export.onnx_export import embed_metadata

    shutil.copy(src, dst)
    md = read_onnx_file_metadata(dst)
    md.max_lesion_normal_prob = gate
    embed_metadata(dst, md)
    return dst


@pytest.fixture(scope="module")
def frames():
    # Phantoms with lesions the default model finds (benign / malignant), and normal frames.
    return [
        synthetic.phantom(lbl, (300, 400), seed=8_100 + i, style="scanner")[0]
        for i, lbl in enumerate(["benign", "malignant", "normal"] * 4)
    ]


def test_gate_drops_regions_the_classifier_calls_normal(tmp_path, frames) -> None:
    src = Path(sdk.default_model())
    off = _with_gate(src, tmp_path / "off.onnx", 1.0)
    tight = _with_gate(src, tmp_path / "tight.onnx", 1e-6)
    mid = _with_gate(src, tmp_path / "mid.onnx", 0.5)
    with (
        sdk.Analyzer(off, threads=1, smoothing=0) as a_off,
        sdk.Analyzer(tight, threads=1, smoothing=0) as a_tight,
        sdk.Analyzer(mid, threads=1, smoothing=0) as a_mid,
    ):
        assert a_mid.pipeline.max_lesion_normal_prob == 0.5
        seen = 0
        for f in frames:
            r_off, r_tight, r_mid = a_off.run(f), a_tight.run(f), a_mid.run(f)
            seen += len(r_off.lesions)
            # Every lesion has P(normal) > 1e-6: the tight gate leaves nothing, and says normal.
            assert not r_tight.lesions and not r_tight.mask.any()
            if r_tight.in_scope:
                assert r_tight.label == "normal"
            # The 0.5 gate keeps exactly the lesions at most 0.5 normal, with their pixels.
            kept = [les for les in r_off.lesions if les.raw_probs["normal"] <= 0.5]
            assert len(r_mid.lesions) == len(kept)
            for a, b in zip(r_mid.lesions, kept, strict=True):
                assert a.bbox == b.bbox and a.area_px == b.area_px
                np.testing.assert_array_equal(a.contour, b.contour)
            # The mask is the kept lesions' pixels: a subset of the ungated mask.
            assert not (r_mid.mask & ~r_off.mask).any()
            assert int(r_mid.mask.sum()) == int(sum(les.area_px for les in r_mid.lesions))
            # raw_probs (the image classifier) does not depend on the gate.
            assert r_mid.raw_probs == r_off.raw_probs
        assert seen >= 4  # the frames do exercise the gate


def test_fit_lesion_gate_respects_the_lesion_budget(tmp_path) -> None:
    from export.pipeline import fit_lesion_gate

    path = _with_gate(Path(sdk.default_model()), tmp_path / "m.onnx", 0.3)
    fit = fit_lesion_gate(path, n=9, frame_sizes=((256, 256),), grid=(0.3, 0.6, 1.0))
    assert fit["threshold"] in (0.3, 0.6, 1.0) and fit["frames"] == 9
    lesion = fit["lesion_frames_dice"]
    assert lesion["1.0"] - lesion[str(fit["threshold"])] <= fit["lesion_budget"] + 1e-9
    allowed = [g for g in lesion if lesion["1.0"] - lesion[g] <= fit["lesion_budget"] + 1e-9]
    assert fit["dice"][str(fit["threshold"])] == max(fit["dice"][g] for g in allowed)
    assert read_onnx_file_metadata(path).max_lesion_normal_prob == fit["threshold"]
    # The budget 0: only thresholds that cost the lesion frames nothing.
    strict = fit_lesion_gate(path, n=9, frame_sizes=((256, 256),), lesion_budget=0.0, write=False)
    assert strict["lesion_frames_dice"][str(strict["threshold"])] >= lesion["1.0"] - 1e-9
    with pytest.raises(sdk.errors.InputError, match="n >= 3"):
        fit_lesion_gate(path, n=1)
    with pytest.raises(sdk.errors.InputError, match=r"\(0, 1\]"):
        fit_lesion_gate(path, n=3, grid=(0.0, 0.5))


def test_gate_on_image_level_probabilities(tmp_path, tiny_onnx, phantom_frame) -> None:
    """A model without per-lesion probabilities: every region carries the image's, so a gate
    below the frame's P(normal) clears the whole mask and one above it changes nothing."""
    img = phantom_frame[0]
    with sdk.Analyzer(tiny_onnx, threads=1, smoothing=0) as a:
        r_off = a.run(img)
    assert r_off.lesions and not any(les.per_lesion for les in r_off.lesions)
    pn = r_off.raw_probs["normal"]
    assert 0.01 < pn < 0.99  # room for a gate on either side
    below = _with_gate(tiny_onnx, tmp_path / "below.onnx", pn - 0.01)
    above = _with_gate(tiny_onnx, tmp_path / "above.onnx", pn + 0.01)
    with (
        sdk.Analyzer(below, threads=1, smoothing=0) as a_below,
        sdk.Analyzer(above, threads=1, smoothing=0) as a_above,
    ):
        r_below, r_above = a_below.run(img), a_above.run(img)
    assert not r_below.lesions and not r_below.mask.any() and r_below.label == "normal"
    assert r_below.raw_probs == r_off.raw_probs
    np.testing.assert_array_equal(r_above.mask, r_off.mask)
    assert len(r_above.lesions) == len(r_off.lesions) and r_above.label == r_off.label


def test_fit_lesion_gate_on_an_image_level_model(tmp_path, tiny_onnx) -> None:
    from export.pipeline import fit_lesion_gate

    path = shutil.copy(tiny_onnx, tmp_path / "img.onnx")
    fit = fit_lesion_gate(path, n=6, frame_sizes=((256, 256),), grid=(0.3, 0.6, 1.0))
    assert fit["per_lesion"] is False and fit["threshold"] in (0.3, 0.6, 1.0)
    assert set(fit["dice"]) == {"0.3", "0.6", "1.0"}
    assert read_onnx_file_metadata(path).max_lesion_normal_prob == fit["threshold"]
