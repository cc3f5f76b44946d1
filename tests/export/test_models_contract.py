"""The contract every registered model passes (docs/ARCHITECTURE.md, "The model contract";
export/models/_contract.py): shapes, gradients reach every parameter, ONNX parity with eager,
deterministic eval, batch independence. Parametrized over the registry, so a new model is
tested by registering it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.models import (  # noqa: E402
    EncoderDecoderModel,
    MultiTaskModel,
    create_model,
    list_models,
)
from sdk.errors import InputError  # noqa: E402

MODELS = list_models()


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> MultiTaskModel:
    torch.manual_seed(0)
    m = create_model(request.param)
    m.eval()
    return m


def inputs(model: MultiTaskModel, batch: int) -> tuple:
    torch.manual_seed(1)
    x = model.example_input(batch, model.test_input_size)
    return x if isinstance(x, tuple) else (x,)


def test_list_models_imports_no_torch() -> None:
    """Listing (and the registry) is plain data: a fresh interpreter lists every model without
    importing torch; the contract classes load torch on first use."""
    import subprocess
    import sys

    code = (
        "import sys; from export.models import list_models; names = list_models(); "
        "print(len(names), 'torch' in sys.modules); "
        "from export.models import MultiTaskModel; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(MODELS)), "False", "True"]


def test_registry_errors() -> None:
    with pytest.raises(InputError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(InputError, match="does not take"):
        create_model("edge_s", wings=2)


def test_shapes(model) -> None:
    x = inputs(model, 2)
    with torch.no_grad():
        out = model(*x)
    assert tuple(out) == model.output_names
    b = x[0].shape[0]
    assert out["class_logits"].shape == (b, len(model.class_names))
    if "mask_logits" in out:
        m = out["mask_logits"]
        assert m.ndim == 4 and m.shape[:2] == (b, 1)
        h, w = x[0].shape[-2:]
        assert h % m.shape[2] == 0 and w % m.shape[3] == 0
    if model.has_features:
        f = out["features"]
        hw = model.head_weights()
        assert f.ndim == 4 and f.shape[0] == b
        assert hw["w1"].shape[1] == f.shape[1]
        assert hw["w2"].shape == (len(model.class_names), hw["w1"].shape[0])
    for v in out.values():
        assert torch.isfinite(v).all()


def test_gradients_reach_every_parameter(model) -> None:
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        out = model(*inputs(model, 2))
        sum(v.float().square().mean() for v in out.values()).backward()
        missing = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))
        ]
        assert not missing, f"no gradient reaches {missing[:10]}"
    finally:
        model.eval()


def test_deterministic_eval(model) -> None:
    x = inputs(model, 1)
    with torch.no_grad():
        a, b = model(*x), model(*x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_encoder_decoder_stages_compose_forward(model) -> None:
    """Single-input models are encoder → decoder → heads: ``forward`` is ``forward_train``'s
    contract outputs in ``output_names`` order, and the training extras are declared."""
    if not isinstance(model, EncoderDecoderModel):
        assert isinstance(model.example_input(1), tuple)  # multi-input (samask_cltr)
        pytest.skip(f"{type(model).__name__} takes several inputs")
    (x,) = inputs(model, 2)
    with torch.no_grad():
        out, train_out = model(x), model.forward_train(x)
        staged = model.heads(model.encode(x), model.decode(model.encode(x)))
    assert tuple(out) == model.output_names
    for k in model.output_names:
        torch.testing.assert_close(out[k], train_out[k], rtol=0, atol=0)
        torch.testing.assert_close(out[k], staged[k], rtol=0, atol=0)
    assert ("aux_mask_logits" in train_out) == model.has_aux_masks


def test_batch_independence(model) -> None:
    x = inputs(model, 3)
    with torch.no_grad():
        full = model(*x)
        one = model(*(t[1:2] for t in x))
    for k in full:
        torch.testing.assert_close(full[k][1:2], one[k], rtol=1e-4, atol=1e-5)


def test_onnx_parity(model, tmp_path) -> None:
    from export.onnx_export import to_onnx_file

    x = inputs(model, 2)
    path = to_onnx_file(model, x, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), x, strict=True)}
    got = sess.run(list(model.output_names), feeds)
    with torch.no_grad():
        ref = model(*x)
    for name, g in zip(model.output_names, got, strict=True):
        err = float(np.abs(g - ref[name].numpy()).max())
        assert err <= 1e-4, f"{name}: ONNX Runtime differs from eager by {err}"


# The from-scratch seeds (and sam_mtl's new decoder) start their lesion logits at the lesion prior
# (export/models/_contract.py init_mask_logits; why: seed-ablation-mtl_oca.md, issue #15).
PRIOR_MODELS = ["acsnet", "mtl_oca", "nmtnet", "sam_mtl"]


@pytest.mark.parametrize("name", PRIOR_MODELS)
def test_mask_logits_start_at_the_lesion_prior(name) -> None:
    from export.models._contract import LESION_PRIOR

    kw = {"pretrained": False} if name == "sam_mtl" else {}
    torch.manual_seed(0)
    m = create_model(name, **kw).eval()
    convs = m.mask_logit_convs()
    assert convs, "a seed with a mask head declares its lesion-logit convolutions"
    logit = float(np.log(LESION_PRIOR / (1 - LESION_PRIOR)))
    for conv, ch in convs:
        assert conv.bias[ch].item() == pytest.approx(logit)
        others = [v for i, v in enumerate(conv.bias.tolist()) if i != ch]
        assert others == [0.0] * len(others)
    with torch.no_grad():
        p = torch.sigmoid(m(*inputs(m, 2))["mask_logits"])
    # Weights N(0, 0.01): every pixel within a few percent of the prior, nowhere near 0.5.
    assert abs(p.mean().item() - LESION_PRIOR) < 0.01
    assert p.max().item() < 0.1
    # mask_prior=None: the convolution as built (bias 0 -> p = 0.5 on average).
    torch.manual_seed(0)
    plain = create_model(name, mask_prior=None, **kw).eval()
    with torch.no_grad():
        q = torch.sigmoid(plain(*inputs(plain, 2))["mask_logits"])
    assert abs(q.mean().item() - 0.5) < 0.05


def test_mask_prior_errors() -> None:
    for bad in (0.0, 1.0, -0.1, 2, float("nan"), "0.1"):
        with pytest.raises(InputError, match="probability in"):
            create_model("acsnet", mask_prior=bad)
    from export.models._contract import with_mask_prior

    with pytest.raises(InputError, match="declares no lesion-logit"):
        with_mask_prior(create_model("edge_s", pretrained=False), 0.04)
