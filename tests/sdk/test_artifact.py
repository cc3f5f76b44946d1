"""Artifact metadata schema and the .plan container: round trips and every corruption."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.artifact import (
    METADATA_KEY,
    PLAN_MAGIC,
    Metadata,
    decode_array,
    encode_array,
    read_onnx_file_metadata,
    read_onnx_metadata,
    read_plan,
    write_plan,
)
from sdk.errors import ModelError


def meta(**kw) -> Metadata:
    rng = np.random.default_rng(0)
    base = dict(
        arch="edge_s",
        class_names=("normal", "benign", "malignant"),
        channels=("image", "gdm"),
        input_size=(256, 256),
        mean=(0.5, 0.0),
        std=(0.25, 1.0),
        outputs={
            "mask_logits": "mask_logits",
            "class_logits": "class_logits",
            "features": "features",
        },
        head={
            "w1": rng.standard_normal((8, 16)).astype(np.float32),
            "b1": np.zeros(8, np.float32),
            "w2": rng.standard_normal((3, 8)).astype(np.float32),
            "b2": np.ones(3, np.float32),
        },
        provenance={"teacher": "mtl_oca"},
    )
    base.update(kw)
    return Metadata(**base)


def test_encode_array_is_exact() -> None:
    a = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(decode_array(json.loads(json.dumps(encode_array(a))), "a"), a)
    with pytest.raises(ModelError, match=r"head\.w1"):
        decode_array({"shape": [4], "data": encode_array(a)["data"]}, "head.w1")


def test_metadata_round_trip() -> None:
    m = meta()
    back = Metadata.from_json(m.to_json())
    assert back.class_names == m.class_names and back.input_size == (256, 256)
    for k in m.head:
        np.testing.assert_array_equal(back.head[k], m.head[k])
    assert back.to_dict() == Metadata.from_dict(back.to_dict()).to_dict()
    # The relative lesion floor: 0 (off) by default, absent in older artifacts, round-trips.
    assert back.min_lesion_area_frac == 0.0
    d = m.to_dict()
    d["thresholds"].pop("min_lesion_area_frac")
    assert Metadata.from_dict(d).min_lesion_area_frac == 0.0
    d["thresholds"]["min_lesion_area_frac"] = 0.002
    assert Metadata.from_json(Metadata.from_dict(d).to_json()).min_lesion_area_frac == 0.002
    # The lesion gate: 1.0 (off) by default and in older artifacts, round-trips.
    assert back.max_lesion_normal_prob == 1.0
    d["thresholds"].pop("max_lesion_normal_prob")
    assert Metadata.from_dict(d).max_lesion_normal_prob == 1.0
    d["thresholds"]["max_lesion_normal_prob"] = 0.45
    assert Metadata.from_json(Metadata.from_dict(d).to_json()).max_lesion_normal_prob == 0.45


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("schema"), "not a sonoedge artifact"),
        (lambda d: d.update(version=99), "newer"),
        (lambda d: d.update(version="1"), "version"),
        (lambda d: d.pop("class_names"), "required field"),
        (lambda d: d.update(class_names=[]), "class_names"),
        (lambda d: d["input"].update(channels=["rgb"]), "channels"),
        (lambda d: d["input"].update(size=[256]), "size"),
        (lambda d: d["input"].update(std=[0.0, 1.0]), "std"),
        # issue #14: finite and positive, but 1 / std overflows float32 (inf input everywhere)
        (lambda d: d["input"].update(std=[1e-45, 1.0]), r"std must be in \[1e-06, 1e\+06\]"),
        (lambda d: d["input"].update(std=[0.5, 1e7]), "std must be in"),
        (lambda d: d["input"].update(mean=[1e7, 0.0]), "mean within"),
        (lambda d: d["outputs"].update(mask_logits=None), "mask_logits"),
        (lambda d: (d["outputs"].update(class_logits=None), d.update(head=None)), "class_logits"),
        (lambda d: d["thresholds"].update(mask=3), "thresholds"),
        (lambda d: d["thresholds"].update(max_lesion_normal_prob=0.0), "max_lesion_normal_prob"),
        (lambda d: d["thresholds"].update(max_lesion_normal_prob=1.5), "max_lesion_normal_prob"),
        (lambda d: d["thresholds"].update(max_lesion_normal_prob="x"), "max_lesion_normal_prob"),
        (lambda d: d["roi"].update(policy="fixed"), "roi"),
        (lambda d: d["head"]["w2"].update(shape=[4, 8]), "head"),
    ],
)
def test_metadata_errors_name_the_field(mutate, match) -> None:
    d = meta().to_dict()
    mutate(d)
    with pytest.raises(ModelError, match=match):
        Metadata.from_dict(d)


def test_metadata_limits_match_the_kernels() -> None:
    from sdk.artifact import MAX_INPUT_SIDE, MAX_SIGMA
    from sdk.kernels import _validate as V

    assert (MAX_INPUT_SIDE, MAX_SIGMA) == (V.MAX_SIDE, V.MAX_SIGMA)
    # the normalization bounds of sdk.artifact's from_dict: [1e-6, 1e6] for std, 1e6 for |mean|
    assert (V.MIN_STD, V.MAX_STD, V.MAX_MEAN) == (1e-6, 1e6, 1e6)


def test_metadata_from_numpy_typed_values() -> None:
    """Exporters round-trip to_dict() -> from_dict() with numpy scalars in it: accepted, and
    stored as plain Python numbers."""
    m = meta(input_size=(np.int64(256), np.int32(256)), mean=(np.float32(0.5), 0.0))
    m.min_lesion_area_px = np.int64(9)
    back = Metadata.from_dict(m.to_dict())
    assert back.input_size == (256, 256) and type(back.input_size[0]) is int
    assert back.min_lesion_area_px == 9 and type(back.min_lesion_area_px) is int


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(version=0), "version"),
        (lambda d: d["input"].update(channels=["image", "image"]), "channels"),
        (lambda d: d["input"].update(size=["256", 256]), r"input\.size\[0\]"),
        (lambda d: d["input"].update(sigma=9.0), "sigma"),
        (lambda d: d["head"].update(b1=encode_array(np.zeros(7, np.float32))), "head"),
        (lambda d: d["head"].update(b2=encode_array(np.full(3, np.nan, np.float32))), "head.b2"),
        (lambda d: d["outputs"].update(features=3), "outputs.features"),
        (lambda d: d["roi"].update(policy="fixed", box=[0, 0, 0, 5]), r"roi\.box\[2\]"),
        (lambda d: d["thresholds"].update(min_lesion_area_px=-1), "min_lesion_area_px"),
        (lambda d: d["thresholds"].update(min_lesion_area_frac=1.0), "min_lesion_area_frac"),
        (lambda d: d["thresholds"].update(min_lesion_area_frac=-0.1), "min_lesion_area_frac"),
        (lambda d: d["thresholds"].update(min_lesion_area_frac="x"), "min_lesion_area_frac"),
        (lambda d: d.update(provenance=[1]), "provenance"),
        (
            lambda d: d.update(extra={"x": [[[[]]]]} | {"y": json.loads("[" * 70 + "]" * 70)}),
            "deep",
        ),
    ],
)
def test_more_metadata_errors_name_the_field(mutate, match) -> None:
    d = meta().to_dict()
    mutate(d)
    with pytest.raises(ModelError, match=match) as e:
        Metadata.from_json(json.dumps(d))
    assert "re-export" in str(e.value)


def test_onnx_metadata_not_utf8_is_a_model_error() -> None:
    """ONNX Runtime decodes metadata_props as UTF-8 and raises UnicodeDecodeError on a bad byte."""

    class Meta:
        @property
        def custom_metadata_map(self):
            return b'{"\xff"}'.decode()

    class Session:
        def get_modelmeta(self):
            return Meta()

    with pytest.raises(ModelError, match=r"UTF-8.*re-export"):
        read_onnx_metadata(Session(), "m.onnx")


def test_plan_boundary_must_end_the_metadata_object(tmp_path) -> None:
    """Lengths moved together over an engine starting with whitespace (same sum, same digest):
    the metadata would still parse, so the closing-brace check is what refuses it."""
    raw = write_plan(tmp_path / "m.plan", meta(), b"\n\t ENGINE").read_bytes()
    magic, version, m, e, digest = struct.unpack("<8sIQQ32s", raw[:60])
    bad = tmp_path / "bad.plan"
    for shift in (1, 2, 3):
        bad.write_bytes(
            struct.pack("<8sIQQ32s", magic, version, m + shift, e - shift, digest) + raw[60:]
        )
        with pytest.raises(ModelError, match="lengths"):
            read_plan(bad)
    assert read_plan(tmp_path / "m.plan")[1] == b"\n\t ENGINE"


def test_metadata_not_json() -> None:
    with pytest.raises(ModelError, match="JSON"):
        Metadata.from_json(b"\xff\x00{")


def test_plan_round_trip(tmp_path) -> None:
    engine = bytes(range(256)) * 10
    path = write_plan(
        tmp_path / "m.plan", meta(tensorrt={"version": "10.3.0", "gpu": "Orin"}), engine
    )
    m, e = read_plan(path)
    assert e == engine and m.tensorrt["gpu"] == "Orin"
    assert path.read_bytes()[:8] == PLAN_MAGIC
    assert not list(tmp_path.glob("*.tmp"))


def test_plan_errors(tmp_path) -> None:
    path = write_plan(tmp_path / "m.plan", meta(), b"ENGINE" * 100)
    raw = path.read_bytes()
    with pytest.raises(ModelError, match="cannot open"):
        read_plan(tmp_path / "missing.plan")
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"XXXXXXXX" + raw[8:])
    with pytest.raises(ModelError, match="magic"):
        read_plan(bad)
    bad.write_bytes(raw[:8] + struct.pack("<I", 7) + raw[12:])
    with pytest.raises(ModelError, match="newer"):
        read_plan(bad)
    bad.write_bytes(raw[:12] + struct.pack("<Q", 2**62) + raw[20:])
    with pytest.raises(ModelError, match="lengths"):
        read_plan(bad)
    flipped = bytearray(raw)
    flipped[-5] ^= 0x40
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ModelError, match="checksum"):
        read_plan(bad)
    bad.write_bytes(raw[:30])
    with pytest.raises(ModelError, match=r"truncated|lengths"):
        read_plan(bad)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_plan_fuzz_never_crashes(tmp_path_factory, data) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = bytearray(write_plan(tmp / "m.plan", meta(), b"E" * 300).read_bytes())
    op = data.draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif op == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    p = tmp / "f.plan"
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelError):
        read_plan(p)


def test_onnx_metadata_through_onnxruntime(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["input"], ["mask_logits"])
    node2 = helper.make_node("ReduceMean", ["input"], ["class_logits"], axes=[2, 3], keepdims=0)
    g = helper.make_graph(
        [node, node2],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])],
        [
            helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, [1, 1]),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="no sonoedge metadata"):
        read_onnx_metadata(ort.InferenceSession(str(path)), str(path))
    m = meta(channels=("image",), mean=(0.0,), std=(1.0,))
    onnx.helper.set_model_props(model, {METADATA_KEY: m.to_json()})
    onnx.save(model, path)
    back = read_onnx_metadata(ort.InferenceSession(str(path)), str(path))
    assert back.channels == ("image",) and back.provenance == {"teacher": "mtl_oca"}
    assert read_onnx_file_metadata(path).to_json() == back.to_json()  # the file-level reader
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"junk\.onnx: ONNX Runtime cannot load it"):
        read_onnx_file_metadata(tmp_path / "junk.onnx")
