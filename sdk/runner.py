"""``sonoedge run``: stream a source through an Analyzer and write what a person looks at.

Outputs in ``out_dir`` (created when the first frame comes out of the analyzer; a source that
cannot be opened leaves nothing behind):

* ``frames.jsonl`` and ``frames.csv``: one record per frame (dropped and failed frames
  included), written and flushed as each frame finishes, so an interrupted or failed run keeps
  every record before the stop. A record names the frame's file (``file``) when the source has
  one (an image of a folder, the video or DICOM file), and whether the frame is in scope
  (``in_scope``, ``scope_score``: see :class:`sdk.Result`; CSV ``in_scope`` 1 / 0, the score
  empty for artifacts without a fitted scope);
* ``annotated.mp4``: the overlays, written to a hidden temporary file and renamed when the run
  ends -- also when it is interrupted (SIGINT) or its source fails part-way;
* ``skipped.jsonl``: the files of the source that were not used, and why (only when any were);
* ``latency.json`` (p50 / p95 / p99 / mean / FPS per stage, and how the run ``ended``) and
  ``latency.png`` (histogram of the end-to-end time; only when a frame was analyzed).

Outputs of an earlier run in the same folder are replaced; a file this run does not write is
removed rather than left to look like this run's.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from tqdm import tqdm

from sdk.analyzer import Analyzer
from sdk.errors import InputError, SDKError
from sdk.result import Result
from sdk.sources import Frame, FrameSource, open_source
from sdk.stream import FrameRecord

__all__ = ["MAX_FPS", "OUTPUT_NAMES", "check_out_dir", "latency_summary", "run_source"]

#: Every file a run writes into its folder (those it has no content for are not written).
OUTPUT_NAMES = (
    "annotated.mp4",
    "frames.jsonl",
    "frames.csv",
    "skipped.jsonl",
    "latency.json",
    "latency.png",
)
_VIDEO_TMP = ".annotated.mp4.tmp.mp4"
MAX_FPS = 1000.0  # the annotated MP4's frame-rate bound (OpenCV's writer hangs on inf)


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
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: Any) -> None:
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def _label_x(x: int, text_w: int, lo: int, hi: int) -> int:
    """Left end of a marker's label: right of its line when the label fits before ``hi``,
    otherwise left of it, never before ``lo`` (a p99 at the right edge stays readable)."""
    if x + 4 + text_w <= hi:
        return x + 4
    return max(lo, x - 4 - text_w)


def _histogram_png(totals: np.ndarray, summary: dict[str, Any]) -> bytes:
    """A latency histogram drawn with OpenCV (no plotting dependency in the runtime): bars of
    the end-to-end time, p50 / p99 markers with their labels inside the picture, both axes
    labelled (x: ms, y: frames)."""
    w, h = 640, 360
    left, right, top, bottom = 64, w - 24, 48, h - 50  # the plot area
    img = np.full((h, w, 3), 255, np.uint8)
    hist, edges = np.histogram(totals, bins=40)
    peak = max(int(hist.max()), 1)
    bw = (right - left) / len(hist)
    for i, c in enumerate(hist):
        x0 = int(left + i * bw)
        y0 = int(bottom - (bottom - top) * c / peak)
        if c:
            cv2.rectangle(img, (x0, y0), (int(x0 + bw) - 1, bottom), (200, 120, 40), -1)
    black = (0, 0, 0)
    cv2.line(img, (left, bottom), (right, bottom), black, 1)
    cv2.line(img, (left, top), (left, bottom), black, 1)
    # y axis: ticks at 0 and at the tallest bar, and its name written upwards.
    for value, y in ((0, bottom), (peak, top)):
        cv2.line(img, (left - 4, y), (left, y), black, 1)
        (tw, th), _ = cv2.getTextSize(str(value), _FONT, 0.4, 1)
        _text(img, str(value), (left - 7 - tw, y + th // 2), 0.4, black)
    (tw, th), base = cv2.getTextSize("frames", _FONT, 0.45, 1)
    name = np.full((th + base + 4, tw + 4, 3), 255, np.uint8)
    _text(name, "frames", (2, th + 1), 0.45, black)
    name = cv2.rotate(name, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = (top + bottom - name.shape[0]) // 2
    img[y0 : y0 + name.shape[0], 6 : 6 + name.shape[1]] = name
    # x axis: the range and its unit.
    lo_text, hi_text = f"{edges[0]:.2f}", f"{edges[-1]:.2f}"
    (tw, _), _ = cv2.getTextSize(hi_text, _FONT, 0.4, 1)
    _text(img, lo_text, (left - 10, bottom + 18), 0.4, black)
    _text(img, hi_text, (min(right - tw // 2, w - 4 - tw), bottom + 18), 0.4, black)
    _text(img, "end-to-end time per frame (ms)", ((left + right) // 2 - 110, h - 12), 0.45, black)
    _text(img, f"end-to-end latency, {len(totals)} frames", (left, 26), 0.55, black)
    red = (0, 0, 200)
    span = max(float(edges[-1] - edges[0]), 1e-9)
    for row, (label, key) in enumerate((("p50", "p50_ms"), ("p99", "p99_ms"))):
        v = float(summary["total"][key])
        x = round(left + (v - edges[0]) / span * (right - left))
        cv2.line(img, (x, top), (x, bottom), red, 1)
        text = f"{label} {v:.2f} ms"
        (tw, th), _ = cv2.getTextSize(text, _FONT, 0.45, 1)
        _text(img, text, (_label_x(x, tw, 2, w - 2), top + th + 2 + 18 * row), 0.45, red)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV always encodes PNG
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _source_path(source: Any) -> tuple[Path | None, bool]:
    """(path, is_pattern) of a path-like source; (None, False) for a camera, array, iterator."""
    if isinstance(source, str) and "!" in source:  # a GStreamer pipeline
        return None, False
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        return Path(text), any(c in text for c in "*?[")
    return None, False


def check_out_dir(out_dir: str | os.PathLike[str], source: Any = None) -> Path:
    """``out_dir`` as a Path, or :class:`InputError` saying why it cannot hold the outputs of a
    run of ``source``: an existing file, a path below a file, the source's own folder (the next
    run would read ``latency.png`` as a frame), or a source that is one of the outputs. Nothing
    is created."""
    out = Path(out_dir)
    if not str(out_dir).strip():
        raise InputError("the output folder is an empty path; give a folder, e.g. --out results")
    if out.exists() and not out.is_dir():
        raise InputError(
            f"output folder {out} is an existing file; give a folder path (it is created when "
            "missing), e.g. --out results"
        )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"output folder {out} cannot be created: {parent} is a file, not a folder")
    src, pattern = _source_path(source)
    if src is None:
        return out
    o = out.resolve()
    folder = src.parent if pattern else src
    if (pattern or src.is_dir()) and folder.resolve() == o:
        raise InputError(
            f"output folder {out} is the source folder: the next run would read this run's "
            f"latency.png as a frame; write elsewhere, e.g. --out {folder / 'sonoedge-run'}"
        )
    if src.is_file() and src.resolve().parent == o and src.name in (*OUTPUT_NAMES, _VIDEO_TMP):
        raise InputError(
            f"{src} is an output of an earlier run into {out}, which this run would replace; "
            "write elsewhere (another --out)"
        )
    return out


class _Tap(FrameSource):
    """The source the stream reads, noting each frame's file by frame index as it passes."""

    def __init__(self, inner: FrameSource, file: str | None) -> None:
        super().__init__(inner.color)
        self.inner = inner
        self.metadata = inner.metadata
        self.n_frames = inner.n_frames
        self.skipped = inner.skipped  # the same list: files skipped while iterating included
        self.kind = inner.kind
        self.file = file
        self.files: dict[int, str] = {}

    def _frames(self) -> Iterator[Frame]:
        for frame in self.inner:
            name = frame.path or self.file
            if name is not None:
                self.files[frame.index] = name
            yield frame

    def close(self) -> None:
        self.inner.close()
        super().close()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Finalizing the outputs is not interrupted by a second Ctrl-C (milliseconds); the
    interrupt is raised once they are complete."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda *_: hits.append(1))
    except ValueError:  # pragma: no cover - not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hits:
        raise KeyboardInterrupt


