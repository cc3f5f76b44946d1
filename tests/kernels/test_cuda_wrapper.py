"""The CUDA wrapper's host-side behaviour, which runs without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import sdk.kernels as K
from sdk.errors import BackendUnavailableError, InputError
from sdk.kernels import cuda


def test_device_array_interface() -> None:
    a = cuda.DeviceArray(ptr=1234, shape=(3, 4), dtype=np.dtype(np.float32))
    ai = a.__cuda_array_interface__
    assert ai["data"] == (1234, False) and ai["shape"] == (3, 4) and ai["typestr"] == "<f4"
    assert cuda._iface(a, "a") == (1234, (3, 4), np.dtype(np.float32), (16, 4))


def test_stream_handles() -> None:
    class TorchLike:
        cuda_stream = 42

    class CupyLike:
        ptr = 7

    assert cuda._stream(None) == 0
    assert cuda._stream(5) == 5
    assert cuda._stream(TorchLike()) == 42
    assert cuda._stream(CupyLike()) == 7
    with pytest.raises(InputError, match="stream"):
        cuda._stream("fast")


@pytest.mark.skipif(cuda.available(), reason="checks the no-GPU path")
def test_without_gpu_says_why() -> None:
    frame = cuda.DeviceArray(1, (10, 10), np.dtype(np.uint8))
    out = cuda.DeviceArray(2, (2, 8, 8), np.dtype(np.float32))
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        cuda.preprocess(frame, out)
    assert K.cuda_device_count() == 0


def test_non_device_arrays_are_refused() -> None:
    with pytest.raises(InputError, match="__cuda_array_interface__"):
        cuda._iface(np.zeros(3), "frame")
    with pytest.raises(InputError, match="null"):
        cuda._iface(cuda.DeviceArray(0, (3,), np.dtype(np.uint8)), "frame")
