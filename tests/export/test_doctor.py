"""`sonoedge doctor`: the environment report for real, the --gpu refusal without hardware, the
comparison / tolerance logic on real arrays (passing and failing), the --gpu orchestration with
the TensorRT build replaced by ONNX files (no GPU here), the CUDA-kernel glue on a host-memory
stand-in for the device, and the real --gpu run (markers gpu + tensorrt, skipped here)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import export.doctor as D
from sdk.cli import main
from sdk.errors import BackendUnavailableError, InputError

pytest.importorskip("onnx")

REQUIRED = (
    "sonoedge",
    "C++ kernels",
    "CPU kernels vs NumPy",
    "ONNX Runtime",
    "backend onnxruntime",
    "default model",
)


@pytest.fixture(scope="module")
def env() -> list[D.Check]:
    return D.environment_report()


def by_name(checks: list[D.Check]) -> dict[str, D.Check]:
    return {c.name: c for c in checks}


# --------------------------------------------------------------------------- environment


def test_cpu_report_lines(env) -> None:
    c = by_name(env)
    for name in REQUIRED:
        assert c[name].status == D.OK and c[name].required, c[name].line()
    assert all(x.status in (D.OK, D.MISSING, D.FAIL) for x in env)
    assert all(x.fix for x in env if x.status != D.OK), [x.line() for x in env]
    assert not any(x.failed for x in env)
    assert len(c["CPU kernels vs NumPy"].values["cases"]) == 5
    assert "providers: " in c["ONNX Runtime"].detail
    assert "CPUExecutionProvider" in c["ONNX Runtime"].values["providers"]
    assert "default-fp32.onnx" in c["default model"].detail and " ms" in c["default model"].detail


def test_cpu_report_optional_lines_match_this_machine(env) -> None:
    """MISSING here (no GPU, no TensorRT); the assertions follow what this machine has."""
    import sdk.kernels as K
    from sdk import backends

    c = by_name(env)
    if importlib.util.find_spec("tensorrt") is None:
        assert c["TensorRT"].status == D.MISSING and "tensorrt" in c["TensorRT"].fix
        assert c["backend tensorrt"].status == D.MISSING
    else:
        assert c["TensorRT"].status in (D.OK, D.FAIL)
    trt_ok, _ = backends.available()["tensorrt"]
    assert (c["backend tensorrt"].status == D.OK) == trt_ok
    if shutil.which("nvidia-smi") is None:
        assert c["GPU (nvidia-smi)"].status == D.MISSING
    if importlib.util.find_spec("cuda") is None:
        assert c["GPU (cuda-python)"].status == D.MISSING
        assert "pip install cuda-python" in c["GPU (cuda-python)"].fix
    elif c["GPU (cuda-python)"].status == D.OK:
        assert "sm_" in c["GPU (cuda-python)"].detail
    if not K.built_with_cuda():
        assert c["CUDA kernels"].status == D.MISSING and "SONOEDGE_CUDA=ON" in c["CUDA kernels"].fix
    else:
        expect = D.OK if K.cuda_device_count() > 0 else D.MISSING
        assert c["CUDA kernels"].status == expect


def test_failing_check_becomes_a_fail_line() -> None:
    def broken() -> D.Check:
        raise RuntimeError("boom")

    c = D._guard("thing", broken, required=True)
    assert c.status == D.FAIL and "RuntimeError: boom" in c.detail and c.failed
    assert "Traceback" in c.values["traceback"]
    missing_optional = D.Check("x", D.MISSING, "absent", "install it")
    assert not missing_optional.failed
    assert "fix: install it" in missing_optional.line()
    assert D.Check("y", D.MISSING, "absent", "install it", required=True).failed


def test_cli_doctor_without_gpu(tmp_path, capsys) -> None:
    assert main(["doctor", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "* OK       C++ kernels" in out and "CPU path: OK" in out
    assert "ONNX Runtime" in out and "TensorRT" in out
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert doc["ok"] is True and doc["mode"] == "cpu" and doc["failed"] == []
    md = (tmp_path / "doctor.md").read_text()
    assert "**PASS**" in md and "sonoedge doctor --gpu" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doctor.json", "doctor.md"]


@pytest.mark.parametrize("argv", [["doctor"], ["doctor", "--gpu"]])
def test_doctor_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: sonoedge doctor" in out and "--precisions" in out and "--frames" in out


@pytest.mark.parametrize(
    "argv", [["--precisions", "fp8"], ["--frames", "0"], ["--precisions", ""], ["--size", "8"]]
)
def test_doctor_bad_arguments_are_usage_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--gpu", *argv])
    assert e.value.code == 2


# --------------------------------------------------------------------------- --gpu refusal


def test_gpu_without_hardware_is_a_clean_error(tmp_path, capsys) -> None:
    if not D.gpu_missing():
        pytest.skip("this machine has a GPU, TensorRT and cuda-python")
    assert main(["doctor", "--gpu", "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sonoedge doctor: error: --gpu needs an NVIDIA GPU")
    assert "Traceback" not in err and "pip install" in err
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT >= 10.3: not installed" in err and "tensorrt-cu12 cuda-python" in err
    assert not (tmp_path / "o").exists()  # stopped before writing anything


def test_require_gpu_names_every_missing_piece(monkeypatch) -> None:
    monkeypatch.setattr(
        D,
        "gpu_missing",
        lambda: [
            ("TensorRT >= 10.3", "not installed", D.TRT_FIX),
            ("an NVIDIA GPU", "no CUDA device visible (cudaErrorNoDevice)", D.DRIVER_FIX),
        ],
    )
    with pytest.raises(BackendUnavailableError) as e:
        D.require_gpu()
    msg = str(e.value)
    assert "TensorRT >= 10.3: not installed" in msg and "cudaErrorNoDevice" in msg
    assert "pip install tensorrt-cu12 cuda-python" in msg and "nvidia-smi" in msg
    monkeypatch.setattr(D, "gpu_missing", list)
    D.require_gpu()  # nothing missing: no error


# --------------------------------------------------------------------------- pure comparisons


def test_array_diff_and_mask_mismatch() -> None:
    a = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    assert D.array_diff(a, a) == 0.0
    assert D.array_diff(a + np.float32(0.25), a) == pytest.approx(0.25)
    assert D.array_diff(a, a.T.copy()) == pytest.approx(1.0)
    assert D.array_diff(a[:1], a) == float("inf")  # shape
    bad = a.copy()
    bad[0, 0] = np.nan
    assert D.array_diff(bad, a) == float("inf")  # NaN never passes
    ref = np.array([[0, 1, 1]], np.uint8)
    got = np.array([[1, 1, 0]], np.uint8)
    prob = np.array([[0.5000001, 0.9, 0.4]])
    assert D.mask_mismatch(got, ref, prob, 0.5) == 1  # pixel 0 within the band, pixel 2 not
    assert D.mask_mismatch(got, ref, np.full_like(prob, 0.5), 0.5) == 0
    assert D.mask_mismatch(got[:, :2], ref, prob, 0.5) == 3


def test_output_diffs_missing_shape_and_nan() -> None:
    rng = np.random.default_rng(0)
    ref = {"mask_logits": rng.standard_normal((1, 1, 8, 8)), "class_logits": np.ones((1, 3))}
    got = {"mask_logits": ref["mask_logits"] + 0.01, "class_logits": np.ones((1, 3))}
    d = D.output_diffs(ref, got)
    assert d["mask_logits"]["max_abs"] == pytest.approx(0.01)
    assert d["mask_logits"]["mean_abs"] == pytest.approx(0.01)
    assert d["class_logits"]["max_abs"] == 0.0 and d["class_logits"]["ref_max_abs"] == 1.0
    d = D.output_diffs(ref, {"mask_logits": got["mask_logits"]})
    assert d["class_logits"]["max_abs"] == float("inf") and "missing" in d["class_logits"]["error"]
    d = D.output_diffs(ref, {**got, "class_logits": np.ones((1, 4))})
    assert "shape" in d["class_logits"]["error"]
    nan = got["mask_logits"].copy()
    nan[0, 0, 0, 0] = np.nan
    assert D.output_diffs(ref, {**got, "mask_logits": nan})["mask_logits"]["max_abs"] == np.inf


def test_label_agreement_dice_latency() -> None:
    assert D.label_agreement(["a", "b", "c", "a"], ["a", "b", "c", "b"]) == 0.75
    assert D.label_agreement([], []) == 1.0
    with pytest.raises(InputError, match="length"):
        D.label_agreement(["a"], [])
    m = np.zeros((10, 10), np.uint8)
    m[2:6, 2:6] = 1
    other = np.zeros_like(m)
    other[2:6, 2:4] = 1  # half of m: Dice 2*8 / (16 + 8)
    mean, low = D.mask_dice([m, m, np.zeros_like(m)], [m, other, np.zeros_like(m)])
    assert low == pytest.approx(16 / 24) and mean == pytest.approx((2 + 16 / 24) / 3)
    assert D.mask_dice([m], [m[:5]]) == (0.0, 0.0)
    lat = D.latency_summary([1.0, 2.0, 3.0, 4.0, 10.0])
    assert lat["p50_ms"] == 3.0 and lat["mean_ms"] == 4.0 and lat["fps"] == 250.0
    assert lat["p99_ms"] == pytest.approx(9.76)
    assert D.latency_summary([])["frames"] == 0


def _frames(rng, n=20, noise=0.0, flip=0, nan=False, drop=None, move_mask=False):
    """Reference and candidate outputs / results of ``n`` frames, the candidate perturbed."""
    stats = D.PairStats()
    for i in range(n):
        ref = {
            "mask_logits": rng.standard_normal((1, 1, 16, 16)).astype(np.float32) * 4,
            "class_logits": rng.standard_normal((1, 3)).astype(np.float32),
            "features": rng.standard_normal((1, 8, 4, 4)).astype(np.float32),
        }
        got = {
            k: v + noise * rng.standard_normal(v.shape).astype(np.float32) for k, v in ref.items()
        }
        if nan and i == n // 2:
            got["features"][0, 0, 0, 0] = np.nan
        if drop:
            got.pop(drop)
        stats.update_outputs(ref, got)
        mask = (ref["mask_logits"][0, 0] > 0).astype(np.uint8)
        gmask = np.roll(mask, 4, axis=1) if move_mask else (got["mask_logits"][0, 0] > 0) * 1
        p = {"normal": 0.2, "benign": 0.5, "malignant": 0.3}
        q = {k: v + noise / 10 for k, v in p.items()}
        label = "benign"
        stats.update_result(label, "malignant" if i < flip else label, mask, gmask, p, q)
        stats.update_times(2.0 + i * 0.01, 1.0 + i * 0.01)
    return stats.summary()


def test_judge_passes_within_tolerance(rng) -> None:
    s = _frames(rng, noise=0.001)
    checks = D.judge(s, D.TOLERANCES["fp16"], name="trt fp16")
    assert [c.status for c in checks] == [D.OK] * 6, [c.line() for c in checks]
    assert {c.name for c in checks} == {
        "trt fp16: mask_logits",
        "trt fp16: class_logits",
        "trt fp16: features",
        "trt fp16: probabilities",
        "trt fp16: labels",
        "trt fp16: mask Dice",
    }
    assert s["frames"] == 20 and s["label_agreement"] == 1.0
    assert s["latency"]["candidate"]["p50_ms"] < s["latency"]["reference"]["p50_ms"]


def test_judge_fails_each_criterion(rng) -> None:
    def failed(summary, tol=D.TOLERANCES["fp16"]):
        return {c.name.split(": ")[1] for c in D.judge(summary, tol) if c.status == D.FAIL}

    # Noise over the FP16 output bounds (0.1 / 0.05) but within INT8's (3 / 0.75 / 1).
    noisy = _frames(rng, noise=0.2)
    assert {"mask_logits", "class_logits", "features", "probabilities"} <= failed(noisy)
    assert "mask_logits" not in failed(noisy, D.TOLERANCES["int8"])
    assert failed(_frames(rng, flip=2)) == {"labels"}  # 90 % < 99 %
    assert failed(_frames(rng, flip=2), D.TOLERANCES["int8"]) == {"labels"}  # 90 % < 95 %
    assert failed(_frames(rng, flip=1), D.TOLERANCES["int8"]) == set()  # 95 % passes
    assert failed(_frames(rng, move_mask=True)) == {"mask Dice"}
    assert failed(_frames(rng, nan=True)) == {"features"}
    gone = D.judge(_frames(rng, drop="class_logits"), D.TOLERANCES["fp16"])
    bad = [c for c in gone if c.status == D.FAIL]
    assert [c.name for c in bad] == ["engine: class_logits"] and "missing" in bad[0].detail
    assert all(c.required and c.fix for c in bad)


def test_judge_maps_output_names_to_roles(rng) -> None:
    s = _frames(rng, noise=0.2)
    s["outputs"] = {"out0": s["outputs"]["mask_logits"], "extra": s["outputs"]["features"]}
    checks = D.judge(s, D.TOLERANCES["int8"], roles={"out0": "mask_logits"})
    names = [c.name for c in checks]
    assert "engine: out0" in names and "engine: extra" not in names  # no bound: report only


def test_report_files_are_atomic_and_json_safe(tmp_path, rng) -> None:
    rep = D.Report("gpu", "sonoedge doctor --gpu")
    s = _frames(rng, nan=True)
    s["roles"] = {}
    cmp = D.Comparison("TensorRT fp16", "ORT FP32", "fp16", s, D.TOLERANCES["fp16"])
    cmp.checks = D.judge(s, cmp.tolerance, name="TensorRT fp16 vs ORT FP32")
    rep.comparisons = [cmp]
    rep.checks = list(cmp.checks)
    md, js = D.write_report(rep, tmp_path)
    doc = json.loads(js.read_text())  # inf written as a string: valid JSON
    assert doc["ok"] is False and "TensorRT fp16 vs ORT FP32: features" in doc["failed"]
    assert doc["comparisons"][0]["outputs"]["features"]["max_abs"] == "inf"
    text = md.read_text()
    assert "**FAIL**" in text and "| TensorRT fp16 | ORT FP32 |" in text and "inf" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doctor.json", "doctor.md"]


# --------------------------------------------------------------------------- --gpu, stood in


@pytest.fixture
def no_gpu_needed(monkeypatch, env):
    """--gpu with what needs hardware stood in: engines are the ONNX graphs they would be built
    from (run by ONNX Runtime), the CUDA kernel cases canned; the rest runs for real."""
    pytest.importorskip("onnxconverter_common")
    monkeypatch.setattr(D, "require_gpu", lambda: None)
    monkeypatch.setattr(D, "environment_report", lambda model=None: [*env])
    canned = [{"case": "preprocess (stand-in)", "max_abs": 0.0, "tolerance": 1e-5}]
    monkeypatch.setattr(D, "cuda_kernel_cases", lambda frames, seed=0: canned)
    monkeypatch.setattr(D, "build_plan", lambda graph, plan, md, precision, tc: graph)


def test_gpu_orchestration_with_engines_stood_in(tmp_path, no_gpu_needed, capsys) -> None:
    argv = ["doctor", "--gpu", "--out", str(tmp_path), "--frames", "4", "--size", "96x128"]
    argv += ["--calib-frames", "8", "--threads", "1", "--quiet"]
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "**PASS**" in out and "| TensorRT fp16 | ORT FP32 |" in out and "report only" in out
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert doc["ok"] and [b["precision"] for b in doc["builds"]] == ["fp16", "int8"]
    cmps = {(c["candidate"], c["reference"]): c for c in doc["comparisons"]}
    assert set(cmps) == {
        ("TensorRT fp16", "ORT FP32"),
        ("TensorRT int8", "ORT Q/DQ"),
        ("TensorRT int8", "ORT FP32"),
    }
    fp16 = cmps["TensorRT fp16", "ORT FP32"]
    assert 0 < fp16["outputs"]["mask_logits"]["max_abs"] <= 0.1 and fp16["frames"] == 4
    assert fp16["latency"]["candidate"]["fps"] > 0 and fp16["checked"] is True
    same = cmps["TensorRT int8", "ORT Q/DQ"]  # the Q/DQ graph against itself
    assert all(o["max_abs"] == 0 for o in same["outputs"].values())
    assert cmps["TensorRT int8", "ORT FP32"]["checked"] is False
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["default.fp16.onnx", "default.trt-int8.onnx", "doctor.json", "doctor.md"]
    from export.quantize import tensorrt_qdq_violations

    assert tensorrt_qdq_violations(tmp_path / "default.trt-int8.onnx") == []


def test_gpu_orchestration_fails_on_a_wrong_engine(tmp_path, no_gpu_needed, monkeypatch, capsys):
    """An "FP32 engine" that computes INT8 numbers must fail the FP32 tolerances: exit 1."""
    from sdk.analyzer import default_model

    int8 = default_model("int8")
    monkeypatch.setattr(D, "build_plan", lambda graph, plan, md, precision, tc: int8)
    argv = ["doctor", "--gpu", "--out", str(tmp_path), "--frames", "3", "--size", "64"]
    assert main([*argv, "--precisions", "fp32", "--threads", "1", "--quiet"]) == 1
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert not doc["ok"] and "TensorRT fp32 vs ORT FP32: mask_logits" in doc["failed"]
    assert "**FAIL**" in capsys.readouterr().out


def test_gpu_refuses_a_non_fp32_model(tmp_path, no_gpu_needed) -> None:
    from sdk.analyzer import default_model

    with pytest.raises(InputError, match="int8 artifact; pass the FP32"):
        D.gpu_report(default_model("int8"), tmp_path, frames=1, progress=False)


# --------------------------------------------------------------------------- CUDA glue, on host


class _HostRuntime:
    """cuda-python's runtime calls used by the doctor, on host memory (pointers are addresses
    of NumPy buffers)."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}

    def cudaMalloc(self, n):
        b = np.empty(n, np.uint8)
        self.buffers[b.ctypes.data] = b
        return 0, b.ctypes.data

    def cudaMemset(self, p, v, n):
        ctypes.memset(p, v, n)
        return (0,)

    def cudaMemcpy(self, dst, src, n, kind):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaDeviceSynchronize(self):
        return (0,)

    def cudaFree(self, p):
        self.buffers.pop(p)
        return (0,)


