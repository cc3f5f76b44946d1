"""benchmarks/refiner_bias.py (the refiner's decision prior fitted on a few tuning phantoms) and
benchmarks/refiner_tuning.py (candidates behind frame models on the tuning stream)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sdk
from sdk.refiner import METADATA_KEY, LesionRefiner

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def rb(load_benchmark):
    return load_benchmark("refiner_bias")


def test_with_bias_writes_a_checked_copy(rb, tmp_path) -> None:
    import onnx

    out = rb.with_bias(sdk.default_refiner(), tmp_path / "r.onnx", [0.0, 0.0, 0.4], "a note")
    ref = LesionRefiner(out, threads=1)  # digest re-stamped, every field checked
    assert ref.class_bias == (0.0, 0.0, 0.4) and ref.digest is not None
    md = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY])
    assert md["provenance"]["class_bias"] == "a note"
    shipped = LesionRefiner(sdk.default_refiner(), threads=1)
    assert shipped.class_bias == (0.0, 0.0, 0.0)  # the source is untouched
    assert {k: v for k, v in ref.metadata.items() if k not in ("class_bias", "provenance")} == {
        k: v for k, v in shipped.metadata.items() if k not in ("class_bias", "provenance")
    }


def test_fit_scores_every_grid_value_and_picks_the_best(rb, load_benchmark, tmp_path) -> None:
    """On 6 tuning phantoms: one row per b; the chosen b has the highest accuracy (ties: the
    smallest |b|); a large b toward malignant calls more lesion frames malignant."""
    re = load_benchmark("refiner_eval")
    frames = re._frames(6, re.TUNING_SEED, 9_000)
    grid = np.array([-0.5, 0.0, 8.0])
    b, rows = rb.fit(sdk.default_refiner(), sdk.default_model("fp32"), frames, grid, threads=1)
    assert [r["b"] for r in rows] == [-0.5, 0.0, 8.0]
    top = max(r["accuracy"] for r in rows)
    assert b == min((r["b"] for r in rows if r["accuracy"] == top), key=abs)
    c0, c8 = (np.array(r["confusion"]) for r in rows[1:])  # rows: truth N / B / M
    assert c8[1:, 2].sum() > c0[1:, 2].sum()  # +8 calls more lesion frames malignant


def test_cli_writes_the_best_refiner(rb, tmp_path, capsys) -> None:
    out = tmp_path / "best.onnx"
    rows = tmp_path / "rows.jsonl"
    rb.main(
        [
            str(sdk.default_refiner()),
            "--n",
            "3",
            "--start",
            "9006",
            "--grid",
            "0",
            "0.5",
            "0.5",
            "--write",
            str(out),
            "--out",
            str(rows),
        ]
    )
    assert "best b =" in capsys.readouterr().out
    lines = [json.loads(x) for x in rows.read_text().splitlines()]
    assert [x["b"] for x in lines] == [0.0, 0.5] and lines[0]["seeds"] == "97009006..97009008"
    assert LesionRefiner(out, threads=1).class_bias[2] in (0.0, 0.5)
    with pytest.raises(SystemExit, match="STEP"):
        rb.main([str(sdk.default_refiner()), "--grid", "0", "1", "0"])


def test_refiner_tuning_puts_each_refiner_behind_each_model(load_benchmark, tmp_path) -> None:
    """benchmarks/refiner_tuning.py: a row per (frame model, refiner) on the same tuning
    phantoms; defaults are the embedded files."""
    rt = load_benchmark("refiner_tuning")
    out = tmp_path / "rows.jsonl"
    int8 = str(sdk.default_model("int8"))
    rt.main(["--n", "3", "--start", "9010", "--model", int8, "--out", str(out)])
    rt.main(["--n", "3", "--start", "9010", "--out", str(out)])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == [int8, str(sdk.default_model("fp32"))]
    assert all(r["refiner"] == str(sdk.default_refiner()) for r in rows)
    assert all(r["seeds"] == "97009010..97009012" and r["n"] == 3 for r in rows)
