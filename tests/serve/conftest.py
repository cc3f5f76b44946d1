"""Fixtures of the serve and batch tests (issue #18): a real `sonoedge serve` (Triton through
PyTriton, from its own numpy<2 environment) on 127.0.0.1, stopped in teardown.

The serve tests skip, saying why, when no serve environment exists (`sonoedge serve --setup`
makes one; `.ci/run` does); the batch tests when Dask distributed is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _loopback


@pytest.fixture(scope="session")
def serve_python() -> str:
    from sdk.errors import BackendUnavailableError
    from sdk.serve import serve_python as find

    try:
        return find()
    except BackendUnavailableError as e:
        pytest.skip(f"no serve environment (PyTriton + numpy<2): {e}")


@pytest.fixture(scope="session")
def server(serve_python, tmp_path_factory):
    """One server for the session's read-only tests: the embedded default model, max batch 4."""
    from sdk.serve import launch

    log = tmp_path_factory.mktemp("serve") / "server.log"
    s = launch(python=serve_python, max_batch=4, threads=1, timeout=180, log_path=log)
    try:
        yield s
    finally:
        s.stop(timeout=30)
