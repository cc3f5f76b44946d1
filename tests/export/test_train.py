"""export.train / data / checkpoint / cli: a tiny real run (edge_s, 24 phantoms, 64x64, 2 epochs),
resume, checkpoint round trip, errors, and the data pipeline's use of the SDK preprocessing."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402

from export.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from export.data import (  # noqa: E402
    Augment,
    MultiTaskDataset,
    SyntheticFrames,
    open_frames,
    stratified_split,
)
from export.models import create_model  # noqa: E402
from export.train import train  # noqa: E402
from sdk import kernels, synthetic  # noqa: E402
from sdk.errors import InputError, ModelError, SourceError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(
    epochs=2,
    batch_size=8,
    lr=2e-3,
    seed=0,
    device="cpu",
    size=64,
    n_train=24,
    threads=1,
    progress=False,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "edge_s"
    best = train("edge_s", "synthetic", out, **TINY)
    assert best == out / "best.json"
    return out


def test_tiny_run_writes_everything(run_dir: Path) -> None:
    for name in (
        "last.json",
        "last.safetensors",
        "best.json",
        "best.safetensors",
        "metrics.json",
        "curves.png",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [0, 1]
    assert m["data"]["train"]["per_class"] == {"normal": 8, "benign": 8, "malignant": 8}
    assert m["data"]["mask_size"] == [16, 16]
    for e in m["epochs"]:
        v = e["val"]
        assert 0 <= v["dice"] <= 1 and 0 <= v["iou"] <= v["dice"] and 0 <= v["accuracy"] <= 1
        assert 0 <= v["dice_lesion"] <= 1  # the synthetic val split always holds lesions
        assert v["macro_auc"] is None or 0 <= v["macro_auc"] <= 1
        assert np.asarray(v["confusion"]).sum() == m["data"]["val"]["n"]
        assert np.isfinite(e["train"]["total"]) and e["train"]["total"] > 0
    # The cosine schedule: full lr at epoch 0, half way at epoch 1 of 2.
    assert [e["lr"] for e in m["epochs"]] == pytest.approx([2e-3, 1e-3])
    meta = json.loads((run_dir / "last.json").read_text())
    assert meta["arch"] == "edge_s" and meta["epoch"] == 1 and meta["input_size"] == [64, 64]
    assert meta["normalization"] == {"mean": [0.5], "std": [0.5]}
    assert meta["optimizer"]["type"] == "AdamW"
    assert any(k.startswith("optim.") for k in load_file(run_dir / "last.safetensors"))


def test_resume_matches_uninterrupted_run(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sliced"
    train("edge_s", "synthetic", out, stop_after=1, **TINY)
    assert json.loads((out / "last.json").read_text())["epoch"] == 0
    with pytest.raises(InputError, match="resume"):
        train("edge_s", "synthetic", out, **TINY)  # occupied folder without resume
    with pytest.raises(InputError, match="settings differ"):
        train("edge_s", "synthetic", out, resume=True, **{**TINY, "lr": 1e-2})
    train("edge_s", "synthetic", out, resume=True, **TINY)
    m = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [0, 1]
    a, b = load_file(run_dir / "last.safetensors"), load_file(out / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # same device, same seeds: bit-identical weights and optimizer state
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_checkpoint_round_trip(run_dir: Path) -> None:
    ck = load_checkpoint(run_dir / "best.json")
    assert ck.model.input_size == (64, 64) and not ck.model.training
    x = torch.rand(2, 1, 64, 64)
    # Rebuild by hand from the same tensors: identical outputs.
    ref = create_model("edge_s", pretrained=False)
    st = load_file(run_dir / "best.safetensors")
    ref.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("model.")})
    ref.eval()
    with torch.no_grad():
        got, want = ck.model(x), ref(x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_checkpoint_saves_optimizer_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("edge_s", pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 32, 32))["class_logits"].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ck", model, epoch=4, optimizer=opt, train={"note": "x"})
    ck = load_checkpoint(tmp_path / "ck.safetensors")
    assert ck.epoch == 4 and ck.train == {"note": "x"}
    opt2 = torch.optim.AdamW(ck.model.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optimizer_state)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, st in s1["state"].items():
        for key, v in st.items():
            torch.testing.assert_close(s2["state"][pid][key], v, rtol=0, atol=0)


def _edit(src: Path, dst: Path, **changes) -> Path:
    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    meta = json.loads(src.read_text())
    for key, value in changes.items():
        if key == "config":
            meta["config"].update(value)
        else:
            meta[key] = value
    dst.write_text(json.dumps(meta))
    return dst


def test_bad_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    best = run_dir / "best.json"
    with pytest.raises(ModelError, match="not options of edge_s"):
        load_checkpoint(_edit(best, tmp_path / "a.json", config={"wings": 2}))
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(_edit(best, tmp_path / "b.json", config={"depth": 11}))
    with pytest.raises(ModelError, match="unknown"):
        load_checkpoint(_edit(best, tmp_path / "c.json", arch="resnet9000"))
    with pytest.raises(ModelError, match="config does not build"):
        load_checkpoint(_edit(best, tmp_path / "d.json", config={"depth": 99}))
    with pytest.raises(ModelError, match="do not match"):
        load_checkpoint(_edit(best, tmp_path / "e.json", input_channels=["gdm"]))
    with pytest.raises(ModelError, match="SHA-256"):
        load_checkpoint(_edit(best, tmp_path / "f.json", weights_sha256="0" * 64))
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.json")


def test_train_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown model"):
        train("resnet9000", "synthetic", tmp_path / "x", **TINY)
    with pytest.raises(InputError, match="epochs"):
        train("edge_s", "synthetic", tmp_path / "x", **{**TINY, "epochs": 0})
    with pytest.raises(InputError, match="multiples of 16"):
        train("edge_s", "synthetic", tmp_path / "x", **{**TINY, "size": 72})
    empty = tmp_path / "busi"
    (empty / "benign").mkdir(parents=True)
    with pytest.raises(SourceError, match="no image"):
        train("edge_s", empty, tmp_path / "y", **TINY)
    with pytest.raises(SourceError):
        train("edge_s", tmp_path / "missing", tmp_path / "z", **TINY)
    assert not (tmp_path / "x").exists()  # nothing written by a refused run
    with pytest.raises(InputError, match="unknown split"):
        train("edge_s", "synthetic", tmp_path / "s", **{**TINY, "split": "nope-train"})
    with pytest.raises(InputError, match="dataset folder"):
        train("edge_s", empty, tmp_path / "s2", **{**TINY, "split": "ood-train"})
    assert not (tmp_path / "s").exists() and not (tmp_path / "s2").exists()


def test_split_run_draws_inside_the_region(tmp_path: Path) -> None:
    """train(split="ood-train"): training and validation phantoms are drawn inside the split,
    the run records it, and resuming with another split is refused."""
    from export.train import _data

    names = ("benign", "malignant", "normal")
    for frames in _data("synthetic", names, (64, 64), 8, 3, 0.2, 0, "ood-train"):
        assert frames.split is not None
        assert frames.split.to_dict() == synthetic.OOD_TRAIN.to_dict()
    out = tmp_path / "ood"
    kw = {**TINY, "epochs": 1, "n_train": 8, "n_val": 3, "split": "ood-train"}
    train("edge_s", "synthetic", out, **kw)
    assert load_checkpoint(out / "best.json").train["run"]["split"] == "ood-train"
    with pytest.raises(InputError, match="settings differ"):
        train("edge_s", "synthetic", out, resume=True, **{**kw, "epochs": 2, "split": None})


def test_supplement_replaces_training_frames_with_its_region(tmp_path: Path) -> None:
    """train(supplement=...): the last N training frames are drawn inside the group's split
    (intersected with the run's), from their own seed stream; the first ones are the plain
    run's frames; validation is untouched; the run records the groups; bad groups refused."""
    from export.data import ConcatFrames
    from export.train import _data, _supplement, _supplement_json

    names = ("benign", "malignant", "normal")
    hyper = {
        "name": "hyper",
        "include": [{"lesion.echo_pattern": ["hyperechoic"]}],
        "labels": ["benign", "benign", "malignant"],
    }
    groups = _supplement_json([{"n": 3, "split": hyper}], "synthetic", 8)
    plain, _ = _data("synthetic", names, (48, 48), 8, 3, 0.2, 0, "ood-train")
    frames = _supplement(plain, groups, names, (48, 48), 0, "ood-train")
    assert isinstance(frames, ConcatFrames) and len(frames) == 8
    assert frames.labels == [*plain.labels[:5], 0, 0, 1]  # the split's label cycle
    for i in range(5):
        assert np.array_equal(frames.get(i)[0], plain.get(i)[0])
    sup = frames.parts[1]
    assert (
        sup.split.to_dict()
        == synthetic.Split.from_dict(hyper).intersect(synthetic.OOD_TRAIN).to_dict()
    )
    for i in range(3):
        ss = np.random.SeedSequence([sup.seed, i])
        seed = int(ss.generate_state(1)[0])
        _, _, info = synthetic.phantom(
            names[sup.labels[i]], (48, 48), seed=seed, style="scanner", split=sup.split
        )
        assert any(x["echo_pattern"] == "hyperechoic" for x in info["lesions"])
        assert info["factors"]["geometry"] == "linear"  # inside ood-train too
        assert frames.get(5 + i)[1].any()
    with pytest.raises(IndexError):
        frames.get(8)
    out = tmp_path / "sup"
    kw = {**TINY, "epochs": 1, "n_train": 8, "n_val": 3}
    train("edge_s", "synthetic", out, supplement=[{"n": 2, "split": hyper}], **kw)
    run = load_checkpoint(out / "best.json").train["run"]
    assert run["supplement"] == [{"n": 2, "split": synthetic.Split.from_dict(hyper).to_dict()}]
    with pytest.raises(InputError, match="settings differ"):
        train("edge_s", "synthetic", out, resume=True, **{**kw, "epochs": 2})  # no supplement
    bad = [
        ([{"n": 8, "split": hyper}], "must leave some"),
        ([{"n": 2}], "must be"),
        ({"n": 2, "split": hyper}, "a list of"),
        ([{"n": 0, "split": hyper}], "n must be"),
        ([{"n": 2, "split": "nope"}], "unknown split"),
        ([{"n": 2, "split": None}], "needs a split"),
    ]
    for sup_arg, match in bad:
        with pytest.raises(InputError, match=match):
            train("edge_s", "synthetic", tmp_path / "bad", supplement=sup_arg, **kw)
    busi = tmp_path / "busi"
    (busi / "benign").mkdir(parents=True)
    with pytest.raises(InputError, match="dataset folder"):
        train("edge_s", busi, tmp_path / "bad", supplement=[{"n": 2, "split": hyper}], **kw)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="same classes"):
        ConcatFrames([plain, SyntheticFrames(2, (48, 48), 0, ("normal", "benign", "malignant"))])
    with pytest.raises(InputError, match="at least one"):
        ConcatFrames([])


