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

        b = OnnxRuntimeBackend(path, device="cpu").load()
        md, engine, extra = b.metadata, b"", {"outputs": [o.name for o in b.outputs]}
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
    from sdk import kernels

    info: dict[str, object] = {"sonoedge": sdk.__version__}
    try:
        from sdk import _kernels

        info["kernels"] = {
            "compiled": True,
            "built_with_cuda": kernels.built_with_cuda(),
            "cuda_devices": kernels.cuda_device_count(),
            "openmp_max_threads": int(_kernels.openmp_max_threads()),
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
    if isinstance(k, dict) and k.get("compiled"):
        print(
            f"  kernels      C++ (OpenMP up to {k['openmp_max_threads']} threads)"
            f"{', CUDA' if k['built_with_cuda'] else ', no CUDA (built without nvcc)'}"
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

        args.model = args.model or str(default_model())

        print(
            f"benchmarking {args.model} end to end ({args.repeat} repeats, {args.threads} "
            "thread(s))...",
            file=sys.stderr,
        )
        table = e2e.run(args.model, threads=args.threads, repeat=args.repeat, command=command)
    else:
        print(
            f"sonoedge bench: suite {args.suite!r} arrives with the benchmark issue; "
            "available now: kernels, e2e",
            file=sys.stderr,
        )
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
        description="Time sonoedge against the usual tools, in one run.",
    )
    bench.add_argument("suite", choices=("kernels", "e2e", "formats"), help="what to benchmark")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads for us and OpenCV (1)")
    bench.add_argument("--repeat", type=int, default=200, help="interleaved repeats (200)")
    bench.add_argument("--no-gpu", action="store_true", help="skip the GPU rows")
    bench.add_argument("--out", help="folder to write STEM.md and STEM.json into")
    bench.add_argument("--stem", default=None, help="file name stem (default: the suite)")
    bench.add_argument("--model", help="artifact for the e2e suite (default: the embedded model)")
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
