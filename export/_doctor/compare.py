"""``sonoedge doctor --gpu``'s pure comparisons: per-output differences, label agreement, mask
Dice, latency, and the per-precision tolerances (:data:`TOLERANCES`) they are judged by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from export._doctor.common import FAIL, OK, Check
from sdk.errors import InputError

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
