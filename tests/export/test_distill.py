"""export.distill: KD losses, a tiny real distillation (edge_s teacher → edge_s student, 64×64,
24 phantoms, 1 epoch), the no-teacher baseline on the same frames, and the error paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import load_file  # noqa: E402

from export.distill import DistillLoss, class_kd_loss, distill, pixel_kd_loss  # noqa: E402
from export.losses import MultiTaskLoss  # noqa: E402
from export.models import create_model  # noqa: E402
from export.train import train  # noqa: E402
from sdk.errors import InputError, ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(epochs=1, batch_size=8, seed=0, device="cpu", n_train=24, threads=1, progress=False)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    # A wider decoder than the student's: teacher and student are different networks.
    return train("edge_s", "synthetic", out, size=64, model_kwargs={"decoder_channels": 48}, **TINY)


@pytest.fixture(scope="module")
def distilled(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return distill(teacher, tmp_path_factory.mktemp("kd") / "student", "edge_s", **TINY)


@pytest.fixture(scope="module")
def baseline(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kd") / "baseline"
    return distill(teacher, out, "edge_s", alpha_kd=0.0, beta_pixel=0.0, **TINY)


def test_kd_losses_zero_at_match_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 1, 8, 8, generator=g)
    assert pixel_kd_loss(s, s).abs() < 1e-5
    # A teacher at twice the resolution whose cells average to the student's probabilities.
    t = torch.logit(torch.sigmoid(s).repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert pixel_kd_loss(s, t).abs() < 1e-5
    assert pixel_kd_loss(s, torch.randn(2, 1, 16, 16, generator=g)) > 1e-3
    z = torch.randn(4, 3, generator=g)
    assert class_kd_loss(z, z, 4.0).abs() < 1e-6
    assert class_kd_loss(z, torch.randn(4, 3, generator=g), 4.0) > 1e-4
    with pytest.raises(InputError, match="same classes"):
        class_kd_loss(z, torch.randn(4, 2), 4.0)


def test_kd_terms_nonzero_and_gradients_reach_the_student_only() -> None:
    torch.manual_seed(0)
    student = create_model("edge_s", pretrained=False).train()
    teacher = create_model("edge_s", pretrained=False, decoder_channels=48).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.rand(4, 1, 64, 64)
    mask = (torch.rand(4, 1, 16, 16) > 0.7).float()
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        t_out = teacher(x)
    kd = DistillLoss(MultiTaskLoss(0.6), T=4.0, alpha_kd=1.0, beta_pixel=1.0)
    total, parts = kd(student(x), mask, y, t_out)
    assert parts["kd_cls"] > 0 and parts["kd_pixel"] > 0
    assert parts["total"] == pytest.approx(parts["task"] + parts["kd_cls"] + parts["kd_pixel"])
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    # The KD terms change the loss and the gradient.
    student.zero_grad()
    task_only = DistillLoss(MultiTaskLoss(0.6), T=4.0, alpha_kd=0.0, beta_pixel=0.0)
    t2, p2 = task_only(student(x), mask, y, None)
    assert p2["kd_cls"] == p2["kd_pixel"] == 0.0
    assert float(t2.detach()) == pytest.approx(parts["task"], rel=1e-5)
    assert float(t2.detach()) < float(total.detach())


def test_distillation_run(distilled: Path, teacher: Path) -> None:
    run = distilled.parent
    for name in ("best.json", "last.json", "metrics.json", "curves.png"):
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    rec = m["epochs"][0]["train"]
    assert rec["kd_cls"] > 0 and rec["kd_pixel"] > 0
    assert rec["total"] > rec["task"]
    assert m["data"]["teacher"]["arch"] == "edge_s"
    assert m["data"]["teacher_val"]["dice"] is not None  # the reference on the same frames
    info = json.loads(distilled.read_text())["train"]
    assert info["distillation"]["T"] == 4.0 and info["run"]["teacher"] == str(teacher)
    assert info["run"]["size"] == [64, 64]  # the teacher's size by default


def test_teacher_with_another_mask_grid(teacher: Path, tmp_path: Path) -> None:
    """Teacher and student masks on different grids (nmtnet's 256x256 mask into edge_s's 64x64
    crashed the teacher's validation before the first step): the teacher is scored at its own
    mask resolution, the pixel KD resamples its probabilities to the student's grid."""
    best = distill(teacher, tmp_path / "fine", "edge_s", student_kwargs={"mask_stride": 2}, **TINY)
    m = json.loads((best.parent / "metrics.json").read_text())
    assert m["data"]["mask_size"] == [32, 32]  # the student's grid; the teacher's is 16x16
    assert m["data"]["teacher_val"]["dice"] is not None
    assert m["epochs"][0]["train"]["kd_pixel"] > 0


def test_baseline_same_frames_no_kd(baseline: Path, distilled: Path) -> None:
    mb = json.loads((baseline.parent / "metrics.json").read_text())
    md = json.loads((distilled.parent / "metrics.json").read_text())
    assert mb["epochs"][0]["train"]["kd_cls"] == mb["epochs"][0]["train"]["kd_pixel"] == 0.0
    assert mb["data"]["train"] == md["data"]["train"] and mb["data"]["val"] == md["data"]["val"]
    keys = ("data", "size", "seed", "n_train", "batch_size", "lr", "epochs")
    assert {k: mb["run"][k] for k in keys} == {k: md["run"][k] for k in keys}
    assert (mb["run"]["alpha_kd"], mb["run"]["beta_pixel"]) == (0.0, 0.0)


def test_baseline_without_any_teacher_is_deterministic(tmp_path: Path) -> None:
    kw = dict(TINY, n_train=8, batch_size=8, size=64, alpha_kd=0.0, beta_pixel=0.0)
    kw["student_kwargs"] = {"pretrained": False}
    a = distill(None, tmp_path / "a", **kw)
    b = distill(None, tmp_path / "b", **kw)
    ta, tb = (load_file(str(p.with_suffix(".safetensors"))) for p in (a, b))
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0)


