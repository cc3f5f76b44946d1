"""``sonoedge bench soak``: many frames through ``Analyzer.stream()``: memory, latency drift, loss.

A phantom cine loop (default 64 frames of 600×800 uint8, generated once) is cycled to ``frames``
frames (default 50,000) and streamed through one CPU :class:`sdk.Analyzer` with
``drop="none"`` (back-pressure: every frame must be analyzed). Recorded:

* **RSS** (the process's current resident memory, ``/proc/self/statm``; ``ru_maxrss`` where
  that does not exist, which is a peak and says so) right after ``warmup`` frames, then every
  ``every`` frames and at the end. Growth after warm-up = last sample − warm-up sample, and
  the largest sample − warm-up sample. Target: ≤ 20 MB.
* **latency** of every frame: ``Result.timings["total"]`` (the analyzer's own time, the queue
  wait not included). p99 of the last ``window`` frames against p99 of the first ``window``
  frames after warm-up (default 5,000 each; shrunk to half of what follows the warm-up for short
  runs). Target: within 20 % (0.8 ≤ last / first ≤ 1.2).
* **frames lost**: every index 0..N-1 must come back once, in order, as an analyzed Result (a
  dropped or failed frame, a gap, a repeat or a swap counts). Target: 0.

Writes md + json and a PNG (RSS and rolling p50 / p99 over the frame index); the JSON keeps the
RSS samples and the rolling series (not every frame's latency).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from sdk.bench.formats import Report, bench_machine_info, latency_stats, new_figure
from sdk.errors import InputError

__all__ = [
    "P99_DRIFT_TARGET",
    "RSS_TARGET_MB",
    "cine_loop",
    "current_rss_mb",
    "run",
    "summary_line",
]

#: Targets of issue #7: RSS growth after warm-up, p99 drift (last vs first window), frames lost.
RSS_TARGET_MB = 20.0
P99_DRIFT_TARGET = 0.20


def current_rss_mb() -> tuple[float, str]:
    """(resident memory now in MiB, how it was read)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20, "current RSS (/proc/self/statm)"
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024.0
        return mb, "peak RSS (ru_maxrss; no /proc here, so growth is a peak's growth)"


def cine_loop(n: int = 64, shape: tuple[int, int] = (600, 800), seed: int = 5) -> list[np.ndarray]:
    """A phantom cine loop: ``n`` uint8 frames of a probe sweeping over a malignant lesion."""
    from sdk import synthetic

    return [f for f, _, _ in synthetic.cine(n, "malignant", size=shape, seed=seed)]


def _rolling(lat_ms: np.ndarray, window: int, points: int = 500) -> dict[str, list[float]]:
    """Rolling p50 / p99 over ``window`` frames, evaluated at ≤ ``points`` frame indices."""
    n = lat_ms.size
    w = max(1, min(window, n))
    ends = np.unique(np.linspace(w, n, num=min(points, n - w + 1)).astype(int))
    p50 = [float(np.percentile(lat_ms[e - w : e], 50)) for e in ends]
    p99 = [float(np.percentile(lat_ms[e - w : e], 99)) for e in ends]
    return {"frame": [int(e) for e in ends], "p50_ms": p50, "p99_ms": p99, "window": w}


