"""INT8 quantizers and graph simplifiers compared on one FP32 ONNX model (issue #5, items 3–4).

    python benchmarks/quantizers.py                       # sdk/models/default-fp32.onnx
    python benchmarks/quantizers.py --model runs/demo/baseline.onnx --heldout 500

Same FP32 model, same calibration frames (export.pipeline.calibration_frames: synthetic
phantoms preprocessed by the SDK's own preprocess kernel with the artifact's metadata), same
held-out frames (export.pipeline.heldout_set / evaluate_onnx), for:

  * FP32 (the reference),
  * ONNX Runtime quantize_static through export.quantize.quantize (target "cpu": QDQ, uint8
    asymmetric activations, int8 per-channel weights, outputs float), percentile and MinMax,
  * NNCF post-training quantization (nncf.quantize on the onnx.ModelProto with an
    nncf.Dataset over the same frames): default settings, the PERFORMANCE preset (NNCF's
    default for CNNs: the script checks whether the graphs are identical), the MIXED preset,
    and fast_bias_correction=False,

each with Dice / IoU / accuracy / macro AUC and their drop against FP32, agreement with the
FP32 predictions, file size, and latency: bare ONNX Runtime CPU sessions (the SDK backend's
options: ORT_ENABLE_ALL, intra-op threads 1 and 2, no spinning) and, when `openvino` is
importable, OpenVINO CPU on the same files; every latency entry (model x runtime x threads) is
timed once per round, in a shuffled order each round, in one loop, so ratios come from the
same run. Then graph simplification:
onnxslim (and onnxsim when importable) on the FP32 and the shipped INT8 model: node counts,
output parity on the held-out inputs, SDK load check, interleaved ORT latency before/after.

NNCF, OpenVINO, onnxslim and onnxsim are optional: missing ones are reported as skipped. When
NNCF lives in another environment, `--nncf-python /tmp/venv-nncf/bin/python` runs only the
quantization step there (a subprocess of this file that needs numpy, onnx and nncf) and
measures everything else here.

Writes <out>/<stem>.md and <out>/<stem>.json (machine, versions, date, command). About 3–5
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 0.01  # the export's INT8 budget (1 point on Dice and accuracy)
NNCF_VARIANTS = {
    "default": "NNCF default",
    "performance": "NNCF preset=PERFORMANCE",
    "mixed": "NNCF preset=MIXED",
    "bias_correction": "NNCF fast_bias_correction=False",
}


# --------------------------------------------------------------------------- NNCF step


def nncf_quantize(src: Path, calib: np.ndarray, out: Path, variant: str) -> dict[str, Any]:
    """NNCF PTQ of ``src`` on ``calib`` (N, C, h, w) float32; writes ``out``. Imports only
    numpy, onnx and nncf, so it also runs as a subprocess in another environment."""
    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = onnx.load(str(src))
    name = model.graph.input[0].name
    ds = nncf.Dataset(list(calib), lambda x: {name: x[None]})
    kw: dict[str, Any] = {}
    if variant == "performance":
        kw["preset"] = nncf.QuantizationPreset.PERFORMANCE
    elif variant == "mixed":
        kw["preset"] = nncf.QuantizationPreset.MIXED
    elif variant == "bias_correction":
        kw["fast_bias_correction"] = False
    elif variant != "default":
        raise ValueError(f"unknown NNCF variant {variant!r}")
    t0 = time.perf_counter()
    q = nncf.quantize(model, ds, subset_size=len(calib), **kw)
    seconds = time.perf_counter() - t0
    onnx.save(q, str(out))
    return {
        "seconds": seconds,
        "nncf": nncf.__version__,
        "kwargs": {k: str(v) for k, v in kw.items()},
    }


def _nncf_worker(argv: list[str]) -> None:
    src, calib, out, variant, info = argv
    res = nncf_quantize(Path(src), np.load(calib), Path(out), variant)
    Path(info).write_text(json.dumps(res))


# --------------------------------------------------------------------------- helpers


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for mod in ("onnx", "onnxruntime", "nncf", "openvino", "onnxslim", "onnxsim"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[mod] = str(__import__(mod).__version__)
        except Exception:
            out[mod] = None
    return out


def _ort_session(path: Path, threads: int, level: str = "all", opt_out: Path | None = None) -> Any:
    """Session with the SDK ONNX Runtime backend's options without spinning
    (``sdk.backends.onnxruntime.session_options(spin=False)``: what the committed table was
    measured with)."""
    import onnxruntime as ort

    from sdk.backends.onnxruntime import session_options

    so = session_options(ort, threads, spin=False)
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    so.log_severity_level = 3
    if opt_out is not None:
        so.optimized_model_filepath = str(opt_out)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_outputs(path: Path, x: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    sess = _ort_session(path, 2)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(names, {name: x[s : s + batch]}) for s in range(0, len(x), batch)]
    return {n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)}


def _ov_compile(core: Any, path: Path, threads: int, precision: str | None) -> Any:
    cfg: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(str(path), "CPU", cfg)


def _ov_outputs(compiled: Any, x: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    req = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]
    parts = []
    for s in range(0, len(x), batch):
        r = req.infer({0: x[s : s + batch]})
        parts.append([np.array(r[o]) for o in compiled.outputs])
    return {n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)}


def _agreement(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], md: Any) -> dict[str, float]:
    """How closely ``out`` reproduces ``ref``'s predictions (same inputs): label agreement,
    mean Dice between the two masks, max |Δ class probability|."""
    from export.pipeline import _class_probs
    from sdk import metrics

    mk = md.outputs["mask_logits"]
    pr, po = _class_probs(ref, md), _class_probs(out, md)
    dices = [metrics.dice(a[0] > 0, b[0] > 0) for a, b in zip(ref[mk], out[mk], strict=True)]
    return {
        "label_agreement": float((pr.argmax(1) == po.argmax(1)).mean()),
        "mask_dice_vs_ref": float(np.mean(dices)),
        "max_abs_prob_diff": float(np.abs(pr - po).max()),
    }


def _ort_fusion(path: Path, tmp: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs (ORT_ENABLE_ALL, CPU): how many
    convolutions became integer kernels."""
    import onnx

    opt = tmp / f"{path.stem}.ortopt.onnx"
    _ort_session(path, 1, opt_out=opt)
    m = onnx.load(str(opt))
    ops = [n.op_type for n in m.graph.node]
    return {
        "int8_conv": sum(o in ("QLinearConv", "NhwcQLinearConv") for o in ops),
        "float_conv": sum(o in ("Conv", "FusedConv") for o in ops),
        "q": ops.count("QuantizeLinear"),
        "dq": ops.count("DequantizeLinear"),
        "nodes": len(ops),
    }


