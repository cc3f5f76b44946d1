"""benchmarks/int8_recipe.py ``resized``: a file exported at 128×128 run at another input size.

The mask-guided pooling reads constant resampling matrices built for the exported size; the
benchmark rebuilds them for the new size. The check is against the torch model itself run at
that size (edge_s is size-agnostic), for the float graph and for a graph whose weightless
MatMuls are quantized (QDQ and QOperator), where the matrices sit behind Q / DQ nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from export.models import create_model
    from export.onnx_export import to_onnx_file

    torch.manual_seed(0)
    m = create_model("edge_s", mask_stride=2, pretrained=False).eval()
    with torch.no_grad():  # larger head weights than the init: a pooling error shows
        for p in m.head.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    d = tmp_path_factory.mktemp("int8_recipe")
    return m, to_onnx_file(m, (torch.rand(1, 1, 128, 128),), d / "e.onnx"), d


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {s.get_inputs()[0].name: x}), strict=True))


@pytest.mark.parametrize("size", [128, 256, 384])
def test_resized_float_graph_matches_the_model_at_that_size(load_benchmark, exported, size):
    ir = load_benchmark("int8_recipe")
    m, path, d = exported
    out = ir.resized(path, size, d)
    assert (out == path) == (size == 128)
    x = np.random.default_rng(size).random((1, 1, size, size), dtype=np.float32)
    got = _run(out, x)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))
    assert got["mask_logits"].shape[-2:] == (size // 2, size // 2)
    np.testing.assert_allclose(got["class_logits"], ref["class_logits"].numpy(), atol=2e-4)
    np.testing.assert_allclose(got["mask_logits"], ref["mask_logits"].numpy(), atol=2e-4)


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_resized_quantized_pooling_matrices(load_benchmark, exported, fmt):
    """The pooling MatMuls quantized (a variant of the benchmark does this): the float matrices
    behind their QuantizeLinear are rebuilt; the graph runs at 256×256 and its class logits stay
    near the float model's there (8-bit matrices and activations: a loose bound)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    ir = load_benchmark("int8_recipe")
    m, path, d = exported
    rng = np.random.default_rng(0)

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(
                [{"input": rng.random((1, 1, 128, 128), dtype=np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.it, None)

    q = d / f"matmul-{fmt}.onnx"
    quantize_static(
        str(path),
        str(q),
        Frames(),
        quant_format=getattr(QuantFormat, fmt),
        op_types_to_quantize=["MatMul"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert ("QLinearMatMul" in ops) == (fmt == "QOperator")
    assert ("QuantizeLinear" in ops) or ("DequantizeLinear" in ops)
    out = ir.resized(q, 256, d)
    x = rng.random((1, 1, 256, 256), dtype=np.float32)
    got = _run(out, x)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))["class_logits"].numpy()
    assert got["mask_logits"].shape[-2:] == (128, 128)
    np.testing.assert_allclose(got["class_logits"], ref, atol=0.05 * (1 + np.abs(ref).max()))


def test_resized_refuses_a_graph_whose_matrices_it_cannot_find(load_benchmark, exported):
    """Only one of the two pooling matrices recognisable: an error, not a silently wrong graph."""
    from onnx import numpy_helper

    ir = load_benchmark("int8_recipe")
    _, path, d = exported
    g = onnx.load(str(path))
    reads = {i for k in g.graph.node if k.op_type == "MatMul" for i in k.input}
    n = next(n for n in g.graph.node if n.op_type == "Constant" and n.output[0] in reads)
    t = n.attribute[0].t
    a = numpy_helper.to_array(t).copy()
    a[0, 0] += 0.5
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    bad = d / "bad.onnx"
    onnx.save(g, str(bad))
    with pytest.raises(RuntimeError, match="pooling matrices"):
        ir.resized(bad, 256, d)
