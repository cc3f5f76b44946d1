"""Bring your own model (issue #16): users' ONNX graphs and nn.Modules through export.importer.

The models are MONAI's (BasicUNet, UNet, SegResNet for the mask, Classifier as the
classification head): networks nobody here wrote, exported at test time in different layouts,
colour orders, normalizations, output activations, opsets and batch modes. Each artifact's
``Analyzer.run`` result is checked against the *source* ONNX run by ONNX Runtime on the
documented preprocessing, computed here independently: OpenCV's resize (the SDK's documented
convention, IPP off), ``(pixel / scale - mean[c]) / std[c]`` per channel, the model's layout,
then the model's own output activations. Probabilities within 1e-4, masks equal away from the
threshold. Error paths use small graphs built with onnx.helper.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
monai_nets = pytest.importorskip("monai.networks.nets")

import export  # noqa: E402
from export.importer import import_onnx, import_torch  # noqa: E402
from sdk import Analyzer, synthetic  # noqa: E402
from sdk.artifact import read_onnx_file_metadata, verify_onnx_digest  # noqa: E402
from sdk.errors import InputError, ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (32, 48)  # model input (h, w): not square, so a swapped axis shows
FRAME = (120, 160)  # frames larger on both axes: the SDK resizes with INTER_AREA
C3 = ("normal", "benign", "malignant")


# --------------------------------------------------------------------------- MONAI models


class MultiTask(torch.nn.Module):
    """A MONAI segmentation network + a MONAI Classifier on the same input, with the output
    conventions of one user's training code. Mask logits are centred per frame (x4) so random
    weights still give masks with both lesion and background (a parity test on an empty mask
    could not fail); class logits are scaled x8 so the probabilities are far from uniform."""

    def __init__(self, seg: str, in_ch: int, mask_ch: int, k: int, cfg: dict) -> None:
        super().__init__()
        torch.manual_seed(cfg.get("seed", 0))
        if seg == "basicunet":
            self.seg = monai_nets.BasicUNet(
                spatial_dims=2, in_channels=in_ch, out_channels=mask_ch, features=(4, 4, 8, 8, 8, 4)
            )
        elif seg == "unet":
            self.seg = monai_nets.UNet(
                spatial_dims=2,
                in_channels=in_ch,
                out_channels=mask_ch,
                channels=(4, 8, 16),
                strides=(2, 2),
                num_res_units=1,
            )
        else:
            self.seg = monai_nets.SegResNet(
                spatial_dims=2,
                init_filters=8,  # GroupNorm's 8 groups
                in_channels=in_ch,
                out_channels=mask_ch,
                blocks_down=(1, 1),
                blocks_up=(1,),
            )
        self.cls = monai_nets.Classifier(
            in_shape=(in_ch, *SIZE), classes=k, channels=(4, 8), strides=(2, 2)
        )
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if cfg["layout"] == "nhwc":
            x = x.permute(0, 3, 1, 2)
        m = self.seg(x)
        m = (m - m.mean(dim=(2, 3), keepdim=True)) * 4.0
        c = self.cls(x) * 8.0
        if cfg["mask_activation"] == "sigmoid":
            m = torch.sigmoid(m)
        elif cfg["mask_activation"] == "softmax":
            m = torch.softmax(m, dim=1)
        if cfg.get("mask_rank") == 3:
            m = m[:, 0]
        elif cfg["layout"] == "nhwc":
            m = m.permute(0, 2, 3, 1)
        if cfg["class_activation"] == "softmax":
            c = torch.softmax(c, dim=1)
        return m, c


def _export(
    net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic: bool, names
) -> Path:
    axes = {n: {0: "b"} for n in ("image", *names)} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=list(names),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return path


# One case per row: the variations spread over three MONAI segmentation networks.
CASES = {
    # BasicUNet, gray NCHW, 1-channel logits as [B, h, w], class logits, pixels / 255, opset 17,
    # dynamic batch.
    "basicunet-gray-nchw-logits": dict(
        seg="basicunet", color="gray", layout="nchw", mask_ch=1, mask_activation="logits",
        mask_rank=3, class_activation="logits", scale=255.0, mean=0.0, std=1.0, opset=17,
        dynamic=True, classes=C3,
    ),
    # UNet, RGB NHWC, sigmoid mask, softmax classes, ImageNet mean / std, opset 13, batch 1,
    # classes in another order.
    "unet-rgb-nhwc-probabilities": dict(
        seg="unet", color="rgb", layout="nhwc", mask_ch=1, mask_activation="sigmoid",
        class_activation="softmax", scale=255.0, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), opset=13, dynamic=False, classes=("benign", "malignant",
        "normal"),
    ),
    # SegResNet, BGR NCHW, 2-channel softmax mask, class logits, raw 0..255 pixels centred,
    # opset 18 (Reduce* axes as inputs), dynamic batch.
    "segresnet-bgr-nchw-softmax2": dict(
        seg="segresnet", color="bgr", layout="nchw", mask_ch=2, mask_activation="softmax",
        class_activation="logits", scale=1.0, mean=(127.5, 120.0, 110.0), std=(64.0, 60.0, 70.0),
        opset=18, dynamic=True, classes=C3,
    ),
    # Segmentation only: BasicUNet, gray NHWC, 2-channel (background, lesion) logits, opset 18.
    "basicunet-seg-only-nhwc-2logits": dict(
        seg="basicunet", color="gray", layout="nhwc", mask_ch=2, mask_activation="logits",
        class_activation=None, scale=255.0, mean=0.5, std=0.25, opset=18, dynamic=True,
        classes=("normal", "lesion"),
    ),
    # Classification only: MONAI Classifier, gray NCHW, softmax, opset 13, batch 1.
    "classifier-only-softmax": dict(
        seg=None, color="gray", layout="nchw", mask_ch=0, mask_activation=None,
        class_activation="softmax", scale=255.0, mean=0.2, std=0.5, opset=13, dynamic=False,
        classes=C3,
    ),
}  # fmt: skip


class ClassifierOnly(torch.nn.Module):
    def __init__(self, k: int, softmax: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.cls = monai_nets.Classifier(
            in_shape=(1, *SIZE), classes=k, channels=(4, 8), strides=(2, 2)
        )
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cls(x) * 8.0
        return torch.softmax(c, 1) if self.softmax else c


def _source(case: dict, folder: Path) -> tuple[Path, tuple[str, ...]]:
    ch = 1 if case["color"] == "gray" else 3
    shape = (1, ch, *SIZE) if case["layout"] == "nchw" else (1, *SIZE, ch)
    if case["seg"] is None:
        net: torch.nn.Module = ClassifierOnly(len(case["classes"]), True)
        names: tuple[str, ...] = ("probs",)
    else:
        k = len(case["classes"])
        net = MultiTask(case["seg"], ch, case["mask_ch"], k, case)
        names = ("seg", "cls")
    path = _export(
        net, torch.rand(shape), folder / "src.onnx", case["opset"], case["dynamic"], names
    )
    return path, names


def _import(case: dict, src: Path, names: tuple[str, ...], dst: Path) -> Path:
    return import_onnx(
        src,
        dst,
        classes=case["classes"],
        mask_output="seg" if case["seg"] else None,
        mask_activation=case["mask_activation"] or "logits",
        class_output=None if case["class_activation"] is None else names[-1],
        class_activation=case["class_activation"] or "logits",
        layout=case["layout"],
        color=case["color"],
        scale=case["scale"],
        mean=case["mean"],
        std=case["std"],
        min_lesion_area_px=0,  # every component kept: the mask is compared pixel by pixel
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Every case exported and imported once: {name: (case, src, names, artifact)}."""
    out = {}
    for name, case in CASES.items():
        d = tmp_path_factory.mktemp(name)
        src, names = _source(case, d)
        out[name] = (case, src, names, _import(case, src, names, d / "model.onnx"))
    return out


