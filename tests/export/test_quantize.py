"""INT8 quantization per target, the TensorRT Q/DQ validator, and accuracy-budget fallback."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.onnx_export import to_onnx_file  # noqa: E402
from export.quantize import (  # noqa: E402
    EXACT_INTEGER_SESSION_CONFIG,
    activation_bytes,
    calibration_stride,
    check_tensorrt_qdq,
    node_sensitivity,
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


def run(path, x, config=None, optimized=True):
    """ONNX Runtime CPU: ``optimized`` fuses Q/DQ into its integer kernels (what deployments
    run); otherwise op-by-op, the ONNX Q/DQ semantics in float (the reference)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})


def _int8_weights(m):
    inits = {i.name: i for i in m.graph.initializer}
    return [
        onnx.numpy_helper.to_array(inits[n.input[0]])
        for n in m.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_quantized_model_runs_close_to_fp32(fp32, frames, tmp_path, target) -> None:
    """Close to FP32, and ONNX Runtime's integer kernels compute what the Q/DQ graph means.

    The CPU graph has 7-bit weights (|w| <= 64), so every pair sum of the pre-VNNI x86 U8S8
    kernels (vpmaddubsw, saturating int16) is <= 2 * 255 * 64 = 32640 < 32767: the plain session
    is exact on AVX2, AVX-512 with or without VNNI and aarch64 (export/quantize.py). The TensorRT
    graph keeps 8-bit weights (TensorRT accumulates in int32); on a CPU it is run the way TensorRT
    computes, through exact integer kernels (EXACT_INTEGER_SESSION_CONFIG: U8U8 on pre-VNNI x86,
    a no-op elsewhere). Without that, on an AVX2 CPU without VNNI, its relative error was 0.125.

    Integer kernels vs the op-by-op reference: both form the same exact int32 sums; they differ
    only where a requantization lands on a .5 tie (float rounding picks the neighbouring code),
    one code step in a few elements. One step in *every* element of an activation would be
    ~1/50 of its RMS code here; ties are rare, so 1% relative L2 holds with a wide margin
    (measured: 0 for cpu, 0.1% for tensorrt), while int16 saturation showed 12%."""
    q = quantize(fp32, tmp_path / "q.onnx", frames, target=target, min_frames=8)
    m = onnx.load(str(q))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = _int8_weights(m)
    assert weights, "no int8 weight initializers"
    wmax = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    if target == "cpu":
        assert wmax <= 64 and 2 * 255 * wmax <= 32767, wmax  # 7-bit: saturation-free everywhere
        config = None
    else:
        assert wmax > 64, wmax  # TensorRT keeps the full 8-bit resolution
        config = EXACT_INTEGER_SESSION_CONFIG
    x = np.stack(frames[:4])
    semantics = run(q, x, optimized=False)
    for a, b, c in zip(run(fp32, x), run(q, x, config), semantics, strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.1
        assert np.linalg.norm(b - c) / np.linalg.norm(c) < 0.01
    # Output nodes stay float: no DequantizeLinear feeds a graph output.
    assert not [p for p in tensorrt_qdq_violations(m) if "graph output" in p]
    if target == "tensorrt":
        check_tensorrt_qdq(m)  # passes
    else:
        assert any("uint8 zero-point" in p for p in tensorrt_qdq_violations(m))
        assert any("int32 DequantizeLinear" in p for p in tensorrt_qdq_violations(m))
        with pytest.raises(ModelError, match="not a valid TensorRT"):
            check_tensorrt_qdq(m)


class DepthwiseNet(torch.nn.Module):
    """A MobileNet-style block: dense stem, depthwise 3x3, pointwise 1x1 (the default's layers)."""

    output_names = ("mask_logits", "class_logits")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        c = 16
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(2, c, 3, padding=1),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(c, c, 3, padding=1, groups=c),  # depthwise
            torch.nn.ReLU6(),
            torch.nn.Conv2d(c, 2 * c, 1),  # pointwise
            torch.nn.ReLU6(),
        )
        self.mask = torch.nn.Conv2d(2 * c, 1, 1)
        self.cls = torch.nn.Linear(2 * c, 3)

    def forward(self, x):
        f = self.body(x)
        return {"mask_logits": self.mask(f), "class_logits": self.cls(f.mean((2, 3)))}


def test_cpu_recipe_dense_weights_7bit_depthwise_8bit(frames, tmp_path) -> None:
    """The CPU recipe (export/quantize.py): dense convolution weights on [-64, 64], so that the
    pre-VNNI x86 U8S8 kernels (vpmaddubsw: two u8*s8 products summed in saturating int16) stay
    below 2 * 255 * 64 = 32640 <= 32767; depthwise weights keep [-127, 127], because every
    ONNX Runtime depthwise kernel multiplies one u8*s8 product per lane on x86 (<= 255 * 127) or
    adds two int8*int8 in int16 on aarch64 (<= 2 * 128 * 127 = 32512). Then the plain session's
    integer kernels compute what the Q/DQ graph means on any CPU (bound as in the test above)."""
    fp = to_onnx_file(DepthwiseNet().eval(), (torch.rand(1, 2, 32, 32),), tmp_path / "dw.onnx")
    q = quantize(fp, tmp_path / "q.onnx", frames, target="cpu", min_frames=8)
    m = onnx.load(str(q))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    wmax = {}
    for n in m.graph.node:
        if n.op_type == "Conv" and n.input[1] in prod:
            w = inits[prod[n.input[1]].input[0]].astype(np.int32)
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            wmax[("depthwise" if group > 1 else "dense", n.name)] = int(np.abs(w).max())
    dense = [v for (kind, _), v in wmax.items() if kind == "dense"]
    depthwise = [v for (kind, _), v in wmax.items() if kind == "depthwise"]
    assert len(dense) == 2 and len(depthwise) == 1, wmax  # stem + pointwise; the output conv float
    assert max(dense) == 64 and 2 * 255 * max(dense) <= 32767, wmax
    assert 64 < max(depthwise) <= 127, wmax  # symmetric 8-bit: per channel, absmax -> 127
    x = np.stack(frames[:4])
    fused, semantics = run(q, x), run(q, x, optimized=False)
    for b, c in zip(fused, semantics, strict=True):
        assert np.linalg.norm(b - c) / np.linalg.norm(c) < 0.01


def test_fallback_nodes_stay_float_in_onnxruntime(frames, tmp_path) -> None:
    """A node put back in float between two quantized ones must run in float: ONNX Runtime would
    otherwise quantize it at load with its own per-tensor 8-bit weights (WeightBiasQuantization;
    with 8-bit dense weights pre-VNNI x86 kernels can saturate, see export/quantize.py). Checked
    on the graph ONNX Runtime runs and on its outputs (op-by-op semantics, bound as above)."""
    fp = to_onnx_file(DepthwiseNet().eval(), (torch.rand(1, 2, 32, 32),), tmp_path / "dw.onnx")
    m = onnx.load(str(fp))
    convs = [n.name for n in m.graph.node if n.op_type == "Conv"]
    assert len(convs) == 4  # stem, depthwise, pointwise, mask output
    q = quantize(fp, tmp_path / "q.onnx", frames, min_frames=8, exclude_nodes=[convs[1]])
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 2, ops  # stem and pointwise; depthwise and output float
    x = np.stack(frames[:4])
    for b, c in zip(run(q, x), run(q, x, optimized=False), strict=True):
        assert np.linalg.norm(b - c) / np.linalg.norm(c) < 0.01


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
    them (full fallback would be FP32, a failure: see the next test).

    The budget is not a constant: it is placed halfway between errors measured here -- the fully
    quantized model's, and the best of the partial fallbacks the search tries (the 1, 2, 4...
    most sensitive nodes in float, fewer than all) -- because they depend on the recipe (7-bit
    dense weights carry about twice the 8-bit rounding error; folded ReLU6s change the ranges),
    though not on the CPU (the integer kernels are exact everywhere, see the tests above). The
    ranking is by each node's own output error, so one node back in float need not help this
    metric; the search must then go on to two."""
    ref = run(fp32, frames[2][None])[0]

    def err(path):
        out = run(path, frames[2][None])[0]
        return float(np.abs(out - ref).max() / np.abs(ref).max())

    def evaluate(path):
        return {"dice": 1.0 - err(path), "accuracy": 1.0}

    kw = {"min_frames": 8, "calibrate_method": "percentile"}  # quantize_with_budget's default
    full = quantize(fp32, tmp_path / "full.onnx", frames, **kw)
    sens = node_sensitivity(fp32, full, frames[:4])
    ranked = sorted(sens, key=sens.__getitem__, reverse=True)
    e_full, partial, k = err(full), {}, 1
    while k < len(ranked):  # the search's candidates short of all-float
        partial[k] = err(
            quantize(fp32, tmp_path / f"k{k}.onnx", frames, exclude_nodes=ranked[:k], **kw)
        )
        k *= 2
    assert min(partial.values()) < e_full, (e_full, partial)  # some partial fallback helps
    budget = (e_full + min(partial.values())) / 2
    expected = ranked[: next(k for k, e in partial.items() if e <= budget)]

    res = quantize_with_budget(
        fp32,
        tmp_path / "q.onnx",
        frames,
        evaluate,
        budget=budget,
        min_frames=8,
        sensitivity_frames=4,
    )
    assert 0 < len(res.float_nodes) < len(res.sensitivity), "a partial fallback is expected"
    assert len(res.history) >= 2 and res.sensitivity == sens
    assert res.float_nodes == expected, (res.float_nodes, ranked, e_full, partial, budget)


def test_budget_impossible_reports_nodes(fp32, frames, tmp_path) -> None:
    calls = iter(range(100))

    def evaluate(path):
        return {"dice": 1.0 if next(calls) == 0 else 0.0, "accuracy": 1.0}

    with pytest.raises(ModelError, match="Most sensitive nodes") as err:
        quantize_with_budget(
            fp32, tmp_path / "q.onnx", frames, evaluate, min_frames=8, sensitivity_frames=2
        )
    assert not (tmp_path / "q.onnx").exists()
    # Every try, compactly, before the node ranking (a report keeps the first 400 characters).
    msg = str(err.value)
    head = msg[: msg.index("Most sensitive")]
    assert "FP32 dice 1.000 accuracy 1.000; INT8 with 0 float: dice 0.000" in head
    assert "; 1 float: dice 0.000" in head and "; 2 float:" in head


class PooledNet(torch.nn.Module):
    """Conv body, a mask, and the mask-guided pooling of export/models/_pool.py (MatMuls of the
    mask probabilities with constant resampling matrices) into a linear head."""

    output_names = ("mask_logits", "class_logits")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.ReLU6(), torch.nn.Conv2d(16, 16, 1)
        )
        self.feat = torch.nn.Conv2d(16, 8, 3, padding=1, stride=4)
        self.mask = torch.nn.Conv2d(16, 1, 1)
        self.cls = torch.nn.Linear(8, 3)

    def forward(self, x):
        from export.models._pool import mask_guided_pool

        f = self.body(x)
        m = self.mask(f)
        pooled = mask_guided_pool(self.feat(f), m.sigmoid())
        return {"mask_logits": m, "class_logits": self.cls(pooled)}


def test_pooling_matmuls_stay_float(frames, tmp_path) -> None:
    """The mask-guided pooling's MatMuls (no weight initializer: computed operands times constant
    resampling matrices) are pooling, not weighted layers: the CPU recipe leaves them without
    Q/DQ, while the weighted convolutions are quantized."""
    from export.quantize import unweighted_matmuls

    fp = to_onnx_file(PooledNet().eval(), (torch.rand(1, 2, 32, 32),), tmp_path / "p.onnx")
    m = onnx.load(str(fp))
    mm = unweighted_matmuls(m)
    assert len(mm) == 2 and len([n for n in m.graph.node if n.op_type == "MatMul"]) == 2
    q = onnx.load(str(quantize(fp, tmp_path / "q.onnx", frames, target="cpu", min_frames=8)))
    prod = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.op_type == "MatMul":
            assert not any(prod.get(i) and prod[i].op_type == "DequantizeLinear" for i in n.input)
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)  # the body is quantized
    x = np.stack(frames[:4])
    fc, qc = run(fp, x)[1], run(tmp_path / "q.onnx", x)[1]
    assert np.abs(qc - fc).max() < 0.1 * np.abs(fc).max(), (qc, fc)


def test_activation_bytes_counts_every_float_tensor_of_one_pass(fp32, frames) -> None:
    m = onnx.load(str(fp32))
    b = activation_bytes(m, frames[0][None])
    # Net: three 8-channel 32x32 float maps per conv stage at least, and the outputs.
    assert b >= 3 * 8 * 32 * 32 * 4
    # Per frame: a batch of two doubles it (but for the few constants a node produces).
    assert abs(activation_bytes(m, np.concatenate([frames[0][None]] * 2)) - 2 * b) < 0.01 * b


def test_calibration_goes_in_strides_above_the_memory_budget(
    fp32, frames, tmp_path, monkeypatch
) -> None:
    import export.quantize as Q

    m = onnx.load(str(fp32))
    per = activation_bytes(m, frames[0][None])
    assert calibration_stride(m, frames) is None  # 12 small frames: one pass
    # A budget of 5 frames' tensors: the largest divisor of 12 that fits is 4.
    assert calibration_stride(m, frames, budget=5 * per) == 4
    assert calibration_stride(m, frames[:11], budget=5 * per) == 1  # 11 is prime
    one = quantize(fp32, tmp_path / "one.onnx", frames, calibrate_method="percentile", min_frames=8)
    ranges: list[tuple[int, int]] = []
    real = Q._Reader.set_range

    def spy(self, start_index, end_index):
        ranges.append((start_index, end_index))
        real(self, start_index, end_index)

    monkeypatch.setattr(Q._Reader, "set_range", spy)
    monkeypatch.setattr(Q, "CALIBRATION_MEMORY_BYTES", 5 * per)
    strided = quantize(
        fp32, tmp_path / "strided.onnx", frames, calibrate_method="percentile", min_frames=8
    )
    assert ranges == [(0, 4), (4, 8), (8, 12)]  # ONNX Runtime fed the frames in 3 strides
    # The same graph, ranges from merged histograms: outputs close to the one-pass file's.
    x = frames[0][None]
    for a, b in zip(run(one, x), run(strided, x), strict=True):
        np.testing.assert_allclose(a, b, atol=0.05 * float(np.abs(a).max()) + 1e-3)


def test_activation_bytes_of_the_calibrated_tensors_only(fp32, frames) -> None:
    """The calibrator keeps the inputs / outputs of the quantized node types only: fewer bytes
    than every node output, and the TensorRT recipe (convolutions only) fewer still."""
    from export.quantize import CPU_OP_TYPES, TRT_OP_TYPES, calibrated_tensors

    m = onnx.load(str(fp32))
    x = frames[0][None]
    every = activation_bytes(m, x)
    cpu, trt = activation_bytes(m, x, CPU_OP_TYPES), activation_bytes(m, x, TRT_OP_TYPES)
    assert 0 < trt <= cpu <= every + x.nbytes
    names = calibrated_tensors(m, TRT_OP_TYPES)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert {convs[0].input[0], convs[0].output[0]} <= names
    assert not names & {i.name for i in m.graph.initializer}  # weights are not calibrated


def test_calibration_cache_skips_the_second_calibration(fp32, frames, tmp_path, monkeypatch):
    """With ``calibration_cache`` the ranges are computed once: the second quantization (other
    nodes kept float) never reads a frame and gets the first one's scales."""
    import inspect

    from onnxruntime.quantization import quantize_static

    import export.quantize as Q

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        pytest.skip("this ONNX Runtime has no calibration_cache_path")
    cache = tmp_path / "cal.json"
    kw = {"min_frames": 8, "calibrate_method": "percentile", "calibration_cache": cache}
    first = quantize(fp32, tmp_path / "a.onnx", frames, **kw)
    assert cache.is_file()

    def no_frames(self):
        raise AssertionError("calibration ran again")

    monkeypatch.setattr(Q._Reader, "get_next", no_frames)
    conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    second = quantize(fp32, tmp_path / "b.onnx", frames, exclude_nodes=[conv], **kw)

    def scales(path):
        m = onnx.load(str(path))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        return {
            n.input[0]: float(inits[n.input[1]])
            for n in m.graph.node
            if n.op_type == "QuantizeLinear"
            and inits.get(n.input[1]) is not None
            and inits[n.input[1]].ndim == 0
        }

    a, b = scales(first), scales(second)
    shared = set(a) & set(b)
    assert shared and all(a[t] == b[t] for t in shared)
    assert len(b) < len(a)  # the excluded conv's input is no longer quantized for it


def test_budget_fallback_calibrates_once(fp32, frames, tmp_path, monkeypatch) -> None:
    """quantize_with_budget's fallback candidates reuse the first calibration's ranges."""
    import inspect
    import sys

    from onnxruntime.quantization import quantize_static

    ortq = sys.modules["onnxruntime.quantization.quantize"]  # the module, not the function

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        pytest.skip("this ONNX Runtime has no calibration_cache_path")
    made = []
    real = ortq.create_calibrator

    def count(*a, **k):
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ortq, "create_calibrator", count)
    calls = iter(range(100))

    def evaluate(path):  # FP32, full INT8 (misses), then every fallback candidate misses too
        return {"dice": 1.0 if next(calls) == 0 else 0.0, "accuracy": 1.0}

    with pytest.raises(ModelError):
        quantize_with_budget(
            fp32, tmp_path / "q.onnx", frames, evaluate, min_frames=8, sensitivity_frames=2
        )
    assert next(calls) > 3  # several candidates were quantized
    assert made == [1]
