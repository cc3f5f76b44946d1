"""Generation speed of synthetic phantoms (pytest-benchmark).

Run: ``python -m pytest benchmarks/test_bench_synthetic.py`` (plain ``pytest`` collects only
``tests/``, so benchmarks run only when asked for). The target is >= 50 frames/s at
256 x 256 on 2 CPU cores for single phantoms (a new breast per frame) and cine frames.
"""

from __future__ import annotations

import itertools

import pytest

from sdk import synthetic

SIZE = (256, 256)


@pytest.mark.parametrize("geometry", ["linear", "curvilinear"])
@pytest.mark.parametrize("label", ["normal", "benign", "malignant"])
def test_bench_phantom(benchmark, label: str, geometry: str) -> None:
    seeds = itertools.count()
    image, _, info = benchmark(
        lambda: synthetic.phantom(label, SIZE, seed=next(seeds), geometry=geometry)
    )
    assert image.shape == SIZE and info["label"] == label
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["frames_per_s"] = 1.0 / benchmark.stats["mean"]


def test_bench_cine_frame(benchmark) -> None:
    frames = synthetic.cine(100_000, "malignant", SIZE, seed=1)
    image, _, _ = benchmark(lambda: next(frames))
    assert image.shape == SIZE
    if benchmark.stats is not None:
        benchmark.extra_info["frames_per_s"] = 1.0 / benchmark.stats["mean"]
