"""benchmarks/gpu_proof.sh --dry-run: the prepared GPU-lease script runs its CPU parts here, so a
lease is never spent discovering a typo in it (issue #17 item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_proof_dry_run_writes_every_result(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_proof.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("machine.txt", "gpu-tests.log", "kernels-dry-run.json", "e2e-torch.json"):
        assert (tmp_path / name).is_file(), name
    e2e = json.loads((tmp_path / "e2e-torch.json").read_text())
    assert set(e2e["rows"]) == {"torch-cpu", "onnxruntime-cpu"}
    assert all(v["p50_ms"] > 0 for v in e2e["rows"].values())
    # Both backends run the same .onnx: the labels of the first frames agree.
    assert e2e["label_agreement_first16"] == 1.0
    assert "tests collected" in (tmp_path / "gpu-tests.log").read_text()


def test_gpu_proof_refuses_unknown_arguments(tmp_path: Path) -> None:
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_proof.sh"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "unknown argument" in r.stderr
