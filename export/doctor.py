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
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk._argtypes import size_type
from sdk.artifact import read_onnx_file_metadata
from sdk.errors import BackendUnavailableError, InputError, SDKError

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

OK, MISSING, FAIL = "OK", "MISSING", "FAIL"
PRECISIONS = ("fp32", "fp16", "int8")
CLASS_LABELS = ("normal", "benign", "malignant")
# Seed streams of the phantoms (none shared with training or the export pipeline's frames).
FRAME_SEED = 5_000_011
CALIB_SEED = 6_000_007
KERNEL_SEED = 7_000_003
SELFTEST_SEED = 11

TRT_FIX = (
    'pip install ".[trt]" (= tensorrt>=10.3,<12 and cuda-python), or pip install tensorrt-cu12 '
    "cuda-python; on Jetson, JetPack >= 6.1's python3-libnvinfer (TensorRT 10.3)"
)
CUDA_PYTHON_FIX = "pip install cuda-python (the TensorRT backend's CUDA runtime bindings)"
DRIVER_FIX = (
    "a machine with an NVIDIA GPU and its driver: `nvidia-smi` must list the GPU (in a "
    "container: docker run --gpus all); check CUDA_VISIBLE_DEVICES"
)
CUDA_BUILD_FIX = "reinstall with nvcc on PATH: SONOEDGE_CUDA=ON pip install ."
EXPORT_FIX = 'pip install ".[export]" (onnx, onnxconverter-common for the FP16 cast)'
DICOM_FIX = 'pip install "sonoedge[data]" (from a checkout: pip install ".[data]")'
# DICOM pixel decoders (pydicom plugins): import name -> distribution, and what each decodes.
DICOM_DECODERS = {
    "pylibjpeg": ("pylibjpeg", "plugin host"),
    "libjpeg": ("pylibjpeg-libjpeg", "JPEG, JPEG-LS"),
    "openjpeg": ("pylibjpeg-openjpeg", "JPEG 2000"),
    "rle": ("pylibjpeg-rle", "fast RLE"),
}


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    """One line of the report.

    ``status`` is OK, MISSING (not installed / not present: the fix installs it) or FAIL
    (present but broken, or a measured difference over its tolerance). ``required`` checks fail
    the run unless OK; the others fail it only with FAIL. ``values`` holds the numbers behind the
    line (written to doctor.json).
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
    section: str = "environment"
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True when this check makes the run fail."""
        return self.status == FAIL or (self.required and self.status != OK)

    def line(self, width: int = 26, prefix: str = "") -> str:
        """``prefix STATUS   name   detail`` plus an indented ``fix:`` line when not OK."""
        text = f"{prefix}{self.status:<8} {self.name:<{width}} {self.detail}"
        if self.fix and self.status != OK:
            text += f"\n{'':<{len(prefix) + 9}}fix: {self.fix}"
        return text


def _guard(name: str, fn: Callable[[], Check], required: bool = False) -> Check:
    """Run one check; any exception becomes a FAIL line (a doctor never shows a traceback)."""
    try:
        return fn()
    except Exception as exc:
        msg = str(exc).strip()
        fix = (
            "as the message says (sonoedge errors name their fix); full text in doctor.json"
            if isinstance(exc, SDKError)
            else "see doctor.json for the traceback; report it with `sonoedge info --json`"
        )
        return Check(
            name,
            FAIL,
            f"{type(exc).__name__}: {msg.splitlines()[0] if msg else ''}",
            fix,
            required,
            values={"error": msg, "traceback": traceback.format_exc()},
        )


def _version(dist: str) -> str | None:
    import importlib.metadata  # 30 ms: not when the parser is built

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- pure comparisons


def array_diff(got: Any, ref: Any) -> float:
    """Max abs difference of two arrays in float64; ``inf`` on a shape mismatch or any NaN /
    inf in either (a broken output must never pass a tolerance); 0.0 for two empty arrays."""
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    if not np.isfinite(d).all():
        return float("inf")
    return float(d.max())


def mask_mismatch(
    got: np.ndarray, ref: np.ndarray, prob: np.ndarray, threshold: float, band: float = 1e-5
) -> int:
    """Pixels where two thresholded masks differ although the reference probability is at least
    ``band`` away from ``threshold`` (within the band, rounding may flip either way).
    A shape mismatch counts every pixel."""
    if got.shape != ref.shape or prob.shape != ref.shape:
        return int(max(got.size, ref.size))
    diff = (got != 0) != (ref != 0)
    return int(np.count_nonzero(diff & (np.abs(prob - threshold) >= band)))


