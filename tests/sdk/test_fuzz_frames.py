"""Fuzzing ``Analyzer.run`` with hostile frames (issue #7, item 4).

Frames of every dtype numpy has a kind for, 0-d to 4-d shapes (zero-size axes, 1x1, one pixel
thin), every memory layout (Fortran order, negative and zero strides, huge declared shapes that
exist only as stride tricks) and every kind of value (NaN, +-inf, dtype extremes, raw bits).

The property: ``Analyzer.run`` returns a valid :class:`sdk.result.Result` or raises an
:class:`sdk.errors.SDKError` -- never another exception, never a crash, never a hang. It is held
to the documented frame contract (README "Frames other than uint8"), so a frame the contract
accepts must give a Result, and one it refuses must give an :class:`InputError`; an accepted
frame must give the same analysis whatever its memory layout, and is never written to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import sdk
from sdk.analyzer import to_uint8
from sdk.errors import InputError, SDKError
from sdk.kernels._validate import MAX_SIDE
from sdk.result import Result

DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    ">u2",
    ">f4",
    "bool",
    "complex64",
    "complex128",
    "object",
)
LAYOUTS = ("C", "F", "flip", "step", "swap", "broadcast", "huge", "big")
VALUES = ("valid", "valid", "blob", "blob", "extreme", "special", "raw")
# None and valid depths, then what to_uint8 must refuse (as InputError, not TypeError).
BIT_DEPTHS = (None,) * 8 + (8, 10, 12, 16, 32, 0, 7, 33, 12.5, "12", True)


@dataclass(frozen=True)
class Spec:
    """A frame to build: small enough to print, so a failing example reads as a recipe."""

    dtype: str
    shape: tuple[int, ...]
    layout: str
    values: str
    seed: int
    bit_depth: Any = None
    flips: tuple[bool, ...] = ()


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "huge":  # a declared shape far past MAX_SIDE, zero strides: nothing allocated
        side = draw(st.sampled_from((MAX_SIDE + 1, 100_000, 2**31 - 1)))
        other = draw(st.sampled_from((1, 7, min(side, 100_000))))  # nbytes must fit int64
        shape: tuple[int, ...] = (side, other) if draw(st.booleans()) else (other, side)
        if draw(st.booleans()):
            shape += (draw(st.sampled_from((1, 3, 4))),)
    elif layout == "big":  # legal but large, still zero-stride: the frame path must cope
        shape = (draw(st.integers(1000, 2048)), draw(st.integers(1000, 2048)))
    else:
        ndim = draw(st.sampled_from((0, 1, 2, 2, 2, 3, 3, 3, 4)))  # mostly frame-like
        side = st.one_of(st.sampled_from((0, 1, 2, 3)), st.integers(1, 300))
        shape = tuple(draw(side) for _ in range(min(ndim, 2)))
        if ndim >= 3:
            shape += (draw(st.sampled_from((0, 1, 2, 3, 3, 4, 5))),)
        if ndim == 4:
            shape = (draw(st.integers(0, 3)), *shape)
        if int(np.prod(shape, dtype=np.int64)) > 200_000:  # keep every example cheap
            shape = tuple(min(s, 64) for s in shape)
    return Spec(
        dtype=draw(st.sampled_from(DTYPES)),
        shape=shape,
        layout=layout,
        values=draw(st.sampled_from(VALUES)),
        seed=draw(st.integers(0, 2**32 - 1)),
        bit_depth=draw(st.sampled_from(BIT_DEPTHS)),
        flips=tuple(draw(st.booleans()) for _ in shape),
    )


def _valid_bits(spec: Spec, dt: np.dtype) -> int:
    """The bit depth the contract applies to an integer dtype (when the depth is valid)."""
    if spec.bit_depth is not None and _bit_depth_ok(spec.bit_depth):
        return int(spec.bit_depth)
    if dt == np.uint16:
        return 16
    return 8  # other integer dtypes: 8-bit values as they are, unless bit_depth (issue #14)


def _bit_depth_ok(bd: Any) -> bool:
    return bd is None or (
        isinstance(bd, int | np.integer) and not isinstance(bd, bool) and 8 <= bd <= 32
    )


def _values(spec: Spec, shape: tuple[int, ...]) -> np.ndarray:
    """Values of ``spec.dtype`` in ``shape`` (C order) following ``spec.values``."""
    rng = np.random.default_rng(spec.seed)
    dt = np.dtype(spec.dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "O":
        pool = [0.5, 1, None, "x", [1, 2], float("nan"), 2**80, object()]
        out = np.empty(n, dtype=object)
        for j, i in enumerate(rng.integers(0, len(pool), n)):
            out[j] = pool[i]
        return out.reshape(shape)
    if spec.values == "raw":
        return np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).reshape(shape).copy()
    if spec.values == "extreme":
        if dt.kind == "b":
            picks = np.array([False, True])
        elif dt.kind in "ui":
            info = np.iinfo(dt)
            picks = np.array([info.min, info.max, 0], dtype=dt)
        else:
            fi = np.finfo(dt.type(0).real.dtype)
            picks = np.array([fi.min, fi.max, fi.tiny, -0.0, 0.0, 1.0], dtype=dt)
        return rng.choice(picks, size=shape)
    # "valid", "blob" and "special" start from values the contract accepts.
    if dt.kind == "b":
        out = rng.random(shape) < 0.5
    elif dt.kind in "ui":
        hi = min(2 ** min(_valid_bits(spec, dt), 32), int(np.iinfo(dt).max) + 1)
        out = rng.integers(0, hi, size=shape).astype(dt)
    else:
        out = rng.random(shape).astype(dt)
    if spec.values == "blob" and len(shape) >= 2 and min(shape[:2]) > 2:
        # Bright tissue with a dark disc: something the model calls a lesion.
        hh, ww = shape[:2]
        yy, xx = np.ogrid[:hh, :ww]
        disc = (yy - hh / 2) ** 2 + (xx - ww / 2) ** 2 < (min(hh, ww) / 4) ** 2
        bright, dark = 0.75, 0.1
        if dt.kind in "ui":
            top = min(2 ** min(_valid_bits(spec, dt), 32), int(np.iinfo(dt).max) + 1) - 1
            bright, dark = int(top * 0.75), int(top * 0.1)
        fill = np.where(disc, dark, bright)
        fill = fill.reshape(fill.shape + (1,) * (len(shape) - 2))
        out = np.broadcast_to(fill, shape).astype(dt)
    if spec.values == "special" and dt.kind in "fc" and n:
        flat = out.reshape(-1)
        k = rng.integers(0, n, size=max(1, n // 50))
        flat[k] = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=k.size)
    return out


def build(spec: Spec) -> np.ndarray:
    """The frame a spec describes, in the spec's memory layout."""
    dt = np.dtype(spec.dtype)
    shape = spec.shape
    if spec.layout in ("huge", "big"):
        one = _values(spec, (1,))
        return np.lib.stride_tricks.as_strided(one, shape=shape, strides=(0,) * len(shape))
    if not shape:  # 0-d: no layout to vary (indexing would return the bare element)
        return _values(spec, shape)
    if spec.layout == "F":
        return np.asfortranarray(_values(spec, shape))
    if spec.layout == "flip":
        idx = tuple(slice(None, None, -1) if f else slice(None) for f in spec.flips)
        return _values(spec, shape)[idx]
    if spec.layout == "step":
        base = _values(spec, tuple(2 * s for s in shape))
        out = base[tuple(slice(None, None, 2) for _ in shape)]
        assert out.shape == shape
        return out
    if spec.layout == "swap" and len(shape) >= 2:
        swapped = (shape[1], shape[0], *shape[2:])
        return np.swapaxes(_values(spec, swapped), 0, 1)
    if spec.layout == "broadcast" and len(shape) >= 1:
        return np.broadcast_to(_values(spec, (1, *shape[1:])), shape)
    out = _values(spec, shape)
    assert out.dtype == dt
    return out


