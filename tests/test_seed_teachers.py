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
    train(
        "edge_s",
        "synthetic",
        runs / "edge_s",
        epochs=1,
        batch_size=8,
        seed=0,
        device="cpu",
        n_train=16,
        size=64,
        threads=1,
        progress=False,
    )
    rows = mod.export_rows(runs / "edge_s", n=4, calib_frames=8, eval_frames=8, min_calib_frames=8)
    assert [r["format"] for r in rows] == ["onnx", "onnx-int8"]
    assert rows[0]["status"] == "ok" and 0.0 <= rows[0]["dice"] <= 1.0
    assert all(r["frames"] == 4 for r in rows)
    assert rows[0]["checkpoint"].startswith("16 frames × 1 epochs at 64×64")
    assert (runs / "edge_s" / "export" / "edge_s.onnx").is_file()

    # The results files are the repository's: the test writes into its own folder instead.
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    mod._update({"exports": {"edge_s": rows}}, "edge_s", "test")
    doc = json.loads((tmp_path / "seed-teachers.json").read_text())
    assert doc["exports"]["edge_s"] == rows
    md = (tmp_path / "seed-teachers.md").read_text()
    assert "| edge_s fp32 | ok |" in md and "| edge_s int8 (cpu) |" in md


def test_export_refuses_an_unknown_seed(load_benchmark):
    mod = load_benchmark("seed_teachers")
    with pytest.raises(SystemExit):
        mod.main(["export", "no_such_seed"])
