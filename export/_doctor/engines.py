"""``sonoedge doctor --gpu``'s engine builds: the FP16 / INT8 graphs, TensorRT plans, and each
engine run against ONNX Runtime on phantom frames (:func:`compare_artifacts`)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export._doctor.common import CALIB_SEED, PRECISIONS, Check, phantom_frames
from export._doctor.compare import PairStats, Tolerance, judge
from sdk.errors import InputError

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
    backend = analyzer.backend
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
