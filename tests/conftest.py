"""Shared fixtures. GPU tests carry the `gpu` marker and skip without a CUDA device."""

from __future__ import annotations

import importlib.util
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Fresh random inputs per test, reproducible from the test's name."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def load_benchmark() -> Iterator[Callable[[str], ModuleType]]:
    """``load_benchmark("calibration_eval")``: a script of ``benchmarks/`` imported as a module
    (they are scripts, not a package), registered in ``sys.modules`` while the session runs
    (dataclasses resolve their annotations through it) and removed after it."""
    loaded: dict[str, ModuleType] = {}

    def load(name: str) -> ModuleType:
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
            assert spec is not None and spec.loader is not None, f"no benchmarks/{name}.py"
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            loaded[name] = mod
        return loaded[name]

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (tests/export, benchmark tests). The 2 CPU cores are
    shared: torch's OpenMP threads stall each other when oversubscribed, and these tiny tensors
    gain nothing from a second thread. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    torch = pytest.importorskip("torch")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