def contract_accepts(frame: np.ndarray, bit_depth: Any) -> bool:
    """The documented frame contract (README, ``to_uint8``), written out independently."""
    if not _bit_depth_ok(bit_depth):
        return False
    if frame.size == 0 or frame.ndim not in (2, 3):
        return False
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        return False
    if max(frame.shape[:2]) > MAX_SIDE:
        return False
    kind = frame.dtype.kind
    if frame.dtype == np.uint8 or kind == "b":
        return True
    if kind in "ui":  # uint16: 16 bits unless bit_depth; other integers: 8 unless bit_depth
        bits = bit_depth or (16 if frame.dtype == np.uint16 else 8)
        return int(frame.min()) >= 0 and int(frame.max()) < 2**bits
    if kind == "f":
        return bool(np.isfinite(frame).all()) and frame.min() >= 0 and frame.max() <= 1
    return False


def documented_uint8(frame: np.ndarray, bit_depth: Any) -> np.ndarray:
    """What the README says an accepted frame becomes (float64 arithmetic)."""
    kind = frame.dtype.kind
    if frame.dtype == np.uint8:
        return np.asarray(frame)
    if kind == "b":
        return np.where(frame, 255, 0).astype(np.uint8)
    if kind in "ui":
        bits = bit_depth or (16 if frame.dtype == np.uint16 else 8)
        return (frame.astype(np.uint64) >> np.uint64(bits - 8)).astype(np.uint8)
    return np.rint(frame.astype(np.float64) * 255.0).astype(np.uint8)


