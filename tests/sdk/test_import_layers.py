"""The layers of docs/ARCHITECTURE.md ("Layout and layers"): importing the runtime never loads
export, torch or TensorRT, and the import-linter contracts of pyproject.toml hold (the same check
`.ci/run` makes)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sdk

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("export", "torch", "tensorrt")


def _runtime_modules() -> list[str]:
    """Every sdk module but its CLI and bench tools (docs/ARCHITECTURE.md: they may import
    export)."""
    names = [m.name for m in pkgutil.walk_packages(sdk.__path__, "sdk.")]
    return sorted(
        n
        for n in names
        if not (n == "sdk.cli" or n.startswith("sdk.bench") or n.rsplit(".", 1)[-1] == "cli")
    )


def test_runtime_modules_are_found() -> None:
    mods = _runtime_modules()
    assert {"sdk.analyzer", "sdk.pipeline", "sdk.stream", "sdk.backends.torch"} <= set(mods)
    assert "sdk.cli" not in mods and not any(m.startswith("sdk.bench") for m in mods)


@pytest.mark.parametrize("what", ["sdk", "runtime"])
def test_importing_the_runtime_loads_no_export_torch_or_tensorrt(what: str, tmp_path) -> None:
    """In a fresh interpreter: ``import sdk`` (+ the façade), or every runtime module."""
    mods = ["sdk", "sdk.analyzer", "sdk.pipeline"] if what == "sdk" else _runtime_modules()
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "import sdk\n"
        "sdk.Analyzer, sdk.FramePipeline\n"
        f"print(','.join(n for n in {FORBIDDEN!r} if n in sys.modules))\n"
    )
    # Not from the checkout: `python -c` puts the working directory first on sys.path, and the
    # source tree's sdk/ has no compiled kernels under a non-editable install (CI's).
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"importing {what} loaded {r.stdout.strip()}"


def test_import_linter_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install '.[test]')")
    r = subprocess.run([str(exe)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout
