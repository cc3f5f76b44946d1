"""sdk.Analyzer on real exported ONNX artifacts, through ONNX Runtime."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import sdk
import sdk.kernels as K
import sdk.kernels.reference as R
from sdk.analyzer import to_uint8
from sdk.errors import InputError, ModelError
from sdk.pipeline import StagedFrame


def test_run_finds_the_cyst(tiny_onnx, phantom_frame) -> None:
    img, gt = phantom_frame
    with sdk.Analyzer(tiny_onnx, threads=1) as a:
        r = a.run(img)
    assert r.mask.shape == img.shape and r.mask.dtype == np.uint8
    inter = np.logical_and(r.mask > 0, gt > 0).sum()
    assert inter / max((gt > 0).sum(), 1) > 0.5  # the dark cyst is found
    assert r.lesions and all(les.per_lesion is False for les in r.lesions)
    assert set(r.timings) == {"preprocess", "infer", "postprocess", "total"}
    assert abs(sum(r.probs.values()) - 1) < 1e-6 and r.label in r.probs
    filled = np.zeros_like(r.mask)
    for les in r.lesions:
        x, y, w, h = les.bbox
        assert 0 <= x < img.shape[1] and 0 <= y < img.shape[0] and w > 0 and h > 0
        # The region's pixels (the grid component passed min_lesion_area_px as cells).
        assert les.area_px >= 1 and les.area_mm2 is None
        assert les.area_px == r.mask[y : y + h, x : x + w].sum() or len(r.lesions) > 1
        cv2.fillPoly(filled, [c.reshape(-1, 1, 2) for c in (les.contour, *les.other_contours)], 1)
    # The outlines enclose the mask (holes aside: the fill covers them).
    assert (filled >= r.mask).all() and sum(les.area_px for les in r.lesions) == r.mask.sum()
    json.dumps(r.to_dict())
    ov = r.overlay(img)
    assert ov.shape == (*img.shape, 3) and ov.dtype == np.uint8


def test_per_lesion_labels_come_from_the_pooling_kernel(tiny_features_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    a = sdk.Analyzer(tiny_features_onnx).load()
    r = a.run(img, pixel_spacing_mm=(0.1, 0.1))
    assert r.lesions and all(les.per_lesion for les in r.lesions)
    # Recompute with the kernel directly from the model outputs.
    x = K.preprocess(img, size=(128, 128), channels=("image", "gdm"))
    out = a.backend.infer(x[None])
    prob = 1 / (1 + np.exp(-out["mask_logits"][0, 0]))
    assert r.lesions[0].area_mm2 == pytest.approx(r.lesions[0].area_px * 0.01)
    # The flood-fill reference (labels in raster order), not the kernel the Analyzer calls.
    scale = (img.shape[1] / 32, img.shape[0] / 32)  # 128 / 4 = 32: model-res mask grid
    comp = R.lesion_components(out["mask_logits"], 0.5, scale, min_area=50)
    head = K.MLPHead(**a.metadata.head)
    ref = K.pool_classify(out["features"][0], prob, comp.labels, comp.count, head)
    # Components whose cells leave no pixel above the threshold at frame resolution are no
    # lesion (their region is empty); the others keep their order.
    kept = K.lesion_outlines(r.mask, comp.labels, None, comp.count).areas > 0
    assert len(r.lesions) == kept.sum() > 0
    for les, p in zip(r.lesions, ref.probs[1:][kept], strict=True):
        np.testing.assert_allclose(list(les.raw_probs.values()), p, atol=1e-6)
        # The label rule: renormalized over benign / malignant.
        np.testing.assert_allclose(list(les.probs.values()), [0, *p[1:] / p[1:].sum()], atol=1e-6)
    a.close()


def test_roi_and_smoothing(tiny_onnx, phantom_frame) -> None:
    img, _ = phantom_frame
    a = sdk.Analyzer(tiny_onnx, smoothing=0.6)
    r1 = a.run(img, roi=(50, 40, 300, 220))
    assert not r1.mask[:40].any() and not r1.mask[:, :50].any() and not r1.mask[:, 350:].any()
    r2 = a.run(np.ascontiguousarray(img[::-1]))
    assert r1.lesions and r2.lesions  # the EMA of the rule's probabilities, renormalized
    q1, q2 = (np.array(list(r.lesions[0].probs.values())) for r in (r1, r2))
    assert r1.probs == pytest.approx(dict(zip(r1.probs, q1, strict=True)), abs=1e-12)
    want = 0.6 * q1 + 0.4 * q2
    np.testing.assert_allclose(list(r2.probs.values()), want / want.sum(), atol=1e-9)
    assert (r1.frame_index, r2.frame_index) == (0, 1)
    a.reset()
    assert a.run(img).frame_index == 0


def test_frame_conversions() -> None:
    f16 = np.full((4, 4), 4095, np.uint16)
    assert to_uint8(f16, 12).max() == 255
    assert to_uint8(f16).max() == 15  # 16-bit full scale by default
    assert to_uint8(np.full((2, 2), 0.5)).max() == 128
    assert to_uint8(np.ones((2, 2), bool)).max() == 255
    for bad, bits, match in [
        (np.full((2, 2), np.nan), None, "NaN"),
        (np.full((2, 2), 2.0), None, r"\[0, 1\]"),
        (np.zeros((0, 3), np.uint8), None, "empty"),
        (np.zeros((2, 2, 2), np.uint8), None, "frame must be"),
        (np.full((2, 2), 5000, np.uint16), 12, "bit"),
        ([[1, 2]], None, "numpy"),
        (np.zeros((2, 2), complex), None, "dtype"),
    ]:
        with pytest.raises(InputError, match=match):
            to_uint8(bad, bits)


def test_bad_artifacts(tmp_path, tiny_onnx) -> None:
    with pytest.raises(ModelError, match="no such artifact"):
        sdk.Analyzer(tmp_path / "missing.onnx").load()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load"):
        sdk.Analyzer(bad).load()
    with pytest.raises(InputError, match="backend"):
        sdk.Analyzer(tmp_path / "model.pt")
    with pytest.raises(InputError, match="precision"):
        sdk.default_model("int4")
    with pytest.raises(InputError, match="smoothing"):
        sdk.Analyzer(tiny_onnx, smoothing=1.0)


def test_onnx_without_metadata_is_refused(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from export.onnx_export import to_onnx_file

    class M(torch.nn.Module):
        output_names = ("mask_logits", "class_logits")

        def forward(self, x):
            return {"mask_logits": x[:, :1], "class_logits": x.mean((2, 3))}

    p = to_onnx_file(M(), (torch.rand(1, 3, 8, 8),), tmp_path / "plain.onnx")
    with pytest.raises(ModelError, match="no sonoedge metadata"):
        sdk.Analyzer(p).load()


def test_bad_frames_raise_input_error(tiny_onnx) -> None:
    a = sdk.Analyzer(tiny_onnx)
    for bad in (np.zeros((0, 0), np.uint8), np.zeros((3, 3, 7), np.uint8), np.full((5, 5), np.inf)):
        with pytest.raises(InputError):
            a.run(bad)
    with pytest.raises(InputError, match="roi"):
        a.run(np.zeros((50, 50), np.uint8), roi=(0, 0, 60, 60))
    assert a.run(np.zeros((50, 50), np.uint16)).mask.shape == (50, 50)


def test_plan_goes_to_tensorrt_and_says_why_it_cannot_run(tmp_path) -> None:
    from sdk.artifact import Metadata, write_plan
    from sdk.backends import available, choose_backend
    from sdk.errors import BackendUnavailableError

    assert choose_backend("x.plan").name == "tensorrt"
    ok, why = available()["tensorrt"]
    md = Metadata(
        arch="t",
        class_names=("normal", "benign", "malignant"),
        channels=("image",),
        input_size=(8, 8),
        mean=(0.0,),
        std=(1.0,),
        tensorrt={"version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"},
    )
    plan = write_plan(tmp_path / "m.plan", md, b"engine")
    if not ok:
        assert why
        with pytest.raises(BackendUnavailableError):
            sdk.Analyzer(plan).load()


def test_default_model(phantom_frame) -> None:
    from sdk.analyzer import DEFAULT_MODEL_DIR

    shipped = sorted(p.name for p in DEFAULT_MODEL_DIR.glob("default-*.onnx"))
    if not shipped:
        with pytest.raises(ModelError, match="embedded default"):
            sdk.Analyzer()
        return
    assert shipped == ["default-fp32.onnx", "default-int8.onnx", "default-refiner.onnx"]
    with sdk.Analyzer() as a:  # FP32 by default (measured faster and more accurate on CPU)
        assert a.metadata.precision == "fp32" and a.metadata.class_names[0] == "normal"
        r32 = a.run(phantom_frame[0])
    with sdk.Analyzer(sdk.default_model("int8")) as a:
        assert a.metadata.precision == "int8"
        q = a.metadata.provenance["quantization"]
        # the accuracy budget kept a few sensitive convolutions float (listed in the artifact)
        assert q["calibration"]["method"] == "percentile" and len(q["float_nodes"]) < 12
        r8 = a.run(phantom_frame[0])
    assert r32.mask.shape == r8.mask.shape == phantom_frame[0].shape
    inter = np.logical_and(r32.mask > 0, r8.mask > 0).sum()
    union = np.logical_or(r32.mask > 0, r8.mask > 0).sum()
    assert union == 0 or inter / union > 0.5  # the same lesion (accuracy: sdk/models/REPORT.md)


def test_run_batch_equals_run(tiny_features_onnx, phantom_frame) -> None:
    """run_batch: one model call per max_batch frames, the same results as run() frame by frame
    (smoothing across them included); a bad frame raises like run()."""
    img, _ = phantom_frame
    frames = [img, np.ascontiguousarray(img[::-1]), img[:, ::-1].copy()] * 4  # 12 > max_batch 8
    a = sdk.Analyzer(tiny_features_onnx, smoothing=0.4).load()
    assert a.backend.max_batch == 8
    calls: list[int] = []
    real = a.backend.infer
    a.backend.infer = lambda x: calls.append(x.shape[0]) or real(x)
    got = a.run_batch(frames)
    assert calls == [8, 4]
    b = sdk.Analyzer(tiny_features_onnx, smoothing=0.4).load()
    want = [b.run(f) for f in frames]
    assert [r.frame_index for r in got] == list(range(12))
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label and g.probs == pytest.approx(w.probs, abs=1e-5)
        assert (g.mask != w.mask).mean() < 1e-3
        assert [les.label for les in g.lesions] == [les.label for les in w.lesions]
    assert a.run_batch([]) == []
    with pytest.raises(InputError, match="NaN"):
        a.run_batch([img, np.full((4, 4), np.nan)])


def test_color_order_of_the_frame(tiny_onnx, phantom_frame) -> None:
    """color names the channel order of a BGR(A)/RGB(A) frame; an RGB frame analyzed as rgb
    equals its BGR twin analyzed as bgr; anything else is refused."""
    img, _ = phantom_frame
    rng = np.random.default_rng(3)
    bgr = np.clip(img[..., None].astype(np.int16) + rng.integers(-20, 20, (*img.shape, 3)), 0, 255)
    bgr = bgr.astype(np.uint8)
    a = sdk.Analyzer(tiny_onnx).load()
    r_bgr = a.run(bgr)
    a.reset()
    r_rgb = a.run(np.ascontiguousarray(bgr[..., ::-1]), color="rgb")
    assert r_bgr.probs == pytest.approx(r_rgb.probs, abs=1e-6)
    np.testing.assert_array_equal(r_bgr.mask, r_rgb.mask)
    for bad in ("gray", "hsv", None):
        with pytest.raises(InputError, match="color"):
            a.run(bgr, color=bad)


def _violations(r) -> list[str]:
    """Breaches of the label rule (sdk/result.py, Result) in one Result."""
    bad = [f"lesion {les.id} is normal" for les in r.lesions if les.label == "normal"]
    if r.lesions and r.label == "normal":
        bad.append("image normal beside a lesion")
    if not r.lesions and r.label != "normal":
        bad.append(f"image {r.label} without a lesion")
    if r.lesions:
        top = max(r.lesions, key=lambda les: les.probs["malignant"])
        if r.label != top.label:
            bad.append("image label is not the most suspicious lesion's")
    if r.probs[r.label] != max(r.probs.values()):
        bad.append("image label is not the argmax of its probs")
    return bad


def _outputs(a, mask_logits: np.ndarray, class_logits: list[float]) -> dict[str, np.ndarray]:
    md = a.metadata
    return {
        md.outputs["mask_logits"]: mask_logits.astype(np.float32)[None, None],
        md.outputs["class_logits"]: np.array([class_logits], np.float32),
    }


def _finish(a, outputs: dict[str, np.ndarray]):
    """The finish stage alone, on given model outputs of a 400x300 frame (whole-frame ROI)."""
    return a.pipeline.finish(StagedFrame(None, (300, 400), (0, 0, 400, 300), outputs=outputs))


def test_label_rule_overrides_a_normal_classifier(tiny_onnx) -> None:
    """A lesion whose classifier says normal is labelled by its other classes; the image takes the
    most suspicious lesion's class; with no lesion the image is normal whatever the classifier
    says (its view stays in raw_probs)."""
    a = sdk.Analyzer(tiny_onnx).load()
    lg = np.full((32, 32), -6.0)
    lg[4:10, 4:10] = 6.0  # one lesion of 36 cells of 12.5 x 9.4 px
    r = _finish(a, _outputs(a, lg, [3.0, 0.0, 1.0]))
    assert len(r.lesions) == 1 and not _violations(r)
    les = r.lesions[0]
    assert les.label == "malignant" and les.probs["normal"] == 0.0
    assert les.raw_probs["normal"] > 0.8 and r.raw_probs == pytest.approx(les.raw_probs)
    e = np.exp([0.0, 1.0])
    assert les.probs["malignant"] == pytest.approx(e[1] / e.sum())
    assert r.label == "malignant" and r.probs == pytest.approx(les.probs)
    # No lesion: normal, whatever the classifier's image-level output.
    r0 = _finish(a, _outputs(a, np.full((32, 32), -6.0), [0.0, 0.0, 5.0]))
    assert not r0.lesions and r0.label == "normal" and r0.probs["normal"] == 1.0
    assert r0.raw_probs["malignant"] > 0.9 and not _violations(r0)


def test_label_rule_holds_under_smoothing(tiny_onnx) -> None:
    """Frames alternating lesion / no lesion with the EMA on: the rule holds on every frame."""
    a = sdk.Analyzer(tiny_onnx, smoothing=0.8).load()
    lg = np.full((32, 32), -6.0)
    lg[10:16, 20:28] = 6.0
    empty = np.full((32, 32), -6.0)
    labels = []
    for i in range(8):
        z = [0.0, 2.0 - i, i - 2.0]  # the classifier drifts from benign to malignant
        r = _finish(a, _outputs(a, lg if i % 3 else empty, z))
        assert not _violations(r), (i, r.label, r.probs)
        assert sum(r.probs.values()) == pytest.approx(1.0)
        labels.append(r.label)
    assert labels[0] == "normal" and "malignant" in labels and "benign" in labels


def test_default_model_outlines_are_the_mask_and_labels_agree() -> None:
    """The shipped model on fresh 600x800 phantoms: the filled outlines are Result.mask, every
    lesion's outline lies in its own region, and the label rule holds."""
    from sdk.synthetic import phantom

    with sdk.Analyzer(None, threads=1) as a:
        for i, label in enumerate(["benign", "malignant", "normal", "malignant"]):
            img, _, _ = phantom(label, size=(600, 800), seed=8_100_000 + i)
            r = a.run(img)
            assert not _violations(r)
            filled = np.zeros_like(r.mask)
            for les in r.lesions:
                own = np.zeros_like(r.mask)
                cs = [c.reshape(-1, 1, 2) for c in (les.contour, *les.other_contours)]
                cv2.fillPoly(own, cs, 1)
                assert r.mask[own > 0].mean() > 0.95  # its outline encloses mask pixels
                filled |= own
            union = (filled | r.mask).sum()
            assert union == 0 or (filled & r.mask).sum() / union >= 0.99


