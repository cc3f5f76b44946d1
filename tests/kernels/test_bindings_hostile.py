"""Every binding of sdk._kernels called with zero-size, mismatched, overflowing and badly strided
arrays raises InputError before it touches memory (issue #14).

The calls go straight to the compiled module, past sdk.kernels' typed checks, and run in a child
process: a segfault fails the case it happened in instead of killing pytest. One child runs the
cases in order, printing a line before and after each; when it dies, the parent records the
case it died in and starts a new child at the next one, so one crash costs one case, not the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdk.kernels as K
from sdk.errors import InputError

F32, U8, I32 = np.float32, np.uint8, np.int32


def _z(shape: tuple[int, ...], dtype: Any = F32) -> np.ndarray:
    return np.zeros(shape, dtype)


def _rows(shape: tuple[int, int], row_stride: int) -> np.ndarray:
    """A writable uint8 view with the given row stride (0: every row the same memory)."""
    buf = np.zeros(shape[0] * shape[1] + 64, U8)
    return np.lib.stride_tricks.as_strided(buf, shape, (row_stride, 1), writeable=True)


def _huge_frame() -> np.ndarray:  # 2**31 rows, no memory: every row is the same 2 bytes
    return np.broadcast_to(np.zeros((1, 2), U8), (2**31, 2))


# ---- the cases: name -> a call that must raise InputError --------------------------------------
def _pre(frame=None, roi=(0, 0, 8, 8), out=None, kinds=(0,), mean=(0.0,), inv=(1.0,), **kw):
    def call(k: Any) -> Any:
        f = _z((8, 8), U8) if frame is None else frame()
        o = _z((len(kinds), 4, 4)) if out is None else out()
        return k.preprocess_cpu(
            f,
            roi,
            o,
            list(kinds),
            list(mean),
            list(inv),
            kw.get("sigma", 1.0),
            kw.get("interp", 0),
            kw.get("color", 0),
            kw.get("threads", 1),
        )

    return call


def _pool(features=(4, 8, 8), weights=(8, 8), labels="ok", num_labels=1, eps=1e-6, head="ok"):
    def call(k: Any) -> Any:
        f = features() if callable(features) else _z(features)
        w = weights() if callable(weights) else _z(weights)
        if labels == "ok":
            lab = _z(w.shape, I32)
        elif labels is None:
            lab = None
        else:
            lab = labels()
        if head == "ok":
            F = f.shape[0]
            h = (_z((5, F)), _z((5,)), _z((3, 5)), _z((3,)))
        elif head is None:
            h = (None, None, None, None)
        else:
            h = head()
        return k.pool_classify_cpu(f, w, lab, num_labels, eps, *h)

    return call


def _post(logits=(4, 4), out=None, roi=(0, 0, 8, 8), threshold=0.5, value=1, threads=1):
    def call(k: Any) -> Any:
        lg = logits() if callable(logits) else _z(logits)
        o = _z((8, 8), U8) if out is None else out()
        return k.mask_post_cpu(lg, o, roi, threshold, value, threads)

    return call


def _comp(logits=(4, 4), threshold=0.5, sx=1.0, sy=1.0, min_area=0.0, x0=0.0, y0=0.0):
    def call(k: Any) -> Any:
        lg = logits() if callable(logits) else _z(logits)
        return k.components_cpu(lg, threshold, sx, sy, min_area, True, x0, y0)

    return call


def _grad(image=(8, 8), out=None, sigma=1.0, threads=1):
    def call(k: Any) -> Any:
        img = image() if callable(image) else _z(image)
        o = _z(img.shape) if out is None else out()
        return k.gradient_magnitude_cpu(img, sigma, o, threads)

    return call


INF, NAN = float("inf"), float("nan")
IMAX = 2**31 - 1

#: name -> (call, expect) with expect "ok" (a valid control call) or "InputError".
CASES: dict[str, tuple[Callable[[Any], Any], str]] = {
    # controls: the harness itself works
    "preprocess ok": (_pre(), "ok"),
    "gradient ok": (_grad(), "ok"),
    "pool ok": (_pool(), "ok"),
    "mask_post ok": (_post(), "ok"),
    "components ok": (_comp(), "ok"),
    # preprocess_cpu
    "preprocess frame (0, 8)": (_pre(frame=lambda: _z((0, 8), U8)), "InputError"),
    "preprocess frame (8, 0)": (_pre(frame=lambda: _z((8, 0), U8)), "InputError"),
    "preprocess frame (8, 8, 0)": (_pre(frame=lambda: _z((8, 8, 0), U8)), "InputError"),
    "preprocess frame (8, 8, 2)": (_pre(frame=lambda: _z((8, 8, 2), U8)), "InputError"),
    "preprocess frame 2**31 rows": (_pre(frame=_huge_frame, roi=(0, 0, 2, 8)), "InputError"),
    "preprocess frame float32": (_pre(frame=lambda: _z((8, 8))), "InputError"),
    "preprocess frame negative stride": (
        _pre(frame=lambda: _z((8, 8), U8)[::-1]),
        "InputError",
    ),
    "preprocess roi x overflow": (_pre(roi=(IMAX, 0, 8, 8)), "InputError"),
    "preprocess roi w overflow": (_pre(roi=(1, 0, IMAX, 8)), "InputError"),
    "preprocess roi empty": (_pre(roi=(0, 0, 0, 8)), "InputError"),
    "preprocess out (1, 0, 4)": (_pre(out=lambda: _z((1, 0, 4))), "InputError"),
    "preprocess out (1, 4, 0)": (_pre(out=lambda: _z((1, 4, 0))), "InputError"),
    "preprocess out (0, 4, 4)": (_pre(out=lambda: _z((0, 4, 4))), "InputError"),
    "preprocess out channels != kinds": (_pre(out=lambda: _z((2, 4, 4))), "InputError"),
    "preprocess out not contiguous": (_pre(out=lambda: _z((1, 4, 8))[:, :, ::2]), "InputError"),
    "preprocess out read-only": (
        _pre(out=lambda: np.broadcast_to(_z((1, 1, 1)), (1, 4, 4))),
        "InputError",
    ),
    "preprocess out (1, 2**16, 2**16)": (
        _pre(out=lambda: np.lib.stride_tricks.as_strided(_z((1,)), (1, 2**16, 2**16), (0, 0, 0))),
        "InputError",
    ),
    "preprocess kinds empty": (
        _pre(kinds=(), mean=(), inv=(), out=lambda: _z((0, 4, 4))),
        "InputError",
    ),
    "preprocess mean / kinds mismatch": (_pre(mean=(0.0, 0.0)), "InputError"),
    "preprocess inv_std inf (std 1e-45)": (_pre(inv=(INF,)), "InputError"),
    "preprocess inv_std 1e30": (_pre(inv=(1e30,)), "InputError"),
    "preprocess inv_std nan": (_pre(inv=(NAN,)), "InputError"),
    "preprocess inv_std 0": (_pre(inv=(0.0,)), "InputError"),
    "preprocess inv_std negative": (_pre(inv=(-1.0,)), "InputError"),
    "preprocess mean nan": (_pre(mean=(NAN,)), "InputError"),
    "preprocess mean inf": (_pre(mean=(INF,)), "InputError"),
    "preprocess sigma inf": (_pre(kinds=(1,), sigma=INF), "InputError"),
    "preprocess sigma nan": (_pre(kinds=(1,), sigma=NAN), "InputError"),
    "preprocess sigma 0": (_pre(kinds=(1,), sigma=0.0), "InputError"),
    "preprocess unknown kind": (_pre(kinds=(9,)), "InputError"),
    "preprocess unknown interp": (_pre(interp=5), "InputError"),
    "preprocess unknown color": (_pre(color=7), "InputError"),
    "preprocess threads 0": (_pre(threads=0), "InputError"),
    "preprocess threads -1": (_pre(threads=-1), "InputError"),
    "preprocess threads 10**6": (_pre(threads=10**6), "InputError"),
    # gradient_magnitude_cpu
    "gradient image (0, 8)": (_grad(image=(0, 8)), "InputError"),
    "gradient image (8, 0)": (_grad(image=(8, 0)), "InputError"),
    "gradient out mismatched": (_grad(out=lambda: _z((8, 7))), "InputError"),
    "gradient out (0, 0)": (_grad(out=lambda: _z((0, 0))), "InputError"),
    "gradient out not contiguous": (_grad(out=lambda: _z((8, 16))[:, ::2]), "InputError"),
    "gradient image float64": (_grad(image=lambda: _z((8, 8), np.float64)), "InputError"),
    "gradient sigma inf": (_grad(sigma=INF), "InputError"),
    "gradient sigma nan": (_grad(sigma=NAN), "InputError"),
    "gradient threads 0": (_grad(threads=0), "InputError"),
    # pool_classify_cpu
    "pool features (64, 8, 0)": (_pool(features=(64, 8, 0), num_labels=0), "InputError"),
    "pool features (64, 8, 0) no head": (
        _pool(features=(64, 8, 0), labels=None, num_labels=0, head=None),
        "InputError",
    ),
    "pool features (64, 0, 8)": (_pool(features=(64, 0, 8)), "InputError"),
    "pool features (0, 8, 8)": (_pool(features=(0, 8, 8), head=None), "InputError"),
    "pool features 2-D": (_pool(features=lambda: _z((8, 8))), "InputError"),
    "pool features float64": (_pool(features=lambda: _z((4, 8, 8), np.float64)), "InputError"),
    "pool features not contiguous": (
        _pool(features=lambda: _z((4, 8, 16))[:, :, ::2]),
        "InputError",
    ),
    "pool features NaN": (
        _pool(features=lambda: np.full((4, 8, 8), np.nan, F32)),
        "InputError",
    ),
    "pool features inf": (
        _pool(features=lambda: np.full((4, 8, 8), np.inf, F32), head=None),
        "InputError",
    ),
    "pool weights (0, 8)": (_pool(weights=(0, 8), labels=None, num_labels=0), "InputError"),
    "pool weights (8, 0)": (_pool(weights=(8, 0), labels=None, num_labels=0), "InputError"),
    "pool labels mismatched": (_pool(labels=lambda: _z((8, 7), I32)), "InputError"),
    "pool labels int64": (_pool(labels=lambda: _z((8, 8), np.int64)), "InputError"),
    "pool labels out of range": (
        _pool(labels=lambda: np.full((8, 8), 5, I32), num_labels=1),
        "InputError",
    ),
    "pool num_labels 2e6 on 32x32": (
        _pool(weights=(32, 32), num_labels=2_000_000),
        "InputError",
    ),
    "pool num_labels 2**40": (_pool(num_labels=2**40), "InputError"),
    "pool num_labels -1": (_pool(num_labels=-1), "InputError"),
    "pool num_labels scratch > 1 GiB": (
        _pool(features=(1, 256, 256), weights=(512, 512), num_labels=200_000, head=None),
        "InputError",
    ),
    "pool eps 0": (_pool(eps=0.0), "InputError"),
    "pool eps nan": (_pool(eps=NAN), "InputError"),
    "pool head partial": (
        _pool(head=lambda: (_z((5, 4)), None, None, None)),
        "InputError",
    ),
    "pool head w1 F mismatch": (
        _pool(head=lambda: (_z((5, 3)), _z((5,)), _z((3, 5)), _z((3,)))),
        "InputError",
    ),
    "pool head b1 mismatch": (
        _pool(head=lambda: (_z((5, 4)), _z((6,)), _z((3, 5)), _z((3,)))),
        "InputError",
    ),
    "pool head w2 mismatch": (
        _pool(head=lambda: (_z((5, 4)), _z((5,)), _z((3, 6)), _z((3,)))),
        "InputError",
    ),
    "pool head b2 mismatch": (
        _pool(head=lambda: (_z((5, 4)), _z((5,)), _z((3, 5)), _z((2,)))),
        "InputError",
    ),
    "pool head hidden 0": (
        _pool(head=lambda: (_z((0, 4)), _z((0,)), _z((3, 0)), _z((3,)))),
        "InputError",
    ),
    "pool head classes 0": (
        _pool(head=lambda: (_z((5, 4)), _z((5,)), _z((0, 5)), _z((0,)))),
        "InputError",
    ),
    "pool head float64": (
        _pool(head=lambda: (_z((5, 4), np.float64), _z((5,)), _z((3, 5)), _z((3,)))),
        "InputError",
    ),
    # mask_post_cpu
    "mask_post logits (0, 4)": (_post(logits=(0, 4)), "InputError"),
    "mask_post logits (4, 0)": (_post(logits=(4, 0)), "InputError"),
    "mask_post out (0, 8)": (_post(out=lambda: _z((0, 8), U8), roi=(0, 0, 8, 1)), "InputError"),
    "mask_post out row stride 0": (_post(out=lambda: _rows((8, 8), 0)), "InputError"),
    "mask_post out row stride 3 (overlap)": (_post(out=lambda: _rows((8, 8), 3)), "InputError"),
    "mask_post out negative row stride": (
        _post(out=lambda: _z((8, 8), U8)[::-1]),
        "InputError",
    ),
    "mask_post out column stride 2": (_post(out=lambda: _z((8, 16), U8)[:, ::2]), "InputError"),
    "mask_post out read-only": (
        _post(out=lambda: np.broadcast_to(_z((1, 8), U8), (8, 8))),
        "InputError",
    ),
    "mask_post out int32": (_post(out=lambda: _z((8, 8), I32)), "InputError"),
    "mask_post roi x overflow": (_post(roi=(IMAX, 0, 8, 8)), "InputError"),
    "mask_post roi w overflow": (_post(roi=(1, 0, IMAX, 8)), "InputError"),
    "mask_post value 0": (_post(value=0), "InputError"),
    "mask_post value 256": (_post(value=256), "InputError"),
    "mask_post threshold nan": (_post(threshold=NAN), "InputError"),
    "mask_post threads 0": (_post(threads=0), "InputError"),
    # components_cpu
    "components logits (0, 4)": (_comp(logits=(0, 4)), "InputError"),
    "components logits (4, 0)": (_comp(logits=(4, 0)), "InputError"),
    "components logits float64": (_comp(logits=lambda: _z((4, 4), np.float64)), "InputError"),
    "components threshold nan": (_comp(threshold=NAN), "InputError"),
    "components cell size 0": (_comp(sx=0.0), "InputError"),
    "components cell size nan": (_comp(sy=NAN), "InputError"),
    "components cell size 1e300": (_comp(sx=1e300), "InputError"),
    "components origin inf": (_comp(x0=INF), "InputError"),
    "components min_area nan": (_comp(min_area=NAN), "InputError"),
}


def _cuda_cases() -> dict[str, tuple[Callable[[Any], Any], str]]:
    """The CUDA bindings take device pointers: each call below is refused by its size checks
    before any pointer (a dummy 1 here) is used, GPU or not."""

    def pre(H=8, W=8, C=1, pitch=8, roi=(0, 0, 8, 8), oh=4, ow=4, inv=(1.0,), sigma=1.0):
        return lambda k: k.preprocess_cuda(
            1, H, W, C, pitch, 0, roi, 1, oh, ow, [0], [0.0], list(inv), sigma, 0, 0, 0
        )

    def pool(F=4, hf=8, wf=8, hm=8, wm=8, num_labels=1, hidden=5, classes=3):
        return lambda k: k.pool_classify_cuda(
            1, F, hf, wf, 1, hm, wm, 1, num_labels, 1e-6, 1, 1, 1, 1, hidden, classes, 1, 1, 1, 0
        )

    def post(h=4, w=4, H=8, W=8, pitch=8, roi=(0, 0, 8, 8), value=1):
        return lambda k: k.mask_post_cuda(1, h, w, 1, H, W, pitch, roi, 0.5, value, 0)

    return {
        "cuda preprocess H 0": (pre(H=0, roi=(0, 0, 8, 0)), "InputError"),
        "cuda preprocess W 0": (pre(W=0, pitch=0, roi=(0, 0, 0, 8)), "InputError"),
        "cuda preprocess out 0x4": (pre(oh=0), "InputError"),
        "cuda preprocess pitch short": (pre(pitch=4), "InputError"),
        "cuda preprocess roi overflow": (pre(roi=(IMAX, 0, 8, 8)), "InputError"),
        "cuda preprocess inv_std inf": (pre(inv=(INF,)), "InputError"),
        "cuda preprocess huge": (pre(H=2**30, W=2**20, pitch=2**20), "InputError"),
        "cuda pool wf 0": (pool(wf=0), "InputError"),
        "cuda pool F 0": (pool(F=0), "InputError"),
        "cuda pool hm 0": (pool(hm=0), "InputError"),
        "cuda pool num_labels > pixels": (pool(num_labels=65), "InputError"),
        "cuda pool hidden 0": (pool(hidden=0), "InputError"),
        "cuda pool classes 0": (pool(classes=0), "InputError"),
        "cuda mask_post h 0": (post(h=0), "InputError"),
        "cuda mask_post W 0": (post(W=0, roi=(0, 0, 0, 8)), "InputError"),
        "cuda mask_post pitch 0": (post(pitch=0), "InputError"),
        "cuda mask_post pitch overlap": (post(pitch=3), "InputError"),
        "cuda mask_post value 0": (post(value=0), "InputError"),
    }


def _all_cases() -> dict[str, tuple[Callable[[Any], Any], str]]:
    from sdk import _kernels

    cases = dict(CASES)
    if _kernels.built_with_cuda():
        cases.update(_cuda_cases())
    return cases


def _child(start: int) -> None:
    """Run cases from index ``start``, one JSON line before and after each."""
    from sdk import _kernels

    names = list(_all_cases())
    for name in names[start:]:
        call, _ = _all_cases()[name]
        print(json.dumps({"start": name}), flush=True)
        try:
            call(_kernels)
            got, msg = "ok", ""
        except Exception as e:  # the outcome is what is compared
            got, msg = type(e).__name__, str(e)[:200]
        print(json.dumps({"name": name, "got": got, "msg": msg}), flush=True)


_results: dict[str, dict[str, str]] = {}


def _run_all() -> dict[str, dict[str, str]]:
    if _results:
        return _results
    names = list(_all_cases())
    start = 0
    while start < len(names):
        p = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(start)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).resolve().parents[2],
        )
        current = None
        for line in p.stdout.splitlines():
            rec = json.loads(line)
            if "start" in rec:
                current = rec["start"]
            else:
                _results[rec["name"]] = rec
                current = None
        if p.returncode == 0 and current is None:
            break
        # The child died inside `current` (a signal: returncode < 0) or before the first case.
        if current is None:
            raise AssertionError(
                f"the child process failed (rc {p.returncode}): {p.stderr[-2000:]}"
            )
        _results[current] = {"name": current, "got": f"died (rc {p.returncode})", "msg": ""}
        start = names.index(current) + 1
    return _results


def _case_ids() -> list[str]:
    return list(_all_cases())


@pytest.mark.parametrize("name", _case_ids())
def test_binding_refuses_before_touching_memory(name: str) -> None:
    res = _run_all()[name]
    expect = _all_cases()[name][1]
    assert res["got"] == expect, f"{name}: expected {expect}, got {res['got']} {res['msg']}"


# ---- the typed wrappers (sdk.kernels): same refusals, in process --------------------------------
def test_pool_classify_zero_width_features() -> None:
    with pytest.raises(InputError, match="empty"):
        K.pool_classify(_z((64, 8, 0)), _z((8, 8)))


def test_labels_range_checked_before_narrowing() -> None:
    w = np.ones((4, 4), F32)
    labels = np.zeros((4, 4), np.int64)
    labels[0, 0] = 2**32 + 1  # int32 would read it as 1
    with pytest.raises(InputError, match="labels must be in"):
        K.pool_classify(_z((2, 4, 4)), w, labels, num_labels=1)
    with pytest.raises(InputError, match="lesions than the 16 mask pixels"):
        K.pool_classify(_z((2, 4, 4)), w, labels)
    labels[0, 0] = -(2**32) + 1  # int32 would read it as 1 too
    with pytest.raises(InputError, match="labels must be in"):
        K.pool_classify(_z((2, 4, 4)), w, labels, num_labels=1)


def test_num_labels_bounded_by_mask_pixels() -> None:
    w = np.ones((32, 32), F32)
    with pytest.raises(InputError, match="num_labels must be <= 1024"):
        K.pool_classify(_z((2, 8, 8)), w, np.zeros((32, 32), I32), num_labels=2_000_000)
    # the bound itself is fine
    r = K.pool_classify(_z((2, 8, 8)), w, np.zeros((32, 32), I32), num_labels=1024)
    assert r.pooled.shape == (1025, 2)


@pytest.mark.parametrize("std", [1e-45, 1e-7, 0.0, -1.0, 1e7, float("inf")])
def test_preprocess_std_out_of_range(std: float) -> None:
    with pytest.raises(InputError, match="std"):
        K.preprocess(_z((16, 16), U8), (8, 8), ("image",), std=std)


def test_preprocess_std_in_range_is_finite() -> None:
    out = K.preprocess(np.full((16, 16), 255, U8), (8, 8), ("image", "gdm"), std=1e-6)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("row_stride", [0, 3, -8])
def test_postprocess_mask_refuses_overlapping_rows(row_stride: int) -> None:
    buf = np.zeros(200, U8)
    out = np.lib.stride_tricks.as_strided(buf[100:], (8, 8), (row_stride, 1), writeable=True)
    with pytest.raises(InputError, match="row stride"):
        K.postprocess_mask(_z((4, 4)), (8, 8), out=out)


def test_postprocess_mask_padded_rows_ok() -> None:
    big = np.zeros((8, 16), U8)
    out = big[:, :8]  # row stride 16 > width: fine
    K.postprocess_mask(np.full((4, 4), 5.0, F32), (8, 8), out=out)
    assert (out == 1).all() and (big[:, 8:] == 0).all()


if __name__ == "__main__":
    _child(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
