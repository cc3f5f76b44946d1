"""Timing harness: interleaved repeats, medians, ratios against an anchor from the same run."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Row:
    """One measured candidate next to its anchor (anchor None: the row is its own reference)."""

    name: str
    candidate: str
    anchor: str | None
    median_us: float
    p90_us: float
    anchor_median_us: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """candidate time / anchor time (lower is better; 0.5 = twice as fast)."""
        if self.anchor_median_us is None or self.anchor_median_us <= 0:
            return None
        return self.median_us / self.anchor_median_us


def header_lines(title: str, machine: dict[str, Any], command: str) -> list[str]:
    """The heading every benchmark table starts with: title, machine, versions, date, command."""
    m = machine
    return [
        f"### {title}",
        "",
        f"- machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores visible; "
        f"{m.get('device', 'no GPU')}",
        *(
            [
                f"- CPU class: {m['cpu_class']}; ISA: {m.get('isa', '?')}; sonoedge kernels: "
                f"{m.get('kernels_isa', '?')}"
            ]
            if m.get("cpu_class")
            else []
        ),
        f"- versions: {m.get('versions', '')}",
        f"- date: {m.get('date', '')}; command: `{command}`",
        "",
    ]


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def markdown(self) -> str:
        lines = [
            *header_lines(self.title, self.machine, self.command),
            "| benchmark | candidate | median µs | p90 µs | anchor | anchor median µs | ratio |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for r in self.rows:
            anchor_t = f"{r.anchor_median_us:.1f}" if r.anchor_median_us is not None else "–"
            ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "–"
            name = r.name + (f" ({r.note})" if r.note else "")
            lines.append(
                f"| {name} | {r.candidate} | {r.median_us:.1f} | {r.p90_us:.1f} | "
                f"{r.anchor or '–'} | {anchor_t} | {ratio} |"
            )
        lines.append("")
        lines.append(
            "ratio = candidate median / anchor median, both measured in this run "
            "(interleaved); below 1 means the candidate is faster."
        )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": self.machine,
            "command": self.command,
            "rows": [asdict(r) | {"ratio": r.ratio} for r in self.rows],
        }

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.md`` and ``stem.json`` atomically (temp name, then rename)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = (out_dir / f"{stem}.md", out_dir / f"{stem}.json")
        for path, text in zip(
            paths, (self.markdown(), json.dumps(self.to_json(), indent=2)), strict=True
        ):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return paths


def machine_info(device: str | None = None) -> dict[str, Any]:
    from sdk import cpu as _cpu

    cpu = _cpu.cpu_model()
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("cv2", "scipy", "onnxruntime", "cupy", "torch"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            continue
    try:
        from sdk import kernels

        kernels_isa = kernels.cpu_isa()["active"]
    except Exception:
        kernels_isa = "unavailable"
    return {
        "cpu": cpu,
        "cpu_class": _cpu.cpu_class(),
        "isa": " ".join(_cpu.cpu_features()),
        "kernels_isa": kernels_isa,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "device": device or "no GPU",
        "versions": ", ".join(versions),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
    }


def compare(
    fns: dict[str, Callable[[], Any]], repeat: int = 200, warmup: int = 10, min_time_s: float = 0.0
) -> dict[str, np.ndarray]:
    """Time each callable ``repeat`` times, interleaved round-robin so that drift (turbo, other
    load) hits every candidate alike. Returns per-callable arrays of seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    t_start = time.perf_counter()
    i = 0
    while i < repeat or (time.perf_counter() - t_start) < min_time_s:
        for k, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            times[k].append((time.perf_counter_ns() - t0) * 1e-9)
        i += 1
    return {k: np.asarray(v) for k, v in times.items()}


def summarize(t: np.ndarray) -> tuple[float, float]:
    """(median, p90) in microseconds."""
    return float(np.median(t) * 1e6), float(np.percentile(t, 90) * 1e6)