# ---- issue #14: every constructor and run argument checked; close() is final ----------------


def test_constructor_arguments_are_type_and_range_checked(tiny_onnx) -> None:
    """Each bad argument: an InputError naming it (and how to fix it), before anything loads.
    threads=100000 loaded for minutes at 4.5 GB, threads=2**40 was an ORT TypeError, a bool or
    a string slipped through int() / float()."""
    import os

    most = 4 * (os.cpu_count() or 1)
    cases = {
        "threads": [0, -1, most + 1, 100000, 2**40, 2.0, "2", True, None.__class__],
        "threshold": [-0.1, 1.5, float("nan"), float("inf"), "0.5", True, [0.5]],
        "smoothing": [1.0, -0.01, float("nan"), "0.6", None, True],
        "bit_depth": [7, 33, 12.0, "12", True],
        "pixel_spacing_mm": [
            (-1, 2),
            (0, 0.1),
            (float("nan"), 1),
            (float("inf"), 1),
            "abc",
            (0.1,),
            (0.1, 0.1, 0.1),
            ("a", "b"),
            0.1,
            (True, 0.1),
            (1e9, 1),
        ],
        "backend": [3, None],
        "device": [0, None],
        "path": [3, 2.5, [tiny_onnx]],
    }
    for name, values in cases.items():
        for bad in values:
            kwargs = {"path": tiny_onnx, name: bad}
            with pytest.raises(InputError, match=name) as ei:
                sdk.Analyzer(**kwargs)
            assert len(str(ei.value)) > len(name) + 10, str(ei.value)  # says more than the name
    a = sdk.Analyzer(
        tiny_onnx,
        threads=most,
        threshold=1,
        smoothing=0,
        bit_depth=np.int64(12),
        pixel_spacing_mm=np.array([0.1, 0.2]),
    )
    assert a.threads == most and a.pixel_spacing_mm == (0.1, 0.2) and a.bit_depth == 12