def _frames(n: int = 3) -> list[np.ndarray]:
    labels = ("benign", "malignant", "normal")
    return [synthetic.phantom(labels[i % 3], size=FRAME, seed=10 + i)[0] for i in range(n)]


def _reference(case: dict, sess, in_name: str, names, frame: np.ndarray, cv2):
    """The documented preprocessing + the source model + its documented post-processing:
    (lesion probability on the mask grid or None, class probabilities (K,) or None)."""
    h, w = SIZE
    pix = cv2.resize(frame.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    ch = 1 if case["color"] == "gray" else 3
    mean = np.broadcast_to(np.asarray(case["mean"], np.float64), (ch,))
    std = np.broadcast_to(np.asarray(case["std"], np.float64), (ch,))
    x = np.stack([(pix / case["scale"] - mean[c]) / std[c] for c in range(ch)])
    if case["layout"] == "nhwc":
        x = x.transpose(1, 2, 0)
    outs = dict(
        zip(names, sess.run(list(names), {in_name: x[None].astype(np.float32)}), strict=True)
    )
    prob = cls = None
    if case["seg"]:
        m = outs["seg"][0].astype(np.float64)
        if m.ndim == 2:
            m = m[None]
        elif case["layout"] == "nhwc":
            m = m.transpose(2, 0, 1)
        act = case["mask_activation"]
        if m.shape[0] == 2:
            prob = m[1] if act == "softmax" else 1 / (1 + np.exp(-(m[1] - m[0])))
        else:
            prob = m[0] if act == "sigmoid" else 1 / (1 + np.exp(-m[0]))
    if case["class_activation"]:
        z = outs[names[-1]][0].astype(np.float64)
        if case["class_activation"] == "softmax":
            cls = z
        else:
            e = np.exp(z - z.max())
            cls = e / e.sum()
    return prob, cls


@pytest.mark.parametrize("name", list(CASES))
def test_analyzer_matches_the_source_model(imported, name, cv2_exact):
    case, src, names, art = imported[name]
    cv2 = cv2_exact
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    thr = 0.5
    checked_fg = checked_bg = 0
    with Analyzer(art, threads=1, smoothing=0.0) as a:
        assert a.metadata.class_names == case["classes"]
        for frame in _frames():
            r = a.run(frame)
            prob, cls = _reference(case, sess, in_name, names, frame, cv2)
            got = np.asarray([r.raw_probs[c] for c in case["classes"]])
            if cls is not None:
                np.testing.assert_allclose(got, cls, atol=1e-4, rtol=0)
            else:  # segmentation only: P(lesion) = the largest lesion probability
                assert got[case["classes"].index("lesion")] == pytest.approx(prob.max(), abs=1e-4)
            if prob is not None:
                up = cv2.resize(
                    prob.astype(np.float32), FRAME[::-1], interpolation=cv2.INTER_LINEAR
                )
                clear = np.abs(up - thr) > 1e-3
                want = up > thr
                np.testing.assert_array_equal(r.mask.astype(bool)[clear], want[clear])
                checked_fg += int((want & clear).sum())
                checked_bg += int((~want & clear).sum())
                if not want.any():
                    assert r.label == "normal" and not r.lesions
                else:
                    assert r.lesions and r.label != "normal"
            else:  # classification only: the frame is one lesion iff P(normal) < 1 - threshold
                abnormal = 1 - cls[case["classes"].index("normal")] > thr
                assert bool(r.mask.all()) == abnormal and bool(r.mask.any()) == abnormal
                assert len(r.lesions) == int(abnormal)
                if abnormal:
                    assert r.lesions[0].bbox == (0, 0, FRAME[1], FRAME[0])
                    assert r.label != "normal"
                else:
                    assert r.label == "normal"
            assert r.overlay(frame).shape == (*FRAME, 3)
            json.dumps(r.to_dict())  # the same Result API as the SDK's own models
    if case["seg"]:
        # Both sides of the threshold were compared: a test on an empty mask could not fail.
        assert checked_fg > 500 and checked_bg > 500


def test_artifact_metadata_digest_and_contract(imported):
    case, _, _, art = imported["unet-rgb-nhwc-probabilities"]
    assert verify_onnx_digest(art) is not None  # stamped: a changed byte would be refused
    md = read_onnx_file_metadata(art)
    assert md.channels == ("image",) and md.mean == (0.0,) and md.std == (1.0,)
    assert md.input_size == SIZE and md.precision == "fp32"
    imp = md.provenance["import"]
    assert imp["input"]["layout"] == "nhwc" and imp["input"]["color"] == "rgb"
    assert imp["input"]["mean"] == list(case["mean"]) and imp["input"]["batch"] == 1
    assert imp["mask"] == {"output": "seg", "activation": "sigmoid", "channels": 1}
    assert md.accuracy["parity"]["max_abs_diff"]["class_probabilities"] <= 1e-4
    m = onnx.load(str(art))
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["mask_logits", "class_logits"]
    # A flipped byte in the weights: refused at load.
    raw = bytearray(art.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = art.with_name("flipped.onnx")
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError):
        Analyzer(bad).load()


def test_dynamic_batch_runs_batches_and_static_runs_one(imported):
    frames = _frames(3)
    _, _, _, dyn = imported["basicunet-gray-nchw-logits"]
    with Analyzer(dyn, threads=1, smoothing=0.0) as a:
        assert a._backend.max_batch > 1
        batch = a.run_batch(frames)
        for f, rb in zip(frames, batch, strict=True):
            r1 = a.run(f)
            np.testing.assert_array_equal(r1.mask, rb.mask)
            for k in r1.raw_probs:
                assert r1.raw_probs[k] == pytest.approx(rb.raw_probs[k], abs=1e-5)
    _, _, _, static = imported["unet-rgb-nhwc-probabilities"]
    with Analyzer(static, threads=1) as a:
        assert a._backend.max_batch == 1
        assert len(a.run_batch(frames)) == 3


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_other_backends_run_imported_artifacts(imported, backend):
    """The adapter is plain ONNX: the torch interpreter and OpenVINO run every imported case
    (the Reduce* / Gather / Log nodes of the seg-only and classification-only adapters too) and
    agree with ONNX Runtime."""
    names = list(imported)
    if backend == "openvino":  # its compile is slow: the two synthesized-head adapters
        pytest.importorskip("openvino")
        names = ["basicunet-seg-only-nhwc-2logits", "classifier-only-softmax"]
    frame = _frames(1)[0]
    for name in names:
        art = imported[name][3]
        with Analyzer(art, threads=1, smoothing=0.0) as a:
            want = a.run(frame)
        with Analyzer(art, backend=backend, threads=1, smoothing=0.0) as a:
            got = a.run(frame)
        for k, v in want.raw_probs.items():
            assert got.raw_probs[k] == pytest.approx(v, abs=1e-4), (name, k)
        assert (got.mask != want.mask).mean() < 1e-3, name


def test_import_torch_monai_module(tmp_path, cv2_exact):
    """An nn.Module returning a dict, RGB NCHW with a per-channel normalization: exported by
    import_torch and checked against the eager module on the documented preprocessing."""

    class DictNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = MultiTask(
                "unet", 3, 1, 3,
                dict(layout="nchw", mask_activation="logits", class_activation="logits", seed=3),
            )  # fmt: skip

        def forward(self, x):
            m, c = self.inner(x)
            return {"lesion": m, "aux": m * 2, "diagnosis": c}

    net = DictNet()
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    art = import_torch(
        net,
        tmp_path / "torch.onnx",
        example_input=torch.rand(1, 3, *SIZE),
        classes=C3,
        mask_output="lesion",
        class_output=2,  # a position works too
        color="rgb",
        scale=255.0,
        mean=mean,
        std=std,
        min_lesion_area_px=0,
    )
    md = read_onnx_file_metadata(art)
    assert md.provenance["import"]["torch"]["exporter"].startswith("torch.onnx.export")
    assert "aux" not in {o.name for o in onnx.load(str(art)).graph.output}
    frame = _frames(1)[0]
    pix = cv2_exact.resize(frame.astype(np.float32), SIZE[::-1], interpolation=cv2_exact.INTER_AREA)
    x = np.stack([(pix / 255.0 - mean[c]) / std[c] for c in range(3)])[None].astype(np.float32)
    with torch.no_grad():
        eager = net.eval()(torch.from_numpy(x))
    p = torch.softmax(eager["diagnosis"].double(), 1)[0].numpy()
    with Analyzer(art, threads=1, smoothing=0.0) as a:
        r = a.run(frame)
    np.testing.assert_allclose([r.raw_probs[c] for c in C3], p, atol=1e-4, rtol=0)
    prob = torch.sigmoid(eager["lesion"].double())[0, 0].numpy().astype(np.float32)
    up = cv2_exact.resize(prob, FRAME[::-1], interpolation=cv2_exact.INTER_LINEAR)
    clear = np.abs(up - 0.5) > 1e-3
    np.testing.assert_array_equal(r.mask.astype(bool)[clear], (up > 0.5)[clear])


def test_import_torch_names_the_op_it_cannot_export(tmp_path):
    class Svd(torch.nn.Module):
        def forward(self, x):
            s = torch.linalg.svdvals(x[:, 0])
            return x * s.sum(), x.mean((1, 2, 3))[:, None].repeat(1, 3)

    dst = tmp_path / "svd.onnx"
    with pytest.raises(ModelError, match="linalg_svdvals"):
        import_torch(
            Svd(), dst, example_input=torch.rand(1, 1, 8, 8), classes=C3, mask_output=0,
            class_output=1,
        )  # fmt: skip
    assert not dst.exists()
    with pytest.raises(ModelError, match=r"no output 'mask'.*output0"):
        import_torch(
            Svd(), dst, example_input=torch.rand(1, 1, 8, 8), classes=C3, mask_output="mask"
        )


def test_external_data_is_inlined_or_refused(imported, tmp_path):
    _, src, names, _ = imported["basicunet-gray-nchw-logits"]
    case = CASES["basicunet-gray-nchw-logits"]
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    m = onnx.load(str(src))
    onnx.save(m, str(ext_dir / "big.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="big.weights", size_threshold=0)  # fmt: skip
    assert (ext_dir / "big.weights").stat().st_size > 1000
    art = _import(case, ext_dir / "big.onnx", names, tmp_path / "inlined.onnx")
    assert read_onnx_file_metadata(art).provenance["import"]["external_data_inlined"] is True
    (ext_dir / "big.weights").rename(ext_dir / "elsewhere.weights")
    art.unlink()
    (tmp_path / "inlined2.onnx").unlink(missing_ok=True)
    # Moving the artifact alone works: it is one file.
    with Analyzer(_import(case, src, names, tmp_path / "again.onnx"), threads=1) as a:
        a.run(_frames(1)[0])
    with pytest.raises(ModelError, match=r"big\.weights.*beside"):
        _import(case, ext_dir / "big.onnx", names, tmp_path / "inlined2.onnx")
    assert not (tmp_path / "inlined2.onnx").exists()


# --------------------------------------------------------------------------- error paths


def _tiny(
    path: Path,
    *,
    opset: int = 17,
    in_shape=("b", 1, *SIZE),
    k: int = 3,
    two_inputs: bool = False,
    in_type: int = onnx.TensorProto.FLOAT,
) -> Path:
    """A small ONNX graph by hand: x → 1x1 Conv → "seg" [B, 1, h, w]; GAP → Flatten → Gemm →
    "cls" [B, k]; "feat" [B, 4, h, w] as an extra output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    ch = in_shape[1] if isinstance(in_shape[1], int) else 1
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, ch, 1, 1)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((k, 4)).astype(np.float32), "wc"),
    ]
    nodes = []
    x = "x"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        x = "xf"
    nodes += [
        helper.make_node("Conv", [x, "w0"], ["feat"]),
        helper.make_node("Conv", ["feat", "w1"], ["seg"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wc"], ["cls"], transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", in_type, list(in_shape))]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("spacing", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Identity", ["spacing"], ["sp"]))
    outs = [
        helper.make_tensor_value_info("seg", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("cls", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, None),
    ]
    if two_inputs:
        outs.append(helper.make_tensor_value_info("sp", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "tiny", inputs, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    onnx.save(m, str(path))
    return path


OK = dict(classes=C3, mask_output="seg", class_output="cls")


def test_tiny_graph_imports(tmp_path):
    """The hand-built graph itself is fine (so each error below comes from its one change)."""
    art = import_onnx(_tiny(tmp_path / "t.onnx"), tmp_path / "a.onnx", **OK)
    with Analyzer(art, threads=1) as a:
        assert a.run(_frames(1)[0]).label in C3
    assert "feat" not in {o.name for o in onnx.load(str(art)).graph.output}


@pytest.mark.parametrize(
    ("graph", "kwargs", "match"),
    [
        ({}, dict(mask_output="mask"), r"no output 'mask' \(mask_output\).*\['cls', 'feat'"),
        ({}, dict(class_output="logits"), r"no output 'logits'.*pass one of them"),
        ({}, dict(input="image"), r"no input 'image'.*\['x'\]"),
        ({}, dict(classes=("normal", "benign")), r"'cls' gives 3 scores.*classes names 2"),
        ({}, dict(class_output="seg", mask_output=None), r"class output 'seg' has shape \[2, 1,"),
        ({}, dict(mask_output="cls", class_output=None, classes=("normal", "lesion")),
         r"mask output 'cls' has shape \[2, 3\] \(rank 2\)"),
        ({}, dict(mask_output="feat"), r"mask output 'feat'.*4 channels"),
        ({}, dict(mask_activation="sigmoid"), r"'seg' ranges over.*not probabilities.*'logits'"),
        ({}, dict(mask_activation="softmax"), r"'seg' has 1 channel.*softmax.*needs 2"),
        ({}, dict(class_activation="softmax"), r"'cls' is not probabilities.*'logits'"),
        ({}, dict(color="rgb"), r"input 'x' \[b, 1, 32, 48\] has 1 channel\(s\).*color='gray'"),
        ({}, dict(layout="nhwc"), r"48 channel\(s\) on its nhwc channel axis.*layout='nchw'"),
        ({}, dict(size=(64, 64)), r"fixed height of 32, size asks 64"),
        (dict(in_shape=("b", 1, "h", "w")), {}, r"dynamic height / width.*size=\(h, w\)"),
        (dict(in_shape=(2, 1, *SIZE)), {}, r"fixed batch of 2.*dynamic batch"),
        (dict(in_shape=("b", 1, 32)), {}, r"rank 3.*rank-4"),
        (dict(opset=12), {}, r"opset 12.*>= 13.*version_converter"),
        (dict(two_inputs=True), {}, r"2 inputs \['x', 'spacing'\].*input=NAME"),
        (dict(two_inputs=True), dict(input="x"), r"only 'x'.*others"),
        (dict(in_type=onnx.TensorProto.UINT8), {}, r"input 'x' is of ONNX type UINT8"),
    ],
)  # fmt: skip
def test_model_errors_name_the_tensor_and_the_fix(tmp_path, graph, kwargs, match):
    src = _tiny(tmp_path / "t.onnx", **graph)
    dst = tmp_path / "out" / "a.onnx"
    with pytest.raises(ModelError, match=match):
        import_onnx(src, dst, **{**OK, **kwargs})
    # No half-written artifact, no temporary left behind.
    assert not dst.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_float16_input_and_classification_without_normal(tmp_path, cv2_exact):
    """A float16 input gets a Cast; a classifier without a 'normal' class makes every frame one
    whole-frame lesion carrying the classifier's label."""
    src = _tiny(tmp_path / "h.onnx", in_type=onnx.TensorProto.FLOAT16)
    art = import_onnx(src, tmp_path / "h16.onnx", **OK)
    assert read_onnx_file_metadata(art).provenance["import"]["input"]["dtype"] == "float16"
    names = ("cyst", "fibroadenoma", "carcinoma")
    art = import_onnx(
        _tiny(tmp_path / "c.onnx"), tmp_path / "c.onnx.out.onnx", classes=names,
        mask_output=None, class_output="cls",
    )  # fmt: skip
    sess = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    frame = _frames(1)[0]
    with Analyzer(art, threads=1, smoothing=0.0) as a:
        r = a.run(frame)
    # The documented preprocessing with scale 1, mean 0, std 1: the resized gray pixels.
    pix = cv2_exact.resize(frame.astype(np.float32), SIZE[::-1], interpolation=cv2_exact.INTER_AREA)
    z = sess.run(["cls"], {"x": pix[None, None]})[0][0].astype(np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose([r.raw_probs[c] for c in names], p, atol=1e-4, rtol=0)
    assert r.mask.all() and len(r.lesions) == 1 and r.label == names[int(p.argmax())]


def test_dynamic_size_works_with_size(tmp_path):
    src = _tiny(tmp_path / "t.onnx", in_shape=("b", 1, "h", "w"))
    art = import_onnx(src, tmp_path / "a.onnx", size=(40, 24), **OK)
    assert read_onnx_file_metadata(art).input_size == (40, 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(layout="chw"), "layout must be one of nchw, nhwc"),
        (dict(color="rgba"), "color must be one of"),
        (dict(mask_activation="relu"), "mask_activation must be one of"),
        (dict(classes=("normal",)), "at least two"),
        (dict(classes=("a", "a", "b")), "repeat a name"),
        (dict(mean=(0.1, 0.2)), "mean has 2 values but the model has 1"),
        (dict(std=0.0), "std must be finite and > 0"),
        (dict(scale=0), "scale must be a number > 0"),
        (dict(threshold=1.0), r"threshold must be in \(0, 1\)"),
        (dict(mask_output=None, class_output=None), "give mask_output"),
        (dict(class_output=None), r"segmentation-only.*classes=\('normal', 'lesion'\)"),
        (dict(mask_output="cls", class_output="cls"), "both 'cls'"),
        (dict(size=(0, 5)), "size must be"),
    ],
)
def test_argument_errors(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        import_onnx(_tiny(tmp_path / "t.onnx"), tmp_path / "a.onnx", **{**OK, **kwargs})
    assert not (tmp_path / "a.onnx").exists()


def test_not_an_onnx_and_missing_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not protobuf" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX"):
        import_onnx(junk, tmp_path / "a.onnx", **OK)
    with pytest.raises(ModelError, match="no such ONNX file"):
        import_onnx(tmp_path / "nope.onnx", tmp_path / "a.onnx", **OK)
    with pytest.raises(InputError, match=r"must be an \.onnx"):
        import_onnx(_tiny(tmp_path / "t.onnx"), tmp_path / "a.plan", **OK)


# --------------------------------------------------------------------------- CLI


def test_cli_import(tmp_path, capsys):
    from sdk.cli import main

    src = _tiny(tmp_path / "t.onnx")
    dst = tmp_path / "cli.onnx"
    base = ["import", str(src), "--out", str(dst), "--classes", "normal,benign,malignant"]
    assert main([*base, "--mask-output", "seg", "--class-output", "cls", "--scale", "255"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["artifact"] == str(dst) and out["input"]["scale"] == 255.0
    assert read_onnx_file_metadata(dst).class_names == C3
    # A user's mistake the model reveals: exit 1, one line, no traceback.
    assert main([*base, "--mask-output", "nope", "--class-output", "cls"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "no output 'nope'" in err and "Traceback" not in err
    # Usage errors: exit 2.
    for bad in (
        ["--mask-output", "seg", "--layout", "hwc"],
        ["--mask-output", "seg", "--mean", "0.1,0.2"],
        ["--mask-output", "seg", "--size", "32by48"],
        [],  # neither --mask-output nor --class-output
    ):
        code = None
        try:
            code = main([*base, *bad])
        except SystemExit as e:
            code = e.code
        assert code == 2, bad
        assert "Traceback" not in capsys.readouterr().err
    r = subprocess.run(
        [sys.executable, "-m", "sdk.cli", "import", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--mask-output" in r.stdout and "--mean" in r.stdout
    # sonoedge quantize: a plain ONNX is refused with the fix (exit 1), a bad target is usage.
    assert main(["quantize", str(src), "--out", str(tmp_path / "q.onnx")]) == 1
    err = capsys.readouterr().err
    assert "import it first" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(dst), "--out", str(tmp_path / "q.onnx"), "--target", "gpu"])
    assert e.value.code == 2


# --------------------------------------------------------------------------- export.quantize


def test_export_quantize_is_callable_in_every_import_order():
    """``export.quantize(...)`` is the issue's function and ``export.quantize`` the recipe
    module: each import order in a fresh interpreter. An unknown target reaches the public
    function's own check (the recipe-level ``quantize`` has no ``target`` keyword checked
    that way), which tells the two apart without quantizing anything."""
    orders = {
        "package first": "import export\nf = export.quantize",
        "submodule first": "from export.quantize import quantize_with_budget, quantize\n"
        "import export\nf = export.quantize\nassert quantize.__module__ == 'export.quantize'",
        "import as": "import export.quantize as q\nassert callable(q.quantize_with_budget)\n"
        "import export\nf = export.quantize\nassert f is q",
    }
    procs = {}
    for what, code in orders.items():
        script = (
            f"{code}\nfrom sdk.errors import InputError\n"
            "try:\n    f('a.onnx', 'b.onnx', target='gpu')\nexcept InputError as e:\n"
            "    assert 'target must be one of cpu, tensorrt' in str(e), e\n    print('ok')\n"
        )
        procs[what] = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for what, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", (what, err[-2000:])


QUICK = dict(calib_frames=16, min_calib_frames=16, eval_frames=8, report_frames=4)


def _qdq_nodes(path: Path) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def test_quantize_imported_model_synthetic_cpu_and_tensorrt(imported, tmp_path):
    """A 3-class imported model on labelled phantoms: CPU INT8 and the TensorRT Q/DQ graph,
    each within the budget of the user's FP32 model, with the report rows."""
    from export.quantize import check_tensorrt_qdq

    _, _, _, fp32 = imported["basicunet-gray-nchw-logits"]
    q = export.quantize(fp32, tmp_path / "m.int8.onnx", data="synthetic", budget=0.05, **QUICK)
    md = read_onnx_file_metadata(q)
    assert md.precision == "int8" and md.provenance["import"]["source"] == "src.onnx"
    assert md.accuracy["int8_reference"].startswith("ground truth of 8 held-out frames")
    for k, drop in md.accuracy["drop"].items():
        assert drop <= 0.05 + 1e-9, (k, drop)
    assert _qdq_nodes(q) > 0  # really quantized
    with Analyzer(q, threads=1) as a:  # digest, metadata, same Result
        assert a.run(_frames(1)[0]).label in C3
    rep = json.loads((tmp_path / "m.int8.report.json").read_text())
    assert [r["format"] for r in rep["rows"]] == ["onnx", "onnx-int8"]
    assert rep["rows"][0]["reference"] and rep["rows"][1]["drop"]["dice"] is not None
    assert (tmp_path / "m.int8.report.md").read_text().count("|") > 20

    t = export.quantize(fp32, tmp_path / "m.trt.onnx", target="tensorrt", budget=0.05, **QUICK)
    check_tensorrt_qdq(t)
    assert read_onnx_file_metadata(t).provenance["quantization"]["target"] == "tensorrt"
    rows = json.loads((tmp_path / "m.trt.report.json").read_text())["rows"]
    assert rows[2]["format"] == "trt-int8"
    if rows[2]["status"] != "ok":  # no TensorRT here: said, not hidden
        assert rows[2]["status"].startswith("skipped")


def test_quantize_plain_folder_measures_agreement(imported, tmp_path):
    """A plain image folder (no labels): calibration on part of it, the budget as agreement
    with the FP32 model on the rest. Seg-only model: classes the phantoms do not have."""
    import cv2

    _, _, _, fp32 = imported["basicunet-seg-only-nhwc-2logits"]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_frames(24)):
        cv2.imwrite(str(folder / f"f{i}.png"), f)
    q = export.quantize(fp32, tmp_path / "s.int8.onnx", data=folder, budget=0.05, **QUICK)
    md = read_onnx_file_metadata(q)
    assert "agreement with the FP32 model" in md.accuracy["int8_reference"]
    assert md.accuracy["fp32_reference"]["dice"] == pytest.approx(1.0)
    assert md.accuracy["fp32_reference"]["accuracy"] == pytest.approx(1.0)
    rows = json.loads((tmp_path / "s.int8.report.json").read_text())["rows"]
    assert rows[0]["dice"] == pytest.approx(1.0) and rows[0]["accuracy"] == pytest.approx(1.0)


def test_quantize_busi_folder_and_errors(imported, tmp_path):
    import cv2

    _, _, _, fp32 = imported["segresnet-bgr-nchw-softmax2"]
    root = tmp_path / "busi"
    for label in ("benign", "malignant", "normal"):
        (root / label).mkdir(parents=True)
        for i in range(9):
            img, ids, _ = synthetic.phantom(label, size=(96, 128), seed=100 + i)
            cv2.imwrite(str(root / label / f"{label} ({i + 1}).png"), img)
            cv2.imwrite(str(root / label / f"{label} ({i + 1})_mask.png"), (ids > 0) * 255)
    q = export.quantize(fp32, tmp_path / "b.int8.onnx", data=root, budget=0.05, **QUICK)
    md = read_onnx_file_metadata(q)
    assert md.accuracy["int8_reference"].startswith("ground truth")
    assert md.provenance["quantization"]["data"] == str(root)
    with pytest.raises(InputError, match="quantize the FP32 one"):
        export.quantize(q, tmp_path / "again.onnx", **QUICK)
    _, src, _, _ = imported["segresnet-bgr-nchw-softmax2"]
    with pytest.raises(ModelError, match=r"plain ONNX model.*import it first"):
        export.quantize(src, tmp_path / "raw.int8.onnx", **QUICK)
    with pytest.raises(InputError, match="target must be one of"):
        export.quantize(fp32, tmp_path / "x.onnx", target="gpu")