def _view(ptr: int, shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), dtype).reshape(shape)


class _HostKernels:
    """The three CUDA entry points of sdk._kernels, run by the C++ CPU kernels on host memory
    (argument order of sdk/kernels/cuda.py). ``skip`` leaves an output unwritten."""

    def __init__(self, skip: str = "") -> None:
        from sdk.kernels import _native

        self.k = _native()
        self.skip = skip

    def preprocess_cuda(self, *args):
        fp, H, W, C, pitch, color, roi, op, oh, ow, kinds, mean, inv_std, sigma, interp, half, _ = (
            args
        )
        assert pitch == W * C
        frame = _view(fp, (H, W, C) if C > 1 else (H, W), np.uint8)
        out = _view(op, (len(kinds), oh, ow), np.float16 if half else np.float32)
        if self.skip != "preprocess":
            self.k.preprocess_cpu(
                frame, tuple(roi), out, kinds, mean, inv_std, sigma, interp, color, 1
            )

    def pool_classify_cuda(self, *args):
        fp, F, hf, wf, wp, hm, wm, lp, K, eps, w1, b1, w2, b2, hidden, classes, *outs, _ = args
        pooled, logits, probs = outs
        head = (
            _view(w1, (hidden, F), np.float32),
            _view(b1, (hidden,), np.float32),
            _view(w2, (classes, hidden), np.float32),
            _view(b2, (classes,), np.float32),
        )
        labels = _view(lp, (hm, wm), np.int32) if lp else None
        res = self.k.pool_classify_cpu(
            _view(fp, (F, hf, wf), np.float32),
            _view(wp, (hm, wm), np.float32),
            labels,
            K,
            eps,
            *head,
        )
        for ptr, val, cols in (
            (pooled, res[0], F),
            (logits, res[1], classes),
            (probs, res[2], classes),
        ):
            if ptr:
                _view(ptr, (K + 1, cols), np.float32)[...] = val

    def mask_post_cuda(self, lp, h, w, op, H, W, pitch, roi, t, value, stream):
        out = _view(op, (H, pitch), np.uint8)[:, :W]
        self.k.mask_post_cpu(_view(lp, (h, w), np.float32), out, tuple(roi), t, value, 1)