def _busi(root: Path, per_class: dict[str, int]) -> None:
    import cv2

    for label, n in per_class.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            image, ids, _ = synthetic.phantom(label, size=(80, 96), seed=100 + i)
            cv2.imwrite(str(root / label / f"{label} ({i + 1}).png"), image)
            cv2.imwrite(str(root / label / f"{label} ({i + 1})_mask.png"), (ids > 0) * 255)


def test_busi_folder_run_weights_classes(tmp_path: Path) -> None:
    _busi(tmp_path / "busi", {"benign": 6, "malignant": 3, "normal": 3})
    out = tmp_path / "run"
    train("edge_s", tmp_path / "busi", out, **{**TINY, "epochs": 1, "val_fraction": 0.25})
    m = json.loads((out / "metrics.json").read_text())
    # Stratified split: round(0.25 n_k), >= 1 per class → val 2 / 1 / 1, train 4 / 2 / 2.
    assert m["data"]["val"]["per_class"] == {"normal": 1, "benign": 2, "malignant": 1}
    # Balanced weights N / (K n_k) over the training split: 8 / (3 x (2, 4, 2)).
    np.testing.assert_allclose(m["data"]["class_weights"], [8 / 6, 8 / 12, 8 / 6], rtol=1e-6)


def test_dataset_uses_sdk_preprocessing() -> None:
    frames = SyntheticFrames(3, (96, 80), seed=5)
    ds = MultiTaskDataset(frames, (64, 64), ("image", "gdm"), (0.5, 0.1), (0.5, 0.2), (16, 16))
    x, m, y = ds[2]
    image, mask, label = frames.get(2)
    want = kernels.preprocess(image, (64, 64), ("image", "gdm"), mean=(0.5, 0.1), std=(0.5, 0.2))
    np.testing.assert_array_equal(x.numpy(), want)
    assert m.shape == (1, 16, 16) and 0 <= float(m.min()) and float(m.max()) <= 1
    assert int(y) == label == 2 and frames.class_names[2] == "malignant"
    # The area-resized mask keeps the lesion's area fraction.
    assert float(m.mean()) == pytest.approx(mask.mean(), abs=0.02)


