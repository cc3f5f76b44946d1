"""The ``sonoedge`` command line.

``sonoedge info``            what this install can do (kernels, CUDA, versions)
``sonoedge demo``            run the frame-path kernels on a phantom and write what they compute
``sonoedge phantom``         contact sheet + cine loop of synthetic B-mode phantoms
``sonoedge bench kernels``   kernels vs OpenCV / SciPy / NumPy (and CuPy / torch on a GPU)

Every command has ``--help``. Exit codes: 0 success, 1 a reported error (``sdk.errors``),
2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import sdk
from sdk.errors import SDKError

__all__ = ["build_parser", "main"]


def _cmd_info_artifact(args: argparse.Namespace) -> int:
    """Print an artifact's metadata; with --extract-plan write the raw TensorRT engine."""
    from sdk.artifact import read_plan
    from sdk.errors import InputError

    path = Path(args.artifact)
    if path.suffix.lower() in (".plan", ".engine"):
        md, engine = read_plan(path)
        extra = {"engine_bytes": len(engine)}
    elif path.suffix.lower() == ".onnx":
        if args.extract_plan:
            raise InputError("--extract-plan needs a .plan artifact")
        from sdk.backends.onnxruntime import OnnxRuntimeBackend

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
    d.update(extra)
    print(json.dumps(d, indent=2))
    if args.extract_plan:
        out = Path(args.extract_plan)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(engine)
        tmp.replace(out)
        print(
            f"wrote the raw TensorRT engine ({len(engine)} bytes) to {out}; "
            f"e.g. trtexec --loadEngine={out}",
            file=sys.stderr,
        )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    if args.artifact:
        return _cmd_info_artifact(args)
    from sdk import _cpu, kernels

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


def _cmd_run(args: argparse.Namespace) -> int:
    from sdk.analyzer import Analyzer
    from sdk.runner import run_source

    source = int(args.source) if args.source.isdigit() else args.source
    with Analyzer(
        args.model,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        smoothing=args.smoothing,
    ) as a:
        s = run_source(
            a,
            source,
            args.out,
            fps=args.fps,
            drop=args.drop,
            max_frames=args.max_frames,
            progress=not args.quiet,
        )
    t = s.get("total", {})
    print(
        f"{s['analyzed']} analyzed, {s['dropped']} dropped, {s['errors']} failed; "
        f"end-to-end p50 {t.get('p50_ms', float('nan')):.2f} ms, p99 "
        f"{t.get('p99_ms', float('nan')):.2f} ms, {s['throughput_fps']} frames/s"
    )
    print(f"wrote {args.out}/annotated.mp4, frames.jsonl, frames.csv, latency.json, latency.png")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sdk import demo
    from sdk.analyzer import DEFAULT_MODEL_DIR

    if not args.kernels and any(DEFAULT_MODEL_DIR.glob("default-*.onnx")):
        return demo.model_demo(Path(args.out), seed=args.seed, frames=args.frames)
    if not args.kernels:
        print(
            "no embedded default model in this install: showing the kernels alone", file=sys.stderr
        )
    return demo.kernels_demo(Path(args.out), seed=args.seed, size=args.size)


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
    demo.add_argument("--seed", type=int, default=7, help="phantom seed (7)")
    demo.add_argument("--size", type=int, default=256, help="kernels demo: input side (256)")
    demo.add_argument("--frames", type=int, default=48, help="cine length in frames (48)")
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
    run.add_argument("--backend", default="auto", help="auto, onnxruntime or tensorrt")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or tensorrt")
    run.add_argument("--threads", type=int, default=None, help="CPU threads")
    run.add_argument("--smoothing", type=float, default=0.0, help="EMA of class probabilities")
    run.add_argument(
        "--drop",
        choices=("none", "latest"),
        default="none",
        help="drop frames to keep real time (latest) or analyze all (none)",
    )
    run.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    run.add_argument("--fps", type=float, default=15.0, help="frame rate of the annotated MP4")
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
            return tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers such as 1,2,4 (or none), got {text!r}"
            ) from None

    bench.add_argument(
        "suite",
        choices=("kernels", "e2e", "formats", "scaling", "soak"),
        help="what to benchmark (see above)",
    )
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of every runtime, our kernels and OpenCV (1); per Analyzer in the "
        "scaling streams sweep",
    )
    bench.add_argument(
        "--repeat",
        type=int,
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
        type=int,
        default=200,
        help="scaling: frames per stream per round (200)",
    )
    bench.add_argument(
        "--rounds", type=int, default=3, help="scaling: interleaved rounds of the streams (3)"
    )
    bench.add_argument("--frames", type=int, default=50_000, help="soak: frames to stream (50000)")
    bench.add_argument(
        "--warmup",
        type=int,
        default=500,
        help="soak: frames before the reference RSS sample and the first p99 window (500)",
    )
    bench.add_argument(
        "--every", type=int, default=1000, help="soak: frames between RSS samples (1000)"
    )
    bench.add_argument(
        "--window",
        type=int,
        default=5000,
        help="soak: frames in the first / last p99 windows (5000; at most half the run)",
    )
    bench.add_argument(
        "--loop", type=int, default=64, help="soak: frames of the pre-generated cine loop (64)"
    )
    bench.add_argument("--quiet", action="store_true", help="soak: no progress bar")
    bench.set_defaults(handler=_cmd_bench)

    from sdk.synthetic import cli as phantom_cli

    phantom_cli.add_parser(sub)
    try:  # `sonoedge train` lives in the export stage; the runtime install does not have it
        from export import cli as export_cli
    except ImportError:  # pragma: no cover - export is always packaged with sdk
        export_cli = None
    if export_cli is not None:
        export_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    t0 = time.perf_counter()
    try:
        code = int(args.handler(args))
    except SDKError as e:
        print(f"sonoedge {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"sonoedge {args.command}: interrupted after {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