def test_run_arguments_are_checked(tiny_onnx, phantom_frame) -> None:
    img = phantom_frame[0]
    with sdk.Analyzer(tiny_onnx) as a:
        for kwargs, name in [
            ({"pixel_spacing_mm": (-1, 2)}, "pixel_spacing_mm"),
            ({"pixel_spacing_mm": "abc"}, "pixel_spacing_mm"),
            ({"pixel_spacing_mm": (float("inf"), 1)}, "pixel_spacing_mm"),
            ({"pixel_spacing_mm": (0.1,)}, "pixel_spacing_mm"),
            ({"timestamp": float("nan")}, "timestamp"),
            ({"timestamp": "now"}, "timestamp"),
            ({"color": "hsv"}, "color"),
            ({"color": None}, "color"),
            ({"roi": (0, 0, 10)}, "roi"),
            ({"roi": "all"}, "roi"),
        ]:
            with pytest.raises(InputError, match=name):
                a.run(img, **kwargs)
        r = a.run(img, pixel_spacing_mm=(0.1, 0.2), timestamp=3)
        assert r.timestamp == 3.0
        assert all(les.area_mm2 == pytest.approx(les.area_px * 0.02) for les in r.lesions)


def test_pixel_spacing_never_makes_a_negative_or_infinite_area(tiny_onnx, phantom_frame) -> None:
    """(-1, 2) gave area_mm2 = -1640.6; inf wrote Infinity into frames.jsonl. Now refused in
    the constructor, per call, and per frame from a source's metadata."""
    img = phantom_frame[0]
    import json

    from sdk.sources import ArraySource, Frame, ImageSequenceSource

    with pytest.raises(InputError, match="pixel_spacing_mm"):
        sdk.Analyzer(tiny_onnx, pixel_spacing_mm=(-1, 2))
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        ArraySource(np.zeros((2, 8, 8), np.uint8), pixel_spacing_mm=(float("inf"), 1))
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        ImageSequenceSource(["x.png"], pixel_spacing_mm="abc")
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        _ = Frame(img, 0, None, {"pixel_spacing_mm": (0.1,)}).pixel_spacing_mm
    with sdk.Analyzer(tiny_onnx, pixel_spacing_mm=(0.1, 0.1)) as a:
        r = a.run(img)
        assert r.lesions and all(les.area_mm2 > 0 for les in r.lesions)
        json.dumps(r.to_dict(), allow_nan=False)


