"""``sonoedge doctor``: what works on this machine, and, with ``--gpu``, one command that checks
the whole GPU path against the CPU path.

    sonoedge doctor                        environment report: OK / MISSING / FAIL, each with a fix
    sonoedge doctor --gpu --out DIR        CUDA kernels vs C++ kernels, TensorRT engines (FP16,
                                           INT8) vs ONNX Runtime on phantom frames, timings;
                                           DIR/doctor.md, DIR/doctor.json and the engines

**Without --gpu** (runs anywhere, in seconds): sonoedge version, the compiled C++ kernels (and
whether they were built with CUDA), a CPU kernel self-test against the NumPy reference, ONNX
Runtime (version, providers), every backend's ``sdk.backends.available()`` line, GPU visibility
(nvidia-smi, cuda-python, torch.cuda), TensorRT, the export tools the engine builds need, and the
embedded default model (or ``--model``) on one phantom frame. Exit 0 when the CPU path works
(the checks marked required); GPU and TensorRT lines may say MISSING without failing.

**With --gpu** (needs an NVIDIA GPU, TensorRT >= 10.3 and cuda-python; stops at once with a
:class:`sdk.errors.BackendUnavailableError` naming what is missing and how to install it):

1. the CUDA kernels against the C++ kernels on phantom frames (max abs difference per kernel,
   tolerances of ``tests/kernels/test_cuda.py``), through cuda-python device buffers (no CuPy);
2. per precision, a TensorRT engine built from the model into the ``.plan`` container in
   ``--out``: FP16 from :func:`export.tensorrt_build.fp16_onnx`, INT8 from the TensorRT Q/DQ graph
   of :func:`export.quantize.quantize` (``target="tensorrt"``, calibrated on phantoms, validated
   by :func:`export.quantize.check_tensorrt_qdq`), both with
   :func:`export.tensorrt_build.build_engine`;
3. ``--frames`` phantom frames through ``sdk.Analyzer(plan)`` (TensorRT) and
   ``sdk.Analyzer(onnx)`` (ONNX Runtime, CPU), interleaved: per-output max abs difference of the
   raw model outputs, image-level probabilities, label agreement, mask Dice between the two, and
   latency (p50 / p99 of ``Analyzer.run``, frames/s) of both;
4. ``doctor.md`` and ``doctor.json`` in ``--out``; the tables are printed. Exit 1 when any check
   fails.

Tolerances (:data:`TOLERANCES`) are per precision and per output; the comment above them says where
each number comes from. The INT8 engine is *checked* against ONNX Runtime running the same Q/DQ
graph (both must execute one quantized model alike) and *reported* against the FP32 model: how
much INT8 costs is the quantizer's business, which ``sonoedge export`` holds to an accuracy
budget.

Lives in the export stage because building engines needs it; imports no torch at import time
(``torch.cuda`` is probed inside its check), and TensorRT / cuda-python only inside the functions
that use them. Every file is written under a temporary name and renamed when complete.

This module is the command and its orchestration (:func:`environment_report`, :func:`gpu_report`,
the parser); the parts live in ``export._doctor``: ``common`` (statuses, :class:`Check`, seeds,
fixes, phantoms), ``checks`` (the environment checks), ``compare`` (pure comparisons and
:data:`TOLERANCES`), ``gpu`` (the ``--gpu`` preflight and the CUDA kernel cases), ``engines``
(FP16 / INT8 graphs, TensorRT builds, engine vs ONNX Runtime) and ``report`` (doctor.md /
doctor.json).
"""

from __future__ import annotations

