"""``sonoedge run``: stream a source through an Analyzer and write what a person looks at.

Outputs in ``out_dir``: ``annotated.mp4`` (overlays), ``frames.jsonl`` and ``frames.csv`` (one
record per frame, dropped and failed frames included), ``latency.json`` (p50 / p95 / p99 /
mean / FPS per stage) and ``latency.png`` (histogram of the end-to-end time). Every file is
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from sdk.analyzer import Analyzer
from sdk.errors import SourceError
from sdk.result import Result
from sdk.stream import FrameRecord

__all__ = ["latency_summary", "run_source"]


def latency_summary(records: list[Result | FrameRecord], wall_s: float) -> dict[str, Any]:
    """Percentiles (ms) per stage over analyzed frames, counts, and the stream's throughput."""
    res = [r for r in records if isinstance(r, Result)]
    out: dict[str, Any] = {
        "frames": len(records),
        "analyzed": len(res),
        "dropped": sum(isinstance(r, FrameRecord) and r.status == "dropped" for r in records),
        "errors": sum(isinstance(r, FrameRecord) and r.status == "error" for r in records),
        "wall_s": round(wall_s, 3),
        "throughput_fps": round(len(res) / wall_s, 2) if wall_s > 0 else None,
    }
    if res:
        for stage in res[0].timings:
            t = np.array([r.timings[stage] for r in res])
            out[stage] = {
                "p50_ms": round(float(np.percentile(t, 50)), 3),
                "p95_ms": round(float(np.percentile(t, 95)), 3),
                "p99_ms": round(float(np.percentile(t, 99)), 3),
                "mean_ms": round(float(t.mean()), 3),
            }
        out["fps_at_p50"] = round(1000.0 / out["total"]["p50_ms"], 1)
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _histogram_png(totals: np.ndarray, summary: dict[str, Any]) -> bytes:
    """A latency histogram drawn with OpenCV (no plotting dependency in the runtime)."""
    w, h, m = 640, 360, 50
    img = np.full((h, w, 3), 255, np.uint8)
    hist, edges = np.histogram(totals, bins=40)
    top = max(int(hist.max()), 1)
    bw = (w - 2 * m) / len(hist)
    for i, c in enumerate(hist):
        x0 = int(m + i * bw)
        y0 = int(h - m - (h - 2 * m) * c / top)
        cv2.rectangle(img, (x0, y0), (int(x0 + bw) - 1, h - m), (200, 120, 40), -1)
    cv2.line(img, (m, h - m), (w - m, h - m), (0, 0, 0), 1)
    for v, name in ((summary["total"]["p50_ms"], "p50"), (summary["total"]["p99_ms"], "p99")):
        x = int(m + (v - edges[0]) / max(edges[-1] - edges[0], 1e-9) * (w - 2 * m))
        cv2.line(img, (x, m), (x, h - m), (0, 0, 200), 1)
        cv2.putText(
            img,
            f"{name} {v:.2f} ms",
            (x + 3, m + (0 if name == "p50" else 18)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 200),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(
        img,
        f"end-to-end latency, {len(totals)} frames (ms)",
        (m, 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.55,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        f"{edges[0]:.2f}",
        (m - 10, h - m + 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        f"{edges[-1]:.2f}",
        (w - m - 30, h - m + 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV always encodes PNG
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def run_source(
    analyzer: Analyzer,
    source: Any,
    out_dir: str | os.PathLike[str],
    fps: float = 15.0,
    drop: str = "none",
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream ``source`` through ``analyzer``, write the outputs, return the latency summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_tmp = out / ".annotated.mp4.tmp.mp4"
    writer: cv2.VideoWriter | None = None
    size = (0, 0)
    records: list[Result | FrameRecord] = []
    jsonl = io.StringIO()
    t0 = time.perf_counter()
    bar = tqdm(total=max_frames, unit="frame", disable=not progress, file=sys.stderr)
    try:
        for rec in analyzer.stream(source, drop=drop, max_frames=max_frames, keep_frames=True):
            records.append(rec)
            jsonl.write(json.dumps(rec.to_dict()) + "\n")
            if isinstance(rec, Result) and rec.frame is not None:
                img = rec.overlay(rec.frame)
                rec.frame = None  # release the pixels: only the summary is kept
                if writer is None:
                    size = (img.shape[1], img.shape[0])
                    writer = cv2.VideoWriter(
                        str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size
                    )
                    if not writer.isOpened():
                        raise SourceError(f"cannot write {video_tmp.name}: no MP4 encoder")
                if (img.shape[1], img.shape[0]) != size:
                    # The source changed frame size mid-stream: the video keeps its first size.
                    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                writer.write(img)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.release()
    wall = time.perf_counter() - t0
    if writer is not None and video_tmp.exists():
        os.replace(video_tmp, out / "annotated.mp4")
    summary = latency_summary(records, wall)
    _atomic_write(out / "frames.jsonl", jsonl.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["frame_index", "status", "label", "confidence", "lesions", "total_ms", "error"])
    for r in records:
        if isinstance(r, Result):
            w.writerow(
                [
                    r.frame_index,
                    "ok",
                    r.label,
                    f"{r.confidence:.5f}",
                    len(r.lesions),
                    f"{r.timings['total']:.3f}",
                    "",
                ]
            )
        else:
            w.writerow([r.frame_index, r.status, "", "", "", "", r.error])
    _atomic_write(out / "frames.csv", buf.getvalue().encode())
    _atomic_write(out / "latency.json", json.dumps(summary, indent=2).encode())
    res = [r for r in records if isinstance(r, Result)]
    if res:
        _atomic_write(
            out / "latency.png",
            _histogram_png(np.array([r.timings["total"] for r in res]), summary),
        )
    return summary
