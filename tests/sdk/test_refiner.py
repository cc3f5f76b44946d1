"""sdk/refiner.py and its place in the frame path: crops, the shipped refiner file, the lesions it
gives back (outlines = mask, merged duplicates, the label rule) and every refusal."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

import sdk
from sdk import kernels as K
from sdk import synthetic
from sdk.errors import InputError, ModelError
from sdk.refiner import METADATA_KEY, CropGeometry, LesionRefiner, crop, crop_box


@pytest.fixture(scope="module")
def refiner() -> LesionRefiner:
    return LesionRefiner(sdk.default_refiner(), threads=1)


@pytest.fixture(scope="module")
def lesion_frame() -> tuple[np.ndarray, np.ndarray]:
    img, truth, _ = synthetic.phantom("malignant", size=(480, 640), seed=1234, style="scanner")
    return img, truth


def _box(truth: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(truth)
    return int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1


def test_crop_box_geometry() -> None:
    # side 1.6 * 100 + 24 = 184, centre (60, 70 + 0.12 * 184 = 92.08)
    assert crop_box((10, 20, 100, 100)) == (-32, 0, 184)
    assert crop_box((0, 0, 10, 40), CropGeometry(scale=1.0, pad_px=0.0, shift=0.0)) == (-15, 0, 40)


def test_crop_inside_the_frame_is_the_preprocess_kernel_on_that_roi(lesion_frame) -> None:
    img, _ = lesion_frame
    got = crop(img, 100, 50, 200, 96)
    want = K.preprocess(img, (96, 96), ("image",), roi=(100, 50, 200, 200))[0]
    np.testing.assert_array_equal(got, want)
    # ... and it is OpenCV's area resize of the same pixels within rounding.
    cv = cv2.resize(img[50:250, 100:300], (96, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(got * 255 - cv).max() <= 0.5 + 1e-3


def test_crop_past_the_edges_is_zero_padded(lesion_frame) -> None:
    img, _ = lesion_frame
    _H, W = img.shape
    x0, y0, s = W - 60, -40, 120
    canvas = np.zeros((s, s), np.uint8)
    canvas[40:, :60] = img[: s - 40, W - 60 :]
    np.testing.assert_array_equal(
        crop(img, x0, y0, s, 96), K.preprocess(canvas, (96, 96), ("image",))[0]
    )
    assert not crop(img, W + 5, 0, 50, 32).any()  # wholly outside: all zero


def test_shipped_refiner_metadata(refiner) -> None:
    assert refiner.class_names == ("normal", "benign", "malignant")
    assert refiner.size == 96 and refiner.geometry == CropGeometry()
    assert 0 < refiner.reject_above <= 1 and refiner.metadata["provenance"]["frames"] == 3000
    assert refiner.refine(np.zeros((100, 100), np.uint8), []) == []


def test_refine_answers_per_box(refiner, lesion_frame) -> None:
    img, truth = lesion_frame
    H, W = img.shape
    boxes = [_box(truth), (W - 30, H - 30, 60, 60)]  # the lesion; a box past the corner
    out = refiner.refine(img, boxes)
    assert len(out) == 2
    for r in out:
        assert abs(sum(r.probs.values()) - 1) < 1e-6 and set(r.probs) == set(refiner.class_names)
        x, y, w, h = r.box
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        assert r.mask.shape == (h, w) and r.mask.dtype == np.uint8 and r.mask.max() <= 1
        assert r.keep == (r.probs["normal"] < refiner.reject_above)
    # The lesion's own crop: a mass kept, its mask overlapping the truth.
    r = out[0]
    x, y, w, h = r.box
    assert (
        r.keep
        and (r.mask.astype(bool) & truth[y : y + h, x : x + w].astype(bool)).sum()
        > 0.5 * truth.astype(bool).sum()
    )


def _fill(res: sdk.Result) -> np.ndarray:
    f = np.zeros(res.mask.shape, np.uint8)
    for le in res.lesions:
        cv2.drawContours(f, [le.contour, *le.other_contours], -1, 1, -1)
    return f


@pytest.mark.parametrize("seed", [3, 8, 11])
def test_refined_results_keep_the_result_contract(seed) -> None:
    with sdk.Analyzer(threads=1, refiner=True) as a:
        for label in ("normal", "benign", "malignant"):
            img, _, _ = synthetic.phantom(label, size=(300, 400), seed=seed, style="scanner")
            res = a.run(img)
            assert a.pipeline.refiner is not None
            assert set(np.unique(res.mask)) <= {0, 1}
            fill = _fill(res)
            # The filled outlines are the mask (holes apart: a filled outer border covers them).
            assert (res.mask.astype(bool) <= fill.astype(bool)).all()
            assert sum(le.area_px for le in res.lesions) >= res.mask.sum()
            for le in res.lesions:
                assert le.label != "normal" and le.per_lesion and le.probs["normal"] == 0.0
                x, y, w, h = le.bbox
                assert res.mask[y : y + h, x : x + w].any()
            assert (res.label == "normal") == (not res.lesions)


def test_reject_everything_leaves_a_normal_frame(lesion_frame) -> None:
    img, _ = lesion_frame
    with sdk.Analyzer(threads=1, refiner=True) as a:
        a.load()
        assert a.run(img).lesions  # found and kept
        a.pipeline.refiner.reject_above = 0.0  # nothing is below 0: every region dropped
        res = a.run(img)
        assert res.lesions == [] and not res.mask.any() and res.label == "normal"


def test_two_boxes_on_one_mass_are_one_lesion(lesion_frame) -> None:
    img, truth = lesion_frame
    x, y, w, h = _box(truth)
    a = sdk.Analyzer(threads=1, refiner=True).load()
    pipe = a.pipeline
    mask = np.zeros(img.shape, np.uint8)
    boxes = np.array([[x, y, w // 2, h], [x + w // 2, y, w - w // 2, h]], np.int64)
    _b, areas, lines, _prows, k = pipe._refined(
        img, "bgr", (0, 0, img.shape[1], img.shape[0]), mask, boxes, np.array([1, 1])
    )
    assert k == 1 and len(lines) == 1 and areas[0] == mask.sum() > 0
    fill = np.zeros_like(mask)
    cv2.drawContours(fill, lines[0], -1, 1, -1)
    assert (mask.astype(bool) <= fill.astype(bool)).all()
    a.close()


def test_roi_limits_what_the_refiner_sees(lesion_frame) -> None:
    img, _truth = lesion_frame
    roi = (40, 0, 560, 480)
    other = img.copy()
    other[:, :40] = 255  # outside the ROI
    with sdk.Analyzer(threads=1, refiner=True) as a:
        r1, r2 = a.run(img, roi=roi), a.run(other, roi=roi)
    np.testing.assert_array_equal(r1.mask, r2.mask)
    assert [le.bbox for le in r1.lesions] == [le.bbox for le in r2.lesions]
    assert not r1.mask[:, :40].any()


def test_color_frames_are_refined_as_their_gray(lesion_frame) -> None:
    img, _ = lesion_frame
    bgr = np.repeat(img[:, :, None], 3, axis=2)
    with sdk.Analyzer(threads=1, refiner=True) as a:
        g, c = a.run(img), a.run(bgr)
    np.testing.assert_array_equal(g.mask, c.mask)


def test_refiner_by_default_with_the_embedded_model_only() -> None:
    assert sdk.Analyzer().refiner_path == sdk.default_refiner()
    assert sdk.Analyzer(refiner=False).refiner_path is None
    assert sdk.Analyzer(sdk.default_model("int8")).refiner_path is None  # a model by path
    assert (
        sdk.Analyzer(sdk.default_model("int8"), refiner=True).refiner_path == sdk.default_refiner()
    )


@pytest.mark.parametrize("bad", [1, 0, 0.5, "", b"x.onnx", ["x"]])
def test_refiner_argument_is_checked(bad) -> None:
    with pytest.raises(InputError, match="refiner must be"):
        sdk.Analyzer(refiner=bad)


def test_missing_refiner_file(tmp_path) -> None:
    a = sdk.Analyzer(refiner=tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="no such file"):
        a.load()


def _refiner_with(tmp_path, **changes):
    """A copy of the shipped refiner with its metadata fields changed (digest re-stamped)."""
    onnx = pytest.importorskip("onnx")
    from sdk.artifact import DIGEST_KEY, stamp_onnx_digest

    m = onnx.load(str(sdk.default_refiner()))
    props = {p.key: p.value for p in m.metadata_props}
    md = json.loads(props[METADATA_KEY])
    md.update(changes)
    props[METADATA_KEY] = json.dumps(md)
    props.pop(DIGEST_KEY, None)
    onnx.helper.set_model_props(m, props)
    p = tmp_path / "changed.onnx"
    onnx.save(m, str(p))
    stamp_onnx_digest(p)
    return p


def test_refiner_classes_must_be_the_models(tmp_path) -> None:
    p = _refiner_with(tmp_path, class_names=["normal", "cyst", "carcinoma"])
    with pytest.raises(ModelError, match="not the refiner's"):
        sdk.Analyzer(refiner=p).load()


def test_a_frame_model_is_not_a_refiner() -> None:
    with pytest.raises(ModelError, match="not a lesion refiner"):
        LesionRefiner(sdk.default_model())


def test_a_changed_byte_is_refused(tmp_path) -> None:
    p = tmp_path / "r.onnx"
    data = bytearray(sdk.default_refiner().read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        LesionRefiner(p)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("role", "frame", "role"),
        ("input_size", 90, "input_size"),
        ("class_names", ["benign", "malignant"], "class_names"),
        ("std", 0.0, "std"),
        ("reject_above", float("nan"), "reject_above"),
        ("crop", {"scale": 1.6, "zoom": 2}, "crop"),
        ("flip", "yes", "flip"),
        ("class_bias", [0.0, 1.0], "class_bias"),
        ("class_bias", [0.0, float("inf"), 0.0], "class_bias"),
        ("class_bias", [0.0, 11.0, 0.0], "class_bias"),
        ("class_bias", [0.0, True, 0.0], "class_bias"),
        ("class_bias", "0 0 1", "class_bias"),
    ],
)
def test_bad_refiner_metadata_is_named(tmp_path, field, value, match) -> None:
    with pytest.raises(ModelError, match=match):
        LesionRefiner(_refiner_with(tmp_path, **{field: value}))


@pytest.mark.parametrize("flip", [False, True])
def test_flip_averages_each_crop_with_its_mirror(tmp_path, lesion_frame, flip) -> None:
    """metadata ``flip``: the answer is the mean of the crop's and its mirror's logits (the
    mirror's mask flipped back) -- checked against the session called by hand."""
    from sdk.pipeline import _softmax

    img, truth = lesion_frame
    ref = LesionRefiner(_refiner_with(tmp_path, flip=flip), threads=1)
    assert ref.flip is flip
    H, W = img.shape
    boxes = [_box(truth), (40, 60, 90, 70)]
    x = np.stack(
        [crop(img, *crop_box(b, ref.geometry), ref.size, ref._mean, ref._std) for b in boxes]
    ).reshape(len(boxes), 1, ref.size, ref.size)
    lg, cl = ref.session.run(["mask_logits", "class_logits"], {"input": x})
    if flip:
        lgm, clm = ref.session.run(
            ["mask_logits", "class_logits"], {"input": np.ascontiguousarray(x[..., ::-1])}
        )
        lg, cl = (lg + lgm[..., ::-1]) / 2, (cl + clm) / 2
    out = ref.refine(img, boxes)
    for i, (r, b) in enumerate(zip(out, boxes, strict=True)):
        want = _softmax(cl[i].tolist(), ref._temperature)
        np.testing.assert_allclose([r.probs[n] for n in ref.class_names], want, atol=1e-5)
        x0, y0, s = crop_box(b, ref.geometry)
        big = cv2.resize(np.ascontiguousarray(lg[i, 0]), (s, s), interpolation=cv2.INTER_LINEAR)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + s, W), min(y0 + s, H)
        want_m = (big[ya - y0 : yb - y0, xa - x0 : xb - x0] > 0).astype(np.uint8)
        assert r.box == (xa, ya, xb - xa, yb - ya)
        # A cell whose logit is within float rounding of the cut may go either way.
        assert (r.mask != want_m).mean() < 1e-3