def test_augmentation_is_deterministic_and_keeps_lesions() -> None:
    frames = SyntheticFrames(6, (96, 96), seed=1)
    aug = Augment(p_rotate=1.0, p_crop=1.0, p_speckle=1.0)
    ds = MultiTaskDataset(frames, (64, 64), ("image",), (0.5,), (0.5,), (16, 16), aug, seed=3)
    a = ds[1]
    b = ds[1]
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a[0])
    rng = np.random.default_rng(0)
    for i in range(6):
        image, mask, _ = frames.get(i)
        im2, m2 = aug(image, mask, rng)
        assert im2.dtype == np.uint8 and set(np.unique(m2)) <= {0, 1}
        if mask.any():  # a crop keeps at least half of the lesion (rotation may clip a bit)
            assert m2.sum() > 0


def test_split_and_open_frames(tmp_path: Path) -> None:
    tr, va = stratified_split([0] * 5 + [1] * 5 + [2] * 2, 0.2, seed=0)
    assert sorted(tr + va) == list(range(12)) and not set(tr) & set(va)
    assert len(va) == 3  # one per class
    with pytest.raises(InputError, match="too few"):
        stratified_split([0, 1, 2], 0.2, seed=0)
    _busi(tmp_path / "b", {"benign": 2, "normal": 1})
    frames = open_frames(tmp_path / "b")
    assert len(frames) == 3 and sorted(frames.labels) == [0, 1, 1]
    with pytest.raises(InputError, match="unknown class folder"):
        open_frames(tmp_path / "b", class_names=("normal", "lesion"))


