"""The lesion refiner (``sdk/refiner.py``) on fresh 600×800 phantoms: the frame model alone vs
with the refiner, through ``sdk.Analyzer``, FP32 and INT8 frame models, on the same frames.

    python benchmarks/refiner_eval.py [--n 300] [--out benchmarks/results]

Frames: scanner-style phantoms, labels cycling normal / benign / malignant, seeds
``SEED_BASE + i`` -- disjoint from the refiner's training seeds (``export.refiner.TRAIN_SEED``
+ 0..2999) and from every stream the demo preset trains, validates, calibrates and reports on
(checked below). Metrics per configuration: Dice of ``Result.mask`` against the true mask (mean;
both empty counts 1) and over lesion frames only; accuracy of ``Result.label``; macro AUC of
``Result.probs`` (the decision's probabilities, one-vs-rest); HD95 of the mask (median, p90;
frames where both masks are non-empty; ``sdk.metrics.hd95``); the filled outlines vs
``Result.mask`` IoU (minimum over frames with a lesion); label-rule violations; ms per frame
(median ``Analyzer.run`` wall time, 2 threads); and the bare ONNX Runtime time of the frame
model, of the refiner and of both in a row (:func:`bare_latency`). Writes
``refiner-eval-<cpuclass>.md/json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import sdk
from sdk.cpu import cpu_class, describe
from sdk.metrics import dice, hd95, macro_auc
from sdk.synthetic import phantom

SEED_BASE = 96_000_000
TUNING_SEED = 97_000_000  # the tuning stream (benchmarks/refiner_tuning.py): decisions only
LABELS = ("normal", "benign", "malignant")


def _frames(
    n: int, base: int = SEED_BASE, start: int = 0, split: Any = None
) -> list[tuple[np.ndarray, np.ndarray, int, str]]:
    """``(frame, true mask, label id, echo pattern)`` of the phantoms ``base + start + i`` (labels
    cycling normal / benign / malignant by ``start + i``): the evaluation stream
    (:data:`SEED_BASE`) or the tuning one (:data:`TUNING_SEED`, ``benchmarks/refiner_tuning.py``);
    refused if a seed is one the refiner trained on, any report or preset stream, or the first
    10,000 of the other stream. ``split``: a ``sdk.synthetic.Split`` (or its name) the phantoms
    are drawn in (e.g. ``"ood-train"`` for the OOD twin's tuning frames)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from outline_quality import used_seeds

    from export.data import resolve_split
    from export.refiner import TRAIN_SEED

    split = resolve_split(split)

    seeds = [base + start + i for i in range(n)]
    other = TUNING_SEED if base == SEED_BASE else SEED_BASE
    taken = (
        used_seeds()
        | set(range(TRAIN_SEED, TRAIN_SEED + 10_000))
        | set(range(other, other + 10_000))
    )
    clash = taken.intersection(seeds)
    if clash:
        raise SystemExit(f"seeds used in training / reports / another stream: {sorted(clash)[:5]}")
    out = []
    for k, s in enumerate(seeds):
        y = (start + k) % 3
        img, truth, info = phantom(LABELS[y], size=(600, 800), seed=s, style="scanner", split=split)
        echo = info["lesions"][0]["echo_pattern"] if info["lesions"] else ""
        out.append((img, truth > 0, y, echo))
    return out


def _score(a: sdk.Analyzer, frames: list) -> dict[str, Any]:
    dices, les_d, hds, ious, probs, preds, ys, ms = [], [], [], [], [], [], [], []
    violations = flagged = 0
    echo: dict[str, list[int]] = {}  # pattern -> [lesion frames, called normal, label right]
    for img, tm, y, pattern in frames:
        t = time.perf_counter()
        r = a.run(img)
        ms.append((time.perf_counter() - t) * 1e3)
        pm = r.mask > 0
        d = 1.0 if not pm.any() and not tm.any() else dice(pm, tm)
        dices.append(d)
        if y:
            les_d.append(d)
        if pm.any() and tm.any():
            hds.append(hd95(pm, tm))
        if r.lesions:
            fill = np.zeros(pm.shape, np.uint8)
            for le in r.lesions:
                cv2.drawContours(fill, [le.contour, *le.other_contours], -1, 1, -1)
            ious.append(
                float((fill.astype(bool) & pm).sum() / max(1, (fill.astype(bool) | pm).sum()))
            )
        flagged += not r.in_scope  # an out-of-scope frame claims no diagnosis: not a violation
        violations += r.in_scope and (
            any(le.label == "normal" for le in r.lesions)
            + (r.label == "normal" and bool(r.lesions))
            + (r.label != "normal" and not r.lesions)
        )
        preds.append(LABELS.index(r.label) if r.label in LABELS else -1)
        if y:
            e = echo.setdefault(pattern, [0, 0, 0])
            e[0] += 1
            e[1] += r.label == "normal"
            e[2] += preds[-1] == y
        probs.append([r.probs.get(k, 0.0) for k in LABELS])
        ys.append(y)
    ys_a, pr = np.array(ys), np.array(preds)
    return {
        "n": len(frames),
        "dice": float(np.mean(dices)),
        "lesion_dice": float(np.mean(les_d)),
        "accuracy": float((ys_a == pr).mean()),
        "macro_auc": float(macro_auc(ys_a, np.array(probs))),
        "hd95_median_px": float(np.median(hds)),
        "hd95_p90_px": float(np.percentile(hds, 90)),
        "hd95_frames": len(hds),
        "outline_iou_min": float(min(ious)) if ious else None,
        "label_rule_violations": int(violations),
        "out_of_scope": int(flagged),
        "confusion": [[int(((ys_a == t) & (pr == p)).sum()) for p in range(3)] for t in range(3)],
        "ms_per_frame": float(np.median(ms)),
        "by_echo_pattern": {
            k: {"lesion_frames": v[0], "called_normal": v[1], "accuracy": v[2] / v[0]}
            for k, v in sorted(echo.items())
        },
    }


def bare_latency(refiner: Any = None, repeat: int = 300) -> dict[str, float]:
    """Median ms of bare ONNX Runtime sessions (2 threads, the SDK's options), interleaved: the
    frame model on one 128×128 input, the refiner (``refiner``: a loaded
    ``sdk.refiner.LesionRefiner`` or a path, default the embedded one) on one crop at its input
    size -- with its mirror in the same call when its metadata says ``flip`` -- and the two in a
    row (what one lesion adds to a frame's model time)."""
    import onnxruntime as ort

    from sdk.backends.onnxruntime import session_options
    from sdk.refiner import LesionRefiner

    ref = (
        refiner
        if isinstance(refiner, LesionRefiner)
        else LesionRefiner(refiner or sdk.default_refiner(), threads=1)
    )
    batch = 2 if ref.flip else 1

    def sess(p: Path) -> Any:
        return ort.InferenceSession(
            str(p), session_options(ort, 2, True), providers=["CPUExecutionProvider"]
        )

    s1, s2 = sess(sdk.default_model()), sess(ref.path)
    x1 = np.zeros((1, 1, 128, 128), np.float32)
    x2 = np.zeros((batch, 1, ref.size, ref.size), np.float32)
    calls = {
        "frame model": lambda: s1.run(None, {"input": x1}),
        "refiner (1 crop)": lambda: s2.run(None, {"input": x2}),
        "frame model + refiner": lambda: (s1.run(None, {"input": x1}), s2.run(None, {"input": x2})),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(repeat + 10):
        for k, f in calls.items():
            t = time.perf_counter()
            f()
            if i >= 10:
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="frames (default 300)")
    ap.add_argument("--out", default="benchmarks/results", help="folder for the md / json")
    ap.add_argument(
        "--refiner", default=None, help="refiner .onnx to score (default: the embedded one)"
    )
    ap.add_argument("--stem", default=None, help="output name (default refiner-eval-<cpu class>)")
    args = ap.parse_args(argv)
    refiner = Path(args.refiner) if args.refiner else sdk.default_refiner()
    frames = _frames(args.n)
    rows = {}
    for prec in ("fp32", "int8"):
        for ref in (False, True):
            name = f"default {prec}" + (" + refiner" if ref else "")
            with sdk.Analyzer(
                sdk.default_model(prec), threads=2, refiner=refiner if ref else False
            ) as a:
                for img, *_ in frames[:3]:
                    a.run(img)  # warm-up
                rows[name] = _score(a, frames)
            print(name, json.dumps({k: v for k, v in rows[name].items() if k != "confusion"}))
    from sdk.refiner import LesionRefiner

    ref = LesionRefiner(refiner, threads=1)
    bare = bare_latency(ref)
    print("bare ONNX Runtime ms", json.dumps(bare))
    cls = cpu_class()
    info = describe()
    doc = {
        "machine": info,
        "cpu_class": cls,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/refiner_eval.py " + " ".join(argv or sys.argv[1:]),
        "seeds": f"{SEED_BASE}..{SEED_BASE + args.n - 1}",
        "refiner": {
            "file": refiner.name,
            "sha256": _sha(refiner),
            "input_size": ref.size,
            "flip": ref.flip,
        },
        "rows": rows,
        "bare_ort_ms": bare,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or f"refiner-eval-{cls}"
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"# The lesion refiner: {args.n} fresh 600×800 scanner-style phantoms",
        "",
        f"- command: `{doc['command']}`; {doc['date']}",
        f"- CPU: {info}; class {cls}; 2 threads; seeds {doc['seeds']} (disjoint from training)",
        f"- refiner: `{refiner.name}` (sha256 {doc['refiner']['sha256'][:12]}), input "
        f"{doc['refiner']['input_size']}², flip {doc['refiner']['flip']}",
        "- Dice: `Result.mask` vs truth, mean (both empty = 1); lesion Dice: lesion frames only; "
        "accuracy: `Result.label` (out of scope = wrong); AUC: `Result.probs`, macro "
        "one-vs-rest; HD95: median / p90 over frames with both masks non-empty; outline IoU: "
        "filled outlines vs mask, minimum",
        "",
        "| configuration | Dice | lesion Dice | accuracy | macro AUC | HD95 median px "
        "| HD95 p90 px | outline IoU min | rule violations | out of scope | ms/frame |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in rows.items():
        iou = r["outline_iou_min"]
        lines.append(
            f"| {name} | {r['dice']:.3f} | {r['lesion_dice']:.3f} | {r['accuracy']:.3f} | "
            f"{r['macro_auc']:.3f} | {r['hd95_median_px']:.1f} | {r['hd95_p90_px']:.1f} | "
            f"{'–' if iou is None else round(iou, 3)} | {r['label_rule_violations']} | "
            f"{r['out_of_scope']} | {r['ms_per_frame']:.2f} |"
        )
    lines += [
        "",
        "Bare ONNX Runtime (2 threads, the SDK's session options, median of 300, interleaved): "
        + "; ".join(f"{k} {v:.2f} ms" for k, v in bare.items())
        + f" ({bare['frame model + refiner'] / bare['frame model']:.2f}x the frame model alone).",
    ]
    lines += ["", "Confusion (rows truth normal / benign / malignant, columns `Result.label`):", ""]
    for name, r in rows.items():
        lines.append(f"- {name}: {r['confusion']}")
    pats = list(next(iter(rows.values()))["by_echo_pattern"])
    lines += [
        "",
        "Lesion frames by the lesion's echo pattern (BI-RADS descriptor drawn by the phantom): "
        "called normal / lesion frames (accuracy)",
        "",
        "| configuration | " + " | ".join(pats) + " |",
        "|---|" + "--:|" * len(pats),
    ]
    for name, r in rows.items():
        cells = [r["by_echo_pattern"][p] for p in pats]
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{c['called_normal']}/{c['lesion_frames']} ({c['accuracy']:.2f})" for c in cells
            )
            + " |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