def test_errors(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="need a teacher"):
        distill(None, tmp_path / "x", **TINY)
    with pytest.raises(InputError, match="alpha_kd"):
        distill(teacher, tmp_path / "x", alpha_kd=-1.0, **TINY)
    with pytest.raises(InputError, match="temperature"):
        distill(teacher, tmp_path / "x", T=0.0, **TINY)
    with pytest.raises(InputError, match="unknown student"):
        distill(teacher, tmp_path / "x", "no_such_model", **TINY)
    with pytest.raises(InputError, match="same classes"):
        distill(
            teacher,
            tmp_path / "x",
            student_kwargs={"class_names": ("benign", "normal", "malignant")},
            **TINY,
        )
    assert not (tmp_path / "x" / "best.json").exists()


def test_teacher_config_that_does_not_match_its_architecture(teacher: Path, tmp_path: Path) -> None:
    for suffix in (".json", ".safetensors"):
        shutil.copy(teacher.with_suffix(suffix), tmp_path / f"t{suffix}")
    meta = json.loads((tmp_path / "t.json").read_text())
    meta["config"]["depth"] = 11  # the weights were trained with 8 blocks
    (tmp_path / "t.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit"):
        distill(tmp_path / "t.json", tmp_path / "out", **TINY)
    assert not (tmp_path / "out").exists()


def test_occupied_out_dir_is_refused(distilled: Path, teacher: Path) -> None:
    with pytest.raises(InputError, match="already holds"):
        distill(teacher, distilled.parent, **TINY)


def test_feature_kd_run(teacher: Path, tmp_path: Path) -> None:
    """Feature KD on the lesion-pooled features (both edge_s: both have features): logged,
    non-zero, part of the total; a student without features is refused before anything runs."""
    best = distill(teacher, tmp_path / "f", "edge_s", gamma_feat=1.0, **TINY)
    m = json.loads((best.parent / "metrics.json").read_text())
    rec = m["epochs"][0]["train"]
    assert rec["kd_feat"] > 0
    assert rec["total"] == pytest.approx(
        rec["task"] + rec["kd_cls"] + rec["kd_pixel"] + rec["kd_feat"], rel=1e-5
    )
    assert m["run"]["gamma_feat"] == 1.0
    with pytest.raises(InputError, match="needs features"):
        distill(teacher, tmp_path / "g", "mtl_oca", gamma_feat=1.0, **TINY)
    assert not (tmp_path / "g").exists()


def test_feature_kd_loss_properties() -> None:
    from export.losses import feature_kd_loss, lesion_pooled

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 8, generator=g)
    # Widths may differ: an orthogonal map of the features keeps every cosine similarity.
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert feature_kd_loss(a, a @ q) < 1e-10
    assert feature_kd_loss(a, torch.randn(4, 16, generator=g)) > 1e-3
    f = torch.zeros(2, 3, 4, 4)
    f[:, :, :2, :2] = 1.0  # the lesion quarter
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4, :4] = 1.0  # frame 0: lesion on that quarter; frame 1: no lesion
    pooled = lesion_pooled(f, mask)
    torch.testing.assert_close(pooled, torch.tensor([[1.0] * 3, [0.25] * 3]))
