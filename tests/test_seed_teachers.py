"""benchmarks/seed_teachers.py ``export``: a trained seed's export-report rows (issue #15, 5)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_export_rows_of_a_trained_checkpoint_land_in_the_results(
    load_benchmark, tmp_path, monkeypatch
):
    from export.train import train

    mod = load_benchmark("seed_teachers")
    runs = tmp_path / "runs"
    tiny = dict(epochs=1, batch_size=8, seed=0, n_train=16, size=64, threads=1, progress=False)
    train("edge_s", "synthetic", runs / "edge_s", device="cpu", **tiny)
    rows = mod.export_rows(runs / "edge_s", n=4, calib_frames=8, eval_frames=8, min_calib_frames=8)
    assert [r["format"] for r in rows] == ["onnx", "onnx-int8"]
    assert rows[0]["status"] == "ok" and 0.0 <= rows[0]["dice"] <= 1.0
    assert all(r["frames"] == 4 for r in rows)
    assert rows[0]["checkpoint"].startswith("16 frames × 1 epochs at 64×64")
    assert (runs / "edge_s" / "export" / "edge_s.onnx").is_file()
    # `gate`: copies of both artifacts with the lesion gate fitted, scored on the same frames.
    gated = mod.gated_rows(runs / "edge_s", n=4, gate_frames=6)
    assert [r["name"] for r in gated] == ["edge_s fp32 + gate", "edge_s int8 + gate"]
    assert all(r["status"] == "ok" and r["frames"] == 4 for r in gated)
    assert all(r["gate_fit"]["frames"] == 6 and r["gate_fit"]["per_lesion"] for r in gated)
    from sdk.artifact import read_onnx_file_metadata

    for r, f in zip(gated, ("edge_s.onnx", "edge_s.int8.onnx"), strict=True):
        md = read_onnx_file_metadata(runs / "edge_s" / "export-gated" / f)
        assert md.max_lesion_normal_prob == r["gate"]
    assert (
        read_onnx_file_metadata(runs / "edge_s" / "export" / "edge_s.onnx").max_lesion_normal_prob
        == 1.0
    )

    # The results files are the repository's: the test writes into its own folder instead.
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    mod._update({"exports": {"edge_s": rows}}, "edge_s", "test")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert [
        {k: v for k, v in r.items() if k not in ("machine", "measured")}
        for r in doc["exports"]["edge_s"]
    ] == rows
    assert doc["exports"]["edge_s"][0]["machine"] and doc["commands"] == {"edge_s": "test"}
    # A second seed's rows join the first's (merged per name, each command under its name):
    mod._update({"exports": {"other": rows}}, "other", "test 2")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert sorted(doc["exports"]) == ["edge_s", "other"]
    assert doc["commands"] == {"edge_s": "test", "other": "test 2"}
    md = (tmp_path / "seed-teachers.md").read_text()
    assert "for edge_s export, other export" in md
    assert "| edge_s fp32 | ok |" in md and "| edge_s int8 (cpu) |" in md
    mod._update({"exports": {"edge_s-gated": gated}}, "edge_s-gated", "test 3")
    md = (tmp_path / "seed-teachers.md").read_text()
    assert f"| edge_s fp32 + gate | ok (gate {gated[0]['gate']:g}) |" in md


def test_export_refuses_an_unknown_seed(load_benchmark):
    mod = load_benchmark("seed_teachers")
    with pytest.raises(SystemExit):
        mod.main(["export", "no_such_seed"])


def test_entries_keep_the_machine_they_were_measured_on(load_benchmark, tmp_path, monkeypatch):
    mod = load_benchmark("seed_teachers")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    old = {"cpu": "Old CPU", "cpu_class": "avx2", "cores": 2, "device": "no GPU"}
    row = dict(input="1x64x64", frames=8, epochs=1, train_s=60.0, score_frames=8)
    row |= dict(dice=0.5, dice_lesion=0.5, accuracy=0.5, auc=0.5)
    (tmp_path / "seed-teachers.json").write_text(
        json.dumps({"models": {"a": dict(row)}, "machine": old, "date": "2026-01-01"})
    )
    mod._update({"models": {"b": dict(row)}}, "b", "cmd b")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert doc["models"]["a"]["machine"] == "Old CPU (avx2)"
    assert doc["models"]["a"]["measured"] == "2026-01-01"
    assert doc["models"]["b"]["machine"] != "Old CPU (avx2)"
    assert "Old CPU (avx2) for a;" in (tmp_path / "seed-teachers.md").read_text()


def test_a_scored_model_leaves_the_not_trained_list(load_benchmark, tmp_path, monkeypatch):
    mod = load_benchmark("seed_teachers")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    row = dict(input="1x64x64", frames=8, epochs=1, train_s=60.0, score_frames=8)
    row |= dict(dice=0.5, dice_lesion=0.5, accuracy=0.5, auc=0.5)
    (tmp_path / "seed-teachers.json").write_text(
        json.dumps({"models": {}, "not_trained": {"b": "too slow", "c": "two inputs"}})
    )
    mod._update({"models": {"b": dict(row)}}, "b", "cmd b")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert doc["not_trained"] == {"c": "two inputs"} and "b" in doc["models"]
    md = (tmp_path / "seed-teachers.md").read_text()
    assert "- c: two inputs" in md and "too slow" not in md


def test_slab_seed_scores_with_the_default_models_prompts(load_benchmark, tmp_path):
    """score() on a slab classifier: fresh cine slabs, prompts from the embedded default model
    (the deployment) and from the true masks, class metrics only."""
    from export.train import train

    mod = load_benchmark("seed_teachers")
    tiny = dict(epochs=1, batch_size=3, seed=0, n_train=6, n_val=3, size=32, threads=1)
    best = train("samask_cltr", "synthetic", tmp_path / "s", device="cpu", progress=False, **tiny)
    r = mod.score(best, n=3, threads=1)
    assert r["dice"] is None and r["score_frames"] == 3 and r["frames"] == 6
    for k in ("accuracy", "accuracy_true_prompt"):
        assert 0.0 <= r[k] <= 1.0
    assert r["input"] == "1x16x32x32 + mask prompt" and "default model" in r["prompt"]


def test_a_distillation_repeat_sits_beside_the_seed_0_pair(load_benchmark, tmp_path, monkeypatch):
    """distill --seed N (N > 0) is a repeat: it joins the variants under TAG-seedN, leaves the
    headline pair as it was, and the markdown gives each pair's gain and their mean."""
    mod = load_benchmark("seed_teachers")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    (tmp_path / "seed-teachers.json").write_text(json.dumps({"models": {}}))
    row = dict(input="1x64x64", frames=8, epochs=1, train_s=60.0, score_frames=8)
    row |= dict(dice_lesion=0.5, auc=0.5, ood_accuracy=0.5)

    def pair(seed: int, gain: float) -> dict:
        d = {
            "teacher": "t",
            "student": "edge_s",
            "recipe": {},
            "kd": {"T": 4.0, "alpha_kd": 0.0, "beta_pixel": 1.0},
            "seed": seed,
            "baseline": {**row, "dice": 0.6, "ood_dice": 0.6, "accuracy": 0.6},
            "distilled": {**row, "dice": 0.6 + gain, "ood_dice": 0.6, "accuracy": 0.6 - gain},
        }
        return {"distillation": d}

    mod._update(pair(0, 0.04), "distillation", "seed 0")
    mod._update(pair(1, 0.01), "distillation", "seed 1")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert doc["distillation"]["seed"] == 0  # the headline pair stays seed 0's
    assert sorted(doc["distillation_variants"]) == ["t-a0-b1", "t-a0-b1-seed1"]
    md = (tmp_path / "seed-teachers.md").read_text()
    assert "t-a0-b1 repeated with 2 seeds" in md
    assert "Dice +0.040 (seed 0), +0.010 (seed 1); mean +0.025" in md
    assert "accuracy -0.040 (seed 0), -0.010 (seed 1); mean -0.025" in md
