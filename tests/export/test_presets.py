"""export.presets: the recipes as data, and a tiny teacher-less preset run end to end (train the
student alone, export it as is: ONNX, report, preset.json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from export import presets
from export.checkpoint import load_checkpoint
from sdk.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_presets_are_the_documented_recipes() -> None:
    demo, ood = presets.PRESETS["demo"], presets.PRESETS["demo-ood"]
    assert demo.teacher is None and demo.student == "edge_s"
    assert demo.student_kwargs == {"mask_stride": 2} and demo.split is None
    assert "onnx-int8" in demo.formats and demo.report_size == (600, 800)
    # The OOD twin differs from the demo only by where it trains and what it exports.
    same = {f.name for f in dataclasses.fields(demo)} - {
        "name",
        "description",
        "formats",
        "report_frames",
        "targets",
        "split",
        "scope",
    }
    assert all(getattr(demo, k) == getattr(ood, k) for k in same)
    assert ood.split == "ood-train" and ood.formats == ("onnx",)
    assert demo.scope and not ood.scope
    assert not demo.lesion_gate and not ood.lesion_gate  # measured, off (see the preset)


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        presets.run_preset("nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


HYPER = {
    "n": 2,
    "split": {
        "name": "hyper",
        "include": [{"lesion.echo_pattern": ["hyperechoic"]}],
        "labels": ["benign", "malignant"],
    },
}


def test_supplement_needs_a_student_trained_alone(tmp_path: Path, monkeypatch) -> None:
    teacher = dataclasses.replace(
        presets.PRESETS["demo"], name="t", teacher="edge_s", supplement=(HYPER,)
    )
    monkeypatch.setitem(presets.PRESETS, "t", teacher)
    with pytest.raises(InputError, match="student trained alone"):
        presets.run_preset("t", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _tiny(base: str, name: str, monkeypatch, **kw) -> presets.Preset:
    """Preset ``base`` shrunk to seconds (6 frames, 1 epoch, no ImageNet weights), registered
    as ``name`` for this test."""
    tiny = dataclasses.replace(
        presets.PRESETS[base],
        name=name,
        student_kwargs={"mask_stride": 2, "pretrained": False},
        student_epochs=1,
        size=(64, 64),
        n_train=6,
        n_val=3,
        batch_size=3,
        eval_frames=3,
        **kw,
    )
    monkeypatch.setitem(presets.PRESETS, name, tiny)
    return tiny


def _small_gate(monkeypatch):
    """fit_lesion_gate on a few small frames (the real one draws 300 up to 600x800)."""
    import functools

    import export.pipeline as P

    small = functools.partial(P.fit_lesion_gate, n=6, frame_sizes=((64, 64),))
    monkeypatch.setattr(P, "fit_lesion_gate", small)
    return small


def test_teacherless_preset_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    from sdk.artifact import read_onnx_file_metadata

    _small_gate(monkeypatch)
    _tiny(
        "demo-ood",
        "tiny",
        monkeypatch,
        frame_sizes=((64, 64), (96, 128)),
        report_size=(96, 128),
        report_frames=6,
        lesion_gate=True,  # off in the demo presets (see Preset.lesion_gate): tested here
        supplement=(HYPER,),
    )
    summary = presets.run_preset("tiny", tmp_path / "run", progress=False)
    out = tmp_path / "run"
    run = load_checkpoint(out / "student" / "best.json").train["run"]
    assert run["split"] == "ood-train" and run["model_kwargs"]["mask_stride"] == 2
    assert [(g["n"], g["split"]["name"]) for g in run["supplement"]] == [(2, "hyper")]
    assert (out / "edge_s.onnx").is_file() and not (out / "teacher").exists()
    saved = json.loads((out / "preset.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["seconds"]["teacher"] == 0.0 and saved["seconds"]["training"] > 0
    assert [r["name"] for r in saved["rows"]] == ["edge_s fp32"]
    # demo-ood fits no scope (see the preset), but its artifact gets the recipe's lesion floor
    # and a lesion gate fitted inside its own training region.
    assert list(saved["scope"]) == ["edge_s fp32"]
    gate = saved["scope"]["edge_s fp32"]["lesion_gate"]
    assert list(saved["scope"]["edge_s fp32"]) == ["lesion_gate"] and gate["split"] == "ood-train"
    md = read_onnx_file_metadata(out / "edge_s.onnx")
    assert md.scope is None and md.min_lesion_area_frac == 0.002
    assert md.max_lesion_normal_prob == gate["threshold"]


def test_shipping_step_writes_floor_scope_and_temperature(tmp_path: Path, monkeypatch) -> None:
    """A preset with ``scope=True`` (the demo's) ends by writing the relative lesion floor and
    fitting the scope + temperature into each shipped ONNX Runtime artifact (small fit here):
    metadata written, digest re-stamped, the Analyzer serving all three."""
    import functools

    import numpy as np

    import export.pipeline as P
    import sdk
    from sdk.artifact import read_onnx_file_metadata

    tiny = _tiny(
        "demo",
        "tiny-ship",
        monkeypatch,
        frame_sizes=((64, 64),),
        report_size=(64, 64),
        report_frames=3,
        formats=("onnx",),
        lesion_gate=True,
    )
    small = functools.partial(
        P.fit_scope_and_temperature,
        n_fit=12,
        n_heldout=8,
        styles=("scanner",),
        frame_sizes=((64, 64),),
    )
    monkeypatch.setattr(P, "fit_scope_and_temperature", small)
    _small_gate(monkeypatch)
    summary = presets.run_preset("tiny-ship", tmp_path / "run", progress=False)
    path = tmp_path / "run" / "edge_s.onnx"
    fit = dict(summary["scope"]["edge_s fp32"])
    gate = fit.pop("lesion_gate")
    assert fit["written"] and fit["temperature"] > 0
    md = read_onnx_file_metadata(path)  # the digest check passes: re-stamped after each write
    assert md.min_lesion_area_frac == tiny.min_lesion_area_frac == 0.002
    assert md.scope is not None and md.calibration["temperature"] == round(fit["temperature"], 6)
    assert md.max_lesion_normal_prob == gate["threshold"] and gate["frames"] == 6
    with sdk.Analyzer(path, threads=1) as an:
        res = an.run(np.zeros((96, 128), np.uint8))
    assert res.scope_score is not None and 0.0 <= res.scope_score <= 1.0
    with pytest.raises(InputError, match="min_lesion_area_frac"):
        presets.set_min_lesion_area_frac(path, 1.0)
    # Phantoms drawn once and shared between artifacts give the same fit as drawing them anew.
    shared: dict = {}
    first = small(path, write=False, frames_cache=shared)
    assert len(shared) == 2  # fit + held-out sets of the one style
    again = small(path, write=False, frames_cache=shared)
    assert first == again == small(path, write=False) == {**fit, "written": False}
