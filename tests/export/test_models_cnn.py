"""Architecture facts of the CNN teachers (MTL-OCA, NMTNet, ACSNet) and their ResNet18 encoder,
beyond the registry-wide contract of test_models_contract.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from export.models import create_model  # noqa: E402
from export.models._resnet import ResNet18Encoder, gn_groups  # noqa: E402
from export.models.acsnet import DeformConv2d, DSAModule, GateUnit, deform_conv2d  # noqa: E402
from export.models.mtl_oca import ObjectContextualAttention  # noqa: E402
from export.models.nmtnet import MFCR, LesionRegionEnhancement, masked_mean  # noqa: E402

CNN_MODELS = ("mtl_oca", "nmtnet", "acsnet")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- ResNet18 encoder ----------------------------------------------------------------------


def test_resnet18_matches_torchvision_parameter_count() -> None:
    # torchvision resnet18: 11,689,512 with a 3-channel stem and the 1000-way fc (513,000);
    # one input channel removes 2·64·7·7 stem weights.
    enc = ResNet18Encoder(in_chans=1)
    assert sum(p.numel() for p in enc.parameters()) == 11_689_512 - 513_000 - 2 * 64 * 49


def test_resnet18_pyramid_shapes() -> None:
    enc = ResNet18Encoder(in_chans=2).eval()
    with torch.no_grad():
        feats = enc(torch.rand(2, 2, 96, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 96 // r, 64 // r) for c, r in zip(enc.out_channels, enc.reductions, strict=True)
    ]


def test_group_norm_option_is_batch_independent_in_training() -> None:
    enc = ResNet18Encoder(in_chans=1, norm="group").train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        full, one = enc(x)[-1], enc(x[1:2])[-1]
    torch.testing.assert_close(full[1:2], one, rtol=1e-4, atol=1e-5)
    assert gn_groups(64) == 16 and gn_groups(512) == 32 and gn_groups(32) == 8
    with pytest.raises(ValueError, match="norm must be"):
        ResNet18Encoder(norm="layer")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["nmtnet", "acsnet"])
def test_group_norm_variant_builds_and_runs(name: str) -> None:
    model = create_model(name, norm="group").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        out = model(model.example_input(1, model.test_input_size))
    assert out["mask_logits"].shape == (1, 1, *model.test_input_size)


# --- all three models ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("mtl_oca", 1.5e6, 4e6), ("nmtnet", 14e6, 24e6), ("acsnet", 14e6, 24e6)],
)
def test_parameter_counts(name: str, low: float, high: float) -> None:
    n = sum(p.numel() for p in create_model(name).parameters())
    assert low < n < high, f"{name}: {n:,} parameters"


@pytest.mark.parametrize("name", CNN_MODELS)
def test_any_size_divisible_by_size_divisor(name: str) -> None:
    model = create_model(name).eval()
    k = model.size_divisor
    c = len(model.input_channels)
    for h, w in [(2 * k, 3 * k), (5 * k, 2 * k)]:
        with torch.no_grad():
            out = model(torch.rand(1, c, h, w))
        assert out["mask_logits"].shape == (1, 1, h, w)
        assert out["class_logits"].shape == (1, 3)


@pytest.mark.parametrize("name", CNN_MODELS)
def test_onnx_batch_axis_is_dynamic(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from export.onnx_export import to_onnx_file

    model = create_model(name).eval()
    path = to_onnx_file(
        model, (model.example_input(2, model.test_input_size),), tmp_path / "m.onnx"
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = model.example_input(3, model.test_input_size)
    mask, logits = sess.run(["mask_logits", "class_logits"], {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert mask.shape == (3, 1, *model.test_input_size) and logits.shape == (3, 3)
    np.testing.assert_allclose(mask, ref["mask_logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, ref["class_logits"].numpy(), atol=1e-4)


def test_num_classes_option_renames_classes() -> None:
    model = create_model("nmtnet", num_classes=2).eval()
    assert model.class_names == ("class_0", "class_1")
    with torch.no_grad():
        assert model(model.example_input(1, (64, 64)))["class_logits"].shape == (1, 2)


# --- MTL-OCA ---------------------------------------------------------------------------------


def test_oca_shapes_and_relation_is_a_distribution_over_regions() -> None:
    oca = ObjectContextualAttention(32, ocr_channels=48, key_channels=16, num_regions=2).eval()
    with torch.no_grad():
        augmented, region_logits, relation = oca(torch.rand(2, 32, 16, 24))
    assert augmented.shape == (2, 48, 16, 24)
    assert region_logits.shape == (2, 2, 16, 24)
    assert relation.shape == (2, 16 * 24, 2)
    assert (relation > 0).all()
    torch.testing.assert_close(relation.sum(-1), torch.ones(2, 16 * 24))


def test_oca_region_representation_is_eq1() -> None:
    pixels = torch.randn(2, 8, 5, 7)
    logits = torch.randn(2, 3, 5, 7)
    f = ObjectContextualAttention.region_representations(pixels, logits)
    assert f.shape == (2, 8, 3, 1)
    d = torch.softmax(logits.flatten(2), dim=2)  # d_ki, normalized over the pixels i
    expected = torch.einsum("bki,bci->bck", d, pixels.flatten(2))
    torch.testing.assert_close(f[..., 0], expected)
    # d sums to one over pixels, so a constant feature map is its own region representation.
    const = torch.full((1, 8, 5, 7), 3.0)
    f_const = ObjectContextualAttention.region_representations(const, logits[:1])
    torch.testing.assert_close(f_const, torch.full((1, 8, 3, 1), 3.0))


def test_mtl_oca_inputs_and_training_outputs() -> None:
    model = create_model("mtl_oca").eval()
    assert model.input_channels == ("image", "gdm") and model.input_size == (128, 128)
    x = model.example_input(2, (32, 32))
    assert x.shape == (2, 2, 32, 32)
    with torch.no_grad():
        train_out, out = model.forward_train(x), model(x)
    assert train_out["region_logits"].shape == (2, 2, 32, 32)  # the L_soft target's shape
    for k in out:
        torch.testing.assert_close(train_out[k], out[k], rtol=0, atol=0)


# --- NMTNet ----------------------------------------------------------------------------------


def test_masked_mean_pools_over_the_lesion() -> None:
    f = torch.randn(2, 4, 6, 6)
    ones = torch.ones(2, 1, 6, 6)
    torch.testing.assert_close(masked_mean(f, ones), f.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    m = torch.zeros(2, 1, 6, 6)
    m[:, :, 1:3, 2:5] = 1.0
    torch.testing.assert_close(masked_mean(f, m), f[:, :, 1:3, 2:5].mean(dim=(2, 3)))
    assert torch.isfinite(masked_mean(f, torch.zeros(2, 1, 6, 6))).all()  # no lesion: no NaN


def test_mfcr_and_lre_shapes() -> None:
    mfcr = MFCR((32, 64, 128), mid=64).eval()
    lre = LesionRegionEnhancement(32, 128).eval()
    with torch.no_grad():
        out = mfcr([torch.rand(2, 32, 16, 16), torch.rand(2, 64, 8, 8), torch.rand(2, 128, 4, 4)])
        enhanced, prior = lre(torch.rand(2, 32, 8, 8), out)
    assert out.shape == (2, 128, 4, 4)
    assert enhanced.shape == (2, 32, 8, 8) and prior.shape == (2, 1, 8, 8)


def test_nmtnet_side_outputs() -> None:
    model = create_model("nmtnet").eval()
    with torch.no_grad():
        out = model.forward_train(model.example_input(1, (64, 96)))
    for r in (16, 8, 4):
        assert out[f"side_logits_{r}"].shape == (1, 1, 64 // r, 96 // r)


# --- ACSNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "stride", "padding", "dilation", "bias", "size"),
    [
        (3, 1, 1, 1, True, (9, 11)),
        (3, 2, 1, 1, False, (10, 7)),
        (3, 1, 2, 2, True, (8, 8)),
        (1, 1, 0, 1, True, (5, 6)),
        (5, 2, 2, 1, True, (13, 12)),
    ],
)
def test_deform_conv_with_zero_offsets_is_conv2d(k, stride, padding, dilation, bias, size) -> None:
    conv = nn.Conv2d(6, 5, k, stride, padding, dilation, bias=bias)
    dconv = DeformConv2d(6, 5, k, stride, padding, dilation, bias=bias)
    dconv.load_state_dict(conv.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 6, *size)
    ref = conv(x)
    offset = torch.zeros(2, 2 * k * k, *ref.shape[-2:])
    torch.testing.assert_close(dconv(x, offset), ref, rtol=1e-4, atol=1e-5)


def test_deform_conv_offset_layout_is_dy_then_dx() -> None:
    w = torch.randn(4, 3, 3, 3)
    x = torch.randn(1, 3, 8, 9)
    plain = F.conv2d(x, w, padding=1)
    # Every tap one column to the right: out(y, x) = Σ w[i, j]·x[y + i − 1, x + j], i.e. a conv
    # whose zero padding moved from the left edge to the right (pad = left, right, top, bottom).
    dx = torch.zeros(1, 18, 8, 9)
    dx[:, 1::2] = 1.0
    right = F.conv2d(F.pad(x, (0, 2, 1, 1)), w)
    torch.testing.assert_close(deform_conv2d(x, dx, w, padding=(1, 1)), right, rtol=1e-4, atol=1e-5)
    # Every tap one row down: the channel before each x offset is the y offset.
    dy = torch.zeros(1, 18, 8, 9)
    dy[:, 0::2] = 1.0
    down = F.conv2d(F.pad(x, (1, 1, 0, 2)), w)
    torch.testing.assert_close(deform_conv2d(x, dy, w, padding=(1, 1)), down, rtol=1e-4, atol=1e-5)
    # Half a column interpolates bilinearly between the two neighbouring samples.
    mid = 0.5 * (plain + right)
    out = deform_conv2d(x, 0.5 * dx, w, padding=(1, 1))
    torch.testing.assert_close(out, mid, rtol=1e-4, atol=1e-5)


def test_deform_conv_gradient_reaches_offsets() -> None:
    x = torch.randn(1, 3, 6, 6)
    w = torch.randn(2, 3, 3, 3)
    offset = (0.3 * torch.randn(1, 18, 6, 6)).requires_grad_(True)
    deform_conv2d(x, offset, w, padding=(1, 1)).square().sum().backward()
    assert offset.grad is not None and offset.grad.abs().sum() > 0


def test_dsa_starts_as_plain_conv_and_attention_in_unit_interval() -> None:
    dsa = DSAModule(16).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.count_nonzero(dsa.offsets(x)) == 0  # zero-initialised offset predictor
        plain = dsa.act(dsa.norm(F.conv2d(x, dsa.dconv.weight, padding=1)))
        torch.testing.assert_close(dsa.deformed(x), plain, rtol=1e-4, atol=1e-5)
        att = dsa.attention(plain)
        assert att.shape == (2, 1, 8, 8) and (att > 0).all() and (att < 1).all()
        assert dsa(x).shape == x.shape


def test_gate_units_in_open_unit_interval() -> None:
    gate = GateUnit(16, 32).eval()
    e, d = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        g = gate.gate(e, d)
        assert g.shape == e.shape
        assert (g > 0).all() and (g < 1).all()
        torch.testing.assert_close(gate(e, d), e * g)
        # Trained-looking weights: still strictly inside (0, 1) and not constant.
        nn.init.normal_(gate.body[-1].weight, std=0.5)
        g = gate.gate(e, d)
        assert (g > 0).all() and (g < 1).all() and g.std() > 0.05


def test_acsnet_gates_fire_in_the_model() -> None:
    model = create_model("acsnet").eval()
    seen: list[torch.Tensor] = []
    hooks = [
        blk.gate.body.register_forward_hook(lambda _m, _i, o: seen.append(torch.sigmoid(o)))
        for blk in model.decoder
    ]
    with torch.no_grad():
        model(model.example_input(1, (64, 64)))
    for h in hooks:
        h.remove()
    assert len(seen) == 4  # one gate per skip: 1/16, 1/8, 1/4, 1/2
    assert all(((g > 0) & (g < 1)).all() for g in seen)


def test_acsnet_onnx_parity_with_active_deformation(tmp_path) -> None:
    """The contract's parity test runs with the zero-initialised offsets; here they are
    non-zero, so GridSample really interpolates (fractional, some out of bounds)."""
    ort = pytest.importorskip("onnxruntime")
    from export.onnx_export import to_onnx_file

    model = create_model("acsnet").eval()
    for dsa in (model.dsa_bottleneck, model.dsa_decoder):
        nn.init.normal_(dsa.offset.weight, std=0.05)
        nn.init.uniform_(dsa.offset.bias, -1.5, 1.5)
    x = model.example_input(2, (64, 64))
    with torch.no_grad():
        assert dsa.offsets(torch.rand(1, dsa.offset.in_channels, 8, 8)).abs().max() > 0.5
        ref = model(x)
    path = to_onnx_file(model, (x,), tmp_path / "acsnet.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mask, logits = sess.run(["mask_logits", "class_logits"], {"input": x.numpy()})
    np.testing.assert_allclose(mask, ref["mask_logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, ref["class_logits"].numpy(), atol=1e-4)


def test_acsnet_lesion_pooled_classifier_reads_the_predicted_lesion() -> None:
    """cls_pool="lesion": each scale is pooled over the predicted lesion and globally, so the
    class logits move when only the lesion probability moves; "global" ignores it; anything
    else is refused."""
    from sdk.errors import InputError

    torch.manual_seed(0)
    m = create_model("acsnet", cls_pool="lesion").eval()
    clf = m.classifier
    assert clf.pool == "lesion" and clf.factors == (4, 8, 16)
    x = torch.rand(1, 1, 64, 64)
    feats = m.encode(x)[2:]
    left = torch.zeros(1, 1, 32, 32)
    left[..., :, :16] = 1.0
    with torch.no_grad():
        a, b = clf(feats, left), clf(feats, 1.0 - left)
        assert (a - b).abs().max() > 1e-4
        with pytest.raises(InputError, match="lesion probability"):
            clf(feats)
    g = create_model("acsnet", cls_pool="global").eval().classifier
    with torch.no_grad():
        torch.testing.assert_close(g(feats, left), g(feats, 1.0 - left), rtol=0, atol=0)
    with pytest.raises(InputError, match="cls_pool"):
        create_model("acsnet", cls_pool="max")
