"""Frames of every integer dtype (issue #14): never silently black.

The rule (``sdk.analyzer.to_uint8``): uint8 as is; uint16 over its full 16-bit range (or
``bit_depth``); every other integer dtype holding values in [0, 255] taken as 8-bit as they are,
anything above 255 refused unless ``bit_depth`` says how to scale it; negative values and values
at or above ``2**bit_depth`` always refused. The same rule for a stream of an array stack and of
a list of the same frames.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdk
from sdk.analyzer import to_uint8
from sdk.errors import InputError
from sdk.result import Result
from sdk.stream import FrameRecord

WIDE = [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64]
SIGNED = [np.int8, np.int16, np.int32, np.int64]


def _frame8() -> np.ndarray:
    """A uint8 frame with a dark blob (a lesion for the tiny model) and values up to 127, so
    that it also fits int8."""
    f = np.full((64, 80), 110, np.uint8)
    f[20:40, 25:50] = 5
    f[0, 0] = 127
    return f


@pytest.mark.parametrize("dtype", WIDE)
def test_8bit_values_in_any_integer_dtype_are_taken_as_they_are(dtype) -> None:
    f8 = _frame8()
    out = to_uint8(f8.astype(dtype))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, f8)  # before: >> 8 or >> 24, an all-black frame


def test_python_ints_through_np_array_give_the_uint8_answer(tiny_onnx) -> None:
    """np.array of Python ints is int64: the reproducer of the issue."""
    f8 = _frame8()
    with sdk.Analyzer(tiny_onnx) as a:
        ref = a.run(f8)
        got = a.run(np.array(f8.tolist()))
        black = a.run(np.zeros_like(f8))
    assert np.array(f8.tolist()).dtype == np.int64
    np.testing.assert_array_equal(got.mask, ref.mask)
    assert got.probs == pytest.approx(ref.probs)
    assert (ref.mask != black.mask).any()  # the black frame's answer differs: the test can tell


@pytest.mark.parametrize("dtype", WIDE)
def test_values_above_8_bits_need_a_bit_depth(dtype) -> None:
    hi = 100 if dtype == np.int8 else 300  # int8 cannot hold 300: its case is the negative one
    f = np.full((4, 4), hi, dtype)
    if dtype == np.int8:
        f[0, 0] = -1
        with pytest.raises(InputError, match="negative"):
            to_uint8(f)
        return
    with pytest.raises(InputError, match=r"bit_depth=N") as ei:
        to_uint8(f)
    assert str(dtype.__name__) in str(ei.value) and "300" in str(ei.value)
    # With the scanner's bit depth, the same shift as uint16.
    f12 = np.full((4, 4), 4095, dtype)
    assert to_uint8(f12, 12).max() == 255
    assert to_uint8(np.full((4, 4), 2048, dtype), 12).max() == 128


@pytest.mark.parametrize("dtype", SIGNED)
def test_negative_values_are_refused(dtype) -> None:
    f = np.full((4, 4), 50, dtype)
    f[1, 2] = -3
    for bits in (None, 8, 12):
        with pytest.raises(InputError, match=r"negative values \(min -3\)"):
            to_uint8(f, bits)


@pytest.mark.parametrize("dtype", [*WIDE, np.uint16])
def test_values_above_the_declared_depth_are_refused(dtype) -> None:
    top = np.iinfo(dtype).max
    f = np.full((4, 4), min(top, 5000), dtype)
    for bits in (8, 12):
        if min(top, 5000) < 2**bits:
            continue
        with pytest.raises(InputError, match=f"{bits}-bit depth"):
            to_uint8(f, bits)


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint64])
def test_values_above_the_dtypes_usual_range(dtype) -> None:
    """Values far above any scanner depth (2**40, the dtype's max): refused, never wrapped by
    a narrowing cast, even with the widest bit_depth."""
    big = np.full((4, 4), np.iinfo(dtype).max, dtype)
    with pytest.raises(InputError):
        to_uint8(big)
    if np.iinfo(dtype).max >= 2**32:
        with pytest.raises(InputError, match="32-bit depth"):
            to_uint8(big, 32)
    if np.iinfo(dtype).max > 2**40:
        with pytest.raises(InputError):
            to_uint8(np.full((4, 4), 2**40, dtype), 32)
    ok = np.full((4, 4), 2**32 - 1, dtype)
    assert to_uint8(ok, 32).max() == 255


def test_uint16_keeps_its_documented_rule() -> None:
    assert to_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert to_uint8(np.full((2, 2), 4095, np.uint16), 12).max() == 255


def test_stream_of_a_stack_equals_stream_of_the_list(tiny_onnx) -> None:
    """np.stack(u16_frames) was refused (ArraySource takes uint8 only) while list(u16_frames)
    worked: now both follow the Analyzer's rule, frame by frame, with the same answers; a frame
    the rule refuses is that frame's error record in both."""
    rng = np.random.default_rng(0)
    base = [
        np.clip(_frame8().astype(int) + rng.integers(-5, 5, (64, 80)), 0, 255) for _ in range(4)
    ]
    u16 = [(b.astype(np.uint16) << 4) for b in base]  # 12-bit data
    i64 = [b.astype(np.int64) for b in base]
    i64_bad = [f.copy() for f in i64]
    i64_bad[2][0, 0] = 300  # above 8 bits, no bit_depth: refused
    for frames, bits, bad in (
        (u16, 12, None),
        (u16, None, None),
        (i64, None, None),
        (i64_bad, None, 2),
    ):
        with sdk.Analyzer(tiny_onnx, bit_depth=bits) as a:
            from_list = list(a.stream(list(frames)))
            from_stack = list(a.stream(np.stack(frames)))
        assert [r.frame_index for r in from_stack] == [0, 1, 2, 3]
        for i, (x, y) in enumerate(zip(from_list, from_stack, strict=True)):
            if i == bad:
                assert isinstance(x, FrameRecord) and isinstance(y, FrameRecord)
                assert x.status == y.status == "error" and "bit_depth" in y.error
                continue
            assert isinstance(x, Result) and isinstance(y, Result), (x, y)
            np.testing.assert_array_equal(x.mask, y.mask)
            assert x.probs == pytest.approx(y.probs, abs=1e-6)
