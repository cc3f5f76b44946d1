"""Shared fixtures. GPU tests carry the `gpu` marker and skip without a CUDA device."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Fresh random inputs per test, reproducible from the test's name."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def cv2_exact():
    """OpenCV with IPP off: IPP's float resize approximates (up to 3e-5 of full scale), the
    plain OpenCV path is the convention the kernels reproduce exactly."""
    cv2 = pytest.importorskip("cv2")
    was = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    yield cv2
    cv2.ipp.setUseIPP(was)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if not gpu_items:
        return
    from sdk.kernels import cuda

    if cuda.available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and sdk._kernels built with CUDA")
    for item in gpu_items:
        item.add_marker(skip)