def output_diffs(
    ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output of ``ref``: ``max_abs`` and ``mean_abs`` difference of ``got`` and the
    reference's ``ref_max_abs``, for one frame. A missing output, a shape mismatch or a
    non-finite value gives ``inf`` (and ``error``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in ref.items():
        r64 = np.asarray(r, dtype=np.float64)
        ref_max = float(np.abs(r64).max()) if r64.size else 0.0
        if name not in got:
            out[name] = {"max_abs": float("inf"), "mean_abs": float("inf"), "ref_max_abs": ref_max}
            out[name]["error"] = "missing from the candidate's outputs"
            continue
        g64 = np.asarray(got[name], dtype=np.float64)
        if g64.shape != r64.shape:
            out[name] = {"max_abs": float("inf"), "mean_abs": float("inf"), "ref_max_abs": ref_max}
            out[name]["error"] = f"shape {g64.shape}, reference {r64.shape}"
            continue
        d = np.abs(g64 - r64)
        if d.size and not np.isfinite(d).all():
            out[name] = {"max_abs": float("inf"), "mean_abs": float("inf"), "ref_max_abs": ref_max}
            out[name]["error"] = "NaN or inf in an output"
            continue
        out[name] = {
            "max_abs": float(d.max()) if d.size else 0.0,
            "mean_abs": float(d.mean()) if d.size else 0.0,
            "ref_max_abs": ref_max,
        }
    return out


def label_agreement(ref: Sequence[str | int], got: Sequence[str | int]) -> float:
    """Fraction of frames whose labels are equal (1.0 for none)."""
    if len(ref) != len(got):
        raise InputError(f"label lists differ in length: {len(ref)} vs {len(got)}")
    if not ref:
        return 1.0
    return float(np.mean([a == b for a, b in zip(ref, got, strict=True)]))


def mask_dice(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> tuple[float, float]:
    """(mean, min) over frames of the Dice between two masks of each frame (both empty = 1;
    a shape mismatch = 0)."""
    from sdk import metrics

    if len(ref) != len(got):
        raise InputError(f"mask lists differ in length: {len(ref)} vs {len(got)}")
    if not ref:
        return 1.0, 1.0
    d = [
        metrics.dice(np.asarray(g) != 0, np.asarray(r) != 0) if np.shape(g) == np.shape(r) else 0.0
        for r, g in zip(ref, got, strict=True)
    ]
    return float(np.mean(d)), float(np.min(d))


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in ms and frames/s (1000 / mean) of per-frame wall times."""
    t = np.asarray(ms, dtype=np.float64)
    if t.size == 0:
        return {
            "frames": 0,
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "mean_ms": float("nan"),
            "fps": float("nan"),
        }
    mean = float(t.mean())
    return {
        "frames": int(t.size),
        "p50_ms": float(np.percentile(t, 50)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": mean,
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
    }


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria of an engine against ONNX Runtime on the same frames.

    ``outputs``: max abs difference per output *role* (``mask_logits``, ``class_logits``,
    ``features``) over every element of every frame; ``probs``: max abs difference of the
    image-level class probabilities (``Result.raw_probs``); ``label_agreement``: minimum fraction
    of frames with the same label; ``dice_mean``: minimum mean Dice between the two
    frame-resolution masks.
    """

    outputs: Mapping[str, float]
    probs: float
    label_agreement: float
    dice_mean: float
    note: str = ""


#: Per precision, against the reference the check uses (see :func:`gpu_report`). Derived from
#: ONNX Runtime measurements on our CPU machine (no TensorRT there): TensorRT's kernels round
#: differently, so the first real runs may show these need retuning (doctor.json keeps the
#: measured values next to the bounds).
#:
#: * fp16 (vs the FP32 ONNX): ONNX Runtime running the FP16-cast graph against FP32, embedded
#:   model, 60 phantoms of 300x400: max |Δ| mask logits 0.069 (p99 0.014; logits reach 8.4),
#:   class logits 0.014, features 0.019, probabilities 0.003; labels 100 %, Dice mean 0.999 (min
#:   0.982). Bounds: 1.45x (mask logits) to 3.7x (class logits) those; the issue's example of
#:   5e-2 on mask logits is below what FP16 already gives on CPU.
#: * fp32 (vs the FP32 ONNX): as FP16, since TensorRT runs FP32 convolutions in TF32 (10-bit
#:   mantissa, like FP16) on Ampere and newer unless told not to.
#: * int8 (vs ONNX Runtime on the *same* Q/DQ graph): two correct executions of one Q/DQ graph
#:   differ wherever a value rounds to the neighbouring int8 step. Measured between ONNX
#:   Runtime's fused integer kernels and its unfused DQ -> float -> Q execution of the embedded
#:   model's TensorRT Q/DQ graph, 60 phantoms: max |Δ| mask logits 1.70 (p99 0.48), class logits
#:   0.40, features 0.59; labels 98.3 %, Dice mean 0.959 (one frame with a tiny lesion in only
#:   one of them). Bounds: 1.7x to 1.9x the differences; labels and Dice carry the meaning.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        {"mask_logits": 0.1, "class_logits": 0.05, "features": 0.05},
        probs=0.01,
        label_agreement=0.99,
        dice_mean=0.98,
        note="TF32 convolutions: FP16-like rounding",
    ),
    "fp16": Tolerance(
        {"mask_logits": 0.1, "class_logits": 0.05, "features": 0.05},
        probs=0.01,
        label_agreement=0.99,
        dice_mean=0.98,
        note="1.45x to 3.7x the FP16-vs-FP32 differences of ONNX Runtime",
    ),
    "int8": Tolerance(
        {"mask_logits": 3.0, "class_logits": 0.75, "features": 1.0},
        probs=0.2,
        label_agreement=0.95,
        dice_mean=0.9,
        note="vs the same Q/DQ graph on ONNX Runtime; 1.7x to 1.9x two ORT executions' gaps",
    ),
}


class PairStats:
    """Running comparison of a candidate against a reference, frame by frame.

    Feed it with :meth:`update_outputs` (raw model outputs) and :meth:`update_result` (what the
    Analyzer made of them); :meth:`summary` gives the numbers :func:`judge` checks.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, dict[str, Any]] = {}
        self.probs_max_abs = 0.0
        self.ref_labels: list[str] = []
        self.got_labels: list[str] = []
        self.dices: list[float] = []
        self.ref_ms: list[float] = []
        self.got_ms: list[float] = []

    def update_outputs(self, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> None:
        """Add one frame's raw outputs (by name)."""
        for name, d in output_diffs(ref, got).items():
            acc = self.outputs.setdefault(
                name, {"max_abs": 0.0, "sum_mean_abs": 0.0, "frames": 0, "ref_max_abs": 0.0}
            )
            acc["max_abs"] = max(acc["max_abs"], d["max_abs"])
            acc["sum_mean_abs"] += d["mean_abs"]
            acc["frames"] += 1
            acc["ref_max_abs"] = max(acc["ref_max_abs"], d["ref_max_abs"])
            if "error" in d:
                acc["error"] = d["error"]

    def update_result(
        self,
        ref_label: str,
        got_label: str,
        ref_mask: np.ndarray,
        got_mask: np.ndarray,
        ref_probs: Mapping[str, float],
        got_probs: Mapping[str, float],
    ) -> None:
        """Add one frame's labels, frame-resolution masks and image-level probabilities."""
        self.ref_labels.append(ref_label)
        self.got_labels.append(got_label)
        self.dices.append(mask_dice([ref_mask], [got_mask])[0])
        if set(ref_probs) != set(got_probs):
            self.probs_max_abs = float("inf")
        else:
            d = array_diff([got_probs[k] for k in ref_probs], [ref_probs[k] for k in ref_probs])
            self.probs_max_abs = max(self.probs_max_abs, d)

    def update_times(self, ref_ms: float, got_ms: float) -> None:
        """Add one frame's ``Analyzer.run`` wall times (ms)."""
        self.ref_ms.append(float(ref_ms))
        self.got_ms.append(float(got_ms))

    def summary(self) -> dict[str, Any]:
        """``outputs`` {name: max_abs, mean_abs, ref_max_abs}, ``probs_max_abs``,
        ``label_agreement``, ``dice_mean``, ``dice_min``, ``frames`` and the latencies."""
        outs = {}
        for name, acc in self.outputs.items():
            outs[name] = {
                "max_abs": acc["max_abs"],
                "mean_abs": acc["sum_mean_abs"] / max(acc["frames"], 1),
                "ref_max_abs": acc["ref_max_abs"],
                **({"error": acc["error"]} if "error" in acc else {}),
            }
        dmean, dmin = (
            (float(np.mean(self.dices)), float(np.min(self.dices))) if self.dices else (1.0, 1.0)
        )
        return {
            "frames": len(self.ref_labels),
            "outputs": outs,
            "probs_max_abs": self.probs_max_abs,
            "label_agreement": label_agreement(self.ref_labels, self.got_labels),
            "dice_mean": dmean,
            "dice_min": dmin,
            "latency": {
                "candidate": latency_summary(self.got_ms),
                "reference": latency_summary(self.ref_ms),
            },
        }


def judge(
    summary: Mapping[str, Any],
    tol: Tolerance,
    roles: Mapping[str, str] | None = None,
    name: str = "engine",
    section: str = "comparison",
) -> list[Check]:
    """Checks of a :meth:`PairStats.summary` against ``tol``: one per output (its role's bound;
    ``roles`` maps output names to roles, default: the name is the role), image-level
    probabilities, label agreement and mean Dice. Outputs without a bound are not checked; an
    output the candidate lacks, or a NaN, fails."""
    roles = dict(roles or {})
    checks: list[Check] = []
    for out_name, d in summary["outputs"].items():
        role = roles.get(out_name, out_name)
        bound = tol.outputs.get(role)
        v = float(d["max_abs"])
        if bound is None:
            continue
        ok = v <= bound
        why = f" ({d['error']})" if d.get("error") else ""
        checks.append(
            Check(
                f"{name}: {out_name}",
                OK if ok else FAIL,
                f"max abs diff {v:.3g} {'<=' if ok else '>'} {bound:g}{why} "
                f"(mean {d['mean_abs']:.2g}, reference up to {d['ref_max_abs']:.3g})",
                "" if ok else "engine and ONNX Runtime disagree: see doctor.md",
                True,
                section,
                {"max_abs": v, "tolerance": bound, "mean_abs": d["mean_abs"]},
            )
        )
    p = float(summary["probs_max_abs"])
    checks.append(
        Check(
            f"{name}: probabilities",
            OK if p <= tol.probs else FAIL,
            f"image-level max abs diff {p:.3g} {'<=' if p <= tol.probs else '>'} {tol.probs:g}",
            "",
            True,
            section,
            {"max_abs": p, "tolerance": tol.probs},
        )
    )
    a = float(summary["label_agreement"])
    checks.append(
        Check(
            f"{name}: labels",
            OK if a >= tol.label_agreement else FAIL,
            f"agreement {a:.1%} {'>=' if a >= tol.label_agreement else '<'} "
            f"{tol.label_agreement:.0%} of {summary['frames']} frames",
            "",
            True,
            section,
            {"agreement": a, "tolerance": tol.label_agreement},
        )
    )
    dm = float(summary["dice_mean"])
    checks.append(
        Check(
            f"{name}: mask Dice",
            OK if dm >= tol.dice_mean else FAIL,
            f"mean {dm:.4f} {'>=' if dm >= tol.dice_mean else '<'} {tol.dice_mean:g} "
            f"(min {summary['dice_min']:.3f})",
            "",
            True,
            section,
            {"dice_mean": dm, "dice_min": summary["dice_min"], "tolerance": tol.dice_mean},
        )
    )
    for c in checks:
        if c.status == FAIL and not c.fix:
            c.fix = "engine and ONNX Runtime disagree beyond the tolerance: see doctor.md"
    return checks


# --------------------------------------------------------------------------- phantoms


def phantom_frames(
    n: int, size: tuple[int, int], seed: int, progress: bool = False, desc: str = "phantoms"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic B-mode frames ``(image uint8, lesion ids uint8)``, labels cycling
    normal / benign / malignant, one seed per frame."""
    from tqdm.auto import tqdm

    from sdk import synthetic

    out = []
    for i in tqdm(range(n), desc=desc, disable=not progress, leave=False, unit="frame"):
        image, mask, _ = synthetic.phantom(CLASS_LABELS[i % 3], size=size, seed=seed + i)
        out.append((image, mask))
    return out


def _kernel_inputs(mask: np.ndarray, seed: int) -> dict[str, Any]:
    """Pooling and mask post-process inputs derived from a phantom's lesion ids: soft weights
    (area-resized, blurred lesion mask), component labels, random features and head, and mask
    logits (+-4 at the lesions, noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    fg = (mask > 0).astype(np.float32)
    w = cv2.GaussianBlur(cv2.resize(fg, (128, 128), interpolation=cv2.INTER_AREA), (5, 5), 1.0)
    w = np.clip(w + 0.05 * rng.random(w.shape, dtype=np.float32), 0.0, 1.0).astype(np.float32)
    labels = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    k = int(labels.max())
    feats = rng.standard_normal((16, 32, 32)).astype(np.float32)
    head = tuple(
        rng.standard_normal(s).astype(np.float32) for s in ((24, 16), (24,), (3, 24), (3,))
    )
    small = cv2.resize(fg, (64, 64), interpolation=cv2.INTER_AREA)
    logits = (small * 8.0 - 4.0 + 0.5 * rng.standard_normal(small.shape)).astype(np.float32)
    return {
        "weights": w,
        "labels": labels,
        "k": k,
        "features": feats,
        "head": head,
        "logits": logits,
    }


# --------------------------------------------------------------------------- environment


def check_version() -> Check:
    """sonoedge's version, Python and NumPy, and where the package was imported from."""
    import sdk

    where = Path(sdk.__file__).resolve().parent
    return Check(
        "sonoedge",
        OK,
        f"{sdk.__version__} (python {platform.python_version()}, numpy {np.__version__}) "
        f"from {where}",
        required=True,
    )


def check_cpp_kernels() -> Check:
    """The compiled module ``sdk._kernels`` and its OpenMP / CUDA build flags."""
    try:
        from sdk import _kernels
    except ImportError as exc:
        return Check(
            "C++ kernels",
            FAIL,
            f"sdk._kernels cannot be imported: {exc}",
            "reinstall from source: pip install . (a C++17 compiler and CMake >= 3.18)",
            True,
        )
    from sdk import _cpu, kernels

    cuda = "built with CUDA" if kernels.built_with_cuda() else "built without CUDA"
    isa = kernels.cpu_isa()
    return Check(
        "C++ kernels",
        OK,
        f"{Path(_kernels.__file__).name}, OpenMP up to {int(_kernels.openmp_max_threads())} "
        f"threads, {cuda}; CPU path: {isa['active']} (runs {', '.join(isa['supported'])}) on "
        f"{_cpu.cpu_model()} [{_cpu.cpu_class()}]",
        required=True,
        values={
            "built_with_cuda": bool(kernels.built_with_cuda()),
            "cpu_isa": isa["active"],
            "cpu_isa_supported": isa["supported"],
            "cpu_class": _cpu.cpu_class(),
            "cpu_model": _cpu.cpu_model(),
        },
    )


def check_cuda_kernels() -> Check:
    """CUDA kernels compiled into ``sdk._kernels`` and a device for them."""
    from sdk import kernels

    if not kernels.built_with_cuda():
        return Check(
            "CUDA kernels",
            MISSING,
            "sdk._kernels was built without CUDA (nvcc was not found at build time)",
            CUDA_BUILD_FIX,
        )
    n = kernels.cuda_device_count()
    if n == 0:
        return Check(
            "CUDA kernels",
            MISSING,
            "compiled in, but no CUDA device is visible to them",
            DRIVER_FIX,
            values={"devices": 0},
        )
    return Check("CUDA kernels", OK, f"compiled in, {n} CUDA device(s)", values={"devices": n})


def cpu_kernel_cases(
    image: np.ndarray, mask: np.ndarray, seed: int = KERNEL_SEED
) -> list[dict[str, Any]]:
    """The C++ kernels against the NumPy reference on one phantom: ``[{case, max_abs,
    tolerance}]`` (tolerances of ``tests/kernels``; the mask case counts pixels that differ away
    from the threshold)."""
    import sdk.kernels as K
    import sdk.kernels.reference as R

    chans = ("image", "gdm", "gdx", "gdy")
    kw = {"size": (128, 128), "channels": chans, "sigma": 1.0, "mean": 0.2, "std": 0.5}
    cases = [
        {
            "case": "preprocess u8 -> 4x128x128 f32",
            "max_abs": array_diff(K.preprocess(image, **kw), R.preprocess(image, **kw)),
            "tolerance": 1e-5,
        }
    ]
    inp = _kernel_inputs(mask, seed)
    head = K.MLPHead(*inp["head"])
    args = (inp["features"], inp["weights"], inp["labels"], inp["k"], head)
    got, ref = K.pool_classify(*args), R.pool_classify(*args)
    for part, tol in (("pooled", 1e-4), ("logits", 1e-4), ("probs", 1e-5)):
        cases.append(
            {
                "case": f"pool + head {part} ({inp['k']} lesion(s))",
                "max_abs": array_diff(getattr(got, part), getattr(ref, part)),
                "tolerance": tol,
            }
        )
    shape = image.shape[:2]
    m = K.postprocess_mask(inp["logits"], shape)
    rm, prob = R.postprocess_mask_prob(inp["logits"], shape)
    cases.append(
        {
            "case": f"mask post-process 64x64 -> {shape[0]}x{shape[1]} (pixels off)",
            "max_abs": float(mask_mismatch(m, rm, prob, 0.5)),
            "tolerance": 0.0,
        }
    )
    return cases


def check_cpu_selftest() -> Check:
    """C++ kernels == NumPy reference on one phantom frame."""
    from sdk import synthetic

    image, mask, _ = synthetic.phantom("benign", size=(240, 320), seed=SELFTEST_SEED)
    cases = cpu_kernel_cases(image, mask)
    bad = [c for c in cases if not c["max_abs"] <= c["tolerance"]]
    worst = max(cases, key=lambda c: c["max_abs"] / (c["tolerance"] or 1.0))
    if bad:
        return Check(
            "CPU kernels vs NumPy",
            FAIL,
            "; ".join(f"{c['case']}: {c['max_abs']:.3g} > {c['tolerance']:g}" for c in bad),
            "the compiled kernels compute wrong results here: rebuild with SONOEDGE_NATIVE=OFF "
            "pip install . and report the machine (sonoedge info --json)",
            True,
            values={"cases": cases},
        )
    return Check(
        "CPU kernels vs NumPy",
        OK,
        f"{len(cases)} cases on a phantom within tolerance (closest: {worst['case']} "
        f"{worst['max_abs']:.2g} <= {worst['tolerance']:g})",
        required=True,
        values={"cases": cases},
    )


def check_onnxruntime() -> Check:
    """ONNX Runtime's version and execution providers."""
    if importlib.util.find_spec("onnxruntime") is None:
        return Check("ONNX Runtime", MISSING, "not installed", "pip install onnxruntime", True)
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return Check(
        "ONNX Runtime",
        OK,
        f"{ort.__version__}; providers: {', '.join(providers)}",
        required=True,
        values={"version": ort.__version__, "providers": providers},
    )


def check_backends() -> list[Check]:
    """Every registered backend's ``sdk.backends.available()`` line (ONNX Runtime required)."""
    from sdk import backends

    out = []
    for name, (ok, why) in backends.available().items():
        required = name == "onnxruntime"
        if ok:
            out.append(Check(f"backend {name}", OK, why, required=required))
            continue
        absent = any(s in why for s in ("not installed", "cannot be imported", "no CUDA device"))
        fix = {"tensorrt": TRT_FIX, "onnxruntime": "pip install onnxruntime"}.get(name, "")
        if "cuda-python" in why:
            fix = CUDA_PYTHON_FIX
        elif "no CUDA device" in why or "cudaGetDeviceCount" in why:
            fix = DRIVER_FIX
        out.append(Check(f"backend {name}", MISSING if absent else FAIL, why, fix, required))
    return out


def check_nvidia_smi() -> Check:
    """The GPUs ``nvidia-smi`` lists (name, driver, memory)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return Check(
            "GPU (nvidia-smi)", MISSING, "nvidia-smi not found: no NVIDIA driver", DRIVER_FIX
        )
    q = "--query-gpu=name,driver_version,memory.total"
    try:
        r = subprocess.run(
            [exe, q, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return Check("GPU (nvidia-smi)", FAIL, "nvidia-smi hung for 20 s", DRIVER_FIX)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode != 0 or not lines:
        why = (r.stderr or r.stdout).strip().splitlines()
        return Check(
            "GPU (nvidia-smi)",
            MISSING,
            f"no GPU listed: {why[0] if why else f'exit code {r.returncode}'}",
            DRIVER_FIX,
        )
    return Check("GPU (nvidia-smi)", OK, "; ".join(lines), values={"gpus": lines})


def _cuda_device_names(rt: Any, n: int) -> list[str]:
    names = []
    for i in range(n):
        err, prop = rt.cudaGetDeviceProperties(i)
        if int(err) != 0:
            names.append(f"device {i} (properties: {getattr(err, 'name', err)})")
            continue
        nm = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        names.append(f"{nm.strip(chr(0) + ' ')} (sm_{prop.major}{prop.minor})")
    return names


def check_cuda_python() -> Check:
    """cuda-python and the CUDA devices it sees (what the TensorRT backend uses)."""
    from sdk.backends._trt_common import cudart

    try:
        rt = cudart()
    except BackendUnavailableError as exc:
        return Check("GPU (cuda-python)", MISSING, str(exc), CUDA_PYTHON_FIX)
    ver = _version("cuda-python") or _version("cuda-bindings") or "?"
    err, n = rt.cudaGetDeviceCount()
    if int(err) != 0 or int(n) == 0:
        why = getattr(err, "name", str(err)) if int(err) != 0 else "0 devices"
        return Check(
            "GPU (cuda-python)", MISSING, f"cuda-python {ver}: no CUDA device ({why})", DRIVER_FIX
        )
    names = _cuda_device_names(rt, int(n))
    _, drv = rt.cudaDriverGetVersion()
    _, rtv = rt.cudaRuntimeGetVersion()

    def cuda_ver(v: Any) -> str:
        v = int(v)
        return f"{v // 1000}.{(v % 1000) // 10}"

    return Check(
        "GPU (cuda-python)",
        OK,
        f"cuda-python {ver}; {', '.join(names)}; driver CUDA {cuda_ver(drv)}, runtime "
        f"{cuda_ver(rtv)}",
        values={"devices": names},
    )


def check_torch_cuda() -> Check:
    """torch and ``torch.cuda`` (optional: CUDA training and the GPU benchmark rows)."""
    if importlib.util.find_spec("torch") is None:
        return Check(
            "GPU (torch.cuda)",
            MISSING,
            "torch not installed (optional: training, export, GPU benchmark rows)",
            EXPORT_FIX,
        )
    import torch

    build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    if not torch.cuda.is_available():
        fix = DRIVER_FIX
        if torch.version.cuda is None:
            fix = "for CUDA training install a CUDA build of torch (pytorch.org); optional"
        return Check(
            "GPU (torch.cuda)", MISSING, f"torch {torch.__version__} ({build}): no CUDA device", fix
        )
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check("GPU (torch.cuda)", OK, f"torch {torch.__version__} ({build}); {', '.join(names)}")


def check_tensorrt() -> Check:
    """TensorRT importable and >= 10.3 (JetPack 6)."""
    from sdk.backends._trt_common import trt_module

    if importlib.util.find_spec("tensorrt") is None:
        return Check("TensorRT", MISSING, "not installed", TRT_FIX)
    try:
        trt = trt_module()
    except BackendUnavailableError as exc:
        return Check(
            "TensorRT", FAIL, str(exc).splitlines()[0], "pip install -U 'tensorrt>=10.3,<12'"
        )
    return Check(
        "TensorRT", OK, f"{trt.__version__} (>= 10.3)", values={"version": trt.__version__}
    )


def check_export_tools() -> Check:
    """What ``--gpu`` needs to make the engines' graphs: onnx, onnxconverter-common and ONNX
    Runtime's quantizer."""
    mods = {
        "onnx": "onnx",
        "onnxconverter_common": "onnxconverter-common",
        "onnxruntime.quantization": "onnxruntime",
    }
    missing = []
    for mod, dist in mods.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(dist)
    if missing:
        return Check(
            "export tools",
            MISSING,
            f"{', '.join(missing)} not installed (needed by --gpu to build engines)",
            EXPORT_FIX,
        )
    vers = ", ".join(f"{d} {_version(d) or '?'}" for d in ("onnx", "onnxconverter-common"))
    return Check("export tools", OK, f"{vers} (FP16 cast, INT8 Q/DQ for engine builds)")


def check_dicom() -> Check:
    """DICOM sources (``sonoedge run file.dcm``): pydicom and the pylibjpeg decoders, which
    come with the ``data`` extra. Optional: videos and image folders need neither."""
    if importlib.util.find_spec("pydicom") is None:
        return Check(
            "DICOM",
            MISSING,
            "pydicom not installed: .dcm sources cannot be read (videos, images can)",
            DICOM_FIX,
        )
    have = [mod for mod in DICOM_DECODERS if importlib.util.find_spec(mod) is not None]
    missing = [DICOM_DECODERS[mod][0] for mod in DICOM_DECODERS if mod not in have]
    values = {"pydicom": _version("pydicom"), "decoders": have, "missing": missing}
    head = f"pydicom {values['pydicom'] or '?'}"
    if missing:
        absent = [m for m in DICOM_DECODERS if m not in have]
        lost = [DICOM_DECODERS[m][1] for m in absent if m in ("libjpeg", "openjpeg")]
        if "pylibjpeg" in absent:  # the host of the other plugins: none of them is used
            lost = ["JPEG, JPEG-LS", "JPEG 2000"]
        what = f"{' / '.join(lost)} cines cannot be read" if lost else "RLE decodes slower"
        return Check(
            "DICOM",
            MISSING,
            f"{head}; decoders missing: {', '.join(missing)} ({what}; uncompressed and RLE "
            "cines can be read)",
            DICOM_FIX,
            values=values,
        )
    return Check(
        "DICOM",
        OK,
        f"{head}; decoders: JPEG, JPEG-LS, JPEG 2000, RLE ({', '.join(have)})",
        values=values,
    )


def check_model(path: str | os.PathLike[str] | None = None) -> Check:
    """An artifact (default: the embedded model) loads and runs one phantom frame."""
    import sdk
    from sdk import metrics, synthetic
    from sdk.analyzer import default_model

    p = default_model() if path is None else Path(path)
    name = "default model" if path is None else "model"
    image, truth, _ = synthetic.phantom("malignant", size=(480, 640), seed=SELFTEST_SEED)
    with sdk.Analyzer(p, threads=1) as a:
        a.run(image)  # first call: allocations, session warm-up
        r = a.run(image)
        md = a.metadata
    dice = metrics.dice(r.mask > 0, truth > 0)
    return Check(
        name,
        OK,
        f"{p.name} ({md.arch}, {md.precision}, {'x'.join(map(str, md.input_size))} "
        f"{'+'.join(md.channels)}): phantom 480x640 -> label {r.label}, {len(r.lesions)} "
        f"lesion(s), Dice vs truth {dice:.2f}, {r.timings['total']:.1f} ms",
        required=True,
        values={"path": str(p), "label": r.label, "dice": dice, "ms": r.timings["total"]},
    )


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


# --------------------------------------------------------------------------- --gpu preflight


def gpu_missing() -> list[tuple[str, str, str]]:
    """What ``--gpu`` needs and this machine lacks: ``[(what, why, fix)]``, empty when ready
    (TensorRT >= 10.3, cuda-python with a CUDA device, and the export tools)."""
    from sdk.backends._trt_common import cudart, trt_module

    missing: list[tuple[str, str, str]] = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append(("TensorRT >= 10.3", "not installed", TRT_FIX))
    else:
        try:
            trt_module()
        except BackendUnavailableError as exc:
            missing.append(("TensorRT >= 10.3", str(exc).splitlines()[0], TRT_FIX))
        except Exception as exc:  # a broken install (missing libnvinfer, ...)
            missing.append(("TensorRT >= 10.3", f"import fails: {exc}", TRT_FIX))
    try:
        rt = cudart()
    except BackendUnavailableError:
        missing.append(("cuda-python", "not installed", CUDA_PYTHON_FIX))
        smi = check_nvidia_smi()
        if smi.status != OK:
            missing.append(("an NVIDIA GPU", smi.detail, DRIVER_FIX))
    else:
        err, n = rt.cudaGetDeviceCount()
        if int(err) != 0 or int(n) == 0:
            why = getattr(err, "name", str(err)) if int(err) != 0 else "0 devices"
            missing.append(("an NVIDIA GPU", f"no CUDA device visible ({why})", DRIVER_FIX))
    tools = check_export_tools()
    if tools.status != OK:
        missing.append(("export tools", tools.detail, EXPORT_FIX))
    return missing


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


# --------------------------------------------------------------------------- CUDA kernels


class _Device:
    """Device buffers through cuda-python (no CuPy / torch needed); freed by :meth:`close`."""

    def __init__(self) -> None:
        from sdk.backends._trt_common import cudart

        self.rt = cudart()
        self._ptrs: list[int] = []

    def _ok(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise SDKError(f"{what} failed: CUDA error {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else None

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialized-looking buffer: every byte 0xFF (NaN in float, 255 in uint8), so an
        element the kernel forgets to write fails the comparison."""
        from sdk.kernels.cuda import DeviceArray

        dt = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dt.itemsize, 1)
        ptr = int(self._ok(self.rt.cudaMalloc(nbytes), "cudaMalloc"))
        self._ptrs.append(ptr)
        self._ok(self.rt.cudaMemset(ptr, 0xFF, nbytes), "cudaMemset")
        return DeviceArray(ptr, tuple(shape), dt)

    def put(self, a: np.ndarray) -> Any:
        """Copy a host array to a new device buffer."""
        a = np.ascontiguousarray(a)
        d = self.alloc(a.shape, a.dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpy(d.ptr, a.ctypes.data, a.nbytes, kind), "cudaMemcpy H2D")
        return d

    def get(self, d: Any) -> np.ndarray:
        """Wait for the device, then copy a device buffer back."""
        self._ok(self.rt.cudaDeviceSynchronize(), "kernel launch (cudaDeviceSynchronize)")
        out = np.empty(d.shape, d.dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpy(out.ctypes.data, d.ptr, out.nbytes, kind), "cudaMemcpy D2H")
        return out

    def close(self) -> None:
        for p in self._ptrs:
            self.rt.cudaFree(p)
        self._ptrs.clear()


def cuda_kernel_cases(
    frames: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = KERNEL_SEED
) -> list[dict[str, Any]]:
    """The CUDA kernels against the C++ kernels on phantom frames: ``[{case, max_abs,
    tolerance}]``, worst over the frames (tolerances of ``tests/kernels/test_cuda.py``)."""
    import sdk.kernels as K
    from sdk.kernels import cuda
    from sdk.kernels.reference import postprocess_mask_prob

    cuda._require_cuda()  # BackendUnavailableError without a CUDA build / device
    worst: dict[str, dict[str, Any]] = {}

    def add(case: str, value: float, tol: float) -> None:
        w = worst.setdefault(case, {"case": case, "max_abs": 0.0, "tolerance": tol})
        w["max_abs"] = max(w["max_abs"], value)

    dev = _Device()
    try:
        for i, (image, mask) in enumerate(frames):
            h, w = image.shape[:2]
            chans = ("image", "gdm", "gdx", "gdy")
            kw = {"channels": chans, "sigma": 1.3, "mean": 0.2, "std": 0.5}
            out = dev.alloc((4, 256, 256), np.float32)
            cuda.preprocess(dev.put(image), out, **kw)
            add(
                "preprocess gray -> 4x256x256 f32",
                array_diff(dev.get(out), K.preprocess(image, size=(256, 256), **kw)),
                1e-5,
            )
            bgr = np.ascontiguousarray(
                np.stack(
                    [image, (image * 0.9).astype(np.uint8), (image * 0.8).astype(np.uint8)], axis=-1
                )
            )
            roi = (w // 10, h // 10, w * 8 // 10, h * 8 // 10)
            out16 = dev.alloc((2, 224, 224), np.float16)
            cuda.preprocess(dev.put(bgr), out16, roi=roi, color="rgb", sigma=2.0)
            ref16 = K.preprocess(bgr, size=(224, 224), roi=roi, color="rgb", sigma=2.0)
            add(
                "preprocess RGB + ROI -> 2x224x224 f16",
                array_diff(dev.get(out16).astype(np.float32), ref16),
                2e-3,
            )
            inp = _kernel_inputs(mask, seed + i)
            k = inp["k"]
            head = K.MLPHead(*inp["head"])
            ref = K.pool_classify(inp["features"], inp["weights"], inp["labels"], k, head)
            pooled = dev.alloc((k + 1, 16), np.float32)
            logits = dev.alloc((k + 1, 3), np.float32)
            probs = dev.alloc((k + 1, 3), np.float32)
            cuda.pool_classify(
                dev.put(inp["features"]),
                dev.put(inp["weights"]),
                probs,
                labels=dev.put(inp["labels"]),
                num_labels=k,
                head=tuple(dev.put(a) for a in inp["head"]),
                pooled=pooled,
                logits=logits,
            )
            add("pool + head: pooled", array_diff(dev.get(pooled), ref.pooled), 1e-4)
            add("pool + head: logits", array_diff(dev.get(logits), ref.logits), 1e-4)
            add("pool + head: probs", array_diff(dev.get(probs), ref.probs), 1e-5)
            for r in (None, (w // 8, h // 8, w * 3 // 4, h * 3 // 4)):
                m = dev.alloc((h, w), np.uint8)
                cuda.postprocess_mask(dev.put(inp["logits"]), m, roi=r)
                got = dev.get(m)
                _, prob = postprocess_mask_prob(inp["logits"], (h, w), r, 0.5)
                cpu = K.postprocess_mask(inp["logits"], (h, w), roi=r)
                tag = "ROI" if r else "full frame"
                add(
                    f"mask post-process ({tag}; pixels off)",
                    float(mask_mismatch(got, cpu, prob, 0.5)),
                    0.0,
                )
    finally:
        dev.close()
    return list(worst.values())


# --------------------------------------------------------------------------- engines


def _base(model: Path) -> str:
    stem = model.name.removesuffix(".onnx")
    for suffix in ("-fp32", ".fp32", "_fp32"):
        stem = stem.removesuffix(suffix)
    return stem or "model"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ONNX Runtime's quantizer (prints and root-logger advice) and the FP16 cast's
    expected warnings (tiny weights flushed to FP16's range)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        root.setLevel(level)


def calibration_inputs(md: Any, n: int, progress: bool = False) -> list[np.ndarray]:
    """``n`` phantoms at the model's input size, preprocessed as the runtime does (float32
    ``(C, h, w)``): the INT8 calibration set."""
    import sdk.kernels as K

    frames = phantom_frames(n, tuple(md.input_size), CALIB_SEED, progress, "calibration phantoms")
    return [
        K.preprocess(im, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std)
        for im, _ in frames
    ]


def prepare_graph(
    precision: str,
    model: Path,
    out: Path,
    calibration: Sequence[np.ndarray] = (),
    calibrate_method: str = "percentile",
) -> Path:
    """The ONNX an engine of ``precision`` is built from, written into ``out``: the model
    itself (fp32), its FP16 cast (fp16), or its TensorRT Q/DQ quantization (int8; validated)."""
    if precision == "fp32":
        return model
    base = _base(model)
    if precision == "fp16":
        from export.tensorrt_build import fp16_onnx

        with _quiet():
            return fp16_onnx(model, out / f"{base}.fp16.onnx")
    if precision == "int8":
        from export.quantize import MIN_CALIBRATION_FRAMES, check_tensorrt_qdq, quantize

        with _quiet():
            q = quantize(
                model,
                out / f"{base}.trt-int8.onnx",
                list(calibration),
                target="tensorrt",
                calibrate_method=calibrate_method,
                min_frames=min(MIN_CALIBRATION_FRAMES, max(len(calibration), 1)),
            )
        check_tensorrt_qdq(q)
        return q
    raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def build_plan(graph: Path, plan: Path, md: Any, precision: str, timing_cache: Path) -> Path:
    """TensorRT engine of ``graph`` into the ``.plan`` container (batch profile 1 / 1 / 8, the
    timing cache shared by the builds of one run)."""
    from export.tensorrt_build import build_engine

    return build_engine(graph, plan, md, precision, timing_cache=timing_cache)


@dataclass
class Comparison:
    """One candidate (an engine) against one reference (an ONNX on ONNX Runtime CPU)."""

    candidate: str
    reference: str
    precision: str
    summary: dict[str, Any]
    tolerance: Tolerance | None
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "precision": self.precision,
            "checked": self.tolerance is not None,
            "tolerance": None if self.tolerance is None else asdict(self.tolerance),
            **self.summary,
        }


def _capture(analyzer: Any) -> Callable[[], dict[str, np.ndarray]]:
    """Keep the raw outputs of an Analyzer's last model call (the Analyzer has no public hook
    for them): wraps its backend's ``infer``; returns a getter."""
    backend = analyzer._backend
    infer = backend.infer
    box: dict[str, dict[str, np.ndarray]] = {}

    def wrapped(x: np.ndarray) -> dict[str, np.ndarray]:
        out = infer(x)  # both backends return fresh arrays: no copy inside the timed call
        box["out"] = out
        return out

    backend.infer = wrapped
    return lambda: box["out"]


def compare_artifacts(
    candidate: Path,
    references: Sequence[tuple[str, Path, Tolerance | None]],
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    precision: str,
    name: str,
    threads: int | None = None,
    warmup: int = 5,
    progress: bool = False,
) -> list[Comparison]:
    """Run ``frames`` through ``sdk.Analyzer(candidate)`` and each reference, interleaved per
    frame, and compare them (:class:`PairStats`); ``references``: ``(label, onnx path,
    tolerance or None for report-only)``. Timings: ``Analyzer.run`` wall time after ``warmup``
    untimed frames."""
    from tqdm.auto import tqdm

    import sdk

    stats = [PairStats() for _ in references]
    with contextlib.ExitStack() as stack:
        cand = stack.enter_context(sdk.Analyzer(candidate, threads=threads))
        refs = [stack.enter_context(sdk.Analyzer(p, threads=threads)) for _, p, _ in references]
        get_c = _capture(cand)
        get_r = [_capture(r) for r in refs]
        for image, _ in frames[:warmup]:
            for a in (cand, *refs):
                a.run(image)
        for a in (cand, *refs):
            a.reset()
        roles = {v: k for k, v in cand.metadata.outputs.items() if v}
        bar = tqdm(frames, desc=f"compare {name}", disable=not progress, leave=False, unit="frame")
        for image, _ in bar:
            rc = cand.run(image)
            oc = get_c()
            for s, a, get in zip(stats, refs, get_r, strict=True):
                rr = a.run(image)
                s.update_outputs(get(), oc)
                s.update_result(rr.label, rc.label, rr.mask, rc.mask, rr.raw_probs, rc.raw_probs)
                s.update_times(rr.timings["total"], rc.timings["total"])
    out = []
    for (label, path, tol), s in zip(references, stats, strict=True):
        summary = s.summary()
        summary["reference_path"] = str(path)
        summary["candidate_path"] = str(candidate)
        summary["roles"] = roles
        cmp = Comparison(name, label, precision, summary, tol)
        if tol is not None:
            cmp.checks = judge(summary, tol, roles, f"{name} vs {label}", "comparison")
        out.append(cmp)
    return out


@dataclass
class Report:
    """Everything one doctor run found (rendered by :func:`write_report`)."""

    mode: str
    command: str
    checks: list[Check] = field(default_factory=list)
    kernels: list[dict[str, Any]] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "sonoedge.doctor",
            "version": 1,
            "mode": self.mode,
            "command": self.command,
            "ok": self.ok,
            "failed": [c.name for c in self.checks if c.failed],
            **self.info,
            "checks": [asdict(c) for c in self.checks],
            "cuda_kernels": self.kernels,
            "builds": self.builds,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()},
        }


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
    from sdk.bench._timing import machine_info

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


def _kernel_check(case: dict[str, Any]) -> Check:
    """A CUDA kernel case of :func:`cuda_kernel_cases` as a required check."""
    v, tol = case["max_abs"], case["tolerance"]
    ok = v <= tol
    return Check(
        f"CUDA {case['case']}",
        OK if ok else FAIL,
        f"max abs diff vs C++ {v:.3g} {'<=' if ok else '>'} {tol:g}",
        ""
        if ok
        else "the CUDA kernel disagrees with the C++ one: report it with "
        "`sonoedge info --json` and the nvidia-smi output",
        True,
        "cuda kernels",
        dict(case),
    )


def _failed(name: str, exc: BaseException, section: str, fix: str = "") -> Check:
    """A required FAIL check for a step that raised (message and traceback in ``values``)."""
    msg = str(exc).strip()
    return Check(
        name,
        FAIL,
        f"{type(exc).__name__}: {msg.splitlines()[0] if msg else ''}",
        fix or "see doctor.json (traceback) and the TensorRT log above",
        True,
        section,
        {"error": msg, "traceback": traceback.format_exc()},
    )


# --------------------------------------------------------------------------- output


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: Report) -> str:
    """doctor.md: verdict, environment, CUDA kernels, builds, comparisons, tolerances and what
    was and was not verified."""
    failed = [c for c in rep.checks if c.failed]
    verdict = (
        f"**PASS**: all {len(rep.checks)} checks"
        if not failed
        else f"**FAIL**: {len(failed)} of {len(rep.checks)} checks: "
        + ", ".join(c.name for c in failed)
    )
    m = rep.info.get("machine") or {}
    lines = ["# sonoedge doctor", "", f"- result: {verdict}"]
    if rep.command:
        lines.append(f"- command: `{rep.command}`")
    if m:
        lines.append(
            f"- machine: {m.get('cpu')}, {m.get('cores')} cores; {m.get('device')}; "
            f"{m.get('versions')}; {m.get('date')}"
        )
    if "model" in rep.info:
        mi = rep.info["model"]
        lines.append(f"- model: `{mi['path']}` ({mi['arch']}, input {mi['input_size']})")
    lines += ["", "## Checks", "", "| status | check | detail | fix |", "|---|---|---|---|"]
    for c in rep.checks:
        fix = c.fix if c.status != OK else ""
        lines.append(f"| {c.status} | {c.name} | {_cell(c.detail)} | {_cell(fix)} |")
    if rep.kernels:
        lines += [
            "",
            "## CUDA kernels vs C++ kernels (3 phantoms)",
            "",
            "| kernel | max abs diff | tolerance |",
            "|---|--:|--:|",
        ]
        lines += [f"| {k['case']} | {_f(k['max_abs'])} | {k['tolerance']:g} |" for k in rep.kernels]
    if rep.builds:
        lines += [
            "",
            "## TensorRT engines",
            "",
            "| precision | built from | .plan | MB | s | TensorRT / GPU |",
            "|---|---|---|--:|--:|---|",
        ]
        for b in rep.builds:
            if "error" in b:
                lines.append(f"| {b['precision']} | – | FAILED: {b['error'][:200]} | | | |")
                continue
            t = b.get("tensorrt") or {}
            fp = f"{t.get('version', '?')} / {t.get('gpu', '?')} ({t.get('compute_capability')})"
            lines.append(
                f"| {b['precision']} | {Path(b['graph']).name} | {Path(b['plan']).name} "
                f"| {b['mb']:.2f} | {b['seconds']:.1f} | {fp} |"
            )
    if rep.comparisons:
        fr = rep.info.get("frames", {})
        lines += [
            "",
            f"## Engines vs ONNX Runtime CPU ({fr.get('n')} phantom frames of "
            f"{'x'.join(map(str, fr.get('size', [])))}, through `sdk.Analyzer`)",
            "",
            "max |Δ| per output (tolerance in brackets), image-level probabilities, label "
            "agreement, mask Dice between the two (frame resolution), latency of "
            "`Analyzer.run` (preprocess + model + post-process).",
            "",
            "| engine | vs | mask_logits | class_logits | features | probs | labels | Dice mean "
            "(min) | engine p50 / p99 ms | engine FPS | ORT p50 / p99 ms | ORT FPS | checked |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for c in rep.comparisons:
            s, t = c.summary, c.tolerance
            roles = {v: k for k, v in s.get("roles", {}).items()}
            cells = []
            for role in ("mask_logits", "class_logits", "features"):
                o = s["outputs"].get(roles.get(role, role))
                bound = "" if t is None or role not in t.outputs else f" (≤ {t.outputs[role]:g})"
                cells.append("–" if o is None else f"{_f(o['max_abs'])}{bound}")
            pb = "" if t is None else f" (≤ {t.probs:g})"
            lb = "" if t is None else f" (≥ {t.label_agreement:.0%})"
            db = "" if t is None else f" (≥ {t.dice_mean:g})"
            lc, lr = s["latency"]["candidate"], s["latency"]["reference"]
            verdict_c = (
                "report only"
                if t is None
                else ("FAIL" if any(x.failed for x in c.checks) else "OK")
            )
            lines.append(
                f"| {c.candidate} | {c.reference} | {' | '.join(cells)} | "
                f"{_f(s['probs_max_abs'])}{pb} | {s['label_agreement']:.1%}{lb} | "
                f"{s['dice_mean']:.4f} ({s['dice_min']:.3f}){db} | "
                f"{lc['p50_ms']:.2f} / {lc['p99_ms']:.2f} | {lc['fps']:.0f} | "
                f"{lr['p50_ms']:.2f} / {lr['p99_ms']:.2f} | {lr['fps']:.0f} | {verdict_c} |"
            )
        lines += ["", "Tolerances (export/doctor.py `TOLERANCES`):", ""]
        for prec, t in TOLERANCES.items():
            outs = ", ".join(f"{k} {v:g}" for k, v in t.outputs.items())
            lines.append(
                f"- {prec}: max |Δ| {outs}; probabilities {t.probs:g}; labels ≥ "
                f"{t.label_agreement:.0%}; Dice mean ≥ {t.dice_mean:g} ({t.note})"
            )
        lines.append(
            "- INT8 is checked against ONNX Runtime running the same Q/DQ graph and reported "
            "against the FP32 model: the FP32 drift measures the quantizer (full quantization "
            "here, no accuracy budget; `sonoedge export` applies one), not TensorRT."
        )
    lines += ["", "## Verified by this run", ""]
    lines += [f"- {v}" for v in _verified(rep)]
    return "\n".join(lines) + "\n"


def _verified(rep: Report) -> list[str]:
    sections = {c.section for c in rep.checks}
    out = [
        "environment: "
        + ", ".join(f"{c.name} {c.status}" for c in rep.checks if c.section == "environment")
    ]
    if rep.mode != "gpu":
        out.append(
            "not run: the GPU path (CUDA kernels on a device, TensorRT engine builds, engine vs "
            "ONNX Runtime): `sonoedge doctor --gpu` on a machine with an NVIDIA GPU and TensorRT"
        )
        return out
    for sec, text in (
        ("cuda kernels", "CUDA kernels vs C++ kernels on 3 phantoms"),
        ("tensorrt build", "TensorRT engine builds into the .plan container"),
        ("comparison", "TensorRT engines vs ONNX Runtime through sdk.Analyzer"),
    ):
        cs = [c for c in rep.checks if c.section == sec]
        if sec in sections:
            bad = sum(c.failed for c in cs)
            out.append(f"{text}: {len(cs) - bad} of {len(cs)} checks passed")
        else:
            out.append(f"{text}: not run")
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)  # "inf" / "nan": JSON has neither
    if isinstance(v, Path):
        return str(v)
    return v


def write_report(rep: Report, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``doctor.md`` and ``doctor.json`` into ``out`` (temporary names, then renamed)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    md, js = d / "doctor.md", d / "doctor.json"
    _write_text(js, json.dumps(_jsonable(rep.to_dict()), indent=2) + "\n")
    _write_text(md, render_markdown(rep))
    return md, js


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
        from sdk.bench._timing import machine_info

        rep.info = {"machine": machine_info()}
        md, js = write_report(rep, args.out)
        print(f"wrote {md} and {js}")
    return 0 if rep.ok else 1
