"""CUDA kernels == C++ kernels (== the references through the CPU tests). Skipped without a GPU.

Device arrays come from CuPy (or torch when CuPy is absent). Outputs are poisoned with NaN / 0xAB
before every launch, so an element the kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdk.kernels as K
from sdk.errors import InputError

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def xp():
    """Device array module: CuPy, else a thin torch adapter."""
    try:
        import cupy

        return cupy
    except ImportError:
        pytest.importorskip("torch")
        import torch

        class _Torch:
            float32, float16, uint8, int32 = torch.float32, torch.float16, torch.uint8, torch.int32

            @staticmethod
            def asarray(a):
                return torch.as_tensor(np.ascontiguousarray(a), device="cuda")

            @staticmethod
            def full(shape, value, dtype):
                return torch.full(shape, value, dtype=dtype, device="cuda")

            @staticmethod
            def asnumpy(t):
                torch.cuda.synchronize()
                return t.cpu().numpy()

        return _Torch()


def sync_numpy(xp, a) -> np.ndarray:
    return xp.asnumpy(a)


@pytest.mark.parametrize("src", [(1, 1), (1, 17), (7, 13), (600, 800)])
@pytest.mark.parametrize("dst", [(1, 1), (5, 3), (256, 256)])
@pytest.mark.parametrize("channels", [("image",), ("image", "gdm", "gdx", "gdy")])
def test_preprocess_equals_cpu(xp, rng, src, dst, channels) -> None:
    from sdk.kernels import cuda

    frame = rng.integers(0, 256, src, dtype=np.uint8)
    out = xp.full((len(channels), *dst), np.nan, xp.float32)
    cuda.preprocess(xp.asarray(frame), out, channels=channels, sigma=1.3, mean=0.2, std=0.5)
    ref = K.preprocess(frame, size=dst, channels=channels, sigma=1.3, mean=0.2, std=0.5)
    np.testing.assert_allclose(sync_numpy(xp, out), ref, atol=1e-5, rtol=0)


def test_preprocess_color_roi_pitch_and_half(xp, rng) -> None:
    from sdk.kernels import cuda

    wide = rng.integers(0, 256, (480, 700, 3), dtype=np.uint8)
    dev = xp.asarray(wide)[:, 30:670]  # pitched view: row stride 700*3 bytes, 640 px wide
    host = np.ascontiguousarray(wide[:, 30:670])
    roi = (20, 10, 600, 450)
    for dtype, tol in ((xp.float32, 1e-5), (xp.float16, 2e-3)):
        out = xp.full((2, 224, 224), np.nan, dtype)
        cuda.preprocess(dev, out, roi=roi, color="rgb", sigma=2.0)
        ref = K.preprocess(host, size=(224, 224), roi=roi, color="rgb", sigma=2.0)
        np.testing.assert_allclose(sync_numpy(xp, out).astype(np.float32), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("fshape", "mshape"), [((4, 1, 1), (1, 1)), ((32, 64, 64), (256, 256)), ((8, 7, 13), (7, 13))]
)
def test_pool_classify_equals_cpu(xp, rng, fshape, mshape) -> None:
    from sdk.kernels import cuda

    feats = rng.standard_normal(fshape).astype(np.float32)
    w = rng.random(mshape).astype(np.float32)
    labels = rng.integers(0, 3, mshape).astype(np.int32)
    head = K.MLPHead(
        rng.standard_normal((16, fshape[0])),
        rng.standard_normal(16),
        rng.standard_normal((3, 16)),
        rng.standard_normal(3),
    )
    ref = K.pool_classify(feats, w, labels, 2, head)
    pooled = xp.full((3, fshape[0]), np.nan, xp.float32)
    probs = xp.full((3, 3), np.nan, xp.float32)
    logits = xp.full((3, 3), np.nan, xp.float32)
    dev_head = tuple(xp.asarray(a) for a in (head.w1, head.b1, head.w2, head.b2))
    cuda.pool_classify(
        xp.asarray(feats),
        xp.asarray(w),
        probs,
        labels=xp.asarray(labels),
        num_labels=2,
        head=dev_head,
        pooled=pooled,
        logits=logits,
    )
    np.testing.assert_allclose(sync_numpy(xp, pooled), ref.pooled, atol=1e-4)
    np.testing.assert_allclose(sync_numpy(xp, logits), ref.logits, atol=1e-4)
    np.testing.assert_allclose(sync_numpy(xp, probs), ref.probs, atol=1e-5)


@pytest.mark.parametrize(
    ("lshape", "fshape", "roi"), [((64, 64), (600, 800), None), ((7, 13), (9, 17), (2, 1, 13, 7))]
)
def test_mask_post_equals_cpu(xp, rng, lshape, fshape, roi) -> None:
    from sdk.kernels import cuda
    from sdk.kernels.reference import postprocess_mask_prob

    logits = (rng.standard_normal(lshape) * 4).astype(np.float32)
    out = xp.full(fshape, 0xAB, xp.uint8)
    cuda.postprocess_mask(xp.asarray(logits), out, roi=roi, value=255)
    got = sync_numpy(xp, out)
    ref, prob = postprocess_mask_prob(logits, fshape, roi, 0.5, 255)
    diff = got != ref
    assert not diff.any() or np.abs(prob[diff] - 0.5).max() < 1e-5


def test_bad_device_input(xp) -> None:
    from sdk.kernels import cuda

    with pytest.raises(InputError, match="__cuda_array_interface__"):
        cuda.preprocess(np.zeros((10, 10), np.uint8), xp.full((2, 8, 8), 0, xp.float32))
    with pytest.raises(InputError, match="uint8"):
        cuda.preprocess(xp.full((10, 10), 0, xp.float32), xp.full((2, 8, 8), 0, xp.float32))
    with pytest.raises(InputError, match="planes"):
        cuda.preprocess(xp.full((10, 10), 0, xp.uint8), xp.full((3, 8, 8), 0, xp.float32))
    with pytest.raises(InputError, match="sigma"):
        cuda.preprocess(xp.full((10, 10), 0, xp.uint8), xp.full((2, 8, 8), 0, xp.float32), sigma=-1)
