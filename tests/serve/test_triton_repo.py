"""`sonoedge triton-repo`: the repository for NVIDIA's full Triton server, its config.pbtxt
parsed against Triton's own schema (model_config.proto as compiled in tritonclient, from the
serve environment) and checked against the ONNX graph (issue #18 item 2). The Triton container
itself is not run here."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
import pytest

from sdk import default_model
from sdk.artifact import read_onnx_file_metadata, write_plan

SONOEDGE = [sys.executable, "-c", "import sys; from sdk.cli import main; sys.exit(main())"]

PARSE = r"""
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
out = {}
for path in sys.argv[1:]:
    cfg = text_format.Parse(open(path).read(), mc.ModelConfig())   # raises on any unknown field
    out[path] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
print(json.dumps(out))
"""


def _parse(serve_python: str, paths: list[str]) -> dict:
    r = subprocess.run(
        [serve_python, "-c", PARSE, *paths], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.mark.serve
def test_repository_matches_triton_schema_and_the_graph(serve_python, tmp_path):
    model = default_model()
    md = read_onnx_file_metadata(model)
    plan = tmp_path / "model.plan"
    write_plan(plan, md, b"RAW-TENSORRT-ENGINE-BYTES")  # the container; the payload verbatim
    out = tmp_path / "repo"
    r = subprocess.run(
        [*SONOEDGE, "triton-repo", str(model), "--out", str(out), "--plan", str(plan)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    onnx_cfg = out / "sonoedge_onnx" / "config.pbtxt"
    trt_cfg = out / "sonoedge_trt" / "config.pbtxt"
    cfgs = _parse(serve_python, [str(onnx_cfg), str(trt_cfg)])
    c_onnx, c_trt = cfgs[str(onnx_cfg)], cfgs[str(trt_cfg)]
    assert (c_onnx["platform"], c_onnx["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    assert (c_trt["platform"], c_trt["backend"]) == ("tensorrt_plan", "tensorrt")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for c in (c_onnx, c_trt):
        assert int(c["max_batch_size"]) == 8
        assert int(c["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
        assert c["instance_group"][0]["kind"] == "KIND_GPU"
        for tensors, decl in ((sess.get_inputs(), c["input"]), (sess.get_outputs(), c["output"])):
            assert [t.name for t in tensors] == [d["name"] for d in decl]
            for t, d in zip(tensors, decl, strict=True):
                assert d["data_type"] == "TYPE_FP32" and t.type == "tensor(float)"
                assert [int(x) for x in d["dims"]] == list(t.shape[1:])  # batch axis dropped
        meta = json.loads(c["parameters"]["sonoedge_metadata"]["string_value"])
        assert meta["class_names"] == list(md.class_names)
        assert meta["input_size"] == list(md.input_size)
    assert (out / "sonoedge_onnx" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert (out / "sonoedge_trt" / "1" / "model.plan").read_bytes() == b"RAW-TENSORRT-ENGINE-BYTES"
    full = json.loads((out / "sonoedge_onnx" / "metadata.json").read_text())
    assert full["class_names"] == list(md.class_names)
    assert "was not run" in (out / "README.md").read_text()


def test_without_plan_says_how_to_build_the_engine(tmp_path):
    from export.triton_repo import write_triton_repo

    w = write_triton_repo(default_model(), tmp_path / "r", name="breast", onnx_kind="cpu")
    assert set(w["models"]) == {"breast_onnx", "breast_trt"}
    text = (tmp_path / "r" / "breast_trt" / "BUILD_ENGINE.md").read_text()
    assert "trtexec --onnx=../breast_onnx/1/model.onnx" in text
    assert "--maxShapes=input:8x1x128x128" in text
    assert not (tmp_path / "r" / "breast_trt" / "1" / "model.plan").exists()
    assert "kind: KIND_CPU" in (tmp_path / "r" / "breast_onnx" / "config.pbtxt").read_text()


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "x.txt").write_text("no")
    for args in (
        [str(tmp_path / "x.txt"), "--out", str(tmp_path / "o")],
        [str(default_model()), "--out", str(tmp_path / "o"), "--name", "a b"],
    ):
        r = subprocess.run(
            [*SONOEDGE, "triton-repo", *args], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 1 and "Traceback" not in r.stderr and "error" in r.stderr
    r = subprocess.run(
        [*SONOEDGE, "triton-repo", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "Triton container itself" in r.stdout.replace("\n", " ")
