"""Kernel-test fixtures: every instruction-set variant this CPU runs is tested, not only the best.

On x86-64 the hot kernels carry baseline / AVX2 / AVX-512 variants chosen at run time
(sdk.kernels.cpu_isa). A module that opts in with
``pytestmark = pytest.mark.usefixtures("each_cpu_isa")`` runs each of its tests once per variant
the CPU supports: an AVX-512 machine checks all three, an AVX2 machine baseline and AVX2.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sdk.kernels as K


@pytest.fixture(params=K.cpu_isa()["supported"])
def each_cpu_isa(request: pytest.FixtureRequest) -> Iterator[str]:
    before = K.cpu_isa()["active"]
    K.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        K.set_cpu_isa(before)
