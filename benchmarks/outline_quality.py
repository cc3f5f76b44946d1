"""Outline quality of ``sdk.Analyzer`` on fresh 600×800 phantoms: old grid tracing vs new.

    python benchmarks/outline_quality.py [--n 200] [--model sdk/models/default-fp32.onnx]
        [--out benchmarks/results] [--picture docs/outlines-before-after.png]

For each frame (labels cycling normal / benign / malignant, seeds ``SEED_BASE + i``, checked
disjoint from every phantom seed the demo preset trains, validates, calibrates and reports on):

* **after** -- what ``Analyzer.run`` returns now: outlines traced on the frame-resolution mask
  (:func:`sdk.kernels.lesion_outlines`) and the label rule of :class:`sdk.Result`;
* **before** -- the previous post-process rebuilt from the same model outputs: the mask of the raw
  logits, each grid component's border traced on the model's mask grid (32×32 or 64×64) and
  mapped to cell centres in frame pixels, labels = argmax of the classifier's own
  probabilities (``raw_probs``).

Metrics: filled outline vs ``Result.mask`` IoU (median, 5th percentile; frames where either is
non-empty), HD95 of the filled outline against the true mask (median, p90; frames where both are
non-empty; boundary pixels, symmetric, Euclidean distance transform), mask Dice against the
true mask (mean; both empty counts as 1), label-rule violations (a lesion labelled normal, image
normal beside a lesion, image not normal without a lesion). Also HD95 of ``Result.mask`` itself:
the floor for any outline that is the mask. Writes ``outline-quality-<cpuclass>.md/json``.
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
from sdk.synthetic import phantom

SEED_BASE = 60_000_000
LABELS = ("normal", "benign", "malignant")


def used_seeds(per_stream: int = 5000) -> set[int]:
    """Phantom seeds of the demo preset's frame streams (training ``0``, validation
    ``0 + 7_919_003``, calibration / held-out / report ``0 + *_SEED``), the first
    ``per_stream`` indices of each (the preset uses at most 600): export.data.SyntheticFrames
    draws frame ``i`` of stream ``s`` with seed ``SeedSequence([s, i]).generate_state(1)[0]``."""
    from export.pipeline import CALIB_SEED, HOLDOUT_SEED, REPORT_SEED

    out: set[int] = set()
    for s in (0, 7_919_003, CALIB_SEED, HOLDOUT_SEED, REPORT_SEED):
        for i in range(per_stream):
            out.add(int(np.random.SeedSequence([s, i]).generate_state(1)[0]))
    return out


def _border(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.uint8)
    er = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return m & ~er & 1


def hd95(a: np.ndarray, b: np.ndarray) -> float | None:
    """Symmetric 95th-percentile boundary distance (pixels); None when either is empty."""
    ba, bb = _border(a > 0), _border(b > 0)
    if not ba.any() or not bb.any():
        return None
    da = cv2.distanceTransform((1 - bb).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    db = cv2.distanceTransform((1 - ba).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(np.percentile(np.concatenate([da[ba > 0], db[bb > 0]]), 95))


def iou(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a > 0, b > 0
    u = int((a | b).sum())
    return None if u == 0 else float((a & b).sum() / u)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def fill(shape: tuple[int, int], contours: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    if contours:
        cv2.fillPoly(out, [c.reshape(-1, 1, 2).astype(np.int32) for c in contours], 1)
    return out


def violations(label: str, lesion_labels: list[str]) -> dict[str, int]:
    return {
        "normal_lesion": sum(lab == "normal" for lab in lesion_labels),
        "normal_image_with_lesion": int(bool(lesion_labels) and label == "normal"),
        "lesion_image_without_lesion": int(not lesion_labels and label != "normal"),
    }


def before(a: sdk.Analyzer, out: dict[str, np.ndarray], hw: tuple[int, int], roi) -> dict:
    """The previous post-process from the same outputs: raw-logit mask, grid borders at cell
    centres, argmax labels of the classifier's own probabilities."""
    md = a.metadata
    nat = sdk.kernels.native()
    lg = np.ascontiguousarray(out[md.outputs["mask_logits"]][0, 0], dtype=np.float32)
    hm, wm = lg.shape
    sx, sy = roi[2] / wm, roi[3] / hm
    _, _, stats, borders = nat.components_cpu(
        lg, a.threshold, sx, sy, float(md.min_lesion_area_px), True, roi[0], roi[1]
    )
    mask = np.empty(hw, np.uint8)
    nat.mask_post_cpu(lg, mask, roi, a.threshold, 1, 1)
    return {"mask": mask, "contours": list(borders), "k": len(stats)}


