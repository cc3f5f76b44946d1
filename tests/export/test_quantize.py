"""INT8 quantization per target, the TensorRT Q/DQ validator, and accuracy-budget fallback."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.onnx_export import to_onnx_file  # noqa: E402
from export.quantize import (  # noqa: E402
    check_tensorrt_qdq,
    output_nodes,
    quantize,
    quantize_with_budget,
    tensorrt_qdq_violations,
)
from sdk.errors import InputError, ModelError  # noqa: E402


class Net(torch.nn.Module):
    output_names = ("mask_logits", "class_logits")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        c = 16
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(2, c, 3, padding=1),
            torch.nn.BatchNorm2d(c),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(c, c, 3, padding=1, stride=2),
            torch.nn.BatchNorm2d(c),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(c, c, 3, padding=1),
            torch.nn.ReLU6(),
        )
        self.mask = torch.nn.Conv2d(c, 1, 1)
        self.cls = torch.nn.Linear(c, 3)

    def forward(self, x):
        f = self.body(x)
        return {"mask_logits": self.mask(f), "class_logits": self.cls(f.mean((2, 3)))}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    m = Net().eval()
    return to_onnx_file(m, (torch.rand(1, 2, 32, 32),), tmp_path_factory.mktemp("q") / "fp32.onnx")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.random((2, 32, 32), dtype=np.float32) for _ in range(12)]


def run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_quantized_model_runs_close_to_fp32(fp32, frames, tmp_path, target) -> None:
    q = quantize(fp32, tmp_path / "q.onnx", frames, target=target, min_frames=8)
    m = onnx.load(str(q))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = frames[0][None]
    for a, b in zip(run(fp32, x), run(q, x), strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.1
    # Output nodes stay float: no DequantizeLinear feeds a graph output.
    assert not [p for p in tensorrt_qdq_violations(m) if "graph output" in p]
    if target == "tensorrt":
        check_tensorrt_qdq(m)  # passes
    else:
        assert any("uint8 zero-point" in p for p in tensorrt_qdq_violations(m))
        assert any("int32 DequantizeLinear" in p for p in tensorrt_qdq_violations(m))
        with pytest.raises(ModelError, match="not a valid TensorRT"):
            check_tensorrt_qdq(m)


def test_validator_catches_nonzero_zero_point(fp32, frames, tmp_path) -> None:
    q = onnx.load(str(quantize(fp32, tmp_path / "q.onnx", frames, target="tensorrt", min_frames=8)))
    for init in q.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and "zero_point" in init.name:
            arr = onnx.numpy_helper.to_array(init).copy()
            arr[...] = 3
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
            break
    else:
        pytest.fail("no int8 zero-point initializer found")
    assert any("non-zero zero-point" in p for p in tensorrt_qdq_violations(q))


def test_output_nodes(fp32) -> None:
    names = output_nodes(fp32)
    assert len(names) == 2


def test_calibration_errors(fp32, frames, tmp_path) -> None:
    with pytest.raises(InputError, match=">= 300"):
        quantize(fp32, tmp_path / "q.onnx", frames)  # default minimum: 300 frames
    with pytest.raises(InputError, match="shape"):
        quantize(fp32, tmp_path / "q.onnx", [np.zeros((2, 16, 16), np.float32)] * 2, min_frames=1)
    with pytest.raises(InputError, match="float32"):
        quantize(fp32, tmp_path / "q.onnx", [np.zeros((2, 32, 32), np.float64)], min_frames=1)
    with pytest.raises(InputError, match="NaN"):
        quantize(
            fp32, tmp_path / "q.onnx", [np.full((2, 32, 32), np.nan, np.float32)], min_frames=1
        )
    with pytest.raises(InputError, match="target"):
        quantize(fp32, tmp_path / "q.onnx", frames, target="gpu", min_frames=1)
    assert not (tmp_path / "q.onnx").exists()


def test_budget_met_without_fallback(fp32, frames, tmp_path) -> None:
    def evaluate(path):
        a = run(path, frames[1][None])[1]
        return {"dice": 0.9, "accuracy": float(np.argmax(a) >= 0)}

    res = quantize_with_budget(fp32, tmp_path / "q.onnx", frames, evaluate, min_frames=8)
    assert res.float_nodes == [] and res.path.exists()


def test_budget_falls_back_most_sensitive_first(fp32, frames, tmp_path) -> None:
    """A budget the fully quantized model misses but a partial fallback meets: the fallback
    must put nodes back in float, most sensitive first, stop before all are float, and report
    them (full fallback would be FP32, a failure: see the next test)."""
    ref = run(fp32, frames[2][None])[0]

    def evaluate(path):
        out = run(path, frames[2][None])[0]
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        return {"dice": 1.0 - err, "accuracy": 1.0}

    res = quantize_with_budget(
        fp32,
        tmp_path / "q.onnx",
        frames,
        evaluate,
        budget=0.009,
        min_frames=8,
        sensitivity_frames=4,
    )
    assert 0 < len(res.float_nodes) < len(res.sensitivity), "a partial fallback is expected"
    assert len(res.history) >= 2 and res.sensitivity
    ranked = sorted(res.sensitivity, key=res.sensitivity.__getitem__, reverse=True)
    assert res.float_nodes == ranked[: len(res.float_nodes)]


def test_budget_impossible_reports_nodes(fp32, frames, tmp_path) -> None:
    calls = iter(range(100))

    def evaluate(path):
        return {"dice": 1.0 if next(calls) == 0 else 0.0, "accuracy": 1.0}

    with pytest.raises(ModelError, match="Most sensitive nodes"):
        quantize_with_budget(
            fp32, tmp_path / "q.onnx", frames, evaluate, min_frames=8, sensitivity_frames=2
        )
    assert not (tmp_path / "q.onnx").exists()