def test_cuda_kernel_glue_on_host(monkeypatch) -> None:
    """cuda_kernel_cases' buffers, copies, shapes and poison, with sdk.kernels.cuda's real
    validation, on a host stand-in of the device (what only a GPU could otherwise check)."""
    import sdk.backends.trt_common as tc
    from sdk.kernels import cuda

    rt = _HostRuntime()
    monkeypatch.setattr(tc, "cudart", lambda: rt)
    monkeypatch.setattr(cuda, "_require_cuda", _HostKernels)
    frames = D.phantom_frames(2, (64, 80), D.KERNEL_SEED)
    cases = D.cuda_kernel_cases(frames)
    assert len(cases) == 7 and not rt.buffers  # every buffer freed
    assert all(c["max_abs"] <= c["tolerance"] for c in cases), cases
    assert next(c for c in cases if "f16" in c["case"])["max_abs"] > 0  # really compared
    checks = [D._kernel_check(c) for c in cases]
    assert all(c.status == D.OK and c.section == "cuda kernels" for c in checks)
    # A kernel that leaves its output unwritten reads back the 0xFF poison (NaN): FAIL.
    monkeypatch.setattr(cuda, "_require_cuda", lambda: _HostKernels(skip="preprocess"))
    bad = [D._kernel_check(c) for c in D.cuda_kernel_cases(frames[:1])]
    assert {c.name for c in bad if c.status == D.FAIL} == {
        "CUDA preprocess gray -> 4x256x256 f32",
        "CUDA preprocess RGB + ROI -> 2x224x224 f16",
    }


# --------------------------------------------------------------------------- the real thing


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_doctor_gpu_for_real(tmp_path, capsys) -> None:
    """The one-command GPU check: CUDA kernels, FP16 + INT8 engines, engine vs ONNX Runtime."""
    pytest.importorskip("tensorrt")
    if D.gpu_missing():
        pytest.skip(f"needs {', '.join(w for w, _, _ in D.gpu_missing())}")
    from sdk.artifact import read_plan

    argv = ["doctor", "--gpu", "--out", str(tmp_path), "--frames", "40", "--size", "300x400"]
    code = main([*argv, "--calib-frames", "64", "--quiet"])
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert code == 0, doc["failed"]
    assert {b["precision"] for b in doc["builds"]} == {"fp16", "int8"}
    for b in doc["builds"]:
        md, engine = read_plan(b["plan"])
        assert md.precision == b["precision"] and len(engine) > 1000
    assert len(doc["cuda_kernels"]) == 7
    assert all(c["latency"]["candidate"]["fps"] > 0 for c in doc["comparisons"])
    assert Path(tmp_path / "doctor.md").read_text().startswith("# sonoedge doctor")
