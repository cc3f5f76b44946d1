"""Generation speed of synthetic phantoms (pytest-benchmark).

Run: ``python -m pytest benchmarks/test_bench_synthetic.py`` (plain ``pytest`` collects only
``tests/``, so benchmarks run only when asked for); add ``--benchmark-group-by=group`` to see the
sizes apart. The measure is ``frames_per_s = 1 / mean`` seconds per call (in ``extra_info``), a
new breast per call for single phantoms (one seed per call) and the next frame of one long loop
for cine frames. The target is >= 50 frames/s at 256 x 256 on one thread (OpenCV pinned to one
thread here; NumPy runs these operations on one anyway) for every row: each style x label x probe
and cine frames. 128 x 128 and 600 x 800 rows show how it scales. ``style="scanner"`` rows
draw every factor per call (probe, compounding with up to five steered views, speckle
reduction...), so their mean is over that mix.
"""

from __future__ import annotations

import itertools

import cv2
import pytest

from sdk import synthetic

SIZES = [(256, 256), (128, 128), (600, 800)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(prev)


def _record(benchmark) -> None:
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["frames_per_s"] = 1.0 / benchmark.stats["mean"]
        benchmark.extra_info["opencv_threads"] = cv2.getNumThreads()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("geometry", ["linear", "curvilinear"])
@pytest.mark.parametrize("label", ["normal", "benign", "malignant"])
@pytest.mark.parametrize("style", ["classic", "scanner"])
def test_bench_phantom(
    benchmark, style: str, label: str, geometry: str, size: tuple[int, int]
) -> None:
    benchmark.group = f"phantom {size[0]}x{size[1]}"
    seeds = itertools.count()
    image, _, info = benchmark(
        lambda: synthetic.phantom(label, size, seed=next(seeds), geometry=geometry, style=style)
    )
    assert image.shape == size and info["label"] == label
    _record(benchmark)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bench_cine_frame(benchmark, size: tuple[int, int]) -> None:
    benchmark.group = f"phantom {size[0]}x{size[1]}"
    frames = synthetic.cine(100_000, "malignant", size, seed=1)
    image, _, _ = benchmark(lambda: next(frames))
    assert image.shape == size
    _record(benchmark)
