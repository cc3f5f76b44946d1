"""The out-of-scope score and the probability temperature (sdk/scope.py): maths against a NumPy
reference, the metadata blocks, old artifacts, the Analyzer and the overlay."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sdk
from sdk import synthetic
from sdk.artifact import Metadata, read_onnx_file_metadata
from sdk.errors import ModelError
from sdk.result import Result
from sdk.scope import (
    OUT_OF_SCOPE,
    Scope,
    ece,
    fit_scope,
    fit_temperature,
    softmax,
    summary,
)


def _zs(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a.T + rng.normal(size=d)


def test_summary_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4, 3)).astype(np.float32)
    c = rng.normal(size=3).astype(np.float32)
    z = summary(f, c, ("gap", "std", "class_logits"))
    ref = np.concatenate([f.reshape(5, -1).mean(1), f.reshape(5, -1).std(1), c])
    np.testing.assert_allclose(z, ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        summary(None, c, ("gap",))


def test_distance_is_mahalanobis_with_shrunk_covariance() -> None:
    fit, held = _zs(400, 6, 1), _zs(100, 6, 2)
    s = fit_scope(fit, held, summaries=("class_logits",), shrink=0.1)
    c = np.cov(fit, rowvar=False)
    c = 0.9 * c + 0.1 * np.trace(c) / 6 * np.eye(6)
    p = np.linalg.inv(c)
    for z in _zs(5, 6, 3):
        v = z - fit.mean(0)
        assert s.distance(None, z) == pytest.approx(float(v @ p @ v), rel=1e-6)
    ref = np.sort([(z - fit.mean(0)) @ p @ (z - fit.mean(0)) for z in held])
    np.testing.assert_allclose(s.heldout_d2, ref, rtol=1e-6)
    assert s.threshold == pytest.approx(np.quantile(ref, 0.99))


def test_fast_distance_equals_reference() -> None:
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(40, 4, 3, 3)).astype(np.float32)
    logits = rng.normal(size=(40, 3)).astype(np.float32)
    zs = np.stack(
        [summary(f, c, ("gap", "std", "class_logits")) for f, c in zip(feats, logits, strict=True)]
    )
    s = fit_scope(zs[:30], zs[30:])
    assert s._fast and s._native is not None  # the compiled kernel serves this scope
    numpy_path = fit_scope(zs[:30], zs[30:])
    numpy_path._native = None
    for f, c in zip(feats, logits, strict=True):
        v = s.whiten @ (summary(f, c, s.summaries) - s.mean)
        assert s.distance(f, c) == pytest.approx(float(v @ v), rel=1e-6, abs=1e-9)
        assert numpy_path.distance(f, c) == pytest.approx(float(v @ v), rel=1e-6, abs=1e-9)
        # Non-contiguous / float64 inputs take the same values through the kernel.
        f64 = np.asfortranarray(f.astype(np.float64))
        assert s.distance(f64, c.astype(np.float64)) == pytest.approx(float(v @ v), rel=1e-6)
    # Without class logits in the summaries (gap + std only) the kernel gets None.
    zs2 = zs[:, : 2 * feats.shape[1]]
    s2 = fit_scope(zs2[:30], zs2[30:], summaries=("gap", "std"))
    assert s2._native is not None
    v = s2.whiten @ (summary(feats[0], None, ("gap", "std")) - s2.mean)
    assert s2.distance(feats[0], None) == pytest.approx(float(v @ v), rel=1e-6)
    with pytest.raises(ValueError, match="class_logits"):
        s.distance(feats[0], None)


def test_scope_distance_kernel_refuses_bad_arrays() -> None:
    """The binding checks every shape and dtype (a wrong call is an InputError, never a read
    past an array)."""
    from sdk.errors import InputError
    from sdk.kernels import _native

    k = _native().scope_distance_cpu
    f = np.zeros((4, 3, 3), np.float32)
    c = np.zeros(3, np.float32)
    w, wm = np.eye(11), np.zeros(11)
    assert k(f, c, w, wm) == 0.0
    bad = [
        (f.astype(np.float64), c, w, wm),  # features dtype
        (f[:, :, ::2], c, w, wm),  # not contiguous
        (f[0], c, w, wm),  # rank
        (f, c.astype(np.float64), w, wm),  # logits dtype
        (f, c[None], w, wm),  # logits rank
        (f, c, np.eye(10), wm),  # D != 2F + K
        (f, c, w.astype(np.float32), wm),  # whiten dtype
        (f, c, np.asfortranarray(np.ones((11, 11))), wm),  # whiten layout
        (f, c, w, np.zeros(10)),  # wm size
        (np.zeros((0, 3, 3), np.float32), None, np.eye(0), np.zeros(0)),  # empty
    ]
    for args in bad:
        with pytest.raises(InputError):
            k(*args)
    assert k(f, None, np.eye(8), np.zeros(8)) == 0.0


def test_p_value_and_threshold() -> None:
    s = Scope(
        mean=[0.0],
        whiten=[[1.0]],
        threshold=2.5,
        heldout_d2=[1, 2, 3, 4],
        summaries=("class_logits",),
    )
    assert s.p_value(0.5) == 1.0 and s.p_value(2.0) == 0.75 and s.p_value(9.0) == 0.0
    assert s.score(None, np.array([1.0]))[:2] == (True, 1.0)  # d2 = 1
    ok, p, d2 = s.score(None, np.array([2.0]))  # d2 = 4 > 2.5
    assert (ok, p, d2) == (False, 0.25, 4.0)
    assert s.score(None, np.array([np.nan]))[:2] == (False, 0.0)


def test_temperature_fit_and_ece() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(4000, 3)) * 3.0
    y = np.array([rng.choice(3, p=p) for p in softmax(z, 2.0)])  # true temperature 2
    t = fit_temperature(z, y)
    assert 1.7 < t < 2.3
    assert ece(softmax(z, t), y) < ece(softmax(z, 1.0), y)
    assert ece(softmax(z, t), y) < 0.03
    assert ece(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def _md(scope: dict | None, calibration: dict | None) -> Metadata:
    return Metadata(
        arch="t",
        class_names=("normal", "benign", "malignant"),
        channels=("image",),
        input_size=(32, 32),
        mean=(0.5,),
        std=(0.5,),
        scope=scope,
        calibration=calibration,
    )


def test_metadata_round_trip_and_validation() -> None:
    s = fit_scope(_zs(50, 3, 5), _zs(20, 3, 6), summaries=("class_logits",))
    md = _md(s.to_dict(), {"version": 1, "temperature": 2.5})
    back = Metadata.from_json(md.to_json())
    s2 = Scope.from_dict(back.scope)
    np.testing.assert_array_equal(s2.mean.astype(np.float32), s.mean.astype(np.float32))
    np.testing.assert_array_equal(s2.whiten.astype(np.float32), s.whiten.astype(np.float32))
    assert s2.threshold == s.threshold and s2.summaries == ("class_logits",)
    assert back.calibration["temperature"] == 2.5
    # An old artifact: no block at all.
    d = json.loads(md.to_json())
    del d["scope"], d["calibration"]
    old = Metadata.from_dict(d)
    assert old.scope is None and old.calibration is None
    # Broken blocks fail at load, naming the field.
    bad = json.loads(md.to_json())
    bad["scope"]["whiten"] = s.to_dict()["mean"]
    with pytest.raises(ModelError, match=r"scope\.whiten"):
        Metadata.from_dict(bad)
    bad = json.loads(md.to_json())
    bad["scope"]["version"] = 99
    with pytest.raises(ModelError, match="newer"):
        Metadata.from_dict(bad)
    bad = json.loads(md.to_json())
    bad["calibration"]["temperature"] = float("inf")
    with pytest.raises(ModelError, match="temperature"):
        Metadata.from_dict(bad)
    bad = json.loads(md.to_json())
    bad["scope"]["summaries"] = ["gap"]  # reads features, which the model has none of
    bad["scope"]["mean"] = s.to_dict()["mean"]
    with pytest.raises(ModelError, match="features"):
        Metadata.from_dict(bad)


def _fitted_default() -> sdk.Analyzer:
    path = sdk.default_model()
    if read_onnx_file_metadata(path).scope is None:
        pytest.skip("the shipped default carries no scope block yet")
    return sdk.Analyzer(path).load()


def test_blank_frame_flagged_phantom_in_scope() -> None:
    a = _fitted_default()
    r = a.run(np.zeros((480, 640), np.uint8))
    assert not r.in_scope and r.label == OUT_OF_SCOPE
    assert r.probs == {} and r.lesions == [] and not r.mask.any() and r.confidence == 0.0
    assert set(r.raw_probs) == set(a.class_names) and 0.0 <= r.scope_score < 0.01
    d = r.to_dict()
    assert d["in_scope"] is False and d["label"] == OUT_OF_SCOPE
    # The early out-of-scope return (no mask / lesion work) keeps the model's own image-level
    # probabilities: the same as the full post-processing gives for that frame.
    full = sdk.Analyzer(sdk.default_model()).load()
    full.pipeline.scope = None
    assert full.run(np.zeros((480, 640), np.uint8)).raw_probs == pytest.approx(r.raw_probs)
    img, _, _ = synthetic.phantom("malignant", (600, 800), seed=123)
    r = a.run(img)
    assert r.in_scope and r.label in a.class_names and 0.0 < r.scope_score <= 1.0
    assert sum(r.raw_probs.values()) == pytest.approx(1.0)


def test_old_artifact_without_blocks(tmp_path) -> None:
    from export.onnx_export import embed_metadata

    path = tmp_path / "old.onnx"
    shutil.copy(sdk.default_model(), path)
    md = read_onnx_file_metadata(path)
    md.scope = md.calibration = None
    embed_metadata(path, md)
    a = sdk.Analyzer(path).load()
    r = a.run(np.zeros((480, 640), np.uint8))
    assert r.in_scope is True and r.scope_score is None and r.label in a.class_names
    assert r.to_dict()["scope_score"] is None


def _result(in_scope: bool) -> Result:
    return Result(
        mask=np.zeros((120, 320), np.uint8),
        label="normal" if in_scope else OUT_OF_SCOPE,
        probs={"normal": 1.0} if in_scope else {},
        lesions=[],
        frame_index=0,
        timestamp=None,
        timings={},
        roi=(0, 0, 320, 120),
        in_scope=in_scope,
        scope_score=0.5 if in_scope else 0.0,
    )


def test_overlay_text_out_of_scope() -> None:
    frame = np.full((120, 320), 60, np.uint8)
    out = _result(False).overlay(frame)
    orange = np.all(out == (0, 165, 255), axis=2)
    assert orange[:30].sum() > 50  # "not breast B-mode" drawn in orange at the top left
    assert not np.all(_result(True).overlay(frame) == (0, 165, 255), axis=2).any()
