"""device="cuda" without a CUDA execution provider names what is missing (issue #14)."""

from __future__ import annotations

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
