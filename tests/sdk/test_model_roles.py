"""Model outputs checked against their metadata roles (issue #14).

Each bad model is the default model with nodes appended by ``onnx.helper`` and its roles
remapped in the metadata, then re-stamped (so the role check, not the integrity digest, is what
refuses it). Before the fix, ``mask_logits`` mapped to ``features`` ran and answered 3 lesions
over 76,675 px; a ``features`` output with a zero-width axis killed the process (SIGSEGV in the
pooling kernel); NaN features answered ``normal`` with the head's bias softmax.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdk
from sdk.analyzer import default_model
from sdk.artifact import DIGEST_KEY, METADATA_KEY, stamp_onnx_digest
from sdk.errors import ModelError
from sdk.result import Result

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from sdk import synthetic

    # A phantom the shipped default finds its lesion in (the default is retrained from time to
    # time; the roles tests need a frame with a lesion, not this particular one).
    img, _, _ = synthetic.phantom("malignant", size=(120, 160), seed=3)
    return img


def _model(
    tmp_path: Path,
    nodes: list[Any] = (),
    outputs: list[Any] = (),
    inits: list[np.ndarray | tuple[str, np.ndarray]] = (),
    roles: dict[str, str | None] | None = None,
    meta_edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """The default model plus ``nodes`` / graph ``outputs`` / initializers, roles remapped."""
    m = onnx.load(str(default_model()))
    for name, arr in inits:
        m.graph.initializer.append(numpy_helper.from_array(arr, name))
    m.graph.node.extend(nodes)
    m.graph.output.extend(outputs)
    props = {p.key: p.value for p in m.metadata_props}
    props.pop(DIGEST_KEY, None)
    d = json.loads(props[METADATA_KEY])
    if roles:
        d["outputs"].update(roles)
    if meta_edit:
        meta_edit(d)
    props[METADATA_KEY] = json.dumps(d)
    helper.set_model_props(m, props)
    p = tmp_path / "roles.onnx"
    onnx.save(m, str(p))
    stamp_onnx_digest(p)
    return p


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _slice(src: str, dst: str, axis: int, start: int, end: int) -> list[Any]:
    return [
        (f"{dst}_s", _i64(start)),
        (f"{dst}_e", _i64(end)),
        (f"{dst}_a", _i64(axis)),
    ], helper.make_node("Slice", [src, f"{dst}_s", f"{dst}_e", f"{dst}_a"], [dst])


def _out(name: str, shape: list[Any], elem: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def _load_or_run(path: Path, frame: np.ndarray) -> Result | ModelError:
    try:
        with sdk.Analyzer(path, threads=1) as a:
            return a.run(frame)
    except ModelError as e:
        return e


def test_default_model_roles_are_accepted(tmp_path, frame) -> None:
    res = _load_or_run(_model(tmp_path), frame)
    assert isinstance(res, Result) and res.lesions


@pytest.mark.parametrize(
    "shape",
    [["batch", 64, 8, 0], ["b", "f", "h", "w"]],
    ids=["static-zero", "dynamic"],
)
def test_zero_width_features_are_a_model_error(tmp_path, frame, shape) -> None:
    """Issue #14's SIGSEGV: features sliced to width 0. Declared statically: refused at load;
    declared dynamic: refused on the first frame, before the pooling kernel."""
    inits, node = _slice("features", "features_w0", 3, 0, 0)
    p = _model(tmp_path, [node], [_out("features_w0", shape)], inits, {"features": "features_w0"})
    err = _load_or_run(p, frame)
    assert isinstance(err, ModelError), err
    assert "features_w0" in str(err) and str(p) in str(err)
    if shape[3] == 0:
        with pytest.raises(ModelError, match="size 0"):
            sdk.Analyzer(p, threads=1).load()


def test_mask_logits_mapped_to_features_is_refused_at_load(tmp_path) -> None:
    """The issue's reproducer: it ran and answered 3 lesions over 76,675 px."""
    p = _model(tmp_path, roles={"features": "mask_logits"})
    with pytest.raises(ModelError, match=r"outputs\.mask_logits and outputs\.features"):
        sdk.Analyzer(p, threads=1).load()


