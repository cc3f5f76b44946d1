"""``sonoedge doctor``'s report: :class:`Report`, rendered to doctor.md and doctor.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export._doctor.common import OK, Check
from export._doctor.compare import TOLERANCES
from export._doctor.engines import Comparison
from export._files import write_text


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
    write_text(js, json.dumps(_jsonable(rep.to_dict()), indent=2) + "\n")
    write_text(md, render_markdown(rep))
    return md, js