import argparse
import importlib.util  # noqa: F401 -- tests reach importlib.util.find_spec through this module
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export._doctor.checks import (
    check_backends,
    check_cpp_kernels,
    check_cpu_selftest,
    check_cuda_kernels,
    check_cuda_python,
    check_dicom,
    check_export_tools,
    check_model,
    check_nvidia_smi,
    check_onnxruntime,
    check_tensorrt,
    check_torch_cuda,
    check_version,
)
from export._doctor.checks import cpu_kernel_cases as cpu_kernel_cases
from export._doctor.common import (
    CALIB_SEED,
    CUDA_BUILD_FIX,
    FAIL,
    FRAME_SEED,
    KERNEL_SEED,
    MISSING,
    OK,
    PRECISIONS,
    Check,
    _failed,
    _guard,
    phantom_frames,
)
from export._doctor.common import CLASS_LABELS as CLASS_LABELS
from export._doctor.common import CUDA_PYTHON_FIX as CUDA_PYTHON_FIX
from export._doctor.common import DICOM_DECODERS as DICOM_DECODERS
from export._doctor.common import DICOM_FIX as DICOM_FIX
from export._doctor.common import DRIVER_FIX as DRIVER_FIX
from export._doctor.common import EXPORT_FIX as EXPORT_FIX
from export._doctor.common import SELFTEST_SEED as SELFTEST_SEED
from export._doctor.common import TRT_FIX as TRT_FIX
from export._doctor.compare import (
    TOLERANCES,
    PairStats,
    Tolerance,
    array_diff,
    judge,
    label_agreement,
    latency_summary,
    mask_dice,
    mask_mismatch,
    output_diffs,
)
from export._doctor.engines import (
    Comparison,
    _base,
    build_plan,
    calibration_inputs,
    compare_artifacts,
    prepare_graph,
)
from export._doctor.gpu import _kernel_check, cuda_kernel_cases, gpu_missing
from export._doctor.report import Report, write_report
from export._doctor.report import render_markdown as render_markdown
from sdk.argtypes import size_type
from sdk.artifact import read_onnx_file_metadata
from sdk.errors import BackendUnavailableError, InputError

__all__ = [
    "FAIL",
    "MISSING",
    "OK",
    "TOLERANCES",
    "Check",
    "Comparison",
    "PairStats",
    "Tolerance",
    "add_parser",
    "array_diff",
    "environment_report",
    "gpu_missing",
    "gpu_report",
    "judge",
    "label_agreement",
    "latency_summary",
    "mask_dice",
    "mask_mismatch",
    "output_diffs",
    "require_gpu",
    "run_doctor_cmd",
    "write_report",
]

# --------------------------------------------------------------------------- environment report


def environment_report(model: str | os.PathLike[str] | None = None) -> list[Check]:
    """Every environment check (see the module docstring); never raises."""
    checks = [
        _guard("sonoedge", check_version, True),
        _guard("C++ kernels", check_cpp_kernels, True),
        _guard("CUDA kernels", check_cuda_kernels),
        _guard("CPU kernels vs NumPy", check_cpu_selftest, True),
        _guard("ONNX Runtime", check_onnxruntime, True),
    ]
    try:
        checks += check_backends()
    except Exception as exc:
        checks.append(_failed("backends", exc, "environment", "pip install onnxruntime"))
    checks += [
        _guard("GPU (nvidia-smi)", check_nvidia_smi),
        _guard("GPU (cuda-python)", check_cuda_python),
        _guard("GPU (torch.cuda)", check_torch_cuda),
        _guard("TensorRT", check_tensorrt),
        _guard("export tools", check_export_tools),
        _guard("DICOM", check_dicom),
        _guard("default model", check_model, True),
    ]
    if model is not None:
        checks.append(_guard("model", lambda: check_model(model), True))
    return checks


def require_gpu() -> None:
    """Raise :class:`BackendUnavailableError` listing what ``--gpu`` lacks here, with fixes."""
    missing = gpu_missing()
    if not missing:
        return
    lines = [f"  - {what}: {why}\n    fix: {fix}" for what, why, fix in missing]
    raise BackendUnavailableError(
        "--gpu needs an NVIDIA GPU, TensorRT >= 10.3 and cuda-python; this machine lacks:\n"
        + "\n".join(lines)
        + '\nOn a GPU machine: pip install ".[trt,export]" and, for the CUDA kernels, '
        "SONOEDGE_CUDA=ON pip install . ; then sonoedge doctor --gpu. Without --gpu, "
        "`sonoedge doctor` reports what works here."
    )