def _interleaved(
    fns: dict[str, Any], repeat: int, warmup: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Time every callable once per round for ``repeat`` rounds, in a fresh random order each
    round (a fixed order lets an entry inherit its predecessor's cache / frequency state).
    Returns seconds per call, aligned by round (index i = round i for every entry)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rng = np.random.default_rng(seed)
    keys = list(fns)
    times = {k: np.empty(repeat) for k in keys}
    for i in range(repeat):
        for j in rng.permutation(len(keys)):
            k = keys[j]
            t0 = time.perf_counter_ns()
            fns[k]()
            times[k][i] = (time.perf_counter_ns() - t0) * 1e-9
    return times


def _ratio_stats(t: np.ndarray, ref: np.ndarray, blocks: int) -> dict[str, float]:
    """Median / median, and the range of that ratio over ``blocks`` consecutive slices of the
    round-robin loop (how stable it was while the shared machine's load changed)."""
    r = [
        float(np.median(a) / np.median(b))
        for a, b in zip(np.array_split(t, blocks), np.array_split(ref, blocks), strict=True)
    ]
    return {
        "ratio": float(np.median(t) / np.median(ref)),
        "ratio_min": min(r),
        "ratio_max": max(r),
        "paired_diff_us": float(np.median(t - ref) * 1e6),  # same-round difference
    }


def _fmt(v: Any, d: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def _signed(v: float | None, d: int = 3) -> str:
    return "–" if v is None else f"{v:+.{d}f}"


def _node_counts(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    return {
        "nodes": len(m.graph.node),
        "nodes_no_const": sum(n.op_type != "Constant" for n in m.graph.node),
        "initializers": len(m.graph.initializer),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_nncf-worker"]:
        _nncf_worker(argv[1:])
        return 0
    p = argparse.ArgumentParser(
        prog="benchmarks/quantizers.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=Path,
        default=ROOT / "sdk/models/default-fp32.onnx",
        help="FP32 sonoedge ONNX artifact (default: the embedded default model)",
    )
    p.add_argument(
        "--int8",
        type=Path,
        default=ROOT / "sdk/models/default-int8.onnx",
        help="shipped INT8 model for the simplification table",
    )
    p.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder")
    p.add_argument("--calib", type=int, default=300, help="calibration frames (>= 300)")
    p.add_argument("--heldout", type=int, default=500, help="held-out frames (>= 200)")
    p.add_argument("--seed", type=int, default=0, help="frame seed (the export's default 0)")
    p.add_argument(
        "--repeat",
        type=int,
        default=300,
        help="rounds of the quantizer latency loop (each entry runs once a round)",
    )
    p.add_argument(
        "--repeat-simplify", type=int, default=1500, help="rounds of the simplification loop"
    )
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument(
        "--nncf-variants",
        default="default,performance,mixed,bias_correction",
        help=f"comma list of {sorted(NNCF_VARIANTS)} ('' skips NNCF)",
    )
    p.add_argument(
        "--nncf-python",
        default=None,
        help="python of another environment with nncf (e.g. /tmp/venv-nncf/bin/python)"
        "; default: import nncf here",
    )
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO even if importable")
    p.add_argument("--no-simplify", action="store_true", help="skip the onnxslim / onnxsim table")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="folder to keep the quantized / simplified models in (default: temp)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    p.add_argument("--stem", default="quantizers-cpu-xeon-2c")
    args = p.parse_args(argv)
    if args.calib < 300 or args.heldout < 200:
        p.error("--calib must be >= 300 and --heldout >= 200")

    sys.path.insert(0, str(ROOT))  # the source tree, not an installed copy
    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING)
    command = "python benchmarks/quantizers.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    t_start = time.perf_counter()

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep
        td = None
    else:
        td = tempfile.TemporaryDirectory(prefix="quantizers-")
        work = Path(td.name)
    try:
        doc = run(args, work, command)
    finally:
        if td is not None:
            td.cleanup()
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    md_path, js_path = args.out / f"{args.stem}.md", args.out / f"{args.stem}.json"
    for path, text in ((md_path, markdown(doc)), (js_path, json.dumps(doc, indent=2, default=str))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    print(markdown(doc))
    print(f"wrote {md_path} and {js_path} in {doc['wall_s']:.0f} s")
    return 0


def run(args: argparse.Namespace, work: Path, command: str) -> dict[str, Any]:
    import onnx

    from export.onnx_export import embed_metadata
    from export.pipeline import (
        calibration_frames,
        check_contract,
        evaluate_onnx,
        heldout_set,
    )
    from export.quantize import quantize, quiet_quantizer
    from sdk.artifact import read_onnx_file_metadata
    from sdk.bench.timing import machine_info

    src = args.model.resolve()
    check_contract(src)
    md = read_onnx_file_metadata(src)
    if md.precision != "fp32":
        raise SystemExit(f"{src} is a {md.precision} artifact; pass the FP32 export")
    versions = _versions()
    log = lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)  # noqa: E731

    log(f"frames: {args.calib} calibration, {args.heldout} held-out")
    calib = calibration_frames(args.data, md, args.calib, args.seed)
    ev = heldout_set(src, args.data, args.heldout, args.seed)

    rows: list[dict[str, Any]] = [
        {"key": "fp32", "name": "FP32 (reference)", "path": src, "tool": "—", "status": "ok"}
    ]

    # ---- ONNX Runtime quantize_static via export.quantize
    for method in ("percentile", "minmax"):
        out = work / f"ort-{method}.onnx"
        log(f"ORT quantize_static ({method})")
        t0 = time.perf_counter()
        with quiet_quantizer(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize(src, out, calib, target="cpu", calibrate_method=method)
        rows.append(
            {
                "key": f"ort-{method}",
                "name": f"ORT quantize_static, {method}",
                "path": out,
                "tool": f"onnxruntime {versions['onnxruntime']} (export.quantize, target cpu)",
                "status": "ok",
                "quantize_s": time.perf_counter() - t0,
            }
        )
    shipped_same = None
    if args.int8.exists():
        a, b = onnx.load(str(work / "ort-percentile.onnx")), onnx.load(str(args.int8))
        shipped_same = a.graph.SerializeToString() == b.graph.SerializeToString()

    # ---- NNCF
    variants = [v for v in args.nncf_variants.split(",") if v.strip()]
    bad = sorted(set(variants) - set(NNCF_VARIANTS))
    if bad:
        raise SystemExit(f"unknown --nncf-variants {bad}; choose from {sorted(NNCF_VARIANTS)}")
    nncf_where = None
    if variants:
        if args.nncf_python:
            nncf_where = f"subprocess: {args.nncf_python}"
        elif versions["nncf"]:
            nncf_where = "in process"
    calib_arr = np.stack([c if c.ndim == 3 else c[0] for c in calib]).astype(np.float32)
    if variants and nncf_where and args.nncf_python:
        np.save(work / "calib.npy", calib_arr)
    graphs: dict[str, bytes] = {}
    for v in variants:
        out = work / f"nncf-{v}.onnx"
        row: dict[str, Any] = {"key": f"nncf-{v}", "name": NNCF_VARIANTS[v], "path": out}
        if nncf_where is None:
            rows.append(row | {"status": "skipped: nncf not importable (pip install nncf)"})
            continue
        log(f"NNCF {v} ({nncf_where})")
        t0 = time.perf_counter()
        try:
            if args.nncf_python:
                info = work / f"nncf-{v}.json"
                r = subprocess.run(
                    [
                        args.nncf_python,
                        str(Path(__file__).resolve()),
                        "--_nncf-worker",
                        str(src),
                        str(work / "calib.npy"),
                        str(out),
                        v,
                        str(info),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if r.returncode:
                    raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr else "failed")
                res = json.loads(info.read_text())
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = nncf_quantize(src, calib_arr, out, v)
        except Exception as exc:  # report the failure as the row's status
            msg = (
                str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            )
            rows.append(
                row
                | {
                    "status": f"failed after {time.perf_counter() - t0:.0f} s: "
                    f"{type(exc).__name__}: {msg}"
                }
            )
            continue
        qmd = type(md).from_dict(md.to_dict())
        qmd.precision = "int8"
        qmd.provenance = {
            **qmd.provenance,
            "quantization": {
                "target": "cpu",
                "format": "QDQ",
                "quantizer": f"nncf.quantize {res['nncf']}",
                "kwargs": res["kwargs"],
                "calibration": {"frames": len(calib)},
            },
        }
        embed_metadata(out, qmd)
        graphs[v] = onnx.load(str(out)).graph.SerializeToString()
        rows.append(
            row
            | {
                "status": "ok",
                "tool": f"nncf {res['nncf']} ({nncf_where})",
                "quantize_s": res["seconds"],
                "kwargs": res["kwargs"],
            }
        )
    # NNCF's default preset for CNNs is PERFORMANCE: keep one row when the graphs are identical.
    nncf_default_is_performance = None
    if "default" in graphs and "performance" in graphs:
        nncf_default_is_performance = graphs["default"] == graphs["performance"]
        if nncf_default_is_performance:
            rows = [r for r in rows if r["key"] != "nncf-performance"]
            for r in rows:
                if r["key"] == "nncf-default":
                    r["name"] = "NNCF default (= preset PERFORMANCE, identical graph)"

    ok = [r for r in rows if r["status"] == "ok"]

    # ---- accuracy, fidelity, size, ORT fusion
    log("accuracy on held-out frames")
    ref_out = _ort_outputs(src, ev.x)
    for r in ok:
        r["metrics"] = evaluate_onnx(r["path"], ev, threads=2)
        r["size_mb"] = r["path"].stat().st_size / 1e6
        r["agreement"] = _agreement(ref_out, _ort_outputs(r["path"], ev.x), md)
        r["ort_graph"] = _ort_fusion(r["path"], work)
    fp = ok[0]["metrics"]
    for r in ok:
        r["delta"] = {
            k: (r["metrics"][k] - fp[k]) if r["metrics"][k] is not None else None
            for k in ("dice", "iou", "accuracy", "macro_auc")
        }
        r["within_budget"] = all(-r["delta"][k] <= BUDGET + 1e-9 for k in ("dice", "accuracy"))

    # ---- latency: every (model, runtime, threads) entry in one round-robin loop
    x1 = np.ascontiguousarray(ev.x[:1])
    fns: dict[str, Any] = {}
    for r in ok:
        for th in (1, 2):
            s = _ort_session(r["path"], th)
            n = s.get_inputs()[0].name
            fns[f"ort|{r['key']}|{th}"] = lambda s=s, n=n: s.run(None, {n: x1})
    ov_info: dict[str, Any] = {"available": False}
    core = None
    if not args.no_openvino and versions["openvino"]:
        import openvino as ov

        core = ov.Core()
        ov_info = {
            "available": True,
            "default_precision_hint": _ov_type(
                core.get_property("CPU", "INFERENCE_PRECISION_HINT")
            ),
            "config": "INFERENCE_NUM_THREADS=1|2, PERFORMANCE_HINT=LATENCY, NUM_STREAMS=1, "
            "INFERENCE_PRECISION_HINT=f32 (int8 layers stay int8)",
        }
        ov_rows = [(r["key"], r["path"], "f32") for r in ok]
        ov_rows.append(("fp32@ovdefault", src, None))  # OV's own default precision on this CPU
        for key, path, prec in ov_rows:
            for th in (1, 2):
                c = _ov_compile(core, path, th, prec)
                req = c.create_infer_request()
                fns[f"ov|{key}|{th}"] = lambda req=req: req.infer({0: x1})
            c = _ov_compile(core, path, 2, prec)
            ov_info.setdefault("agreement_vs_ort_same_file", {})[key] = _agreement(
                _ort_outputs(path, ev.x), _ov_outputs(c, ev.x), md
            )
    log(f"latency: {len(fns)} entries x {args.repeat} rounds, shuffled")
    t = _interleaved(fns, args.repeat, args.warmup)
    blocks = 5
    for r in ok:
        r["ort"] = {}
        for th in (1, 2):
            a, ref = t[f"ort|{r['key']}|{th}"], t[f"ort|fp32|{th}"]
            r["ort"][th] = {
                "p50_ms": float(np.median(a) * 1e3),
                "p90_ms": float(np.percentile(a, 90) * 1e3),
                **_ratio_stats(a, ref, blocks),
            }
    if ov_info["available"]:
        ov_info["rows"] = {}
        for key in [r["key"] for r in ok] + ["fp32@ovdefault"]:
            ov_info["rows"][key] = {}
            for th in (1, 2):
                a = t[f"ov|{key}|{th}"]
                ov_info["rows"][key][th] = {
                    "p50_ms": float(np.median(a) * 1e3),
                    "vs_ov_fp32": _ratio_stats(a, t[f"ov|fp32|{th}"], blocks),
                    "vs_ort_fp32": _ratio_stats(a, t[f"ort|fp32|{th}"], blocks),
                }

    simplify = (
        None if args.no_simplify else simplification(args, src, ev, calib, work, versions, log)
    )

    return {
        "title": "INT8 quantizers and graph simplification",
        "machine": machine_info() | {"cpu_flags": _cpu_flags()},
        "versions": versions,
        "command": command,
        "model": str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src),
        "frames": {
            "data": args.data,
            "seed": args.seed,
            "calibration": len(calib),
            "heldout": len(ev),
            "heldout_classes": {
                n: int((ev.labels == i).sum()) for i, n in enumerate(ev.class_names)
            },
            "mask_grid": list(ev.masks.shape[1:]),
            "input_shape": list(ev.x.shape[1:]),
        },
        "repeat": args.repeat,
        "repeat_simplify": args.repeat_simplify,
        "budget": BUDGET,
        "nncf_where": nncf_where,
        "nncf_default_is_performance": nncf_default_is_performance,
        "ort_percentile_equals_shipped_int8": shipped_same,
        "rows": rows,
        "openvino": ov_info,
        "simplification": simplify,
    }


def _ov_type(t: Any) -> str:
    name = getattr(t, "get_type_name", None)
    return str(name() if callable(name) else t)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                want = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
                return " ".join(f for f in want if f in have)
    except OSError:
        pass
    return ""


# --------------------------------------------------------------------------- simplification


def simplification(
    args: argparse.Namespace,
    src: Path,
    ev: Any,
    calib: list[np.ndarray],
    work: Path,
    versions: dict,
    log: Any,
) -> dict[str, Any]:
    import onnx

    from export.pipeline import check_contract, evaluate_onnx
    from export.quantize import quantize, quiet_quantizer

    tools = [t for t in ("onnxslim", "onnxsim") if versions[t]]
    res: dict[str, Any] = {"tools": tools, "rows": []}
    if not tools:
        res["status"] = "skipped: neither onnxslim nor onnxsim importable (pip install onnxslim)"
        return res
    bases = [("fp32", src)] + ([("int8", args.int8.resolve())] if args.int8.exists() else [])
    entries: list[dict[str, Any]] = []
    for kind, path in bases:
        entries.append({"key": f"{kind}", "base": kind, "tool": "—", "path": path})
        for tool in tools:
            out = work / f"{kind}.{tool}.onnx"
            log(f"{tool} on {path.name}")
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if tool == "onnxslim":
                        import onnxslim

                        m = onnxslim.slim(onnx.load(str(path)))
                    else:
                        import onnxsim

                        m, okk = onnxsim.simplify(onnx.load(str(path)))
                        if not okk:
                            raise RuntimeError("onnxsim's own check failed")
                onnx.save(m, str(out))
                entries.append(
                    {
                        "key": f"{kind}.{tool}",
                        "base": kind,
                        "tool": tool,
                        "path": out,
                        "seconds": time.perf_counter() - t0,
                    }
                )
            except Exception as exc:
                entries.append(
                    {
                        "key": f"{kind}.{tool}",
                        "base": kind,
                        "tool": tool,
                        "path": None,
                        "status": f"failed: {type(exc).__name__}: {str(exc)[:200]}",
                    }
                )
    # Order that an export would use: simplify the FP32 graph, then quantize it.
    slim_fp32 = next((e for e in entries if e["key"] == "fp32.onnxslim" and e["path"]), None)
    if slim_fp32 is not None and len(bases) == 2:
        log("quantize_static (percentile) on the onnxslim FP32")
        out = work / "fp32.onnxslim.int8.onnx"
        with quiet_quantizer(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize(slim_fp32["path"], out, calib, target="cpu", calibrate_method="percentile")
        entries.append(
            {
                "key": "int8.slim-first",
                "base": "int8",
                "tool": "onnxslim on FP32, then quantize_static percentile",
                "path": out,
                "metrics": evaluate_onnx(out, ev, threads=2),
            }
        )
    ref = {kind: _ort_outputs(path, ev.x) for kind, path in bases}
    for e in entries:
        if e["path"] is None:
            continue
        e["status"] = "ok"
        e["counts"] = _node_counts(e["path"])
        e["size_mb"] = e["path"].stat().st_size / 1e6
        out = _ort_outputs(e["path"], ev.x)
        e["max_abs_diff"] = {
            k: float(np.abs(out[k] - ref[e["base"]][k]).max()) for k in ref[e["base"]]
        }
        e["parity_max"] = max(e["max_abs_diff"].values())
        m = onnx.load(str(e["path"]))
        keys = [p.key for p in m.metadata_props]
        e["metadata_kept"] = "sonoedge" in keys
        e["extra_metadata_props"] = len([k for k in keys if k != "sonoedge"])
        # The SDK still takes it: contract, metadata, one frame end to end.
        try:
            import sdk
            from sdk import synthetic

            check_contract(e["path"])
            frame = synthetic.phantom("malignant", size=(300, 400), seed=11)[0]
            with sdk.Analyzer(e["path"], threads=1) as a:
                a.run(frame)
            e["sdk_loads"] = True
        except Exception as exc:
            e["sdk_loads"] = f"{type(exc).__name__}: {str(exc)[:150]}"
        # ORT session creation (graph optimization included), median of 7.
        loads = []
        for _ in range(7):
            t0 = time.perf_counter()
            _ort_session(e["path"], 1)
            loads.append(time.perf_counter() - t0)
        e["ort_load_ms"] = float(np.median(loads) * 1e3)
        e["ort_graph"] = _ort_fusion(e["path"], work)
    good = [e for e in entries if e.get("status") == "ok"]
    x1 = np.ascontiguousarray(ev.x[:1])
    fns = {}
    for e in good:
        for th in (1, 2):
            s = _ort_session(e["path"], th)
            n = s.get_inputs()[0].name
            fns[f"{e['key']}|{th}"] = lambda s=s, n=n: s.run(None, {n: x1})
    log(f"simplification latency: {len(fns)} entries x {args.repeat_simplify} rounds, shuffled")
    t = _interleaved(fns, args.repeat_simplify, args.warmup)
    for e in good:
        e["ort"] = {}
        for th in (1, 2):
            a, r0 = t[f"{e['key']}|{th}"], t[f"{e['base']}|{th}"]
            e["ort"][th] = {"p50_ms": float(np.median(a) * 1e3), **_ratio_stats(a, r0, 5)}
    res["rows"] = entries
    return res


# --------------------------------------------------------------------------- report


def _lat(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    return f"{d['p50_ms']:.2f}"


def _rat(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    return f"{d['ratio']:.2f}× ({d['ratio_min']:.2f}–{d['ratio_max']:.2f})"


def markdown(doc: dict[str, Any]) -> str:
    m, v, f = doc["machine"], doc["versions"], doc["frames"]
    vs = ", ".join(
        f"{k} {val}" for k, val in v.items() if val and f"{k} " not in m.get("versions", "")
    )
    missing = ", ".join(k for k, val in v.items() if not val)
    L = [
        f"### {doc['title']}: `{doc['model']}`",
        "",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores visible ({m.get('cpu_flags')}), "
        f"{m.get('device')}; **shared with other engineers' jobs (training running)**: absolute "
        "times are noisy, read the same-run ratios",
        f"- versions: {m.get('versions')}"
        + (f", {vs}" if vs else "")
        + (f"; not installed: {missing}" if missing else ""),
        f"- date: {m.get('date')}; command: `{doc['command']}` ({doc.get('wall_s', 0):.0f} s)",
        f"- frames: {f['calibration']} calibration phantoms (`export.pipeline.calibration_frames`, "
        f"data={f['data']}, seed {f['seed']}, SDK preprocess kernel) — the same list for every "
        f"quantizer; {f['heldout']} held-out phantoms (`heldout_set`, {f['heldout_classes']}; the "
        f"first 200 are the frames the export's budget check uses), metrics by `evaluate_onnx` "
        f"(Dice / IoU on the {f['mask_grid'][0]}×{f['mask_grid'][1]} mask grid)",
        f"- latency: bare `session.run` / `infer` on one preprocessed held-out frame "
        f"({'×'.join(str(s) for s in f['input_shape'])}, batch 1), SDK backend session options "
        "(ORT_ENABLE_ALL, intra-op threads 1 / 2, inter-op 1, no spinning); "
        "every entry of a table (model × "
        f"runtime × threads) timed once per round in a shuffled order, {doc['repeat']} rounds "
        f"({doc.get('repeat_simplify', doc['repeat'])} for the simplification table); p50 = "
        "median. Ratio = p50 / FP32 p50 at the same thread count (same loop); in brackets the "
        "lowest–highest ratio over 5 consecutive slices of the loop",
        "",
        "#### Quantizers (ONNX Runtime CPU, the SDK's backend)",
        "",
        "| model | status | quantize s | size MB | Dice | accuracy | macro AUC | ΔDice | Δacc "
        "| ΔAUC | label agr. / mask Dice vs FP32 | int8 / float Convs in ORT's graph "
        "| p50 1 thr ms | "
        "ratio 1 thr | p50 2 thr ms | ratio 2 thr |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["rows"]:
        if r["status"] != "ok":
            L.append(f"| {r['name']} | {r['status']} |" + " – |" * 14)
            continue
        mt, d, a, g = r["metrics"], r["delta"], r["agreement"], r["ort_graph"]
        ref = r["key"] == "fp32"
        budget = "" if ref else (", within 1 pt" if r["within_budget"] else ", **over 1 pt**")
        agr = "–" if ref else f"{a['label_agreement']:.3f} / {a['mask_dice_vs_ref']:.3f}"
        L.append(
            f"| {r['name']} | ok{budget} "
            f"| {_fmt(r.get('quantize_s'), 1)} | {r['size_mb']:.2f} | {mt['dice']:.4f} | "
            f"{mt['accuracy']:.3f} | {_fmt(mt['macro_auc'], 4)} | "
            f"{'–' if ref else _signed(d['dice'], 4)} | {'–' if ref else _signed(d['accuracy'])} | "
            f"{'–' if ref else _signed(d['macro_auc'], 4)} | "
            f"{agr} | "
            f"{g['int8_conv']} / {g['float_conv']} | {_lat(r['ort'][1])} | "
            f"{'1.00×' if ref else _rat(r['ort'][1])} | {_lat(r['ort'][2])} | "
            f"{'1.00×' if ref else _rat(r['ort'][2])} |"
        )
    notes = []
    if doc["ort_percentile_equals_shipped_int8"] is not None:
        notes.append(
            "ORT percentile, re-quantized here, has "
            + (
                "a graph identical to"
                if doc["ort_percentile_equals_shipped_int8"]
                else "a graph that differs from"
            )
            + " the shipped `sdk/models/default-int8.onnx`."
        )
    if doc["nncf_default_is_performance"] is not None:
        notes.append(
            "NNCF's default preset for a non-transformer model is PERFORMANCE (symmetric int8 "
            "weights and activations); the two calls gave "
            + (
                "identical graphs, so one row."
                if doc["nncf_default_is_performance"]
                else "different graphs."
            )
        )
    if doc["nncf_where"]:
        notes.append(f"NNCF ran {doc['nncf_where']}.")
    L += [""] + [f"- {n}" for n in notes]
    L += [
        "- label agr. = fraction of held-out frames whose predicted class equals FP32's; mask "
        "Dice vs FP32 = mean Dice between the model's mask and FP32's mask (fidelity, not "
        "accuracy). Δ = model − FP32 on the same frames; 'within 1 pt' = the export's INT8 "
        "budget (Dice and accuracy drop ≤ 0.01).",
        "- int8 / float Convs: convolutions ONNX Runtime runs as QLinearConv vs as float "
        "Conv / FusedConv after its own QDQ fusion (ORT_ENABLE_ALL graph dumped with "
        "`optimized_model_filepath`). A QDQ Conv that ORT cannot fuse runs in float with "
        "its weights dequantized on every call.",
        "",
    ]

    ov = doc["openvino"]
    if ov.get("available"):
        names = {r["key"]: r["name"] for r in doc["rows"]}
        names["fp32@ovdefault"] = (
            f"FP32 file, OV default precision ({ov['default_precision_hint']})"
        )
        L += [
            "#### OpenVINO CPU runtime, same files (same timing loop as the table above)",
            "",
            f"Config: {ov['config']}. OpenVINO's own default precision on this CPU is "
            f"{ov['default_precision_hint']}, shown in the last row.",
            "",
            "| model | p50 1 thr ms | vs OV FP32 | vs ORT FP32 | p50 2 thr ms | vs OV FP32 | "
            "vs ORT FP32 | label agr. / mask Dice vs ORT same file | max Δprob vs ORT |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for key, rr in ov["rows"].items():
            ag = ov["agreement_vs_ort_same_file"][key]
            L.append(
                f"| {names[key]} | {rr[1]['p50_ms']:.2f} | {_rat(rr[1]['vs_ov_fp32'])} | "
                f"{_rat(rr[1]['vs_ort_fp32'])} | {rr[2]['p50_ms']:.2f} | "
                f"{_rat(rr[2]['vs_ov_fp32'])} | {_rat(rr[2]['vs_ort_fp32'])} | "
                f"{ag['label_agreement']:.3f} / {ag['mask_dice_vs_ref']:.3f} | "
                f"{ag['max_abs_prob_diff']:.2g} |"
            )
        L.append("")
    else:
        L += ["OpenVINO: not importable here; its rows were skipped.", ""]

    s = doc["simplification"]
    if s is not None:
        L += ["#### Graph simplification (ONNX Runtime CPU)", ""]
        if not s["rows"]:
            L += [s.get("status", "skipped"), ""]
        else:
            L += [
                "| model | tool | nodes (non-Constant) | size MB | max abs diff on held-out "
                "outputs | metadata kept | SDK loads | ORT load ms | nodes ORT runs "
                "| p50 1 thr ms | ratio | paired Δ µs | p50 2 thr ms | ratio | paired Δ µs |",
                "|---|---|--:|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
            ]
            for e in s["rows"]:
                if e.get("status") != "ok":
                    L.append(f"| {e['base']} | {e['tool']} | {e.get('status')} |" + " – |" * 12)
                    continue
                base = e["tool"] == "—"
                c = e["counts"]
                par = "–" if base else f"{e['parity_max']:.2g}"
                if not base and e["base"] == "fp32":
                    par += " ✓" if e["parity_max"] <= 1e-5 else " ✗ (> 1e-5)"
                meta = "yes" if e["metadata_kept"] else "**no**"

                def pd(th: int, e: dict[str, Any] = e, base: bool = base) -> str:
                    return "–" if base else f"{e['ort'][th]['paired_diff_us']:+.0f}"

                if e["extra_metadata_props"]:
                    meta += f" (+{e['extra_metadata_props']} props)"
                L.append(
                    f"| {e['base']} | {e['tool']} | {c['nodes']} ({c['nodes_no_const']}) | "
                    f"{e['size_mb']:.3f} | {par} | {meta} | "
                    f"{'yes' if e['sdk_loads'] is True else e['sdk_loads']} | "
                    f"{e['ort_load_ms']:.0f} | "
                    f"{e['ort_graph']['nodes']} | {e['ort'][1]['p50_ms']:.2f} | "
                    f"{'1.00×' if base else _rat(e['ort'][1])} | {pd(1)} | "
                    f"{e['ort'][2]['p50_ms']:.2f} | "
                    f"{'1.00×' if base else _rat(e['ort'][2])} | {pd(2)} |"
                )
            L += [
                "",
                "Ratio = p50 / the unsimplified model's p50 (same loop); paired Δ = median "
                "over rounds of (this model − unsimplified) in the same round, in µs. "
                "'nodes ORT runs' = node count after ONNX Runtime's own optimization at load.",
                "",
            ]
    L += ["#### Decision", ""]
    for para in conclusion(doc):
        L += [para, ""]
    return "\n".join(L)


def _pair(d: dict[int, dict[str, float]], key: str = "ratio") -> str:
    return f"{d[1][key]:.2f}× / {d[2][key]:.2f}×"


def conclusion(doc: dict[str, Any]) -> list[str]:
    """The decision paragraphs, worded from this run's numbers."""
    rows = {r["key"]: r for r in doc["rows"] if r["status"] == "ok"}
    n = doc["frames"]["heldout"]
    out: list[str] = []
    pct, nn = rows.get("ort-percentile"), rows.get("nncf-default")
    if pct and nn:
        d_p, d_n = pct["delta"], nn["delta"]
        # NNCF only wins if it is not slower under ORT, or buys more than the budget in accuracy.
        nncf_slower = nn["ort"][2]["ratio"] > pct["ort"][2]["ratio"] * 1.05
        acc_gain = min(d_n["dice"] - d_p["dice"], d_n["accuracy"] - d_p["accuracy"])
        keep = nncf_slower and acc_gain < BUDGET
        g, gp = nn["ort_graph"], pct["ort_graph"]
        an, ap = nn["agreement"], pct["agreement"]
        out.append(
            "**Quantizer: "
            + ("keep ONNX Runtime `quantize_static` (percentile)" if keep else "consider NNCF")
            + " for the ONNX Runtime INT8 artifact.** "
            f"Accuracy on {n} held-out phantoms: quantize_static percentile ΔDice "
            f"{d_p['dice']:+.4f} / Δaccuracy {d_p['accuracy']:+.3f}, NNCF default "
            f"{d_n['dice']:+.4f} / {d_n['accuracy']:+.3f}"
            + (
                " — both within the 1-point budget"
                if pct["within_budget"] and nn["within_budget"]
                else " — NOT both within the 1-point budget"
            )
            + f"; the accuracy gap is {abs(d_n['accuracy'] - d_p['accuracy']) * n:.0f} frame(s) of "
            f"{n}. NNCF is more faithful to FP32 (label agreement {an['label_agreement']:.3f} "
            f"vs {ap['label_agreement']:.3f}, mask Dice against FP32's masks "
            f"{an['mask_dice_vs_ref']:.3f} vs {ap['mask_dice_vs_ref']:.3f}), "
            "but that does not show up against the ground truth. Latency under ONNX Runtime, "
            f"the SDK's CPU backend: NNCF's file runs at {_pair(nn['ort'])} FP32 (1 / 2 threads) "
            f"against {_pair(pct['ort'])} for quantize_static, because ONNX Runtime turns only "
            f"{g['int8_conv']} of its {g['int8_conv'] + g['float_conv']} Convs into QLinearConv "
            f"({gp['int8_conv']} of {gp['int8_conv'] + gp['float_conv']} for quantize_static): "
            "NNCF puts the activation Q/DQ after Conv+Clip, a pattern ORT's QDQ fusion does not "
            "take, so those Convs run in float with their weights dequantized on every call."
            + (" A switch is not supported by these numbers." if keep else "")
        )
    if pct:
        slower = pct["ort"][1]["ratio"] > 1.0 and pct["ort"][2]["ratio"] > 1.0
        mm = rows.get("ort-minmax")
        text = (
            "**INT8 under ONNX Runtime on this CPU:** the shipped kind of INT8 (quantize_static "
            f"percentile) is {_pair(pct['ort'])} the FP32 latency (1 / 2 threads)"
            + (
                ", so FP32 stays the SDK default and INT8 an alternative artifact, as "
                "`sdk/models/REPORT.md` decided; no quantizer measured here changes that."
                if slower
                else "."
            )
        )
        if mm:
            text += (
                f" MinMax calibration: ΔDice {mm['delta']['dice']:+.4f}, Δaccuracy "
                f"{mm['delta']['accuracy']:+.3f} "
                f"({'within, at the edge of,' if mm['within_budget'] else 'over'} the budget), "
                f"fidelity {mm['agreement']['mask_dice_vs_ref']:.3f} mask Dice vs FP32 against "
                f"{pct['agreement']['mask_dice_vs_ref']:.3f} for percentile: percentile stays "
                f"the default (its only cost is calibration time, {pct.get('quantize_s', 0):.0f} s "
                f"vs {mm.get('quantize_s', 0):.0f} s)."
            )
        out.append(text)
    ov = doc["openvino"]
    if ov.get("available") and nn and "nncf-default" in ov["rows"]:
        o = ov["rows"]["nncf-default"]
        op = ov["rows"].get("ort-percentile")
        fast = o[1]["vs_ort_fp32"]["ratio"] < 0.95 and o[2]["vs_ort_fp32"]["ratio"] < 0.95
        text = (
            f"**OpenVINO is where NNCF pays off{'' if fast else ' (if at all)'}:** NNCF's INT8 on "
            f"OpenVINO runs at {o[1]['p50_ms']:.2f} / {o[2]['p50_ms']:.2f} ms, "
            f"{o[1]['vs_ort_fp32']['ratio']:.2f}× / {o[2]['vs_ort_fp32']['ratio']:.2f}× the ORT "
            f"FP32 latency and {o[1]['vs_ov_fp32']['ratio']:.2f}× / "
            f"{o[2]['vs_ov_fp32']['ratio']:.2f}× OpenVINO's own FP32 (1 / 2 threads)"
            + (
                f", while the quantize_static file on OpenVINO is "
                f"{op[1]['vs_ov_fp32']['ratio']:.2f}× / {op[2]['vs_ov_fp32']['ratio']:.2f}× "
                "OpenVINO FP32"
                if op
                else ""
            )
            + ". The SDK has no OpenVINO backend today. If one is added, its INT8 artifact should "
            "come from NNCF, as an extra export format beside the ORT INT8, not instead of it."
        )
        out.append(text)
    s = doc["simplification"]
    if s and s.get("rows"):
        out.extend(_simplify_conclusion(s))
    fp32 = rows.get("fp32")
    if fp32 and fp32["ort"][2]["p50_ms"] > 0.95 * fp32["ort"][1]["p50_ms"]:
        out.append(
            f"_Noise note:_ FP32 took {fp32['ort'][1]['p50_ms']:.2f} ms with 1 thread and "
            f"{fp32['ort'][2]['p50_ms']:.2f} ms with 2 in this run: the second core was busy "
            "with other jobs, so absolute times and 2-thread figures are pessimistic; the "
            "decisions above rest on same-loop ratios that hold at both thread counts."
        )
    return out


def _simplify_conclusion(s: dict[str, Any]) -> list[str]:
    ok = [e for e in s["rows"] if e.get("status") == "ok"]
    base = {e["base"]: e for e in ok if e["tool"] == "—"}
    slim = [e for e in ok if e["tool"] == "onnxslim"]
    fp = next((e for e in slim if e["base"] == "fp32"), None)
    if fp is None or "fp32" not in base:
        return []
    parity_ok = fp["parity_max"] <= 1e-5
    sound = parity_ok and all(e["metadata_kept"] and e["sdk_loads"] is True for e in slim)
    lat = [e["ort"][th] for e in slim for th in (1, 2)]
    diffs = [d["paired_diff_us"] for d in lat]
    ratios = [d["ratio"] for d in lat]
    consistent = all(d < 0 for d in diffs) and all(d["ratio_max"] <= 1.01 for d in lat)
    big = consistent and max(ratios) <= 0.95
    b = base["fp32"]
    if sound and consistent:
        verdict = "apply onnxslim in the export, to the FP32 graph before quantization"
        verdict += "" if big else " (a small gain, but free)"
    else:
        verdict = "do not add it to the export"
    text = (
        f"**Simplification: {verdict}.** onnxslim takes the FP32 graph from "
        f"{b['counts']['nodes']} to {fp['counts']['nodes']} nodes (outputs: max |Δ| "
        f"{fp['parity_max']:.2g} on the held-out inputs; limit 1e-5), "
        + ("keeps" if fp["metadata_kept"] else "DROPS")
        + " the sonoedge metadata, and the SDK "
        + ("loads" if fp["sdk_loads"] is True else "does NOT load")
        + " the result. Most of what it removes (Constant nodes) ONNX Runtime folds itself at "
        f"load; what it adds is folding the Shape→Gather→Unsqueeze→Concat chain that computes "
        f"the static mask size for the feature Resize, which ORT keeps because the batch is "
        f"dynamic: {b['ort_graph']['nodes']} → {fp['ort_graph']['nodes']} nodes in the graph ORT "
        f"runs. Latency after/before (FP32 and INT8, 1 and 2 threads): "
        f"{min(ratios):.2f}–{max(ratios):.2f}×, same-round differences {min(diffs):+.0f} to "
        f"{max(diffs):+.0f} µs on a ~{b['ort'][1]['p50_ms']:.1f} ms model — "
        + (
            "consistently faster, by a margin small against this machine's noise."
            if consistent and not big
            else "a clear gain."
            if big
            else "no consistent gain."
        )
    )
    first = next((e for e in ok if e["key"] == "int8.slim-first"), None)
    if first is not None:
        mt = first.get("metrics", {})
        text += (
            " Slimming first and then quantizing gives an INT8 graph whose held-out outputs "
            + (
                "are identical to the shipped INT8's"
                if first["parity_max"] == 0
                else f"differ from the shipped INT8's by at most {first['parity_max']:.2g}"
            )
            + f" (Dice {mt.get('dice', 0):.4f}, "
            f"accuracy {mt.get('accuracy', 0):.3f}; {first['ort_graph']['int8_conv']} int8 Convs "
            f"in ORT's graph), i.e. the quantizer is unaffected."
        )
    sim = next((e for e in ok if e["tool"] == "onnxsim" and e["base"] == "fp32"), None)
    if sim is not None:
        text += (
            f" onnxsim reaches the same graph for ORT ({sim['ort_graph']['nodes']} nodes) but "
            f"writes {sim['extra_metadata_props']} metadata properties of its own into the "
            "artifact and is a native wheel; onnxslim is pure Python: prefer onnxslim."
        )
    if sound and consistent:
        text += (
            " Keep it an optional export step (an extra, skipped with a note when not installed) "
            "guarded by the existing FP32 parity check, so an onnxslim regression cannot ship."
        )
    return [text]


if __name__ == "__main__":
    raise SystemExit(main())
