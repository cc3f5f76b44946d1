"""The export report: every artifact through :class:`sdk.Analyzer` on the same frames, written to
report.md, report.json and report.png."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from export._files import write_text, writing
from export._pipeline.common import Artifact, _clean
from sdk import metrics
from sdk.errors import InputError

# --------------------------------------------------------------------------- report


def _frame_list(frames: Any) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], tuple[str, ...]]:
    if hasattr(frames, "get") and hasattr(frames, "class_names"):
        names = tuple(frames.class_names)
        items = [frames.get(i) for i in range(len(frames))]
    else:
        items = list(frames)
        names = ()
    if not items:
        raise InputError("report needs at least one annotated frame (image, mask, label)")
    return items, names


def _measure(
    art: Artifact,
    items: list[tuple[np.ndarray, np.ndarray, int]],
    frame_classes: tuple[str, ...],
    threads: int,
    warmup: int,
    progress: bool,
) -> dict[str, Any]:
    from sdk.analyzer import Analyzer

    with Analyzer(art.path, threads=threads) as a:
        classes = tuple(a.class_names)
        # Frames label by name; map them onto this artifact's class order.
        if frame_classes and sorted(frame_classes) != sorted(classes):
            raise InputError(
                f"{art.name}: classes {list(classes)} differ from the frames' {list(frame_classes)}"
            )
        to_art = [classes.index(c) for c in frame_classes or classes]
        for image, _, _ in items[:warmup]:
            a.run(image)
        a.reset()
        dices, ious, ms, labels, probs = [], [], [], [], []
        bar = tqdm(items, desc=f"report {art.name}", disable=not progress, leave=False)
        for image, mask, label in bar:
            r = a.run(image)
            dices.append(metrics.dice(r.mask > 0, mask > 0))
            ious.append(metrics.iou(r.mask > 0, mask > 0))
            ms.append(r.timings["total"])
            labels.append(to_art[int(label)])
            probs.append([r.raw_probs[c] for c in classes])
    y = np.asarray(labels)
    p = np.asarray(probs)
    t = np.asarray(ms)
    return {
        "dice": float(np.mean(dices)),
        "iou": float(np.mean(ious)),
        "accuracy": metrics.accuracy(y, p.argmax(1)),
        "macro_auc": _clean(metrics.macro_auc(y, p)),
        "ms_per_frame": float(np.median(t)),
        "ms_p90": float(np.percentile(t, 90)),
        "fps": float(1000.0 / np.mean(t)),
        "precision": a.metadata.precision,
    }


_KEYS = ("dice", "iou", "accuracy", "macro_auc")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report(
    artifacts: Sequence[Artifact],
    frames: Any,
    out_dir: str | os.PathLike[str],
    *,
    threads: int = 1,
    warmup: int = 3,
    title: str = "sonoedge export report",
    stem: str = "report",
    progress: bool = False,
) -> tuple[Path, Path, Path]:
    """Run every artifact through :class:`sdk.Analyzer` on the same ``frames`` and write
    ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` (latency against Dice / accuracy).

    Args:
        artifacts: rows; those with a path and status ``"ok"`` are measured, the others are
            listed with their status (e.g. ``"skipped: TensorRT not installed"``). The row with
            ``reference=True`` (else the first measured) is what the drops are against.
        frames: a :class:`export.data.FrameProvider` or ``(image uint8 (H, W), mask (H, W),
            label id)`` tuples (ids in the artifacts' class order).
        threads: CPU threads of the Analyzer (ONNX Runtime intra-op and kernels).
        warmup: frames run first and not timed.

    Per row: format, status, size (MB, 10⁶ bytes), Dice / IoU (frame resolution, both-empty
    frames count 1), accuracy, macro AUC (one-vs-rest, on the image-level probabilities),
    ms/frame (median of ``Analyzer.run`` wall time: preprocess + inference + post-process)
    and FPS (1000 / mean ms), and the drop of each metric against the reference.
    """
    out = Path(out_dir)
    items, frame_classes = _frame_list(frames)
    if not artifacts:
        raise InputError("report needs at least one artifact")
    rows: list[dict[str, Any]] = []
    for art in artifacts:
        row: dict[str, Any] = {
            "name": art.name,
            "format": art.format,
            "status": art.status,
            "path": None if art.path is None else str(art.path),
            "size_mb": None,
            "reference": art.reference,
            "note": art.note,
            **dict.fromkeys((*_KEYS, "ms_per_frame", "ms_p90", "fps")),
        }
        if art.status == "ok" and art.path is not None:
            row["size_mb"] = Path(art.path).stat().st_size / 1e6
            row.update(_measure(art, items, frame_classes, threads, warmup, progress))
        rows.append(row)
    measured = [r for r in rows if r["dice"] is not None]
    ref = next((r for r in measured if r["reference"]), measured[0] if measured else None)
    for r in rows:
        r["drop"] = {
            k: None if ref is None or r[k] is None or ref[k] is None else ref[k] - r[k]
            for k in _KEYS
        }
    shape = items[0][0].shape[:2]
    from sdk.bench.timing import machine_info

    doc = {
        "title": title,
        "reference": None if ref is None else ref["name"],
        "frames": {"n": len(items), "shape": list(shape), "warmup": warmup},
        "threads": threads,
        "machine": machine_info(),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    md_path, js_path, png_path = (out / f"{stem}.{e}" for e in ("md", "json", "png"))
    write_text(js_path, json.dumps(doc, indent=2) + "\n")
    write_text(md_path, _markdown(doc))
    _plot_report(rows, png_path, title)
    return md_path, js_path, png_path


def _markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# {doc['title']}",
        "",
        f"{doc['frames']['n']} frames of {doc['frames']['shape'][0]}×{doc['frames']['shape'][1]} "
        f"through `sdk.Analyzer` ({doc['threads']} thread(s), {doc['frames']['warmup']} warm-up "
        f"frames); drops against **{doc['reference']}** on the same frames "
        "(positive = worse). Dice / IoU at frame resolution, both-empty frames count 1.",
        "",
        f"Machine: {m['cpu']} ({m.get('cpu_class', '?')}: {m.get('isa', '?')}; sonoedge "
        f"kernels {m.get('kernels_isa', '?')}), {m['cores']} cores, {m['device']}; "
        f"{m['versions']}; {m['date']}.",
        "",
        "| artifact | format | status | size MB | Dice | IoU | accuracy | macro AUC | ms/frame "
        "| FPS | ΔDice | ΔIoU | Δaccuracy | ΔAUC |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["rows"]:
        d = r["drop"]
        lines.append(
            f"| {r['name']} | {r['format']} | {r['status']} | {_fmt(r['size_mb'], 2)} "
            f"| {_fmt(r['dice'])} | {_fmt(r['iou'])} | {_fmt(r['accuracy'])} "
            f"| {_fmt(r['macro_auc'])} | {_fmt(r['ms_per_frame'], 2)} | {_fmt(r['fps'], 1)} "
            f"| {_fmt(d['dice'])} | {_fmt(d['iou'])} | {_fmt(d['accuracy'])} "
            f"| {_fmt(d['macro_auc'])} |"
        )
    notes = [f"- **{r['name']}**: {r['note']}" for r in doc["rows"] if r.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _plot_report(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    pts = [r for r in rows if r["ms_per_frame"] is not None]
    for key, marker in (("dice", "o"), ("accuracy", "s")):
        xs = [r["ms_per_frame"] for r in pts]
        ys = [r[key] for r in pts]
        ax.scatter(xs, ys, marker=marker, label=key)
    for r in pts:
        ax.annotate(
            r["name"],
            (r["ms_per_frame"], r["dice"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    skipped = [r["name"] for r in rows if r["ms_per_frame"] is None]
    if skipped:
        ax.text(
            0.01,
            0.01,
            "not measured: " + ", ".join(skipped),
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
        )
    ax.set(xlabel="ms / frame (Analyzer.run, median)", ylabel="Dice / accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png")