def test_model_output_errors_are_model_errors(tiny_onnx, phantom_frame) -> None:
    """Outputs the post-processing cannot read (a short class head, no batch axis) raised raw
    ValueError / TypeError / IndexError; now a ModelError naming the model."""
    img = phantom_frame[0]
    from sdk.errors import ModelError

    with sdk.Analyzer(tiny_onnx) as a:
        real = a.backend.infer
        good = real(np.zeros((1, *a.pipeline.input_shape), a.pipeline.input_dtype))
        bad_outputs = [
            {**good, "class_logits": good["class_logits"][:, :2]},  # a short class head
            {**good, "class_logits": good["class_logits"][0]},  # no batch axis
            {**good, "mask_logits": good["mask_logits"][0, 0]},  # no batch / channel axes
        ]
        for bad in bad_outputs:
            a.backend.infer = lambda x, bad=bad: bad
            with pytest.raises(ModelError, match="outputs") as ei:
                a.run(img)
            assert isinstance(ei.value.__cause__, ValueError | TypeError | IndexError)
        a.backend.infer = real
        assert a.run(img).mask.shape == img.shape[:2]


def test_run_after_close_raises_instead_of_reloading(tiny_onnx, phantom_frame) -> None:
    """close() is final: run() after it silently reloaded the model before; now a clear
    AnalyzerClosedError (an InputError), also from load(), run_batch() and stream()."""
    img = phantom_frame[0]
    from sdk.analyzer import AnalyzerClosedError

    a = sdk.Analyzer(tiny_onnx)
    a.run(img)
    a.close()
    assert a.closed and not a.backend.loaded
    for call in (
        lambda: a.run(img),
        a.load,
        lambda: a.run_batch([img]),
        lambda: next(a.stream([img])),
    ):
        with pytest.raises(AnalyzerClosedError, match=r"closed.*new sdk\.Analyzer"):
            call()
    assert not a.backend.loaded  # nothing reloaded behind the caller's back
    a.close()  # idempotent
    with sdk.Analyzer(tiny_onnx) as b:
        b.run(img)
    with pytest.raises(AnalyzerClosedError):
        b.run(img)