def test_class_bias_shifts_the_class_logits_only(tmp_path, lesion_frame) -> None:
    """metadata ``class_bias``: added to the class logits before the temperature -- the
    probabilities are the unbiased refiner's logits plus the bias through the same softmax,
    the masks and boxes are unchanged; absent = zeros (the shipped file)."""
    from sdk.pipeline import _softmax

    img, truth = lesion_frame
    boxes = [_box(truth), (40, 60, 90, 70)]
    plain = LesionRefiner(_refiner_with(tmp_path, flip=False), threads=1)
    assert plain.class_bias == (0.0, 0.0, 0.0)
    assert LesionRefiner(sdk.default_refiner(), threads=1).class_bias == (0.0, 0.0, 0.0)
    bias = [0.0, -0.3, 0.6]
    (tmp_path / "b").mkdir()
    biased = LesionRefiner(_refiner_with(tmp_path / "b", flip=False, class_bias=bias), threads=1)
    assert biased.class_bias == tuple(bias)
    x = np.stack(
        [
            crop(img, *crop_box(b, plain.geometry), plain.size, plain._mean, plain._std)
            for b in boxes
        ]
    ).reshape(len(boxes), 1, plain.size, plain.size)
    (cl,) = plain.session.run(["class_logits"], {"input": x})
    for i, (r0, r1) in enumerate(
        zip(plain.refine(img, boxes), biased.refine(img, boxes), strict=True)
    ):
        want = _softmax([z + b for z, b in zip(cl[i].tolist(), bias, strict=True)], 1.0)
        np.testing.assert_allclose([r1.probs[n] for n in biased.class_names], want, atol=1e-5)
        assert r1.probs["malignant"] > r0.probs["malignant"]  # the bias did something
        assert r1.box == r0.box and np.array_equal(r1.mask, r0.mask)