def test_swapped_mask_and_features_are_refused_at_load(tmp_path) -> None:
    p = _model(tmp_path, roles={"features": "mask_logits", "mask_logits": "features"})
    with pytest.raises(ModelError, match=r"outputs\.features\) has 1 on its 'F' axis"):
        sdk.Analyzer(p, threads=1).load()


def test_features_of_the_wrong_width_are_refused_at_load(tmp_path) -> None:
    """F = 32 channels where the head takes 64."""
    inits, node = _slice("features", "f32", 1, 0, 32)
    p = _model(tmp_path, [node], [_out("f32", ["batch", 32, 8, 8])], inits, {"features": "f32"})
    with pytest.raises(ModelError, match=r"has 32 on its 'F' axis .* needs 64"):
        sdk.Analyzer(p, threads=1).load()


def test_short_class_head_is_refused_at_load(tmp_path) -> None:
    inits, node = _slice("class_logits", "cl2", 1, 0, 2)
    p = _model(tmp_path, [node], [_out("cl2", ["batch", 2])], inits, {"class_logits": "cl2"})
    with pytest.raises(ModelError, match=r"has 2 on its 'classes' axis .* needs 3"):
        sdk.Analyzer(p, threads=1).load()


def test_features_of_the_wrong_rank_are_refused_at_load(tmp_path) -> None:
    """Pooled (B, F) features where the role is the (B, F, hf, wf) map."""
    node = helper.make_node("ReduceMean", ["features"], ["f2d"], axes=[2, 3], keepdims=0)
    p = _model(tmp_path, [node], [_out("f2d", ["batch", 64])], roles={"features": "f2d"})
    with pytest.raises(ModelError, match=r"rank 4"):
        sdk.Analyzer(p, threads=1).load()


def test_mask_logits_without_a_batch_axis_is_refused_at_load(tmp_path) -> None:
    node = helper.make_node("Squeeze", ["mask_logits", "sq_axes"], ["mask3"])
    p = _model(
        tmp_path,
        [node],
        [_out("mask3", ["batch", 32, 32])],
        [("sq_axes", _i64(1))],
        {"mask_logits": "mask3"},
    )
    with pytest.raises(ModelError, match=r"rank 4"):
        sdk.Analyzer(p, threads=1).load()


def test_double_features_are_refused_at_load(tmp_path) -> None:
    node = helper.make_node("Cast", ["features"], ["f64"], to=TensorProto.DOUBLE)
    p = _model(
        tmp_path,
        [node],
        [_out("f64", ["batch", 64, 8, 8], TensorProto.DOUBLE)],
        roles={"features": "f64"},
    )
    with pytest.raises(ModelError, match="f64"):
        sdk.Analyzer(p, threads=1).load()


def test_features_without_head_weights_are_refused_at_load(tmp_path) -> None:
    def drop_head(d: dict[str, Any]) -> None:
        d["head"] = None

    p = _model(tmp_path, meta_edit=drop_head)
    with pytest.raises(ModelError, match="no head weights"):
        sdk.Analyzer(p, threads=1).load()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_a_model_error(tmp_path, frame, bad) -> None:
    """NaN features answered lesions 'normal {0.369, 0.331, 0.3}' (the head's bias softmax)."""
    node = helper.make_node("Add", ["features", "nan_c"], ["f_nan"])
    p = _model(
        tmp_path,
        [node],
        [_out("f_nan", ["batch", 64, 8, 8])],
        [("nan_c", np.array([bad], np.float32))],
        {"features": "f_nan"},
    )
    with sdk.Analyzer(p, threads=1) as a, pytest.raises(ModelError, match="NaN or inf") as info:
        a.run(frame)
    assert "f_nan" in str(info.value) and str(p) in str(info.value)
