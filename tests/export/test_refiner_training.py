"""export/refiner.py: crops from a frame model's own lesions, a short real training run, the ONNX
export that sdk.refiner loads and sdk.Analyzer runs, and the CLI's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import sdk
from export import refiner as R
from sdk import synthetic
from sdk.refiner import LesionRefiner


@pytest.fixture(scope="module")
def crops():
    return R.build_crops(
        sdk.default_model(), 9, seed=R.TRAIN_SEED, sizes=((300, 400),), threads=1, progress=False
    )


def test_crops_are_labelled_model_lesions_and_true_ones(crops) -> None:
    X, M, Y = crops
    assert X.dtype == np.uint8 and X.shape[1:] == (R.INPUT, R.INPUT)
    assert M.shape == (len(X), R.INPUT // 2, R.INPUT // 2) and 0 <= M.min() and M.max() <= 1
    assert set(Y.tolist()) <= {0, 1, 2}
    # 6 lesion frames x 2 jittered crops of the truth at least, each with mask pixels.
    assert (Y > 0).sum() >= 12 and all(M[i].max() > 0 for i in np.nonzero(Y > 0)[0])
    assert all(M[i].max() == 0 for i in np.nonzero(Y == 0)[0])  # not a lesion: empty mask


def test_crops_are_the_runtime_crops(crops) -> None:
    """The first crop of a frame with no lesion found is random tissue; check instead that a
    truth crop equals sdk.refiner.crop of the same box, rounded to uint8."""
    img, truth, _ = synthetic.phantom(
        "benign", size=(300, 400), seed=R.TRAIN_SEED + 1, style="scanner"
    )
    c, m = R._sample(img, truth > 0, 10, 20, 150)
    from sdk.refiner import crop

    np.testing.assert_array_equal(
        c, np.rint(crop(img, 10, 20, 150, R.INPUT) * 255).astype(np.uint8)
    )
    assert m.shape == (R.INPUT // 2, R.INPUT // 2)


def test_train_export_load_run(crops, tmp_path) -> None:
    X, M, Y = crops
    logs = []
    net, hist = R.train(X, M, Y, epochs=1, batch=4, threads=1, log=logs.append, augment=True)
    assert len(hist) == 1 and np.isfinite(hist[0]["loss"]) and json.loads(logs[0])["epoch"] == 1
    path = R.export_onnx(net, tmp_path / "r.onnx", {"frames": 9})
    assert not list(tmp_path.glob("*.tmp"))
    ref = LesionRefiner(path, threads=1)
    assert ref.metadata["provenance"] == {"frames": 9}
    img, _, _ = synthetic.phantom("malignant", size=(300, 400), seed=5, style="scanner")
    out = ref.refine(img, [(100, 100, 60, 40), (150, 120, 30, 30)])  # one batched call
    assert len(out) == 2
    with sdk.Analyzer(threads=1, refiner=path) as a:
        res = a.run(img)
        assert res.label in ("normal", "benign", "malignant")


def test_another_input_size_trains_exports_and_flips(tmp_path) -> None:
    """``size`` (``--size``): crops, mask grid and the exported input follow it; ``flip`` lands
    in the metadata the runtime reads."""
    echo: list[str] = []
    X, M, Y = R.build_crops(
        sdk.default_model(),
        6,
        seed=R.TRAIN_SEED,
        sizes=((300, 400),),
        threads=1,
        progress=False,
        size=64,
        echo=echo,
    )
    assert X.shape[1:] == (64, 64) and M.shape[1:] == (32, 32)
    # Each crop's lesion echo pattern: "" exactly for the crops of no lesion.
    assert len(echo) == len(X) and all((e == "") == (y == 0) for e, y in zip(echo, Y, strict=True))
    w = R.echo_weights(echo, f"{echo[np.argmax(Y > 0)]}=5")
    assert w.max() == 5 and w.min() == 1
    net, _ = R.train(X, M, Y, epochs=1, batch=4, threads=1, log=lambda s: None, weights=w)
    path = R.export_onnx(net, tmp_path / "r64.onnx", {"frames": 6}, size=64, flip=True)
    ref = LesionRefiner(path, threads=1)
    assert ref.size == 64 and ref.flip is True
    img, _, _ = synthetic.phantom("benign", size=(300, 400), seed=6, style="scanner")
    out = ref.refine(img, [(100, 100, 60, 40)])
    assert len(out) == 1 and out[0].mask.shape == (out[0].box[3], out[0].box[2])
    with pytest.raises(ValueError, match="multiple of 32"):
        R.build_crops(sdk.default_model(), 3, sizes=((300, 400),), progress=False, size=100)


def test_too_few_crops_is_refused(crops) -> None:
    X, M, Y = crops
    with pytest.raises(ValueError, match="make more frames"):
        R.train(X[:8], M[:8], Y[:8], epochs=1, batch=32)


def test_cli_help_and_refusals(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as e:
        R.main(["--help"])
    assert e.value.code == 0 and "--augment" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        R.main(["--out", str(tmp_path), "--frames", "2"])
    assert e.value.code == 2 and "--frames" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        R.main(["--out", str(tmp_path), "--size", "100"])
    assert e.value.code == 2 and "multiple of 32" in capsys.readouterr().err
    for bad in ("hyperechoic", "hyperechoic=0", "=2", "iso=x"):
        with pytest.raises(SystemExit) as e:
            R.main(["--out", str(tmp_path), "--oversample", bad])
        assert e.value.code == 2 and "PATTERN=WEIGHT" in capsys.readouterr().err
