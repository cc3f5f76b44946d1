"""What CPU this is, in the terms that decide speed and INT8 arithmetic: model name and ISA class.

Benchmarks record it beside every table (x86-64 AVX2 and AVX-512 machines give different
figures, and ONNX Runtime's INT8 kernels compute differently with and without VNNI), and
``sonoedge info`` / ``doctor`` print it with the kernel variant in use.
"""

from __future__ import annotations

import platform
import re
from functools import lru_cache
from pathlib import Path

# Features that change what our kernels or ONNX Runtime's MLAS kernels run, in report order.
_REPORTED = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "asimddp",
    "fphp",
)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, frozenset()
    for key in ("model name", "Model name", "Hardware", "CPU part"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m:
            model = m.group(1).strip()
            break
    m = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.M)
    if m:
        flags = set(m.group(2).split())
    return model, frozenset(flags)


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (platform.processor() elsewhere)."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """Every feature flag of /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm); empty when
    the file cannot be read."""
    return _cpuinfo()[1]


def cpu_features() -> list[str]:
    """The reported ISA features this CPU has (see ``_REPORTED``)."""
    flags = _cpuinfo()[1]
    return [f for f in _REPORTED if f in flags]


def cpu_class() -> str:
    """A short class name: ``avx512-vnni``, ``avx512``, ``avx2-vnni``, ``avx2``, ``x86-64``,
    ``aarch64``, or the machine name. Used in benchmark file names."""
    f = set(cpu_features())
    mach = platform.machine().lower()
    if mach in ("aarch64", "arm64"):
        return "aarch64"
    if "avx512f" in f and "avx512bw" in f:
        return "avx512-vnni" if "avx512_vnni" in f else "avx512"
    if "avx2" in f:
        return "avx2-vnni" if "avx_vnni" in f else "avx2"
    return "x86-64" if mach in ("x86_64", "amd64") else mach


def describe() -> str:
    """One line: model; class; features; the kernel variant in use (when the kernels load)."""
    feats = " ".join(cpu_features()) or "none of the tracked features"
    line = f"{cpu_model()}; {cpu_class()} ({feats})"
    try:
        from sdk import kernels

        line += f"; sonoedge kernels: {kernels.cpu_isa()['active']}"
    except Exception as exc:  # the kernels may be missing: describe the CPU anyway
        line += f"; sonoedge kernels unavailable ({type(exc).__name__})"
    return line
