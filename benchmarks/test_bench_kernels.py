"""pytest-benchmark twins of `sonoedge bench kernels`: run with `pytest benchmarks`.

Each group holds the candidate and its anchors; compare them with
`pytest benchmarks --benchmark-group-by=group`. OpenCV runs on one thread, like the kernels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import sdk.kernels as K
from sdk import synthetic
from sdk.bench.kernels import _numpy_pool_classify, opencv_preprocess, scipy_preprocess
from sdk.kernels import reference as R

SIZE = (256, 256)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(prev)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return synthetic.phantom("malignant", size=(600, 800), seed=0)[0]


@pytest.mark.benchmark(group="preprocess 600x800 -> 2x256x256")
def test_preprocess_sonoedge(benchmark, frame) -> None:
    out = benchmark(K.preprocess, frame, SIZE)
    assert out.shape == (2, *SIZE)


@pytest.mark.benchmark(group="preprocess 600x800 -> 2x256x256")
def test_preprocess_opencv(benchmark, frame) -> None:
    out = benchmark(opencv_preprocess, frame, SIZE, 1.0)
    assert np.abs(out - K.preprocess(frame, SIZE)).max() < 4 / 255


@pytest.mark.benchmark(group="preprocess 600x800 -> 2x256x256")
def test_preprocess_scipy(benchmark, frame) -> None:
    pytest.importorskip("scipy")
    out = benchmark(scipy_preprocess, frame, SIZE, 1.0)
    assert out.shape == (2, *SIZE)


@pytest.fixture(scope="module")
def pool_inputs():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((32, 64, 64)).astype(np.float32)
    w = rng.random(SIZE, np.float32)
    labels = (w > 0.7).astype(np.int32)
    head = K.MLPHead(
        rng.standard_normal((64, 32)) * 0.1,
        np.zeros(64),
        rng.standard_normal((3, 64)) * 0.1,
        np.zeros(3),
    )
    return feats, w, labels, head


@pytest.mark.benchmark(group="mask-guided pool + head")
def test_pool_sonoedge(benchmark, pool_inputs) -> None:
    feats, w, labels, head = pool_inputs
    assert benchmark(K.pool_classify, feats, w, labels, 1, head).probs.shape == (2, 3)


@pytest.mark.benchmark(group="mask-guided pool + head")
def test_pool_numpy(benchmark, pool_inputs) -> None:
    feats, w, labels, head = pool_inputs
    ay = R.resize_matrix(SIZE[0], 64, "linear").astype(np.float32)
    ax = R.resize_matrix(SIZE[1], 64, "linear").astype(np.float32)
    probs = benchmark(_numpy_pool_classify, feats, w, labels, 1, head, ay, ax)
    np.testing.assert_allclose(probs, K.pool_classify(feats, w, labels, 1, head).probs, atol=1e-4)


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    return (np.random.default_rng(1).standard_normal((64, 64)) * 3).astype(np.float32)


@pytest.mark.benchmark(group="mask post-process 64x64 -> 600x800")
def test_post_sonoedge(benchmark, logits) -> None:
    assert benchmark(K.postprocess_mask, logits, (600, 800)).shape == (600, 800)


@pytest.mark.benchmark(group="mask post-process 64x64 -> 600x800")
def test_post_opencv(benchmark, logits) -> None:
    def run() -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-logits))
        return (cv2.resize(p, (800, 600), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)

    assert benchmark(run).shape == (600, 800)