def run(
    n: int, model: str | None, seed_base: int, style: str = "scanner"
) -> tuple[list[dict], list[tuple]]:
    seeds = [seed_base + i for i in range(n)]
    clash = set(seeds) & used_seeds()
    if clash:
        raise SystemExit(
            f"seeds {sorted(clash)[:5]} are training / report seeds: pick another base"
        )
    rows: list[dict] = []
    keep: list[tuple] = []
    with sdk.Analyzer(model, threads=1) as a:
        for i, seed in enumerate(seeds):
            label = LABELS[i % 3]
            img, truth, _ = phantom(label, size=(600, 800), seed=seed, style=style)
            pipe = a.pipeline  # the public stages: prepare → infer, then finish timed alone
            staged = pipe.infer(pipe.prepare(img, None, "bgr"))
            old = before(a, staged.outputs, staged.size, staged.roi)
            t0 = time.perf_counter()
            r = pipe.finish(staged)
            post_ms = (time.perf_counter() - t0) * 1e3
            new_fill = fill(
                r.mask.shape, [c for les in r.lesions for c in (les.contour, *les.other_contours)]
            )
            old_fill = fill(r.mask.shape, old["contours"])
            # Before: labels of the classifier itself (argmax of raw_probs); one per grid lesion.
            old_img = max(r.raw_probs, key=r.raw_probs.get)
            old_les = [max(les.raw_probs, key=les.raw_probs.get) for les in r.lesions]
            old_les += [old_img] * max(0, old["k"] - len(old_les))  # vanished regions
            rows.append(
                {
                    "seed": seed,
                    "label": label,
                    "lesions": len(r.lesions),
                    "after": {
                        "iou_outline_mask": iou(new_fill, r.mask),
                        "hd95_outline": hd95(new_fill, truth),
                        "hd95_mask": hd95(r.mask, truth),
                        "dice": dice(r.mask, truth),
                        "violations": violations(r.label, [les.label for les in r.lesions]),
                        "postprocess_ms": post_ms,
                    },
                    "before": {
                        "iou_outline_mask": iou(old_fill, old["mask"]),
                        "hd95_outline": hd95(old_fill, truth),
                        "hd95_mask": hd95(old["mask"], truth),
                        "dice": dice(old["mask"], truth),
                        "violations": violations(old_img, old_les),
                    },
                }
            )
            want = "malignant" if not keep else "benign"
            if len(keep) < 2 and label == want and r.lesions:
                keep.append((img, r, old, truth))
    return rows, keep


def _stats(rows: list[dict], side: str) -> dict[str, Any]:
    def vals(key: str) -> np.ndarray:
        return np.array([r[side][key] for r in rows if r[side][key] is not None], float)

    io, hd, hm, dc = vals("iou_outline_mask"), vals("hd95_outline"), vals("hd95_mask"), vals("dice")
    viol = {k: sum(r[side]["violations"][k] for r in rows) for k in rows[0][side]["violations"]}
    by_class = {}
    for lab in LABELS[1:]:
        h = np.array(
            [
                r[side]["hd95_outline"]
                for r in rows
                if r["label"] == lab and r[side]["hd95_outline"] is not None
            ]
        )
        by_class[lab] = round(float(np.median(h)), 2) if h.size else None
    return {
        "iou_outline_mask_median": round(float(np.median(io)), 4),
        "iou_outline_mask_p5": round(float(np.percentile(io, 5)), 4),
        "iou_frames": int(io.size),
        "hd95_outline_median_px": round(float(np.median(hd)), 2),
        "hd95_outline_p90_px": round(float(np.percentile(hd, 90)), 2),
        "hd95_outline_median_px_by_class": by_class,
        "hd95_frames": int(hd.size),
        "hd95_mask_median_px": round(float(np.median(hm)), 2),
        "dice_mean": round(float(dc.mean()), 4),
        "dice_median": round(float(np.median(dc)), 4),
        "violations": viol,
        "violations_total": int(sum(viol.values())),
    }