def test_synthetic_frames_size_mix() -> None:
    """A size mix draws each frame at one of the sizes, by its seed: deterministic, every size
    used, a single size unchanged from the plain form; bad sizes are refused."""
    sizes = [(64, 64), (96, 128), (128, 96)]
    mix = SyntheticFrames(24, sizes, seed=3)
    shapes = [mix.get(i)[0].shape for i in range(24)]
    assert set(shapes) == set(sizes)
    assert [m.shape for _, m, _ in (mix.get(i) for i in range(24))] == shapes
    again = SyntheticFrames(24, sizes, seed=3, cache=False)
    assert all(np.array_equal(again.get(i)[0], mix.get(i)[0]) for i in (0, 5, 23))
    one, plain = SyntheticFrames(3, [(64, 64)], seed=1), SyntheticFrames(3, (64, 64), seed=1)
    assert all(np.array_equal(one.get(i)[0], plain.get(i)[0]) for i in range(3))
    for bad in ([], [(64,)], "64x64", [(64, 64.5)], [(True, 64)]):
        with pytest.raises(InputError, match="frame size"):
            SyntheticFrames(3, bad)  # type: ignore[arg-type]


def test_cli_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export import cli

    parser = argparse.ArgumentParser(prog="sonoedge")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "train",
            "--arch",
            "edge_s",
            "--data",
            "synthetic",
            "--epochs",
            "1",
            "--size",
            "64",
            "--n-train",
            "9",
            "--n-val",
            "3",
            "--batch-size",
            "3",
            "--out",
            str(tmp_path / "cli"),
            "--threads",
            "1",
            "--quiet",
            "--model-kwargs",
            '{"pretrained": false}',
        ]
    )
    assert args.handler(args) == 0
    assert "best checkpoint" in capsys.readouterr().out
    meta = json.loads((tmp_path / "cli" / "best.json").read_text())
    assert meta["config"]["pretrained"] is False and meta["input_size"] == [64, 64]