def test_refiner_copy_elsewhere_loads(tmp_path, lesion_frame) -> None:
    p = tmp_path / "mine.onnx"
    shutil.copy(sdk.default_refiner(), p)
    img, _ = lesion_frame
    with sdk.Analyzer(threads=1, refiner=p) as a, sdk.Analyzer(threads=1, refiner=True) as b:
        np.testing.assert_array_equal(a.run(img).mask, b.run(img).mask)


def test_stream_and_run_batch_refine_as_run_does() -> None:
    frames = [
        synthetic.phantom(lbl, size=(300, 400), seed=21 + i, style="scanner")[0]
        for i, lbl in enumerate(("benign", "malignant", "normal", "benign"))
    ]
    with sdk.Analyzer(threads=1, refiner=True) as a:
        one = [a.run(f) for f in frames]
        batch = a.run_batch(frames)
        streamed = list(a.stream(np.stack(frames), color="gray"))
    for r1, r2, r3 in zip(one, batch, streamed, strict=True):
        np.testing.assert_array_equal(r1.mask, r2.mask)
        np.testing.assert_array_equal(r1.mask, r3.mask)
        assert r1.label == r2.label == r3.label


def test_merge_overlapping_unions_masks_and_keeps_the_larger_probs() -> None:
    from sdk.refiner import RefinedLesion, merge_overlapping

    a = RefinedLesion(
        {"normal": 0.0, "benign": 0.9, "malignant": 0.1},
        True,
        (10, 10, 4, 4),
        np.ones((4, 4), np.uint8),
    )
    b = RefinedLesion(
        {"normal": 0.0, "benign": 0.2, "malignant": 0.8},
        True,
        (12, 12, 6, 6),
        np.ones((6, 6), np.uint8),
    )
    c = RefinedLesion(
        {"normal": 0.1, "benign": 0.5, "malignant": 0.4},
        True,
        (40, 40, 3, 3),
        np.ones((3, 3), np.uint8),
    )
    # d's box overlaps c's but their masks do not touch: two lesions.
    dm = np.zeros((3, 3), np.uint8)
    dm[2, 2] = 1
    cm = np.zeros((3, 3), np.uint8)
    cm[0, 0] = 1
    c.mask, d = cm, RefinedLesion(dict(c.probs), True, (41, 41, 3, 3), dm)
    out = merge_overlapping([a, b, c, d])
    assert len(out) == 3
    m = out[0]
    assert m.box == (10, 10, 8, 8) and m.probs == b.probs and m.mask.sum() == 16 + 36 - 4
    assert out[1] is c and out[2] is d
    assert merge_overlapping([]) == []