def picture(keep: list[tuple], path: Path) -> None:
    """Before | after overlays of the kept frames, one row each (600x800 at half size, then a
    zoom on the first lesion); the true mask's border in thin white."""
    rows = []
    for img, r, old, truth in keep:
        after = r.overlay(img)
        gt = cv2.findContours(
            (truth > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )[0]
        bef = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
        tint = bef.copy()
        tint[old["mask"] > 0] = (60, 60, 255)
        bef = cv2.addWeighted(tint, 0.25, bef, 0.75, 0)
        cv2.polylines(
            bef, [c.reshape(-1, 1, 2) for c in old["contours"]], True, (0, 255, 255), 2, cv2.LINE_AA
        )
        for v in (bef, after):  # the true mask, thin white
            cv2.polylines(v, gt, True, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(
            bef,
            "before: grid border (model's mask grid)",
            (8, 590),
            0,
            0.8,
            (0, 255, 255),
            2,
            cv2.LINE_AA,
        )
        cv2.putText(
            after, "after: traced on Result.mask", (8, 590), 0, 0.8, (0, 255, 255), 2, cv2.LINE_AA
        )
        # Zoom on the lesion: the box of the first lesion, doubled, beside the full frames.
        x, y, w, h = r.lesions[0].bbox
        cx, cy, s = x + w // 2, y + h // 2, max(w, h) // 2 + 30
        x0, y0 = max(cx - s, 0), max(cy - s, 0)
        x1, y1 = min(cx + s, img.shape[1]), min(cy + s, img.shape[0])
        zb = cv2.resize(bef[y0:y1, x0:x1], (300, 300), interpolation=cv2.INTER_NEAREST)
        za = cv2.resize(after[y0:y1, x0:x1], (300, 300), interpolation=cv2.INTER_NEAREST)
        half = [cv2.resize(v, (400, 300), interpolation=cv2.INTER_AREA) for v in (bef, after)]
        rows.append(np.hstack([half[0], zb, half[1], za]))
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--model", default=None, help="artifact (default: the embedded FP32 model)")
    ap.add_argument("--seed-base", type=int, default=SEED_BASE)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--picture", type=Path, default=None, help="write a before / after PNG")
    ap.add_argument(
        "--style",
        choices=("scanner", "classic"),
        default="scanner",
        help="phantom style (scanner: what the default is trained on since issue #13)",
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    rows, keep = run(args.n, args.model, args.seed_base, args.style)
    res = {
        "what": "outline quality on fresh 600x800 phantoms (benchmarks/outline_quality.py)",
        "cpu": describe(),
        "model": args.model or str(sdk.default_model()),
        "frames": args.n,
        "style": args.style,
        "seeds": [args.seed_base, args.seed_base + args.n - 1],
        "before": _stats(rows, "before"),
        "after": _stats(rows, "after"),
        "postprocess_ms_median": round(
            float(np.median([r["after"]["postprocess_ms"] for r in rows])), 3
        ),
        "wall_s": round(time.time() - t0, 1),
        "frames_detail": rows,
    }
    tag = f"outline-quality-{cpu_class()}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(res, indent=1) + "\n")
    b, a = res["before"], res["after"]

    def two(d: dict, k1: str, k2: str) -> str:
        return f"{d[k1]} / {d[k2]}"

    def cls(d: dict) -> str:
        return " / ".join(str(v) for v in d["hd95_outline_median_px_by_class"].values())

    def viol(d: dict) -> str:
        return f"{d['violations_total']} ({' / '.join(str(v) for v in d['violations'].values())})"

    table = [
        (
            "filled outline vs mask IoU, median / p5",
            "iou_outline_mask_median",
            "iou_outline_mask_p5",
        ),
        (
            "HD95 outline vs true mask, median / p90 (px)",
            "hd95_outline_median_px",
            "hd95_outline_p90_px",
        ),
        ("HD95 of Result.mask itself, median (px)", "hd95_mask_median_px", None),
        ("mask Dice vs true mask, mean / median", "dice_mean", "dice_median"),
    ]
    lines = [
        f"# Outline quality: {args.n} fresh 600×800 {args.style}-style phantoms "
        f"(seeds {res['seeds'][0]}..{res['seeds'][1]})",
        "",
        f"`python benchmarks/outline_quality.py --n {args.n}`; model "
        f"`{Path(res['model']).name}`; {res['cpu']}",
        "",
        "| metric | before (grid border) | after (frame-resolution outline) |",
        "|---|---|---|",
    ]
    for name, k1, k2 in table:
        lines.append(
            f"| {name} | {b[k1] if k2 is None else two(b, k1, k2)} "
            f"| {a[k1] if k2 is None else two(a, k1, k2)} |"
        )
    lines += [
        f"| HD95 median benign / malignant (px) | {cls(b)} | {cls(a)} |",
        "| label-rule violations: total (normal lesion / normal image beside a lesion / "
        f"lesion label without a lesion) | {viol(b)} | {viol(a)} |",
        "",
        f"IoU over {a['iou_frames']} frames with a mask or outline, HD95 over "
        f"{a['hd95_frames']} frames where both the outline and the true mask are non-empty. An "
        "outline can be no closer to the truth than the mask it encloses: HD95 of the mask "
        "itself is the floor of any outline that is the mask.",
        f"Post-process (FramePipeline.finish) median {res['postprocess_ms_median']} ms per frame, "
        "1 thread, in this run (a noisy shared machine).",
    ]
    (args.out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.picture is not None and keep:
        picture(keep, args.picture)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
