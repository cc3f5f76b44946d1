"""The ``sonoedge`` command line.

Defined here: ``info`` (what this install can run, or an artifact's metadata), ``demo`` (the
embedded model on a phantom cine, :mod:`sdk.demo`), ``run`` (a source through an Analyzer,
:mod:`sdk.runner`) and ``bench`` (:mod:`sdk.bench`). Registered from their own modules by
:func:`build_parser`: ``phantom`` (:mod:`sdk.synthetic.cli`), ``serve`` (:mod:`sdk.serve.cli`),
``batch`` (:mod:`sdk.batch`), ``triton-repo`` (:mod:`export.triton_repo`) and, from
:mod:`export.cli` (torch imported inside the handlers only), ``train``, ``export``, ``doctor``,
``import`` and ``quantize``.

Every command has ``--help``. Exit codes: 0 success, 1 a reported error (``sdk.errors``),
2 bad usage, 130 interrupted (:func:`main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import sdk
from sdk.argtypes import float_type, int_type
from sdk.errors import InputError, SDKError

__all__ = ["build_parser", "main"]

_CORES = os.cpu_count() or 1
_threads = int_type(1, 4 * _CORES, "a thread count")
_positive = int_type(1, None, "an integer")
_seed = int_type(0, 2**32 - 1, "a seed")
_fps = float_type(0.0, 1000.0, lo_open=True, what="a frame rate")


class UsageError(Exception):
    """A mistake in the command line itself (exit 2), found after argparse: one line, no
    traceback."""


def _out_folder(path: str, source: Any = None) -> Path:
    """--out checked before anything runs or is created: a usage error when it cannot be."""
    from sdk.runner import check_out_dir

    try:
        return check_out_dir(path, source)
    except InputError as e:
        raise UsageError(str(e)) from None


def _is_refiner(path: Path) -> bool:
    """Whether an .onnx file carries lesion-refiner metadata (read with onnx when installed,
    else through an ONNX Runtime session's metadata map)."""
    from sdk.refiner import METADATA_KEY

    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        return any(p.key == METADATA_KEY for p in m.metadata_props)
    except ImportError:
        import onnxruntime as ort

        try:
            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:  # unreadable: the backend's own load names the problem
            return False
        return METADATA_KEY in s.get_modelmeta().custom_metadata_map
    except Exception:  # unreadable: the backend's own load names the problem
        return False


def _cmd_info_artifact(args: argparse.Namespace) -> int:
    """Print an artifact's metadata; with --extract-plan write the raw TensorRT engine."""
    from sdk.artifact import read_plan
    from sdk.errors import InputError

    path = Path(args.artifact)
    if args.extract_plan:
        out = Path(args.extract_plan)
        if out.is_dir() or not str(args.extract_plan).strip():
            raise UsageError(
                f"--extract-plan {args.extract_plan!r} is a folder; give a file name, e.g. "
                f"--extract-plan {out / (path.stem + '.engine')}"
            )
        if not out.parent.is_dir():
            raise UsageError(f"--extract-plan {out}: folder {out.parent} does not exist")
    if path.suffix.lower() in (".plan", ".engine"):
        md, engine = read_plan(path)
        extra = {"engine_bytes": len(engine)}
    elif path.suffix.lower() == ".onnx":
        if args.extract_plan:
            raise InputError("--extract-plan needs a .plan artifact")
        from sdk.backends.onnxruntime import OnnxRuntimeBackend

        if _is_refiner(path):  # a lesion refiner (sdk/refiner.py): its own metadata
            from sdk.refiner import LesionRefiner

            r = LesionRefiner(path, threads=1)  # checks the digest and every field
            dg = r.digest
            d = {
                "role": "lesion_refiner",
                **{k: v for k, v in r.metadata.items() if k != "crop"},
                "crop": dataclasses.asdict(r.geometry),
                "outputs": [o.name for o in r.session.get_outputs()],
                "digest": f"{dg} (verified)" if dg else "none (not stamped: unverified)",
            }
            print(json.dumps(d, indent=2))
            return 0
        b = OnnxRuntimeBackend(path, device="cpu").load()  # checks the digest
        md, engine = b.metadata, b""
        extra = {
            "outputs": [o.name for o in b.outputs],
            "digest": f"{b.digest} (verified)" if b.digest else "none (not stamped: unverified)",
        }
        b.close()
    else:
        raise InputError(f"{path.name}: expected a .onnx or .plan artifact")
    d = md.to_dict()
    if d.get("head"):
        d["head"] = {k: v["shape"] for k, v in d["head"].items()}  # shapes, not the weights
    if d.get("scope"):  # sdk/scope.py: the fitted statistics as shapes, not their values
        d["scope"] = {
            k: v["shape"] if isinstance(v, dict) and "data" in v else v
            for k, v in d["scope"].items()
        }
    else:
        d["scope"] = "none: no out-of-scope model fitted (every frame in_scope, scope_score None)"
    d.update(extra)
    print(json.dumps(d, indent=2))
    if args.extract_plan:
        out = Path(args.extract_plan)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            tmp.write_bytes(engine)
            tmp.replace(out)
        except OSError as e:
            raise InputError(f"cannot write {out}: {e.strerror or e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        print(
            f"wrote the raw TensorRT engine ({len(engine)} bytes) to {out}; "
            f"e.g. trtexec --loadEngine={out}",
            file=sys.stderr,
        )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    if args.artifact:
        return _cmd_info_artifact(args)
    from sdk import cpu as _cpu
    from sdk import kernels

    info: dict[str, object] = {
        "sonoedge": sdk.__version__,
        "cpu": {
            "model": _cpu.cpu_model(),
            "class": _cpu.cpu_class(),
            "features": _cpu.cpu_features(),
        },
    }
    try:
        from sdk import _kernels

        info["kernels"] = {
            "compiled": True,
            "built_with_cuda": kernels.built_with_cuda(),
            "cuda_devices": kernels.cuda_device_count(),
            "openmp_max_threads": int(_kernels.openmp_max_threads()),
            "cpu_isa": kernels.cpu_isa(),
        }
    except (ImportError, SDKError) as e:
        info["kernels"] = {"compiled": False, "error": str(e)}
    versions: dict[str, str] = {"numpy": np.__version__}
    for mod in ("cv2", "onnxruntime", "pydicom", "torch", "tensorrt", "cupy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "not installed"
    info["versions"] = versions
    from sdk import backends

    info["backends"] = {
        n: {"available": ok, "why": why} for n, (ok, why) in backends.available().items()
    }
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    k = info["kernels"]
    print(f"sonoedge {info['sonoedge']}")
    print(f"  CPU          {_cpu.describe().split('; sonoedge kernels')[0]}")
    if isinstance(k, dict) and k.get("compiled"):
        print(
            f"  kernels      C++ (OpenMP up to {k['openmp_max_threads']} threads)"
            f"{', CUDA' if k['built_with_cuda'] else ', no CUDA (built without nvcc)'}"
        )
        isa = k["cpu_isa"]
        print(
            f"  CPU kernels  {isa['active']} variant (this CPU runs: {', '.join(isa['supported'])};"
            f" build: {isa['build']})"
        )
        print(f"  CUDA devices {k['cuda_devices']}")
    else:
        print(f"  kernels      NOT AVAILABLE: {k}")
    for name, v in versions.items():
        print(f"  {name:<12} {v}")
    for name, b in info["backends"].items():  # type: ignore[union-attr]
        print(
            f"  backend {name:<12} {'available' if b['available'] else 'UNAVAILABLE'}: {b['why']}"
        )
    if "onnxruntime_providers" in info:
        print(f"  ORT providers {', '.join(info['onnxruntime_providers'])}")  # type: ignore[arg-type]
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    command = "sonoedge " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else ""
    models = args.model or []
    if args.suite != "formats" and len(models) > 1:
        from sdk.errors import InputError

        raise InputError(f"bench {args.suite} takes one --model, got {len(models)}")
    model = models[0] if models else None
    if args.suite in ("formats", "scaling", "soak"):
        if args.suite == "formats":
            from sdk.bench import formats

            print(
                f"benchmarking runtimes ({args.repeat} interleaved repeats, {args.threads} "
                "thread(s), then one process per row for peak RSS)...",
                file=sys.stderr,
            )
            report = formats.run(
                models or None,
                threads=args.threads,
                repeat=args.repeat,
                rss=not args.no_rss,
                command=command,
            )
        elif args.suite == "scaling":
            from sdk.bench import scaling

            print(
                f"benchmarking scaling: sizes {list(args.sizes)}, batches {list(args.batches)}, "
                f"streams {list(args.streams)} ({args.repeat} repeats, {args.threads} "
                "thread(s))...",
                file=sys.stderr,
            )
            report = scaling.run(
                model,
                sizes=args.sizes,
                batches=args.batches,
                streams=args.streams,
                threads=args.threads,
                repeat=args.repeat,
                frames_per_stream=args.stream_frames,
                rounds=args.rounds,
                command=command,
            )
        else:
            from sdk.bench import soak

            print(
                f"soak: {args.frames} frames through Analyzer.stream ({args.threads} thread(s))...",
                file=sys.stderr,
            )
            report = soak.run(
                model,
                frames=args.frames,
                warmup=args.warmup,
                every=args.every,
                window=args.window,
                loop_frames=args.loop,
                threads=args.threads,
                progress=not args.quiet,
                command=command,
            )
        written = report.write(Path(args.out), args.stem or args.suite) if args.out else []
        print(report.markdown())
        if args.suite == "soak":
            print(soak.summary_line(report), file=sys.stderr)
        if written:
            print("wrote " + ", ".join(str(w) for w in written))
        return 0
    if args.suite == "kernels":
        from sdk.bench import kernels as bk

        print(
            f"benchmarking kernels ({args.repeat} interleaved repeats, {args.threads} "
            "thread(s))...",
            file=sys.stderr,
        )
        table = bk.run(
            threads=args.threads, repeat=args.repeat, gpu=not args.no_gpu, command=command
        )
    elif args.suite == "e2e":
        from sdk.analyzer import default_model
        from sdk.bench import e2e

        model = model or str(default_model())

        print(
            f"benchmarking {model} end to end ({args.repeat} repeats, {args.threads} thread(s))...",
            file=sys.stderr,
        )
        table = e2e.run(model, threads=args.threads, repeat=args.repeat, command=command)
    else:  # pragma: no cover - argparse's choices guard this
        print(f"sonoedge bench: unknown suite {args.suite!r}", file=sys.stderr)
        return 2
    print(table.markdown())
    if args.out:
        md, js = table.write(Path(args.out), args.stem or args.suite)
        print(f"wrote {md} and {js}")
    return 0


def _print_run(summary: dict[str, Any]) -> None:
    """The end of a run, complete or not: counts, latency, and the files that exist."""
    s = summary
    if not s["frames"]:
        return  # nothing analyzed, nothing written: the caller says why
    t = s.get("total", {})
    nan = float("nan")
    skipped = f", {s['skipped']} file(s) skipped" if s.get("skipped") else ""
    line = f"{s['analyzed']} analyzed, {s['dropped']} dropped, {s['errors']} failed{skipped}"
    if s["analyzed"]:
        line += (
            f"; end-to-end p50 {t.get('p50_ms', nan):.2f} ms, p99 {t.get('p99_ms', nan):.2f} ms, "
            f"{s['throughput_fps']} frames/s"
        )
    print(line)
    outputs = [Path(p) for p in s.get("outputs", [])]
    if outputs:
        print(f"wrote {outputs[0].parent}/: {', '.join(p.name for p in outputs)}")


def _source_arg(text: str) -> str | int:
    """SOURCE: a camera index (ASCII digits) or a path / glob / pipeline."""
    if not text.strip():
        raise UsageError("SOURCE is empty; give a video, .dcm, image folder / glob or camera index")
    if text.isascii() and text.isdigit():
        if int(text) > 1023:  # OpenCV takes a C int; no machine has this many cameras
            raise UsageError(
                f"camera index {text} is out of range (0..1023); for a file of that name "
                f"write ./{text}"
            )
        return int(text)
    return text


def _check_device(args: argparse.Namespace) -> None:
    """--device cuda / tensorrt on an ONNX model needs that ONNX Runtime provider: say which is
    missing and how to get it, before the model loads."""
    if args.device in ("auto", "cpu") or args.backend not in ("auto", "onnxruntime"):
        return
    if args.model and Path(args.model).suffix.lower() != ".onnx":
        return
    try:
        import onnxruntime as ort
    except ImportError:
        return  # the backend says so itself
    want = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    have = ort.get_available_providers()
    if want[args.device] not in have:
        raise SDKError(
            f"--device {args.device} needs ONNX Runtime's {want[args.device]}, which this "
            f"install lacks (it has {', '.join(have)}); install onnxruntime-gpu (with CUDA / "
            "TensorRT on the machine) or use --device cpu"
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from sdk.analyzer import Analyzer
    from sdk.runner import run_source

    source = _source_arg(args.source)
    _out_folder(args.out, source)
    _check_device(args)
    with Analyzer(
        args.model,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        smoothing=args.smoothing,
        spin=not args.no_spin,
        refiner=args.refiner,
    ) as a:
        summary = run_source(
            a,
            source,
            args.out,
            fps=args.fps,
            drop=args.drop,
            max_frames=args.max_frames,
            progress=not args.quiet,
            on_finish=_print_run,
        )
    if not summary["frames"]:
        skipped = summary.get("skipped", 0)
        why = f" ({skipped} file(s) skipped, listed above)" if skipped else ""
        raise SDKError(f"{args.source}: no frame could be read{why}; nothing written")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sdk import demo
    from sdk.analyzer import DEFAULT_MODEL_DIR

    out = _out_folder(args.out)
    if not args.kernels and any(DEFAULT_MODEL_DIR.glob("default-*.onnx")):
        seed = demo.DEMO_CINE_SEED if args.seed is None else args.seed
        return demo.model_demo(out, seed=seed, frames=args.frames)
    if not args.kernels:
        print(
            "no embedded default model in this install: showing the kernels alone", file=sys.stderr
        )
    return demo.kernels_demo(out, seed=7 if args.seed is None else args.seed, size=args.size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sonoedge",
        description="Edge inference SDK for breast ultrasound: lesion mask + benign / malignant / "
        "normal label per frame.",
    )
    p.add_argument("--version", action="version", version=f"sonoedge {sdk.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="show what this install can run, or an artifact's metadata",
        description="Without ARTIFACT: the compiled kernels, CUDA devices, backends and versions. "
        "With ARTIFACT (.onnx / .plan): its metadata as JSON.",
    )
    info.add_argument("artifact", nargs="?", help="a .onnx or .plan artifact to describe")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument(
        "--extract-plan", metavar="OUT", help="write the raw TensorRT engine of a .plan (trtexec)"
    )
    info.set_defaults(handler=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="run the embedded default model on a generated cine loop",
        description="Run the embedded default model on a generated phantom cine: annotated MP4, "
        "per-frame JSONL/CSV, latency summary and histogram. --kernels (or no embedded model): "
        "run the fused kernels on one phantom and write an annotated PNG with their timings.",
    )
    demo.add_argument("--out", default="sonoedge-demo", help="output folder (sonoedge-demo)")
    demo.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="phantom seed, 0..2^32-1 (model demo 8, --kernels 7)",
    )
    demo.add_argument(
        "--size",
        type=int_type(16, 1024, "a size"),
        default=256,
        help="kernels demo: input side, 16..1024 (256)",
    )
    demo.add_argument(
        "--frames",
        type=int_type(1, 2000, "a frame count"),
        default=48,
        help="cine length in frames, 1..2000 (48)",
    )
    demo.add_argument(
        "--kernels",
        action="store_true",
        help="show the kernels alone (the default without an embedded model)",
    )
    demo.set_defaults(handler=_cmd_demo)

    run = sub.add_parser(
        "run",
        help="analyze a video, DICOM cine, image folder or camera with a model",
        description="Stream SOURCE through the analyzer and write an annotated MP4, per-frame "
        "JSONL/CSV, a latency summary and a latency histogram.",
    )
    run.add_argument("source", help="video file, .dcm, image folder / glob, or camera index")
    run.add_argument("--model", default=None, help=".onnx or .plan artifact (default: embedded)")
    run.add_argument("--out", default="sonoedge-run", help="output folder (sonoedge-run)")
    from sdk.backends import BACKENDS

    backends = ("auto", *BACKENDS)
    run.add_argument(
        "--backend",
        default="auto",
        choices=backends,
        help=f"inference backend: {', '.join(backends)} (auto: by the model's suffix)",
    )
    run.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "tensorrt"),
        help="auto, cpu, cuda or tensorrt",
    )
    run.add_argument("--threads", type=_threads, default=None, help=f"CPU threads, 1..{4 * _CORES}")
    ref = run.add_mutually_exclusive_group()
    ref.add_argument(
        "--refiner",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="the lesion refiner (sdk/refiner.py) on every lesion: the embedded one, or PATH "
        "(default: the embedded one with the embedded model, none with --model)",
    )
    ref.add_argument(
        "--no-refiner",
        dest="refiner",
        action="store_false",
        help="the frame model alone, no lesion refiner",
    )
    run.add_argument(
        "--no-spin",
        action="store_true",
        help="no busy-waiting in the model's threads (for CPUs other busy processes fill; "
        "default: they spin within each model call only)",
    )
    run.add_argument(
        "--smoothing",
        type=float_type(0.0, 1.0, hi_open=True),
        default=0.0,
        help="EMA of class probabilities, in [0, 1) (0)",
    )
    run.add_argument(
        "--drop",
        choices=("none", "latest"),
        default="none",
        help="drop frames to keep real time (latest) or analyze all (none)",
    )
    run.add_argument("--max-frames", type=_positive, default=None, help="stop after N >= 1 frames")
    run.add_argument(
        "--fps", type=_fps, default=15.0, help="frame rate of the annotated MP4, (0, 1000] (15)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_cmd_run)

    bench = sub.add_parser(
        "bench",
        help="benchmarks with ratios against anchors from the same run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Time sonoedge against the usual tools, in one run (interleaved repeats;
every ratio compares two things measured in the same run). Suites:

  kernels   the fused C++ / CUDA kernels vs the OpenCV, SciPy, NumPy (CuPy, torch) pipelines
  e2e       Analyzer.run on 600x800 frames vs the bare ONNX Runtime session (--model)
  formats   per ONNX model (--model, repeatable; default: embedded FP32 + INT8): bare ONNX
            Runtime (the anchor), OpenVINO on the same file (when installed), Analyzer.run per
            backend / device; p50 / p95 / p99, FPS, ratio to the anchor, peak RSS (one fresh
            process per row)
  scaling   latency vs model input size (edge_s exported per size, random weights: needs
            the export stage), vs batch (bare ONNX Runtime), throughput vs concurrent streams
            (one Analyzer per thread); a PNG per sweep
  soak      --frames frames of a cycled phantom cine through Analyzer.stream(drop="none"):
            RSS growth after warm-up (target <= 20 MB), p99 of the last 5,000 frames vs the
            first (within 20 %), frames lost (0); a PNG of RSS and rolling p99

Tables print to stdout; --out writes STEM.md and STEM.json (and the PNGs) there.""",
    )

    def int_list(text: str) -> tuple[int, ...]:
        """'1,2,4' -> (1, 2, 4); 'none' or '' -> () (skip that sweep)."""
        if text.strip().lower() in ("", "none"):
            return ()
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            values = (0,)
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= 1 such as 1,2,4 (or none), got {text!r}"
            )
        return values

    bench.add_argument(
        "suite",
        choices=("kernels", "e2e", "formats", "scaling", "soak"),
        help="what to benchmark (see above)",
    )
    bench.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="CPU threads of every runtime, our kernels and OpenCV (1); per Analyzer in the "
        "scaling streams sweep",
    )
    bench.add_argument(
        "--repeat",
        type=_positive,
        default=200,
        help="interleaved timed repeats per row (200); kernels, e2e, formats, scaling sizes and "
        "batches",
    )
    bench.add_argument("--no-gpu", action="store_true", help="kernels: skip the GPU rows")
    bench.add_argument(
        "--out", help="folder to write STEM.md, STEM.json and the suite's PNG plots into"
    )
    bench.add_argument("--stem", default=None, help="file name stem (default: the suite)")
    bench.add_argument(
        "--model",
        action="append",
        help="artifact (default: the embedded model). e2e, scaling, soak: one; formats: one "
        ".onnx per --model, repeatable (default: embedded FP32 and INT8)",
    )
    bench.add_argument(
        "--no-rss",
        action="store_true",
        help="formats: skip the peak-RSS measurement (one child process per row)",
    )
    bench.add_argument(
        "--sizes",
        type=int_list,
        default=(128, 256, 384, 512),
        metavar="N,N,...",
        help="scaling: square model input sizes, multiples of 16 (128,256,384,512); 'none' "
        "skips the sweep, which needs torch + onnx",
    )
    bench.add_argument(
        "--batches",
        type=int_list,
        default=(1, 2, 4, 8),
        metavar="N,N,...",
        help="scaling: batch sizes for the bare session (1,2,4,8); 'none' skips",
    )
    bench.add_argument(
        "--streams",
        type=int_list,
        default=(1, 2, 4),
        metavar="N,N,...",
        help="scaling: concurrent streams, one Analyzer + thread each (1,2,4); 'none' skips",
    )
    bench.add_argument(
        "--stream-frames",
        type=_positive,
        default=200,
        help="scaling: frames per stream per round (200)",
    )
    bench.add_argument(
        "--rounds", type=_positive, default=3, help="scaling: interleaved rounds of the streams (3)"
    )
    bench.add_argument(
        "--frames", type=_positive, default=50_000, help="soak: frames to stream (50000)"
    )
    bench.add_argument(
        "--warmup",
        type=int_type(0, None, "an integer"),
        default=500,
        help="soak: frames before the reference RSS sample and the first p99 window (500)",
    )
    bench.add_argument(
        "--every", type=_positive, default=1000, help="soak: frames between RSS samples (1000)"
    )
    bench.add_argument(
        "--window",
        type=_positive,
        default=5000,
        help="soak: frames in the first / last p99 windows (5000; at most half the run)",
    )
    bench.add_argument(
        "--loop",
        type=_positive,
        default=64,
        help="soak: frames of the pre-generated cine loop (64)",
    )
    bench.add_argument("--quiet", action="store_true", help="soak: no progress bar")
    bench.set_defaults(handler=_cmd_bench)

    from sdk.synthetic import cli as phantom_cli

    phantom_cli.add_parser(sub)
    from export import triton_repo
    from sdk import batch as batch_cli
    from sdk.serve import cli as serve_cli

    for extra_cli in (serve_cli, batch_cli, triton_repo):  # issue #18: serve, batch, triton-repo
        extra_cli.add_parser(sub)
    try:  # `sonoedge train` lives in the export stage; the runtime install does not have it
        from export import cli as export_cli
    except ImportError:  # pragma: no cover - export is always packaged with sdk
        export_cli = None
    if export_cli is not None:
        export_cli.add_parser(sub)
    return p


def _quiet_opencv() -> None:
    """OpenCV's own log lines (``[ WARN:0@...] global cap_v4l.cpp ...``) and FFmpeg's
    (``[mov,mp4,...] moov atom not found``) say nothing a user can act on that our one-line
    messages do not already say: OpenCV's log keeps its errors only, FFmpeg's (which OpenCV
    routes through its callback when OPENCV_FFMPEG_DEBUG is set) is quiet. A user's own values
    of these variables win. The CLI process only: importing ``sdk`` changes nothing."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_DEBUG", "1")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):  # pragma: no cover - an OpenCV without utils.logging
        pass


def _os_error_text(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}; check the path exists and is writable"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sonoedge``; returns the exit code: 0 success, 1 a reported error (bad data, a
    model or source that fails), 2 bad usage, 130 interrupted. A user's mistake is one line
    with its cause and fix, never a traceback (``SONOEDGE_TRACEBACK=1`` shows one for an
    unexpected error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _quiet_opencv()
    name = f"sonoedge {args.command}"
    t0 = time.perf_counter()
    try:
        if args.command == "phantom":  # its handler lives with the phantoms: --out checked here
            _out_folder(str(args.out))
        code = int(args.handler(args))
    except UsageError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except SDKError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{name}: error: {_os_error_text(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        if os.environ.get("SONOEDGE_TRACEBACK"):
            raise
        print(
            f"{name}: internal error: {type(e).__name__}: {e} -- this is a sonoedge bug; rerun "
            "with SONOEDGE_TRACEBACK=1 and report the traceback",
            file=sys.stderr,
        )
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