def gpu_report(
    model: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    frames: int = 200,
    precisions: Sequence[str] = ("fp16", "int8"),
    size: tuple[int, int] = (600, 800),
    calib_frames: int = 300,
    threads: int | None = None,
    progress: bool = True,
    command: str = "",
) -> Report:
    """The ``--gpu`` run (see the module docstring); raises :class:`BackendUnavailableError`
    at once when the GPU, TensorRT, cuda-python or the export tools are missing. Steps that fail
    become FAIL checks (with the traceback in doctor.json) and the run goes on."""
    from sdk.analyzer import default_model

    require_gpu()
    bad = sorted(set(precisions) - set(PRECISIONS))
    if bad or not precisions:
        raise InputError(f"precisions must be among {', '.join(PRECISIONS)}, got {precisions}")
    if isinstance(frames, bool) or int(frames) < 1:
        raise InputError(f"--frames must be >= 1, got {frames}")
    src = default_model() if model is None else Path(model)
    if src.suffix.lower() != ".onnx" or not src.is_file():
        raise InputError(f"--model must be an existing FP32 .onnx artifact, got {src}")
    md = read_onnx_file_metadata(src)
    if md.precision != "fp32":
        raise InputError(
            f"{src.name} is a {md.precision} artifact; pass the FP32 .onnx export: the doctor "
            "makes the FP16 and INT8 graphs itself"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report("gpu", command)
    rep.checks = environment_report(model)
    for c in rep.checks:
        c.section = "environment"
    device = next(
        (c.values.get("devices") for c in rep.checks if c.name == "GPU (cuda-python)"), None
    )
    from sdk.bench.timing import machine_info

    rep.info = {
        "machine": machine_info(", ".join(device) if device else None),
        "model": {
            "path": str(src),
            "arch": md.arch,
            "input_size": list(md.input_size),
            "channels": list(md.channels),
        },
        "frames": {"n": int(frames), "size": list(size), "seed": FRAME_SEED},
        "calibration": {"n": int(calib_frames), "seed": CALIB_SEED, "method": "percentile"},
        "threads": threads,
    }

    # 1. CUDA kernels vs C++ kernels
    kframes = phantom_frames(3, size, KERNEL_SEED)
    try:
        rep.kernels = cuda_kernel_cases(kframes)
        rep.checks += [_kernel_check(k) for k in rep.kernels]
    except Exception as exc:
        rep.checks.append(
            _failed(
                "CUDA kernels vs C++",
                exc,
                "cuda kernels",
                CUDA_BUILD_FIX if isinstance(exc, BackendUnavailableError) else "",
            )
        )

    # 2 + 3. engines, then engine vs ONNX Runtime
    cmp_frames = phantom_frames(int(frames), size, FRAME_SEED, progress, "comparison phantoms")
    calib: list[np.ndarray] = []
    tc = out / "timing.cache"
    for prec in precisions:
        name = f"TensorRT {prec}"
        try:
            if prec == "int8" and not calib:
                calib = calibration_inputs(md, int(calib_frames), progress)
            t0 = time.perf_counter()
            graph = prepare_graph(prec, src, out, calib)
            gmd = read_onnx_file_metadata(graph) if prec == "int8" else md
            t1 = time.perf_counter()
            plan = build_plan(graph, out / f"{_base(src)}.{prec}.plan", gmd, prec, tc)
            secs = time.perf_counter() - t1
            build = {
                "precision": prec,
                "graph": str(graph),
                "plan": str(plan),
                "mb": plan.stat().st_size / 1e6,
                "prepare_seconds": t1 - t0,
                "seconds": secs,
            }
            if plan.suffix == ".plan":
                from sdk.artifact import read_plan

                build["tensorrt"] = read_plan(plan)[0].tensorrt
            rep.builds.append(build)
            rep.checks.append(
                Check(
                    f"{name} build",
                    OK,
                    f"{plan.name} ({build['mb']:.2f} MB) built from {graph.name} in {secs:.1f} s",
                    required=True,
                    section="tensorrt build",
                    values=build,
                )
            )
        except Exception as exc:
            rep.builds.append({"precision": prec, "error": f"{type(exc).__name__}: {exc}"})
            rep.checks.append(_failed(f"{name} build", exc, "tensorrt build"))
            continue
        refs: list[tuple[str, Path, Tolerance | None]] = []
        if prec == "int8":
            refs = [("ORT Q/DQ", graph, TOLERANCES["int8"]), ("ORT FP32", src, None)]
        else:
            refs = [("ORT FP32", src, TOLERANCES[prec])]
        try:
            cmps = compare_artifacts(
                plan,
                refs,
                cmp_frames,
                precision=prec,
                name=name,
                threads=threads,
                progress=progress,
            )
        except Exception as exc:
            rep.checks.append(_failed(f"{name} vs ONNX Runtime", exc, "comparison"))
            continue
        rep.comparisons += cmps
        for c in cmps:
            rep.checks += c.checks
    return rep


# --------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _precisions(text: str) -> tuple[str, ...]:
    vals = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [p for p in vals if p not in PRECISIONS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(
            f"precisions are a comma-separated subset of {','.join(PRECISIONS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(vals))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sonoedge doctor`` on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "doctor",
        help="check this install; --gpu: CUDA kernels and TensorRT engines vs the CPU path",
        description="Without --gpu: one line per component (OK / MISSING / FAIL, with the fix): "
        "version, C++ / CUDA kernels and a CPU kernel self-test, ONNX Runtime, backends, GPU "
        "(nvidia-smi, cuda-python, torch.cuda), TensorRT, export tools, the default model on a "
        "phantom. Exit 0 when the CPU path works. With --gpu (NVIDIA GPU + TensorRT >= 10.3 + "
        "cuda-python): CUDA kernels vs C++ kernels, TensorRT engines built per precision, run "
        "against ONNX Runtime on phantom frames (per-output tolerances, label agreement, mask "
        "Dice, latency); writes doctor.md / doctor.json and the engines into --out; exit 1 when "
        "any check fails.",
    )
    p.add_argument("--gpu", action="store_true", help="run the GPU / TensorRT checks")
    p.add_argument(
        "--model", type=Path, default=None, help="FP32 .onnx artifact (default: the embedded one)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for doctor.md / doctor.json (and the engines with --gpu); default: "
        "sonoedge-doctor with --gpu, nothing written without",
    )
    p.add_argument(
        "--frames", type=_positive, default=200, help="--gpu: phantom frames compared (200)"
    )
    p.add_argument(
        "--precisions",
        type=_precisions,
        default=("fp16", "int8"),
        help="--gpu: engines to build and compare, from fp32,fp16,int8 (fp16,int8)",
    )
    p.add_argument(
        "--size",
        type=size_type(32),
        default=(600, 800),
        help="--gpu: phantom frame size N or HxW (600x800)",
    )
    p.add_argument(
        "--calib-frames",
        type=_positive,
        default=300,
        help="--gpu: INT8 calibration phantoms (300, the quantizer's floor)",
    )
    p.add_argument(
        "--threads", type=_positive, default=None, help="ONNX Runtime CPU threads (its default)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_doctor_cmd)
    return p


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for doctor.md)."""
    parts = ["sonoedge", "doctor"] + (["--gpu"] if args.gpu else [])
    if args.model is not None:
        parts += ["--model", str(args.model)]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    if args.gpu:
        parts += ["--frames", str(args.frames), "--precisions", ",".join(args.precisions)]
        parts += ["--size", "x".join(map(str, args.size)), "--calib-frames", str(args.calib_frames)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return " ".join(parts)


def run_doctor_cmd(args: argparse.Namespace) -> int:
    """Run ``sonoedge doctor``; prints the report. 0 when every check that matters passed."""
    command = _command(args)
    if args.gpu:
        out = args.out or Path("sonoedge-doctor")
        rep = gpu_report(
            args.model,
            out,
            frames=args.frames,
            precisions=args.precisions,
            size=args.size,
            calib_frames=args.calib_frames,
            threads=args.threads,
            progress=not args.quiet,
            command=command,
        )
        md, js = write_report(rep, out)
        print(md.read_text(encoding="utf-8"))
        print(f"wrote {md} and {js}")
        return 0 if rep.ok else 1
    rep = Report("cpu", command, environment_report(args.model))
    print(f"sonoedge doctor: {len(rep.checks)} checks (required ones marked *)")
    for c in rep.checks:
        print(c.line(prefix="* " if c.required else "  "))
    gpu_ok = all(c.status == OK for c in rep.checks if c.name in ("TensorRT", "GPU (cuda-python)"))
    print(
        ("CPU path: OK" if rep.ok else "CPU path: FAIL (see the lines above)")
        + (
            "; GPU path ready: run `sonoedge doctor --gpu`"
            if gpu_ok
            else "; GPU path: not available here (needs an NVIDIA GPU, TensorRT >= 10.3 and "
            "cuda-python)"
        )
    )
    if args.out is not None:
        from sdk.bench.timing import machine_info

        rep.info = {"machine": machine_info()}
        md, js = write_report(rep, args.out)
        print(f"wrote {md} and {js}")
    return 0 if rep.ok else 1