def check_result(res: Any, hw: tuple[int, int], names: tuple[str, ...]) -> None:
    """A Result as documented: mask uint8 0/1 at the frame's H x W, probabilities, labels."""
    assert isinstance(res, Result), type(res)
    assert res.mask.dtype == np.uint8 and res.mask.shape == hw
    assert set(np.unique(res.mask).tolist()) <= {0, 1}
    if not res.in_scope:  # sdk/result.py: out of scope, no diagnosis (raw_probs kept)
        assert res.label == "out_of_scope" and res.probs == {} and res.confidence == 0.0
        assert not res.lesions and not res.mask.any() and 0.0 <= res.scope_score < 1.0
        p = np.array(list(res.raw_probs.values()))
        assert tuple(res.raw_probs) == names and abs(p.sum() - 1.0) < 1e-4
        assert res.timings["total"] >= 0
        return
    assert tuple(res.probs) == names
    p = np.array(list(res.probs.values()))
    assert np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1.0) < 1e-4
    assert res.label in names and res.probs[res.label] == p.max()
    h, w = hw
    for les in res.lesions:
        assert les.label in names
        q = np.array(list(les.probs.values()))
        assert np.isfinite(q).all() and abs(q.sum() - 1.0) < 1e-4
        x, y, bw, bh = les.bbox
        assert 0 <= x < w and 0 <= y < h and bw >= 1 and bh >= 1
        assert x + bw <= w and y + bh <= h, (les.bbox, hw)
    assert res.timings["total"] >= 0


@pytest.fixture(scope="module")
def analyzer():
    """The embedded default model (no torch needed), one thread, no temporal smoothing."""
    with sdk.Analyzer(None, threads=1, smoothing=0.0) as a:
        yield a


def _snapshot(frame: np.ndarray) -> bytes | None:
    if frame.dtype.kind == "O" or frame.size > 5_000_000 or 0 in frame.strides:
        return None
    return np.ascontiguousarray(frame).tobytes()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs())