def test_lr_schedule_warmup_then_cosine() -> None:
    from export.train import _lr_schedule

    at = _lr_schedule(1e-3, epochs=2, steps_per_epoch=4, warmup_steps=3)
    # Linear warm-up over the first 3 steps of the run, then the epoch's cosine value.
    assert [at(0)(i) for i in range(4)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    assert [at(1)(i) for i in range(4)] == pytest.approx([5e-4] * 4)
    plain = _lr_schedule(1e-3, epochs=2, steps_per_epoch=4, warmup_steps=0)
    assert plain(0)(0) == 1e-3 and plain(1)(3) == pytest.approx(5e-4)


def test_deep_supervision_and_warmup_run(tmp_path: Path) -> None:
    """mtl_oca's soft object regions (the paper's L_soft) as deep supervision: the aux term is
    logged, adds to the task loss, and the run records its settings."""
    kw = {**TINY, "epochs": 1, "n_train": 8, "n_val": 3}
    best = train("mtl_oca", "synthetic", tmp_path / "oca", aux_weight=0.4, warmup_steps=2, **kw)
    m = json.loads((best.parent / "metrics.json").read_text())
    rec = m["epochs"][0]["train"]
    assert rec["aux"] > 0
    assert rec["total"] == pytest.approx(rec["task"] + 0.4 * rec["aux"], rel=1e-5)
    assert "kd_cls" not in rec  # no teacher: no KD parts logged
    assert m["run"]["aux_weight"] == 0.4 and m["run"]["warmup_steps"] == 2
    # One epoch of one step: the warm-up's first step is the lr of the whole epoch.
    assert m["epochs"][0]["lr"] == pytest.approx(TINY["lr"] / 2)


def test_trainer_option_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="forward_train"):
        train("edge_s", "synthetic", tmp_path / "a", aux_weight=0.4, **TINY)
    with pytest.raises(InputError, match="need a teacher"):
        train("edge_s", "synthetic", tmp_path / "b", gamma_feat=1.0, **TINY)
    with pytest.raises(InputError, match="aux_weight"):
        train("edge_s", "synthetic", tmp_path / "c", aux_weight=-1.0, **TINY)
    with pytest.raises(InputError, match="warmup_steps"):
        train("edge_s", "synthetic", tmp_path / "d", warmup_steps=-3, **TINY)
    with pytest.raises(InputError, match="warmup_steps"):
        train("edge_s", "synthetic", tmp_path / "e", warmup_steps=1.5, **TINY)
    for name in "abcde":
        assert not (tmp_path / name).exists()


