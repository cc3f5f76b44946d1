"""Everything around TensorRT that runs without it: cache keys, the engine cache, fingerprints,
the FP16 cast, precision checks. The real build carries the `tensorrt` marker."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.onnx_export import to_onnx_file  # noqa: E402
from export.tensorrt_build import (  # noqa: E402
    EngineCache,
    build_engine,
    engine_cache_key,
    fp16_onnx,
)
from sdk.artifact import Metadata  # noqa: E402
from sdk.backends.trt_common import Fingerprint, check_fingerprint  # noqa: E402
from sdk.errors import BackendUnavailableError, InputError, ModelError  # noqa: E402

FP = Fingerprint("10.3.0", "Orin", "8.7")


class Net(torch.nn.Module):
    output_names = ("mask_logits", "class_logits")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 1, 1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        f = torch.relu(self.c1(x))
        return {
            "mask_logits": torch.sigmoid(self.c2(f)) * 4 - 2,
            "class_logits": self.fc(f.mean((2, 3))),
        }


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return to_onnx_file(
        Net().eval(), (torch.rand(1, 1, 16, 16),), tmp_path_factory.mktemp("t") / "m.onnx"
    )


def meta() -> Metadata:
    return Metadata(
        arch="net",
        class_names=("normal", "benign", "malignant"),
        channels=("image",),
        input_size=(16, 16),
        mean=(0.0,),
        std=(1.0,),
    )


def test_cache_key_covers_everything() -> None:
    base = engine_cache_key(b"onnx", "fp16", (1, 1, 8), FP)
    assert base == engine_cache_key(b"onnx", "fp16", (1, 1, 8), FP) and len(base) == 64
    others = [
        engine_cache_key(b"onnx2", "fp16", (1, 1, 8), FP),
        engine_cache_key(b"onnx", "int8", (1, 1, 8), FP),
        engine_cache_key(b"onnx", "fp16", (1, 2, 8), FP),
        engine_cache_key(b"onnx", "fp16", (1, 1, 8), Fingerprint("10.4.0", "Orin", "8.7")),
        engine_cache_key(b"onnx", "fp16", (1, 1, 8), Fingerprint("10.3.0", "H100", "9.0")),
    ]
    assert len({base, *others}) == 6


def test_engine_cache(tmp_path) -> None:
    cache = EngineCache(tmp_path / "c")
    key = engine_cache_key(b"x", "fp32", (1, 1, 1), FP)
    assert cache.get(key) is None
    plan = tmp_path / "p.plan"
    plan.write_bytes(b"plan")
    assert cache.put(key, plan).read_bytes() == b"plan" and cache.get(key) is not None
    with pytest.raises(InputError, match="cache key"):
        cache.path("../../etc/passwd")


def test_fingerprint_mismatch_says_how_to_rebuild() -> None:
    check_fingerprint(FP.to_dict(), FP)
    with pytest.raises(ModelError, match=r"TensorRT 10\.3\.0 \(here 10\.5\.0\).*rebuild"):
        check_fingerprint(FP.to_dict(), Fingerprint("10.5.0", "Orin", "8.7"))
    with pytest.raises(ModelError, match=r"compute capability 8\.7"):
        check_fingerprint(FP.to_dict(), Fingerprint("10.3.0", "H100", "9.0"))
    with pytest.raises(ModelError, match="no TensorRT build fingerprint"):
        check_fingerprint(None, FP)


def test_fp16_cast_keeps_sensitive_ops_and_io_fp32(fp32, tmp_path) -> None:
    h = onnx.load(str(fp16_onnx(fp32, tmp_path / "h.onnx")))
    inits = [i for i in h.graph.initializer if i.dims]
    assert inits and all(i.data_type == onnx.TensorProto.FLOAT16 for i in inits)
    assert h.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in h.graph.output)
    # Sigmoid computes in FP32: a Cast to float feeds it.
    producers = {o: n for n in h.graph.node for o in n.output}
    sig = next(n for n in h.graph.node if n.op_type == "Sigmoid")
    src = producers[sig.input[0]]
    assert src.op_type == "Cast" and src.attribute[0].i == onnx.TensorProto.FLOAT
    try:
        s = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT CPU lacks some FP16 kernels on some builds
        pytest.skip(f"ONNX Runtime CPU cannot run this FP16 graph: {e}")
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    ref = ort.InferenceSession(str(fp32)).run(None, {"input": x})
    for a, b in zip(ref, s.run(None, {"input": x}), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-2)


def test_fp16_cast_of_a_graph_output_read_inside(tmp_path) -> None:
    """The default model's ``features`` is a graph output and the mask-guided pooling's Mul reads
    it too: after the FP16 cast that Mul must read the FP16 tensor (the converter left it on the
    FP32 output, a graph ONNX Runtime refuses to load), and the outputs stay close to FP32."""
    pytest.importorskip("onnxconverter_common")
    import warnings

    import sdk
    from sdk import kernels, synthetic
    from sdk.artifact import read_onnx_file_metadata

    src = sdk.default_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every subnormal weight
        h16 = fp16_onnx(src, tmp_path / "h.onnx")
    h = onnx.load(str(h16))
    outs = {o.name for o in h.graph.output}
    readers = [n for n in h.graph.node if "features" in n.input and n.op_type != "Cast"]
    assert "features" in outs and not readers, [n.name for n in readers]
    md = read_onnx_file_metadata(src)
    img = synthetic.phantom("malignant", (300, 400), seed=5, style="scanner")[0]
    x = kernels.preprocess(img, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std)
    s16 = ort.InferenceSession(str(h16), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name
    for o, a, b in zip(
        [o.name for o in ref.get_outputs()],
        ref.run(None, {name: x[None]}),
        s16.run(None, {name: x[None]}),
        strict=True,
    ):
        # FP16 (10-bit mantissa) through ~40 layers: ~1e-2 of the output scale.
        assert np.abs(a - b).max() <= 0.02 * np.abs(a).max() + 0.02, o


def test_build_engine_checks_before_needing_tensorrt(fp32, tmp_path) -> None:
    with pytest.raises(InputError, match="fp32 graph but fp16"):
        build_engine(fp32, tmp_path / "e.plan", meta(), "fp16")
    with pytest.raises(InputError, match="precision"):
        build_engine(fp32, tmp_path / "e.plan", meta(), "int4")
    with pytest.raises(InputError, match="profile"):
        build_engine(fp32, tmp_path / "e.plan", meta(), "fp32", profile=(4, 2, 8))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
            build_engine(fp32, tmp_path / "e.plan", meta(), "fp32")
    assert not (tmp_path / "e.plan").exists()


@pytest.mark.tensorrt
def test_real_engine_build(fp32, tmp_path) -> None:
    pytest.importorskip("tensorrt")
    from sdk.artifact import read_plan

    plan = build_engine(fp32, tmp_path / "e.plan", meta(), "fp32", timing_cache=tmp_path / "tc")
    md, engine = read_plan(plan)
    assert md.tensorrt["precision"] == "fp32" and len(engine) > 1000
    assert (tmp_path / "tc").is_file()