def test_relative_lesion_floor_scales_with_the_roi(tiny_onnx, phantom_frame, monkeypatch) -> None:
    """thresholds.min_lesion_area_frac: a lesion smaller than that fraction of the ROI is not
    reported (the larger of it and min_lesion_area_px applies); 0 keeps everything."""
    img, _ = phantom_frame
    with sdk.Analyzer(tiny_onnx, threads=1) as a:
        a.load()
        assert a.metadata.min_lesion_area_frac == 0.0
        base = a.run(img)
        assert base.lesions
        largest = max(les.area_px for les in base.lesions)
        roi_area = img.shape[0] * img.shape[1]
        # Just above the largest lesion's share of the frame: every lesion goes, the mask empties.
        a.metadata.min_lesion_area_frac = min(0.999, 1.5 * largest / roi_area)
        r = a.run(img)
        assert not r.lesions and not r.mask.any() and r.label == "normal"
        # The floor is a share of the ROI, not of the frame: the area handed to the components
        # kernel is max(min_lesion_area_px, frac * roi_w * roi_h).
        import sdk.pipeline as P

        real = P.K.native()
        seen: list[float] = []

        class Spy:
            def __getattr__(self, name):  # everything else: the real module
                return getattr(real, name)

            def components_cpu(self, *args, **kw):
                seen.append(args[4])
                return real.components_cpu(*args, **kw)

        a.metadata.min_lesion_area_frac = 0.01
        monkeypatch.setattr(P.K, "native", lambda: Spy())
        a.run(img)
        a.run(img, roi=(10, 20, 200, 100))
        a.metadata.min_lesion_area_frac = 1e-6
        a.run(img, roi=(10, 20, 200, 100))
        px = a.metadata.min_lesion_area_px
        assert seen == [0.01 * roi_area, 0.01 * 200 * 100, float(px)]