class _Outputs:
    """The output files of one run, opened with its first record and written as frames end."""

    def __init__(self, out: Path, fps: float) -> None:
        self.out = out
        self.fps = fps
        self.started = False
        self.writer: cv2.VideoWriter | None = None
        self.size = (0, 0)
        self.jsonl: TextIO | None = None
        self.csvf: TextIO | None = None
        self.csv: Any = None

    def start(self) -> None:
        out = self.out
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name in (*OUTPUT_NAMES, _VIDEO_TMP):  # an earlier run's: replaced or removed
                (out / name).unlink(missing_ok=True)
            self.jsonl = open(out / "frames.jsonl", "w", encoding="utf-8")
            self.csvf = open(out / "frames.csv", "w", encoding="utf-8", newline="")
        except OSError as exc:
            self.close_files()
            raise InputError(
                f"cannot write into the output folder {out}: {exc.strerror or exc}; choose a "
                "writable folder (--out)"
            ) from exc
        self.started = True
        self.csv = csv.writer(self.csvf)
        self.csv.writerow(
            [
                "frame_index",
                "status",
                "label",
                "confidence",
                "lesions",
                "total_ms",
                "file",
                "error",
                "in_scope",
                "scope_score",
            ]
        )

    def add(self, rec: Result | FrameRecord, file: str | None) -> None:
        d = rec.to_dict()
        if file is not None:
            d["file"] = file
        assert self.jsonl is not None and self.csvf is not None
        self.jsonl.write(json.dumps(d) + "\n")
        self.jsonl.flush()
        if isinstance(rec, Result):
            row = [
                rec.frame_index,
                "ok",
                rec.label,
                f"{rec.confidence:.5f}",
                len(rec.lesions),
                f"{rec.timings['total']:.3f}",
                file or "",
                "",
                int(rec.in_scope),
                "" if rec.scope_score is None else f"{rec.scope_score:.5f}",
            ]
        else:
            row = [rec.frame_index, rec.status, "", "", "", "", file or "", rec.error, "", ""]
        self.csv.writerow(row)
        self.csvf.flush()
        if isinstance(rec, Result) and rec.frame is not None:
            img = rec.overlay(rec.frame)
            rec.frame = None  # release the pixels: only the summary is kept
            self._write_video(img)

    def _write_video(self, img: np.ndarray) -> None:
        if self.writer is None:
            self.size = (img.shape[1], img.shape[0])
            tmp = self.out / _VIDEO_TMP
            self.writer = cv2.VideoWriter(
                str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size
            )
            if not self.writer.isOpened():
                self.writer = None
                tmp.unlink(missing_ok=True)
                raise SDKError(
                    f"cannot write {self.out / 'annotated.mp4'}: this OpenCV has no MP4 (mp4v) "
                    "encoder; install opencv-python-headless from PyPI"
                )
        if (img.shape[1], img.shape[0]) != self.size:
            # The source changed frame size mid-stream: the video keeps its first size.
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(img)

    def close_files(self) -> None:
        for f in (self.jsonl, self.csvf):
            if f is not None:
                f.close()
        self.jsonl = self.csvf = None

    def finish(
        self, records: list[Result | FrameRecord], summary: dict[str, Any], skipped: list[Any]
    ) -> list[Path]:
        """Finalize the video, close the records, write skipped / latency files; the paths
        written (all of which exist)."""
        out = self.out
        tmp = out / _VIDEO_TMP
        try:
            if self.writer is not None:
                self.writer.release()
                self.writer = None
                if tmp.exists() and tmp.stat().st_size > 0:
                    os.replace(tmp, out / "annotated.mp4")
        finally:
            tmp.unlink(missing_ok=True)
            self.close_files()
        if skipped:
            lines = [json.dumps({"file": str(s.path), "reason": s.reason}) for s in skipped]
            _atomic_write(out / "skipped.jsonl", ("\n".join(lines) + "\n").encode())
        _atomic_write(out / "latency.json", json.dumps(summary, indent=2).encode())
        res = [r for r in records if isinstance(r, Result)]
        if res:
            totals = np.array([r.timings["total"] for r in res])
            _atomic_write(out / "latency.png", _histogram_png(totals, summary))
        return [out / n for n in OUTPUT_NAMES if (out / n).exists()]