def run(
    model: str | Path | None = None,
    frames: int = 50_000,
    warmup: int = 500,
    every: int = 1000,
    window: int = 5000,
    loop_frames: int = 64,
    frame_shape: tuple[int, int] = (600, 800),
    threads: int = 1,
    queue_size: int = 4,
    progress: bool = True,
    command: str = "",
) -> Report:
    """Stream ``frames`` frames and check memory, latency drift and loss (module docstring).

    Args:
        model: ``.onnx`` artifact (default: the embedded FP32 model); run on the CPU.
        frames: N, frames streamed. warmup: frames before the RSS reference sample.
        every: K, frames between RSS samples. window: frames of the first / last p99 windows.
        loop_frames, frame_shape: the pre-generated cine loop that is cycled.
        threads: ONNX Runtime intra-op threads. queue_size: the stream's capture queue.
        progress: show a tqdm progress bar.
    """
    from tqdm import tqdm

    from sdk.analyzer import Analyzer, default_model
    from sdk.result import Result

    for name, v, lo in (
        ("frames", frames, 2),
        ("every", every, 1),
        ("window", window, 1),
        ("loop_frames", loop_frames, 1),
        ("threads", threads, 1),
    ):
        if int(v) < lo:
            raise InputError(f"{name} must be >= {lo}, got {v}")
    if not 0 <= int(warmup) < int(frames) - 1:
        raise InputError(
            f"warmup must be in [0, frames - 2] so frames follow it; got {warmup} of {frames}"
        )
    path = Path(model) if model is not None else default_model("fp32")
    loop = cine_loop(loop_frames, frame_shape)
    n_loop = len(loop)

    lat = np.full(frames, np.nan)
    order = np.full(frames, -1, dtype=np.int64)  # frame_index of the j-th record
    is_result = np.zeros(frames, dtype=bool)  # the j-th record was an analyzed Result
    statuses: dict[str, int] = {}
    rss: list[tuple[int, float]] = []
    got = 0
    bar = tqdm(
        total=frames, unit="frame", disable=not progress, mininterval=0.5, desc="soak", leave=True
    )
    rss_how = ""
    t0 = time.perf_counter()
    with Analyzer(path, backend="onnxruntime", device="cpu", threads=threads) as a:
        for rec in a.stream(
            (loop[i % n_loop] for i in range(frames)), drop="none", queue_size=queue_size
        ):
            if got < frames:
                order[got] = rec.frame_index
                is_result[got] = isinstance(rec, Result)
            if isinstance(rec, Result):
                if 0 <= rec.frame_index < frames:
                    lat[rec.frame_index] = rec.timings["total"]
            else:
                statuses[rec.status] = statuses.get(rec.status, 0) + 1
            got += 1
            first_sample = max(warmup, 1)
            if (
                got == first_sample
                or (got > first_sample and (got - first_sample) % every == 0)
                or got == frames
            ):
                mb, rss_how = current_rss_mb()
                if not rss or rss[-1][0] != got:
                    rss.append((got, mb))
                bar.set_postfix(rss_mb=f"{mb:.0f}", refresh=False)
            bar.update(1)
    wall = time.perf_counter() - t0
    bar.close()

    # Lost: every index without its own analyzed Result at its own position (dropped, failed,
    # missing, repeated or out of order), plus any record beyond the N expected.
    expected = np.arange(frames)
    in_order = got == frames and bool(np.array_equal(order, expected))
    analyzed = int(np.isfinite(lat).sum())
    lost = int(frames - np.count_nonzero((order == expected) & is_result)) + max(0, got - frames)

    after = lat[warmup:]
    w = max(1, min(int(window), after.size // 2))
    first, last = after[:w], after[-w:]
    first, last = first[np.isfinite(first)], last[np.isfinite(last)]
    p99_first = float(np.percentile(first, 99)) if first.size else float("nan")
    p99_last = float(np.percentile(last, 99)) if last.size else float("nan")
    drift = p99_last / p99_first if p99_first > 0 else float("nan")
    base_mb = rss[0][1] if rss else float("nan")
    growth = rss[-1][1] - base_mb if rss else float("nan")
    growth_max = max(m for _, m in rss) - base_mb if rss else float("nan")
    finite = lat[np.isfinite(lat)]
    overall = latency_stats(finite / 1e3) if finite.size else None

    checks = {
        "rss_growth_mb": {
            "value": growth,
            "max_over_run_mb": growth_max,
            "target": f"≤ {RSS_TARGET_MB:g} MB",
            "met": bool(np.isfinite(growth) and growth <= RSS_TARGET_MB),
        },
        "p99_last_vs_first": {
            "value": drift,
            "p99_first_ms": p99_first,
            "p99_last_ms": p99_last,
            "window": w,
            "target": f"within {P99_DRIFT_TARGET:.0%}",
            "met": bool(np.isfinite(drift) and abs(drift - 1.0) <= P99_DRIFT_TARGET),
        },
        "frames_lost": {
            "value": lost,
            "in_order": in_order,
            "records": got,
            "analyzed": analyzed,
            "statuses": statuses,
            "target": "0 (every index once, in order)",
            "met": lost == 0,
        },
    }
    verdict = "all targets met" if all(c["met"] for c in checks.values()) else "TARGET MISSED"

    def yes(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        {
            "check": "RSS growth after warm-up",
            "value": f"{growth:+.1f} MB (max {growth_max:+.1f} MB)",
            "target": checks["rss_growth_mb"]["target"],
            "met": yes(checks["rss_growth_mb"]["met"]),
            "detail": f"{base_mb:.0f} MB at frame {rss[0][0] if rss else '?'} → "
            f"{rss[-1][1] if rss else float('nan'):.0f} MB at frame {rss[-1][0] if rss else '?'}",
        },
        {
            "check": f"p99 of the last {w} frames vs the first {w} after warm-up",
            "value": f"{drift:.2f}×",
            "target": checks["p99_last_vs_first"]["target"],
            "met": yes(checks["p99_last_vs_first"]["met"]),
            "detail": f"{p99_first:.2f} → {p99_last:.2f} ms",
        },
        {
            "check": "frames lost",
            "value": str(lost),
            "target": checks["frames_lost"]["target"],
            "met": yes(checks["frames_lost"]["met"]),
            "detail": f"{got} records, {analyzed} analyzed, in order: {in_order}"
            + (f", {statuses}" if statuses else ""),
        },
    ]
    if overall is not None:
        rows.append(
            {
                "check": "latency over the run",
                "value": f"p50 {overall['p50_ms']:.2f} / p95 {overall['p95_ms']:.2f} / "
                f"p99 {overall['p99_ms']:.2f} ms",
                "target": "–",
                "met": "–",
                "detail": f"{got / wall:.1f} frames/s streamed, {wall:.0f} s wall",
            }
        )
    section = {
        "title": "",
        "columns": [
            {"key": "check", "header": "check", "fmt": ""},
            {"key": "value", "header": "value", "fmt": ""},
            {"key": "target", "header": "target", "fmt": ""},
            {"key": "met", "header": "", "fmt": ""},
            {"key": "detail", "header": "detail", "fmt": ""},
        ],
        "rows": rows,
        "notes": [
            f"{frames} frames: a {n_loop}-frame {frame_shape[0]}×{frame_shape[1]} uint8 phantom "
            f"cine loop, cycled, through Analyzer.stream(drop='none', queue_size={queue_size}) "
            f"on the CPU, {threads} ONNX Runtime thread(s), model {path.name}. Verdict: "
            f"{verdict}.",
            f"RSS: {rss_how}, sampled after {warmup} warm-up frames, every {every} frames and "
            "at the end. Latency: Result.timings['total'] per frame (queue wait not included).",
        ],
    }
    rolling = _rolling(np.nan_to_num(lat, nan=0.0), min(1000, max(1, frames // 10)))
    report = Report(
        suite="soak",
        title=f"Soak: {frames} frames through Analyzer.stream ({path.name})",
        sections=[section],
        machine=bench_machine_info(),
        command=command,
        summary={
            "frames": frames,
            "warmup": warmup,
            "every": every,
            "threads": threads,
            "wall_s": wall,
            "fps": got / wall if wall > 0 else None,
            "verdict": verdict,
            "checks": checks,
            "rss_mb": [[f, m] for f, m in rss],
            "rss_how": rss_how,
            "rolling": rolling,
            "latency": overall,
        },
    )

    def plot(png: Path) -> None:
        fig = new_figure((10.0, 6.0))
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        if rss:
            xs, ys = zip(*rss, strict=True)
            ax1.plot(xs, ys, "o-", markersize=3, label="RSS")
            ax1.axhline(base_mb, color="gray", lw=0.8, ls=":")
            ax1.axhline(
                base_mb + RSS_TARGET_MB, color="C3", lw=0.8, ls="--", label="warm-up + 20 MB"
            )
        ax1.set(ylabel="RSS MB", title=f"Soak, {frames} frames ({path.name}): {verdict}")
        ax1.legend(loc="lower right")
        ax1.grid(alpha=0.3)
        ax2.plot(rolling["frame"], rolling["p50_ms"], label=f"rolling p50 ({rolling['window']})")
        ax2.plot(rolling["frame"], rolling["p99_ms"], label=f"rolling p99 ({rolling['window']})")
        for ax in (ax1, ax2):
            ax.axvline(warmup, color="gray", lw=0.8, ls="--")
        ax2.set(xlabel="frame index (dashed: end of warm-up)", ylabel="ms per frame")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="upper right")
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, format="png")

    report.figures["rss-latency"] = plot
    return report


def summary_line(report: Report) -> str:
    """The soak's verdict and one line per check (value, target, met / MISSED), for the CLI."""
    lines = [f"soak verdict: {report.summary.get('verdict')}"]
    for row in report.sections[0]["rows"] if report.sections else []:
        if row["met"] in ("–", ""):
            continue
        met = "met" if row["met"] == "met" else "MISSED"
        lines.append(f"  {row['check']}: {row['value']} (target {row['target']}): {met}")
    return "\n".join(lines)