def test_cli_train_with_teacher_and_options(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sonoedge train --teacher`: the same trainer with KD; the options reach the run."""
    from sdk import cli as sdk_cli

    base = ["train", "--arch", "edge_s", "--data", "synthetic", "--epochs", "1", "--n-train"]
    base += ["9", "--n-val", "3", "--batch-size", "3", "--threads", "1", "--quiet"]
    out = tmp_path / "kd"
    argv = [*base, "--out", str(out), "--teacher", str(run_dir / "best.json"), "--T", "2"]
    argv += ["--beta-pixel", "0.5", "--augment", "ultrasound", "--warmup-steps", "2"]
    argv += ["--presence-weight", "0.25", "--precision", "fp32", "--batch-dice"]
    assert sdk_cli.main(argv) == 0
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["teacher"] == str(run_dir / "best.json") and run["size"] == [64, 64]
    assert (run["T"], run["alpha_kd"], run["beta_pixel"]) == (2.0, 1.0, 0.5)
    assert run["augment"] == "ultrasound" and run["warmup_steps"] == 2
    assert run["presence_weight"] == 0.25 and "precision" not in run and run["batch_dice"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse: a usage error names the choices
        sdk_cli.main([*base, "--out", str(tmp_path / "bad"), "--precision", "fp16"])
    assert e.value.code == 2 and "fp32" in capsys.readouterr().err
    bad = [*base, "--out", str(tmp_path / "bad"), "--no-augment", "--augment", "ultrasound"]
    assert sdk_cli.main(bad) == 1
    assert "contradicts" in capsys.readouterr().err
    assert sdk_cli.main([*base, "--out", str(tmp_path / "bad"), "--gamma-feat", "1"]) == 1
    assert "need a teacher" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_resume_a_run_saved_before_the_one_trainer(tmp_path: Path) -> None:
    """A run saved before the KD / deep-supervision / warm-up settings existed has none of them
    in its record: it resumes under the values it trained with (off), and only those."""
    out = tmp_path / "legacy"
    train("edge_s", "synthetic", out, stop_after=1, **TINY)
    js = out / "last.json"
    meta = json.loads(js.read_text())
    for k in ("T", "alpha_kd", "beta_pixel", "gamma_feat", "aux_weight", "warmup_steps"):
        meta["train"]["run"].pop(k)
    js.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="warmup_steps"):
        train("edge_s", "synthetic", out, resume=True, warmup_steps=5, **TINY)
    train("edge_s", "synthetic", out, resume=True, **TINY)
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [0, 1]


def test_frozen_encoder_trains_the_rest_and_encodes_each_frame_once(tmp_path: Path) -> None:
    """train(frozen_encoder=True): the encoder's weights and BatchNorm statistics stay as they
    were, the decoder and heads learn, each distinct frame is encoded once over all epochs (the
    training views fixed, the cache reused), the checkpoint is the plain model's (it loads and
    runs without the cache), and resuming without the flag is refused."""
    from safetensors.torch import load_file

    from export.train import _FrozenEncoder

    calls: list[int] = []
    real = _FrozenEncoder.__call__

    def counting(self: _FrozenEncoder, x: torch.Tensor) -> object:
        before = len(self.store)
        out = real(self, x)
        calls.append(len(self.store) - before)
        return out

    torch.manual_seed(0)
    start = create_model("edge_s").state_dict()  # as train() builds it (seed 0)
    out = tmp_path / "frozen"
    kw = {**TINY, "epochs": 3, "n_train": 16, "n_val": 8}
    import unittest.mock as um

    with um.patch.object(_FrozenEncoder, "__call__", counting):
        best = train("edge_s", "synthetic", out, frozen_encoder=True, **kw)
    # 16 training + 8 validation frames + the shape probe: encoded once each, 3 epochs.
    assert sum(calls) == 16 + 8 + 1
    w = {k[len("model.") :]: v for k, v in load_file(str(out / "last.safetensors")).items()}
    enc = [k for k in w if k.startswith("encoder.")]
    assert enc and all(torch.equal(w[k], start[k]) for k in enc)  # incl. BN running stats
    assert any(not torch.equal(w[k], start[k]) for k in w if k.startswith("heads") or "dec" in k)
    ck = load_checkpoint(best)
    assert "encode" not in vars(ck.model)  # a plain model: no cache attached
    assert ck.train["run"]["frozen_encoder"] is True
    with torch.no_grad():
        assert ck.model(ck.model.example_input(1, (64, 64)))["mask_logits"].shape[0] == 1
    with pytest.raises(InputError, match="frozen_encoder"):
        train("edge_s", "synthetic", out, resume=True, **{**kw, "epochs": 4})
    with pytest.raises(InputError, match="no separate encoder"):
        train("mtl_oca", "synthetic", tmp_path / "m", frozen_encoder=True, **TINY)


def _with_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str]) -> None:
    import sdk.cpu

    monkeypatch.setattr(sdk.cpu, "cpu_flags", lambda: frozenset(flags))


def test_bf16_training_follows_fp32_and_records_what_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """precision='bf16': autocast forward passes, float32 weights and losses; the first
    epoch's loss follows the fp32 run of the same seed and frames within bf16's rounding, the
    weights differ (the option changes the arithmetic), and the run records it. The CPU flags
    are set so that the bf16 path runs on every CPU (emulated where it is not in hardware: the
    same numbers, only slower)."""
    _with_cpu_flags(monkeypatch, {"avx512_bf16"})
    kw = {**TINY, "epochs": 1, "n_train": 8, "n_val": 3, "batch_size": 4}
    runs = {
        p: train("mtl_oca", "synthetic", tmp_path / p, precision=p, aux_weight=0.4, **kw)
        for p in ("fp32", "bf16")
    }
    metrics = {p: json.loads((b.parent / "metrics.json").read_text()) for p, b in runs.items()}
    assert metrics["bf16"]["run"]["precision"] == "bf16"
    assert "precision" not in metrics["fp32"]["run"]  # fp32 runs are saved as before
    a, b = (metrics[p]["epochs"][0]["train"]["total"] for p in ("fp32", "bf16"))
    assert np.isfinite(b) and b == pytest.approx(a, rel=0.05)
    w = {p: load_file(str(b.parent / "best.safetensors")) for p, b in runs.items()}
    assert all(v.dtype == torch.float32 for v in w["bf16"].values() if v.is_floating_point())
    assert any(not torch.equal(w["fp32"][k], w["bf16"][k]) for k in w["fp32"])
    ck = load_checkpoint(runs["bf16"], device="cpu")  # loads and runs in float32
    out = ck.model.eval()(ck.model.example_input(1, (64, 64)))
    assert out["mask_logits"].dtype == torch.float32
    with pytest.raises(InputError, match="precision"):  # a resume must run what was saved
        train(
            "mtl_oca",
            "synthetic",
            tmp_path / "bf16",
            precision="fp32",
            resume=True,
            aux_weight=0.4,
            **{**kw, "epochs": 2},
        )


def test_precision_errors_and_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="'fp32', 'bf16' or 'auto'"):
        train("edge_s", "synthetic", tmp_path / "a", precision="fp16", **TINY)
    _with_cpu_flags(monkeypatch, {"avx2", "fma"})
    with pytest.raises(InputError, match="no bfloat16 arithmetic in hardware"):
        train("edge_s", "synthetic", tmp_path / "b", precision="bf16", **TINY)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    kw = {**TINY, "epochs": 1, "n_train": 6, "n_val": 2}
    best = train("edge_s", "synthetic", tmp_path / "c", precision="auto", **kw)
    assert "precision" not in json.loads(best.read_text())["train"]["run"]  # auto -> fp32 here


def test_presence_weight_reaches_the_loss_and_the_run(tmp_path: Path) -> None:
    kw = {**TINY, "epochs": 1, "n_train": 6, "n_val": 2}
    best = train("edge_s", "synthetic", tmp_path / "p", presence_weight=0.5, **kw)
    m = json.loads((best.parent / "metrics.json").read_text())
    assert m["run"]["presence_weight"] == 0.5
    assert m["epochs"][0]["train"]["presence"] > 0
    with pytest.raises(InputError, match="presence_weight"):
        train("edge_s", "synthetic", tmp_path / "q", presence_weight=-1.0, **kw)
    assert not (tmp_path / "q").exists()
