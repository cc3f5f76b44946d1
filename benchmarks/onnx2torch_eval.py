"""Is ``onnx2torch`` a drop-in for the torch backend's ONNX interpreter? (issue #17, item 3)

Measures, on the artifacts the torch backend must run:

1. loads without pickle (``pickle.load(s)``, ``torch.load``, ``torch.jit.load`` refused);
2. the op parity cases of ``tests/sdk/test_backend_torch.py`` (same tolerance: 1e-5 of the
   output scale against ONNX Runtime with graph optimizations off);
3. the shipped default FP32 / INT8 (QDQ) models and the seed exports (``export.models``),
   against ONNX Runtime (1e-4, as the backend's tests);
4. speed on the default FP32 model, batch 1, one thread, against ``TorchBackend``.

Not a dependency of sonoedge: run it with onnx2torch on ``PYTHONPATH`` (it needs torchvision at
import; the PyPI torchvision wheel does not load against torch+cpu, so the measurement used a
stub for its NMS / RoiAlign converters, which none of these models use)::

    PYTHONPATH=/path/to/onnx2torch nice -n 10 python benchmarks/onnx2torch_eval.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import pickle
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


def _load_test_module():
    spec = importlib.util.spec_from_file_location(
        "tbt", ROOT / "tests" / "sdk" / "test_backend_torch.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def _no_pickle():
    def refuse(*a, **k):
        raise AssertionError("a load path unpickled")

    saved = [(pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.jit, "load")]
    old = [getattr(m, n) for m, n in saved]
    for m, n in saved:
        setattr(m, n, refuse)
    try:
        yield
    finally:
        for (m, n), o in zip(saved, old, strict=True):
            setattr(m, n, o)


def _convert(path: Path):
    from onnx2torch import convert

    with _no_pickle():
        return convert(onnx.load(str(path))).eval()


def _run(module, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = module(torch.from_numpy(x))
    if isinstance(out, torch.Tensor):
        out = (out,)
    return {n: o.numpy() for n, o in zip(names, out, strict=True)}


def _err(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}".splitlines()[0]
    return s[:160]


def ops(tm) -> dict:
    res = {"pass": [], "convert": {}, "run": {}, "mismatch": {}}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as td:
        for p in tm.OP_CASES:
            nodes, x_shape, inits, opset = p.values
            shape = tuple(3 if isinstance(d, str) else d for d in x_shape)
            special = tm._SPECIAL_INPUTS.get(p.id)
            x = special(shape) if special else rng.standard_normal(shape).astype(np.float32) * 2
            path = tm._save(tm._model(nodes, x_shape, inits, opset), Path(td))
            ref = tm._ort_run(tm._ort(path), x)
            try:
                m = _convert(path)
            except Exception as e:  # the measurement records every failure
                res["convert"][p.id] = _err(e)
                continue
            try:
                got = _run(m, x, list(ref))
            except Exception as e:
                res["run"][p.id] = _err(e)
                continue
            try:
                diffs = tm._max_diff(got, ref)
                scale = max(1.0, max(float(np.abs(v).max(initial=0)) for v in ref.values()))
                ok = max(diffs.values()) <= 1e-5 * scale and all(
                    v.dtype == ref[k].dtype for k, v in got.items()
                )
            except AssertionError as e:
                res["mismatch"][p.id] = _err(e) or "shape"
                continue
            if ok:
                res["pass"].append(p.id)
            else:
                res["mismatch"][p.id] = f"max diff {max(diffs.values()):.3g} (scale {scale:.3g})"
    return res


def model_parity(path: Path, x: np.ndarray, tm) -> str:
    sess = tm._ort(path, optimized=False)
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=True))
    try:
        m = _convert(path)
    except Exception as e:
        return f"convert fails: {_err(e)}"
    try:
        got = _run(m, x, names)
    except Exception as e:
        return f"run fails: {_err(e)}"
    d = tm._max_diff(got, ref)
    return "max |diff| vs ORT " + ", ".join(f"{k} {v:.2e}" for k, v in d.items())


def seeds(tm) -> dict[str, str]:
    from export.models import create_model, list_models
    from export.onnx_export import to_onnx_file

    out = {}
    with tempfile.TemporaryDirectory() as td:
        for name in list_models():
            torch.manual_seed(0)
            m = create_model(name).eval()
            torch.manual_seed(1)
            x = m.example_input(1, m.test_input_size)
            if isinstance(x, tuple):
                out[name] = "skipped: several inputs"
                continue
            try:
                path = to_onnx_file(m, (x,), Path(td) / f"{name}.onnx")
            except Exception as e:
                out[name] = f"export fails: {_err(e)}"
                continue
            ops_used = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            out[name] = model_parity(path, x.numpy(), tm) + f" ({len(ops_used)} op types)"
            print(name, out[name], flush=True)
    return out


def speed(n: int = 60) -> dict[str, float]:
    from sdk.analyzer import default_model
    from sdk.backends.torch import TorchBackend

    path = default_model("fp32")
    x = np.random.default_rng(0).standard_normal((1, 1, 128, 128)).astype(np.float32)
    with TorchBackend(path, device="cpu", threads=1) as b:
        for _ in range(5):
            b.infer(x)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            b.infer(x)
            t.append((time.perf_counter() - t0) * 1e3)
    res = {"TorchBackend (sonoedge interpreter)": statistics.median(t)}
    m = _convert(path)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        for _ in range(5):
            m(xt)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            m(xt)
            t.append((time.perf_counter() - t0) * 1e3)
    res["onnx2torch GraphModule"] = statistics.median(t)
    return res


def main() -> None:
    from sdk.analyzer import default_model

    tm = _load_test_module()
    report: dict = {"torch": torch.__version__}
    import onnx2torch

    report["onnx2torch"] = getattr(onnx2torch, "__version__", "1.5.15")
    r = ops(tm)
    report["ops"] = {
        "cases": len(tm.OP_CASES),
        "pass": len(r["pass"]),
        "convert_fail": r["convert"],
        "run_fail": r["run"],
        "mismatch": r["mismatch"],
    }
    print(json.dumps({k: v for k, v in report["ops"].items()}, indent=1), flush=True)
    x = np.random.default_rng(0).standard_normal((1, 1, 128, 128)).astype(np.float32)
    report["default"] = {}
    for which in ("fp32", "int8"):
        try:
            report["default"][which] = model_parity(default_model(which), x, tm)
        except Exception as e:
            report["default"][which] = _err(e)
            traceback.print_exc()
        print(which, report["default"][which], flush=True)
    report["seeds"] = seeds(tm)
    try:
        report["speed_ms_median_b1_1thread"] = speed()
    except Exception as e:
        report["speed_ms_median_b1_1thread"] = _err(e)
    print(json.dumps(report, indent=1))
    (ROOT / "benchmarks" / "results" / "onnx2torch-eval.json").write_text(
        json.dumps(report, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