def run_source(
    analyzer: Analyzer,
    source: Any,
    out_dir: str | os.PathLike[str],
    fps: float = 15.0,
    drop: str = "none",
    max_frames: int | None = None,
    progress: bool = True,
    on_finish: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Stream ``source`` through ``analyzer``, write the outputs, return the latency summary.

    The summary holds the counts, per-stage percentiles, ``ended`` ("complete", "interrupted"
    or "failed: <error>") and ``outputs``: the files written, every one of which exists. An
    interrupted (KeyboardInterrupt) or failed run still finalizes what it analyzed, then
    re-raises; ``on_finish(summary)`` is called in both cases, before that.

    Raises:
        InputError: ``fps`` not a finite number in (0, 1000], ``max_frames`` not None or >= 1,
            an output folder that cannot be used (see :func:`check_out_dir`).
        SourceError: the source cannot be opened (nothing is written) or fails part-way
            (every frame before is written).
    """
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= MAX_FPS:
        # `not 0 < nan` is True: NaN is refused here too.
        raise InputError(f"fps must be a finite number in (0, {MAX_FPS:g}], got {fps!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise InputError(f"max_frames must be None or an integer >= 1, got {max_frames!r}")
    out = check_out_dir(out_dir, source)
    path, _ = _source_path(source)
    stream_src: Any = source
    tap: _Tap | None = None
    if path is not None or (isinstance(source, int) and not isinstance(source, bool)):
        # Opened here, before any output exists: a source that cannot be opened leaves nothing.
        inner = open_source(source)
        tap = _Tap(inner, str(path) if path is not None and path.is_file() else None)
        stream_src = tap
    outputs = _Outputs(out, float(fps))
    records: list[Result | FrameRecord] = []
    bar: tqdm | None = None
    total = tap.n_frames if tap is not None and tap.n_frames else None
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    ended = "complete"
    t0 = time.perf_counter()
    it = analyzer.stream(stream_src, drop=drop, max_frames=max_frames, keep_frames=True)
    try:
        for rec in it:
            if not outputs.started:
                outputs.start()
                if progress:  # created with the first frame: no "0frame" line on an early error
                    bar = tqdm(total=total, unit="frame", file=sys.stderr)
            records.append(rec)
            outputs.add(rec, tap.files.pop(rec.frame_index, None) if tap else None)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        ended = "interrupted"
        raise
    except BaseException as exc:
        ended = f"failed: {exc}"
        raise
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stops the stream's threads now, not when the generator is collected
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        summary = latency_summary(records, wall)
        summary["ended"] = ended
        written: list[Path] = []
        # The output folder inside a source folder is skipped as a subfolder: not worth a line.
        skipped = [s for s in (tap.skipped if tap else []) if s.path.resolve() != out.resolve()]
        summary["skipped"] = len(skipped)
        if outputs.started:
            with _sigint_deferred():
                written = outputs.finish(records, summary, skipped)
        summary["outputs"] = [str(p) for p in written]
        if on_finish is not None:
            on_finish(summary)
    return summary
