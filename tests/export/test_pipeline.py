"""export.pipeline and ``sonoedge export``: a tiny real run (edge_s, 64×64, 24 phantoms, 1 epoch)
through to_onnx → quantize_cpu / quantize_trt → build_trt → report, the whole run_export with
distillation, and every bad-input path (nothing half written)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export import pipeline as P  # noqa: E402
from export.quantize import check_tensorrt_qdq  # noqa: E402
from export.train import train  # noqa: E402
from sdk import cli, synthetic  # noqa: E402
from sdk.analyzer import Analyzer  # noqa: E402
from sdk.errors import InputError, ModelError  # noqa: E402

NO_TRT = importlib.util.find_spec("tensorrt") is None
MIN = 8  # calibration floor lowered for the tests (real exports: 300)
TINY = dict(epochs=1, batch_size=8, seed=0, device="cpu", n_train=24, threads=1, progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("edge_s", "synthetic", tmp_path_factory.mktemp("run"), size=64, **TINY)


@pytest.fixture(scope="module")
def fp32(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return P.to_onnx(ckpt, tmp_path_factory.mktemp("art") / "model.onnx", n_eval=16)


@pytest.fixture(scope="module")
def md(fp32: Path):
    return P.read_onnx_file_metadata(fp32)


@pytest.fixture(scope="module")
def calib(md) -> list[np.ndarray]:
    return P.calibration_frames("synthetic", md, 12, min_frames=MIN)


@pytest.fixture(scope="module")
def heldout(fp32: Path) -> P.EvalSet:
    return P.heldout_set(fp32, "synthetic", 12)


@pytest.fixture(scope="module")
def int8(fp32: Path, calib, heldout) -> Path:
    # A generous budget: a 1-epoch model's class scores are near ties, so 1 point would only
    # measure noise (the budget mechanism itself is tested in test_quantize.py and below).
    return P.quantize_cpu(fp32, calib, eval_frames=heldout, budget=0.5, min_frames=MIN)


@pytest.fixture(scope="module")
def qdq(fp32: Path, calib, heldout) -> Path:
    return P.quantize_trt(fp32, calib, eval_frames=heldout, budget=0.5, min_frames=MIN)


def _frame(size=(120, 160), seed=5) -> np.ndarray:
    return synthetic.phantom("malignant", size=size, seed=seed)[0]


def test_onnx_artifact(fp32: Path, md) -> None:
    m = onnx.load(str(fp32))
    onnx.checker.check_model(m, full_check=True)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert [o.name for o in m.graph.output] == ["mask_logits", "class_logits", "features"]
    assert md.class_names == ("normal", "benign", "malignant")
    assert md.channels == ("image",) and md.input_size == (64, 64) and md.sigma == 1.0
    assert md.mean == (0.5,) and md.std == (0.5,)  # edge_s's ImageNet gray normalization
    assert md.outputs == {"mask_logits": "mask_logits", "class_logits": "class_logits",
                          "features": "features"}  # fmt: skip
    assert md.head is not None and md.head["w2"].shape == (3, 64)
    assert md.precision == "fp32" and md.mask_threshold == 0.5
    prov = md.provenance
    assert prov["checkpoint"]["arch"] == "edge_s" and prov["training"]["n_train"] == 24
    assert prov["export"]["opset"] == 17
    par = md.accuracy["parity"]
    assert par["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    for k, d in par["max_abs_diff"].items():  # within atol + rtol x the output's largest value
        assert 0 < par["scale"][k] and d <= 1e-4 + 1e-4 * par["scale"][k]
    assert set(par["max_abs_diff"]) == {"mask_logits", "class_logits", "features"}
    assert 0.0 <= md.accuracy["fp32"]["dice"] <= 1.0 and md.accuracy["fp32"]["frames"] == 16
    assert not list(fp32.parent.glob(".*part*"))


def test_onnx_artifact_runs_in_analyzer(fp32: Path) -> None:
    with Analyzer(fp32, threads=1) as a:
        r = a.run(_frame())
    assert r.mask.shape == (120, 160) and r.label in ("normal", "benign", "malignant")
    assert abs(sum(r.probs.values()) - 1.0) < 1e-5


def test_int8_cpu_artifact(int8: Path, fp32: Path) -> None:
    meta = P.read_onnx_file_metadata(int8)
    assert meta.precision == "int8"
    q = meta.provenance["quantization"]
    assert q["target"] == "cpu" and q["calibration"]["frames"] == 12
    assert set(meta.accuracy["drop"]) >= {"dice", "accuracy"}
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with Analyzer(int8, threads=1) as a:
        r = a.run(_frame())
    assert r.mask.shape == (120, 160)
    assert meta.head is not None  # the head weights travel with the quantized artifact


def test_trt_qdq_artifact_passes_validator(qdq: Path) -> None:
    check_tensorrt_qdq(qdq)
    assert P.read_onnx_file_metadata(qdq).provenance["quantization"]["target"] == "tensorrt"


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is installed here")
def test_build_trt_reports_skipped_without_tensorrt(fp32: Path, qdq: Path) -> None:
    for src, prec in ((fp32, "fp16"), (qdq, "int8")):
        art = P.build_trt(src, precision=prec)
        assert art.status == P.SKIPPED_NO_TRT and art.path is None
        assert art.format == f"trt-{prec}"
    assert not list(fp32.parent.glob("*.plan"))
    # An FP32 graph (INT8 fell back entirely under the budget) is not an INT8 engine's input:
    # a failed row in the report, nothing written.
    art = P.build_trt(fp32, precision="int8")
    assert art.status.startswith("failed: the QDQ graph holds no quantized node")
    assert art.path is None


def test_report(fp32: Path, int8: Path, qdq: Path, tmp_path: Path) -> None:
    arts = [
        P.Artifact("model fp32", "onnx", fp32, reference=True),
        P.Artifact("model int8", "onnx-int8", int8),
        P.Artifact("model qdq", "onnx-qdq", qdq),
        P.build_trt(fp32, precision="fp16") if NO_TRT else P.Artifact("trt", "trt-fp16", None,
                                                                       P.SKIPPED_NO_TRT),
    ]  # fmt: skip
    frames = P.report_frames("synthetic", ("normal", "benign", "malignant"), 6, (96, 128))
    md_path, js_path, png_path = P.report(arts, frames, tmp_path)
    doc = json.loads(js_path.read_text())
    assert [r["name"] for r in doc["rows"]] == [a.name for a in arts]
    assert doc["frames"] == {"n": 6, "shape": [96, 128], "warmup": 3}
    ok, skipped = doc["rows"][:3], doc["rows"][3]
    for r in ok:
        assert r["status"] == "ok" and r["size_mb"] > 0 and r["ms_per_frame"] > 0
        assert r["fps"] > 0 and 0 <= r["dice"] <= 1 and 0 <= r["accuracy"] <= 1
    assert ok[0]["drop"]["dice"] == 0.0
    assert skipped["status"] == "skipped: TensorRT not installed" and skipped["dice"] is None
    text = md_path.read_text()
    assert "skipped: TensorRT not installed" in text and text.count("\n| ") == 5
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="at least one annotated frame"):
        P.report(arts, [], tmp_path / "empty")


# ---------------------------------------------------------------------------- bad input


def test_calibration_errors(fp32: Path, md, calib, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    with pytest.raises(InputError, match="empty"):
        P.quantize_cpu(fp32, [], out, min_frames=MIN)
    with pytest.raises(InputError, match=">= 300"):
        P.quantize_cpu(fp32, calib, out)  # the real floor
    wrong = [np.zeros((1, 32, 32), np.float32)] * MIN
    with pytest.raises(InputError, match="shape"):
        P.quantize_trt(fp32, wrong, out, min_frames=MIN)
    with pytest.raises(InputError, match="float32"):
        P.quantize_cpu(fp32, [c.astype(np.float64) for c in calib], out, min_frames=MIN)
    with pytest.raises(InputError, match=">= 300"):
        P.calibration_frames("synthetic", md, 20)
    assert not list(tmp_path.iterdir())


def test_onnx_without_contract_outputs(fp32: Path, calib, tmp_path: Path) -> None:
    m = onnx.load(str(fp32))
    for node in m.graph.node:  # rename the mask output: off the contract
        node.output[:] = ["lesion" if o == "mask_logits" else o for o in node.output]
    m.graph.output[0].name = "lesion"
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ModelError, match="mask_logits"):
        P.check_contract(bad)
    with pytest.raises(ModelError, match="mask_logits"):
        P.quantize_cpu(bad, calib, tmp_path / "q.onnx", min_frames=MIN)
    with pytest.raises(ModelError, match="mask_logits"):
        P.build_trt(bad, tmp_path / "e.plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_int8_missing_the_budget_reports_layers(
    fp32: Path, calib, heldout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = P.evaluate_onnx
    calls = iter(range(10**6))

    def evaluate(path, frames, threads=1, batch=16):
        # The first call measures FP32; every candidate after it (even fully float) is scored
        # 50 points lower, so no fallback can meet the budget.
        res = real(path, frames, threads, batch)
        return res if next(calls) == 0 else {**res, "dice": res["dice"] - 0.5}

    monkeypatch.setattr(P, "evaluate_onnx", evaluate)
    with pytest.raises(ModelError, match="Most sensitive nodes"):
        P.quantize_cpu(fp32, calib, tmp_path / "q.onnx", eval_frames=heldout, min_frames=MIN)
    assert not list(tmp_path.iterdir())


def test_checkpoint_config_mismatch_and_parity_failure(ckpt: Path, tmp_path: Path) -> None:
    for suffix in (".json", ".safetensors"):
        shutil.copy(ckpt.with_suffix(suffix), tmp_path / f"c{suffix}")
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["config"]["feature_channels"] = 32  # the weights have 64
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit"):
        P.to_onnx(tmp_path / "c.json", tmp_path / "m.onnx", n_eval=4)
    # Parity is enforced, not just recorded: an impossible tolerance fails, nothing is left.
    with pytest.raises(ModelError, match="differs from eager"):
        P.to_onnx(ckpt, tmp_path / "m.onnx", n_eval=4, parity_atol=1e-30, parity_rtol=0)
    for bad in (
        {"parity_rtol": -1e-4},
        {"parity_atol": True},
        {"parity_atol": 0, "parity_rtol": 0},
    ):
        with pytest.raises(InputError, match="parity_"):
            P.to_onnx(ckpt, tmp_path / "m.onnx", n_eval=4, **bad)
    with pytest.raises(InputError, match="opset"):
        P.to_onnx(ckpt, tmp_path / "m.onnx", opset=13)
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob(".*part*"))


# ---------------------------------------------------------------------------- whole runs


def test_run_export_distills_quantizes_and_reports(ckpt: Path, tmp_path: Path) -> None:
    res = P.run_export(
        ckpt,
        tmp_path,
        student="edge_s",
        formats=["onnx", "onnx-int8", "trt-int8", "trt-fp16"],
        distill_kwargs={"epochs": 1, "batch_size": 8, "student_kwargs": {"decoder_channels": 24}},
        calib_frames=MIN,
        min_calib_frames=MIN,
        eval_frames=8,
        n_report=4,
        budget=0.5,
        progress=False,
    )
    assert res.ok and set(res.checkpoints) == {"student", "baseline"}
    names = [a.name for a in res.artifacts]
    assert names[:3] == ["teacher edge_s", "student fp32", "baseline fp32"]
    doc = json.loads(res.report[1].read_text())
    assert doc["reference"] == "teacher edge_s" and len(doc["rows"]) == len(res.artifacts)
    if NO_TRT:
        statuses = {r["format"]: r["status"] for r in doc["rows"]}
        assert statuses["trt-fp16"] == statuses["trt-int8"] == P.SKIPPED_NO_TRT
    prov = P.read_onnx_file_metadata(tmp_path / "student.onnx").provenance
    assert prov["distillation"]["teacher"]["arch"] == "edge_s" and prov["teacher"]["path"]
    base = P.read_onnx_file_metadata(tmp_path / "baseline.onnx").provenance["distillation"]
    assert base["alpha_kd"] == base["beta_pixel"] == 0.0
    for f in ("student.int8.onnx", "student.trt-int8.onnx", "report.md", "report.png"):
        assert (tmp_path / f).is_file(), f
    with pytest.raises(InputError, match="unknown formats"):
        P.run_export(ckpt, tmp_path / "x", formats=["onnx", "tflite"], progress=False)


def test_cli_export_and_train_preset_errors(ckpt: Path, tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "export",
            str(ckpt),
            "--student",
            "none",
            "--formats",
            "onnx,trt-fp16",
            "--report-frames",
            "4",
            "--eval-frames",
            "8",
            "--out",
            str(tmp_path),
            "--quiet",
            "--lesion-gate",
            "--gate-frames",
            "4",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "edge_s fp32" in out and ("skipped: TensorRT not installed" in out or not NO_TRT)
    assert (tmp_path / "edge_s.onnx").is_file() and (tmp_path / "report.json").is_file()
    # --lesion-gate: fitted into the ONNX artifact before the report, its value in the row note
    gate = P.read_onnx_file_metadata(tmp_path / "edge_s.onnx").max_lesion_normal_prob
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert rows[0]["note"] == f"lesion gate {gate:g}"
    with pytest.raises(InputError, match="synthetic phantoms"):
        P.run_export(ckpt, tmp_path / "g", data=tmp_path, lesion_gate=True, progress=False)
    with pytest.raises(InputError, match="gate_frames"):
        P.run_export(ckpt, tmp_path / "g", lesion_gate=True, gate_frames=2, progress=False)
    assert not (tmp_path / "g").exists()
    assert cli.main(["train", "--preset", "nope", "--out", str(tmp_path / "p")]) == 1
    assert "unknown preset" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "p")]) == 1
    assert "--arch and --data" in capsys.readouterr().err
