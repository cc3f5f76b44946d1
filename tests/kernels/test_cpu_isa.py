"""Run-time instruction-set dispatch of the C++ CPU kernels (kernels/include/sonoedge/cpu_isa.h).

The numerical agreement of every variant with the NumPy reference is checked by the kernel test
modules themselves (they run once per supported variant, see conftest.py). Here: the choice,
its controls, and the property that makes one build safe on every x86-64 -- no code outside an
ISA namespace uses an instruction beyond the x86-64 baseline.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sdk.kernels as K
from sdk import _kernels
from sdk import cpu as _cpu
from sdk.errors import InputError

X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_reports_active_supported_and_build() -> None:
    info = K.cpu_isa()
    assert info["active"] in info["supported"]
    assert info["build"]
    if X86 and info["supported"][0] == "baseline":
        # A dispatch build: the best variant the CPU runs is the default.
        assert info["active"] == info["supported"][-1] or os.environ.get("SONOEDGE_CPU_ISA")


@pytest.mark.skipif(not X86 or not Path("/proc/cpuinfo").exists(), reason="x86-64 Linux only")
def test_supported_variants_follow_the_cpu_flags() -> None:
    info = K.cpu_isa()
    if info["supported"] == ["native"]:
        pytest.skip("single-variant build (SONOEDGE_NATIVE=ON)")
    flags = _cpu.cpu_flags()
    avx2 = {"avx2", "fma", "f16c"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags
    want = ["baseline"] + (["avx2"] if avx2 else []) + (["avx512"] if avx512 else [])
    assert info["supported"] == want


def test_set_cpu_isa_switches_and_refuses_unknown_names() -> None:
    info = K.cpu_isa()
    try:
        for name in info["supported"]:
            K.set_cpu_isa(name)
            assert K.cpu_isa()["active"] == name
        with pytest.raises(InputError, match="not available"):
            K.set_cpu_isa("avx1024")
    finally:
        K.set_cpu_isa(info["active"])


def test_binding_refuses_a_level_the_cpu_cannot_run() -> None:
    top = int(_kernels.cpu_isa_supported())
    with pytest.raises(InputError, match="not available here"):
        _kernels.cpu_isa_set(top + 1)
    with pytest.raises(InputError):
        _kernels.cpu_isa_set(-1)
    assert int(_kernels.cpu_isa_active()) <= top


def _run_child(env_value: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout: `python -c` puts the working directory first on sys.path, and a
    # source tree's sdk/ (no compiled module in a non-editable install) would shadow the install.
    env = dict(os.environ, SONOEDGE_CPU_ISA=env_value)
    code = (
        "import numpy as np, sdk.kernels as K\n"
        "K.preprocess(np.zeros((8, 8), np.uint8), size=(4, 4))\n"
        "print(K.cpu_isa()['active'])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_environment_variable_caps_the_variant(tmp_path: Path) -> None:
    lowest = K.cpu_isa()["supported"][0]
    r = _run_child(lowest, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == lowest


def test_environment_variable_naming_an_unavailable_variant_is_an_error(tmp_path: Path) -> None:
    r = _run_child("avx1024", tmp_path)
    assert r.returncode != 0
    assert "SONOEDGE_CPU_ISA='avx1024'" in r.stderr and "InputError" in r.stderr


def test_variants_agree_on_a_scanner_frame(rng: np.random.Generator) -> None:
    """All supported variants on one 600x800 frame: the float paths differ only by FMA
    contraction and summation order (a few ulp of values <= 1), never by a pixel."""
    frame = rng.integers(0, 256, (600, 800), dtype=np.uint8)
    before = K.cpu_isa()["active"]
    outs = {}
    try:
        for name in K.cpu_isa()["supported"]:
            K.set_cpu_isa(name)
            outs[name] = K.preprocess(frame, size=(256, 256), channels=("image", "gdm"), sigma=1.0)
    finally:
        K.set_cpu_isa(before)
    ref = outs[next(iter(outs))]
    for name, out in outs.items():
        np.testing.assert_allclose(out, ref, atol=2e-6, rtol=0, err_msg=name)


# Instructions beyond x86-64 baseline (SSE2): anything VEX / EVEX encoded (v-prefixed mnemonics),
# AVX-512 mask moves, BMI1/2, LZCNT.
_BEYOND_BASELINE = re.compile(
    r"\t(v[a-z0-9]+|kmov[bwdq]|k(and|or|xor|not|shift)[a-z]*|shlx|shrx|sarx|rorx|andn|bextr|"
    r"bzhi|pdep|pext|lzcnt|tzcnt|blsi|blsr|blsmsk)\b"
)


@pytest.mark.skipif(not X86, reason="the dispatch build exists on x86-64 only")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
def test_no_code_outside_an_isa_namespace_goes_beyond_the_baseline() -> None:
    """The SIGILL guard of the portable build: a weak (COMDAT) function compiled with AVX-512
    and kept by the linker for baseline callers would crash an AVX2 machine. Every function of
    sdk._kernels that uses an instruction beyond SSE2 must be in sonoedge::avx2 / ::avx512."""
    if K.cpu_isa()["supported"] == ["native"]:
        pytest.skip("single-variant build (SONOEDGE_NATIVE=ON): compiled for this CPU only")
    so = Path(_kernels.__file__)
    dis = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", str(so)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    offenders: dict[str, str] = {}
    in_isa: set[str] = set()
    fn = ""
    for line in dis.splitlines():
        if line.endswith(">:") and " <" in line:
            fn = line.split(" <", 1)[1][:-2]
            continue
        m = _BEYOND_BASELINE.search(line)
        if m and fn:
            if "sonoedge::avx2::" in fn or "sonoedge::avx512::" in fn:
                in_isa.add(fn)
            else:
                offenders.setdefault(fn, m.group(1))
    assert in_isa, (
        "no function of sonoedge::avx2 / ::avx512 found: is this a dispatch build, and was its "
        "symbol table kept (pyproject.toml: install.strip = false)?"
    )
    assert not offenders, f"baseline functions with ISA instructions: {offenders}"