@example(spec=Spec("uint16", (100_000, 100_000), "huge", "valid", 0))
@example(spec=Spec("float64", (MAX_SIDE + 1, MAX_SIDE + 1), "huge", "valid", 0))
@example(spec=Spec("bool", (2**31 - 1, 7, 3), "huge", "valid", 0))
@example(spec=Spec("uint16", (40, 50), "C", "valid", 1, bit_depth=12.5))
@example(spec=Spec("uint16", (40, 50), "C", "valid", 1, bit_depth="12"))
@example(spec=Spec("uint16", (40, 50), "C", "valid", 1, bit_depth=0))
@example(spec=Spec("uint64", (40, 50), "C", "valid", 1))
@example(spec=Spec("object", (), "step", "valid", 1))
@example(spec=Spec("uint8", (1, 1), "flip", "valid", 0, flips=(False, True)))
@example(spec=Spec("uint8", (5, 1), "flip", "valid", 0, flips=(False, True)))
@example(spec=Spec("uint8", (1, 300), "flip", "blob", 2, flips=(True, True)))
@example(spec=Spec("float32", (120, 90, 3), "flip", "blob", 3, flips=(True, False, True)))
@example(spec=Spec("uint8", (150, 140, 4), "F", "blob", 4))
def test_run_returns_a_result_or_an_sdk_error(analyzer, spec: Spec) -> None:
    """Any frame: a valid Result exactly when the frame contract accepts it, an InputError
    otherwise (never another exception); the frame is left untouched; an accepted frame is
    analyzed exactly as its C-contiguous copy (layout never changes the analysis)."""
    frame = build(spec)
    analyzer.bit_depth = spec.bit_depth  # per-call conversion reads it; validated there too
    before = _snapshot(frame)
    accepted = contract_accepts(frame, spec.bit_depth)
    event("accepted" if accepted else "refused")
    t0 = time.perf_counter()
    try:
        res = analyzer.run(frame)
    except SDKError as e:
        assert not accepted, f"the contract accepts this frame, but run raised {e!r}"
        assert isinstance(e, InputError), f"a bad frame must raise InputError, got {e!r}"
        assert str(e), "an error must say what was wrong"
    else:
        assert accepted, "run accepted a frame the contract refuses"
        check_result(res, frame.shape[:2], analyzer.class_names)
        # The documented conversion, to the rounding of float16 arithmetic.
        u8 = to_uint8(np.array(frame, order="C"), spec.bit_depth)
        diff = np.abs(u8.astype(int) - documented_uint8(frame, spec.bit_depth).astype(int))
        assert diff.max() <= 1
        ref = analyzer.run(np.ascontiguousarray(u8))
        np.testing.assert_array_equal(res.mask, ref.mask)
        for k, v in ref.probs.items():
            assert res.probs[k] == pytest.approx(v, abs=1e-6)
        assert len(res.lesions) == len(ref.lesions)
    finally:
        analyzer.bit_depth = None
    if before is not None:
        assert np.ascontiguousarray(frame).tobytes() == before, "run wrote into the frame"
    # Refusing a stride-trick giant must not walk or copy its pixels.
    if spec.layout == "huge":
        assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(None, id="None"),
        pytest.param([[0, 1], [2, 3]], id="list"),
        pytest.param(b"\x00" * 16, id="bytes"),
        pytest.param(np.uint8(7), id="numpy-scalar"),
        pytest.param(np.ma.masked_all((20, 20), np.uint16), id="fully-masked-uint16"),
        pytest.param(np.ma.masked_invalid(np.full((20, 20), np.nan)), id="masked-nan"),
        pytest.param(np.zeros((20, 20), [("a", "u1")]), id="structured"),
        pytest.param(np.zeros((20, 20), "M8[s]"), id="datetime64"),
        pytest.param(np.zeros((20, 20), "U1"), id="unicode"),
        pytest.param(np.zeros((20, 20), "V4"), id="void"),
        pytest.param(
            np.full((20, 20), -np.finfo(np.longdouble).tiny, np.longdouble),
            id="longdouble-below-0",
        ),
        pytest.param(
            np.full((20, 20), 1 + np.finfo(np.longdouble).eps, np.longdouble),
            id="longdouble-above-1",
        ),
    ],
)
def test_non_frames_are_input_errors(analyzer, frame: Any) -> None:
    """Objects that are not plain numeric arrays (incl. ndarray subclasses whose elements have
    no value, such as masked arrays) and float frames outside [0, 1] in their own precision
    (not after rounding to float64) are refused with InputError, not a numpy exception."""
    with pytest.raises(InputError):
        analyzer.run(frame)


@pytest.mark.parametrize("bit_depth", [0, 7, 33, 12.5, "12", True, -1])
def test_bad_bit_depth_is_refused_at_construction(bit_depth: Any) -> None:
    """Analyzer(bit_depth=...) outside the integers 8..32 is an InputError naming bit_depth,
    before any frame (and before the model loads)."""
    with pytest.raises(InputError, match="bit_depth"):
        sdk.Analyzer(None, bit_depth=bit_depth)


def test_odd_layouts_of_one_frame_agree(analyzer) -> None:
    """The same uint8 image as C, Fortran, flipped-twice, strided and read-only views: one
    analysis (mask and probabilities identical)."""
    from sdk import synthetic

    img, _, _ = synthetic.phantom("malignant", size=(180, 240), seed=5)
    ref = analyzer.run(img)
    wide = np.zeros((360, 480), np.uint8)
    wide[::2, ::2] = img
    ro = img.copy()
    ro.flags.writeable = False
    views = {
        "fortran": np.asfortranarray(img),
        "double-flip": img[::-1, ::-1].copy()[::-1, ::-1],
        "strided": wide[::2, ::2],
        "read-only": ro,
        "bgr-column": np.repeat(img[:, :, None], 3, axis=2)[:, :, 1:2],
    }
    for name, v in views.items():
        r = analyzer.run(v)
        np.testing.assert_array_equal(r.mask, ref.mask, err_msg=name)
        assert r.probs == pytest.approx(ref.probs, abs=1e-6), name
