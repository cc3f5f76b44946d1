"""device="cuda" without a CUDA execution provider names what is missing (issue #14)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import sdk
from sdk.errors import BackendUnavailableError, ModelError


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present"
)
def test_cuda_device_without_the_provider_is_unavailable_not_corrupted() -> None:
    a = sdk.Analyzer(sdk.default_model(), device="cuda")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider") as info:
        a.load()
    assert not isinstance(info.value, ModelError)
    assert "corrupted" not in str(info.value)


@pytest.mark.parametrize("spin", [True, False])
def test_spin_reaches_the_session_options(spin: bool) -> None:
    """``Analyzer(spin=...)``: True lets ORT's threads busy-wait within a call and stop when it
    returns (force_spinning_stop); False never busy-waits. The session carries what was asked."""
    from sdk.analyzer import Analyzer

    with Analyzer(threads=1, spin=spin) as a:
        so = a.backend.session.get_session_options()
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spin))
        if spin:
            assert so.get_session_config_entry("session.force_spinning_stop") == "1"
        assert a.run(np.zeros((60, 80), np.uint8)).mask.shape == (60, 80)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_spin_must_be_a_bool(bad: object) -> None:
    from sdk.analyzer import Analyzer
    from sdk.errors import InputError

    with pytest.raises(InputError, match="spin must be True or False"):
        Analyzer(spin=bad)  # type: ignore[arg-type]
