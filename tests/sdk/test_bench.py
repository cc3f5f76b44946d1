"""The issue-7 benchmark suites, run tiny: formats, scaling, soak, their CLI and the README
section generator. Structure and sanity, not speed: every number positive, every ratio computed
from rows of the same run, every file written, every soak frame accounted for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sdk.analyzer import default_model
from sdk.bench import formats, scaling, soak
from sdk.cli import main
from sdk.errors import BackendUnavailableError, InputError

ROOT = Path(__file__).resolve().parents[2]
FP32 = default_model("fp32")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread everywhere, child processes (peak RSS) included."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def formats_report() -> formats.Report:
    return formats.run([FP32], threads=1, repeat=5, warmup=1, n_frames=2, rss_calls=2)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


# --------------------------------------------------------------------------- formats


def test_formats_rows_ratios_and_rss(formats_report, tmp_path) -> None:
    rows = formats_report.sections[0]["rows"]
    by_kind = {r["kind"]: r for r in rows}
    assert {"ort", "openvino", "analyzer"} <= set(by_kind)
    anchor = by_kind["ort"]
    assert anchor["anchor"] is None and anchor["ratio"] == pytest.approx(1.0)
    measured = [r for r in rows if r.get("p50_ms") is not None]
    assert anchor in measured and by_kind["analyzer"] in measured
    for r in measured:
        assert r["n"] == 5
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["fps"] == pytest.approx(1e3 / r["mean_ms"])
        # The ratio is this row's p50 over the anchor's p50 of the same run, nothing else.
        a = next(x for x in rows if x["key"] == (r["anchor"] or r["key"]))
        assert _close(r["ratio"], r["p50_ms"] / a["p50_ms"])
        assert r["peak_rss_mb"] is not None
    base = formats_report.summary["baseline_rss_mb"]
    assert base > 0
    assert all(r["peak_rss_mb"] > base for r in measured)  # a runtime costs memory
    ov = by_kind["openvino"]
    ov_analyzer = next(r for r in rows if r["kind"] == "analyzer" and "openvino" in r["row"])
    if importlib.util.find_spec("openvino") is None:
        assert ov["status"] == "not installed" and ov.get("p50_ms") is None
        assert ov_analyzer["status"] == "not available" and ov_analyzer.get("p50_ms") is None
    else:
        assert ov["status"] is None and "mask_logits" in ov["note"]
        assert float(ov["note"].rsplit(" ", 1)[-1]) < 1e-3  # fp32: same numbers as ORT
        assert ov_analyzer in measured  # the SDK's openvino backend, same anchor

    paths = formats_report.write(tmp_path, "formats")
    assert {p.name for p in paths} == {"formats.md", "formats.json"}
    doc = json.loads((tmp_path / "formats.json").read_text())
    assert doc["suite"] == "formats" and doc["machine"]["cores"] >= 1
    assert "onnxruntime" in doc["machine"]["versions"]
    md = (tmp_path / "formats.md").read_text()
    assert "| bare ONNX Runtime session.run | default-fp32.onnx | fp32 |" in md
    assert "peak RSS" in md and "1.00×" in md


def test_formats_without_openvino_says_not_installed(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    r = formats.run([FP32], threads=1, repeat=2, warmup=0, n_frames=1, rss=False)
    ov = next(x for x in r.sections[0]["rows"] if x["kind"] == "openvino")
    assert ov["status"] == "not installed" and ov.get("p50_ms") is None
    assert "pip install openvino" in ov["note"]
    ova = next(x for x in r.sections[0]["rows"] if "Analyzer.run, openvino" in x["row"])
    assert ova["status"] == "not available" and "pip install openvino" in ova["note"]
    assert "| OpenVINO CPU (f32 hint) | default-fp32.onnx | fp32 | not installed |" in (
        r.markdown()
    )


def test_formats_refuses_a_plan_and_a_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match=r"\.onnx"):
        formats.run([tmp_path / "engine.plan"], repeat=1)
    with pytest.raises(Exception, match="no such file"):
        formats.run([tmp_path / "missing.onnx"], repeat=1)


# --------------------------------------------------------------------------- scaling


def test_scaling_sweeps(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    r = scaling.run(
        FP32,
        sizes=(128,),
        batches=(1, 2),
        streams=(1, 2),
        threads=1,
        repeat=3,
        warmup=1,
        frames_per_stream=4,
        rounds=1,
        n_frames=2,
    )
    size, batch, streams = r.sections
    rows = {(x["kind"], x["side"]): x for x in size["rows"]}
    bare, e2e = rows[("bare", 128)], rows[("e2e", 128)]
    assert 0 < bare["p50_ms"] <= bare["p99_ms"] and 0 < e2e["p50_ms"]
    assert _close(e2e["ratio"], e2e["p50_ms"] / bare["p50_ms"])
    assert bare["vs_first"] == pytest.approx(1.0) and "lesions/frame" in e2e["note"]
    assert ("reference", 128) in rows  # the trained model itself, next to the export
    assert "random weights" in size["notes"][0]

    b1, b2 = batch["rows"]
    assert (b1["batch"], b2["batch"]) == (1, 2)
    assert _close(b2["ms_per_frame"], b2["p50_ms"] / 2)
    assert _close(b2["ratio"], b2["ms_per_frame"] / b1["ms_per_frame"])
    assert b2["frames_per_s"] == pytest.approx(2 * 1e3 / b2["mean_ms"])

    s1, s2 = streams["rows"]
    assert (s1["frames"], s2["frames"]) == (4, 8)
    assert s1["lost"] == s2["lost"] == 0
    assert s1["aggregate_fps"] > 0 and s1["speedup"] == pytest.approx(1.0)
    assert _close(s2["speedup"], s2["aggregate_fps"] / s1["aggregate_fps"])

    names = {p.name for p in r.write(tmp_path, "scaling")}
    assert {"scaling.md", "scaling.json"} <= names
    if importlib.util.find_spec("matplotlib"):
        assert {"scaling-size.png", "scaling-batch.png", "scaling-streams.png"} <= names
        assert (tmp_path / "scaling-size.png").read_bytes()[:4] == b"\x89PNG"
        assert "![scaling-size.png](scaling-size.png)" in (tmp_path / "scaling.md").read_text()


def test_scaling_size_sweep_without_torch_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendUnavailableError, match=r"export stage.*sonoedge\[export\]"):
        scaling.export_edge_s_sizes((128,), tmp_path)
    with pytest.raises(InputError, match="divisible by 16"):
        scaling.export_edge_s_sizes((100,), tmp_path)
    # Without the size sweep the rest runs on the runtime alone.
    r = scaling.run(FP32, sizes=(), batches=(1,), streams=(), repeat=2, warmup=0, n_frames=1)
    assert [s["title"].split(":")[0] for s in r.sections] == [
        "Latency against batch"
    ] and r.sections[0]["rows"][0]["p50_ms"] > 0


# --------------------------------------------------------------------------- soak


def test_soak_counts_every_frame(tmp_path) -> None:
    r = soak.run(
        FP32,
        frames=240,
        warmup=20,
        every=40,
        window=100,
        loop_frames=3,
        threads=1,
        progress=False,
    )
    s = r.summary
    lost = s["checks"]["frames_lost"]
    assert lost["value"] == 0 and lost["met"] is True
    assert lost["records"] == lost["analyzed"] == 240 and lost["in_order"] is True
    frames_sampled = [f for f, _ in s["rss_mb"]]
    assert frames_sampled[0] == 20 and frames_sampled[-1] == 240
    assert frames_sampled == sorted(frames_sampled) and len(frames_sampled) == 7
    assert all(mb > 0 for _, mb in s["rss_mb"])
    rss = s["checks"]["rss_growth_mb"]
    assert _close(rss["value"], s["rss_mb"][-1][1] - s["rss_mb"][0][1])
    p99 = s["checks"]["p99_last_vs_first"]
    assert p99["window"] == 100 and p99["p99_first_ms"] > 0 and p99["p99_last_ms"] > 0
    assert _close(p99["value"], p99["p99_last_ms"] / p99["p99_first_ms"])
    assert s["latency"]["n"] == 240 and s["latency"]["p50_ms"] > 0
    assert len(s["rolling"]["frame"]) == len(s["rolling"]["p99_ms"]) > 10

    names = {p.name for p in r.write(tmp_path, "soak")}
    assert {"soak.md", "soak.json"} <= names
    if importlib.util.find_spec("matplotlib"):
        assert "soak-rss-latency.png" in names
    assert json.loads((tmp_path / "soak.json").read_text())["summary"]["frames"] == 240


def test_soak_reports_a_lost_frame(monkeypatch) -> None:
    """A stream that skips a frame must show up as lost, not pass silently."""
    from sdk.analyzer import Analyzer

    real = Analyzer.stream

    def leaky(self, source, *a, **kw):
        for rec in real(self, source, *a, **kw):
            if rec.frame_index != 7:
                yield rec

    monkeypatch.setattr(Analyzer, "stream", leaky)
    r = soak.run(FP32, frames=30, warmup=5, every=10, window=10, loop_frames=2, progress=False)
    lost = r.summary["checks"]["frames_lost"]
    assert lost["value"] >= 1 and lost["met"] is False and lost["in_order"] is False
    assert r.summary["verdict"] == "TARGET MISSED"


def test_soak_rejects_bad_arguments() -> None:
    with pytest.raises(InputError, match="warmup"):
        soak.run(FP32, frames=10, warmup=10, progress=False)
    with pytest.raises(InputError, match="every"):
        soak.run(FP32, frames=10, warmup=1, every=0, progress=False)


# --------------------------------------------------------------------------- CLI, README


def test_cli_bench_help_explains_every_suite(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("formats", "scaling", "soak", "--sizes", "--streams", "--frames", "--no-rss"):
        assert word in out


def test_cli_formats_and_soak_write_files(tmp_path, capsys) -> None:
    argv = ["bench", "formats", "--model", str(FP32), "--repeat", "2", "--no-rss"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "formats.json").read_text())["suite"] == "formats"
    argv = ["bench", "soak", "--frames", "60", "--warmup", "5", "--every", "20", "--window", "20"]
    assert main([*argv, "--loop", "2", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "frames lost" in out.out and "soak verdict" in out.err
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["summary"]["checks"]["frames_lost"]["records"] == 60
    argv = ["bench", "scaling", "--sizes", "none", "--batches", "1", "--streams", "1"]
    argv += ["--repeat", "2", "--stream-frames", "3", "--rounds", "1", "--stem", "sc"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "sc.json").read_text())["sections"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["bench", "scaling", "--sizes", "128,big"])
    assert e.value.code == 2
    assert main(["bench", "soak", "--model", str(FP32), "--model", str(FP32)]) == 1


def test_readme_perf_renders_and_replaces_between_markers(
    formats_report, tmp_path, capsys, load_benchmark
):
    rp = load_benchmark("readme_perf")
    results = tmp_path / "results"
    formats_report.write(results, "formats-test")
    for name in ("kernels-cpu-xeon-2c-1thread.json", "e2e-default-fp32-cpu-xeon-2c.json"):
        src = ROOT / "benchmarks" / "results" / name
        if src.is_file():
            (results / name).write_text(src.read_text())
    (results / "junk.json").write_text("[1, 2]")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- perf:begin -->\nold\n<!-- perf:end -->\nafter\n")
    assert rp.main(["--print", "--results", str(results), "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out
    assert "### Formats and runtimes: default-fp32.onnx" in printed
    assert "`results/formats-test.md`" in printed
    assert rp.main(["--write", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- perf:begin -->\n") and text.endswith(
        "<!-- perf:end -->\nafter\n"
    )
    assert "old" not in text and printed.strip() in text
    bare = tmp_path / "NOMARK.md"
    bare.write_text("# no markers\n")
    assert rp.main(["--write", "--results", str(results), "--readme", str(bare)]) == 1
    assert bare.read_text() == "# no markers\n"


def test_latency_stats_and_markdown_escape() -> None:
    st = formats.latency_stats(np.array([0.001, 0.002, 0.003]))
    assert st["p50_ms"] == pytest.approx(2.0) and st["fps"] == pytest.approx(500.0)
    with pytest.raises(InputError):
        formats.latency_stats(np.array([]))
    md = formats.section_markdown(
        {
            "title": "",
            "columns": [{"key": "a", "header": "a", "fmt": ""}],
            "rows": [{"a": "x | y"}],
        }
    )
    assert "x \\| y" in md


# --------------------------------------------------------------------------- e2e


def test_e2e_measures_both_spin_settings_each_against_its_own_anchor() -> None:
    """`sonoedge bench e2e`: one end-to-end row per ``spin`` setting, each timed against a bare
    session with the same options (interleaved, same run), and the streaming rows."""
    from sdk.bench import e2e

    t = e2e.run(FP32, threads=1, repeat=5, n_frames=3, frame_shape=(120, 160))
    ends = [r for r in t.rows if r.name.startswith("end-to-end")]
    assert [("spin=False" in r.name, "default" in r.name) for r in ends] == [
        (False, True),
        (True, False),
    ]
    for r in ends:
        assert r.anchor == "bare ORT session.run" and r.median_us > 0 and r.anchor_median_us
        assert _close(r.ratio, r.median_us / r.anchor_median_us)
    streams = [r for r in t.rows if r.name.startswith("streaming")]
    assert len(streams) == 3 and all(r.median_us > 0 and "frames/s" in r.note for r in streams)
    assert "spin within calls (default)" in t.markdown()
