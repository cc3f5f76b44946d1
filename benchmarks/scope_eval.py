"""Out-of-scope flag and calibration of an ``.onnx`` artifact, evaluated through ``sdk.Analyzer``.

* Non-breast frames: every frame ``sdk.sources.DicomSource`` (colour ``rgb``, its 8-bit
  conversion) decodes from pydicom-data's and pydicom's own test DICOMs -- ultrasound (echo,
  obstetric, pelvic, lymph-node Doppler), CT, MR, radiographs (CR), NM / secondary capture /
  segmentation ("other-dicom") -- byte-identical frames counted once; plus synthetic screens
  (blank / uniform levels, gradients, checkerboards, gratings, grids, colour bars, circles,
  text, noise) at 480x640, 600x800 and 256x256. Grouped; flag rate = fraction with
  ``in_scope`` False.
* Fresh phantoms of both styles (``sdk.synthetic`` classic and ``style="scanner"``; seed stream
  ``SEED``, never used by the fit) at the training size mix: false-flag rate, and ECE of the
  image-level probabilities (``Result.raw_probs``) with and without the artifact's temperature
  (the uncalibrated ones are recovered exactly: ``softmax(T * log raw_probs)``).
* The OOD suite's splits (``benchmarks/ood_suite.py``: ``style="scanner"`` phantoms of each
  held-out factor region, its seed stream): flag rate and ECE.

Nothing here is used for fitting: the scope and the temperature are fitted by
``export.pipeline.fit_scope_and_temperature`` on phantoms of their own seed streams. MUST /
SIMUS-family frames are not used.

Run::

    python benchmarks/scope_eval.py sdk/models/default-fp32.onnx [--fit]

``--fit`` first (re)fits and embeds the scope + temperature in the model file (through
``export.onnx_export.embed_metadata``, which re-stamps its digest). Writes
``benchmarks/results/scope-<model>-<cpu class>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk import Analyzer, synthetic
from sdk.cpu import cpu_class, describe
from sdk.scope import ece, softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ood_suite import SEED as OOD_SEED
from ood_suite import _splits

SEED = 6_000_023  # fresh phantoms: not training, calibration, held-out, report nor the scope fit
SIZES = ((128, 128), (256, 256), (480, 640), (600, 800))


def dicom_files() -> list[str]:
    import data_store
    import pydicom

    roots = [
        os.path.join(os.path.dirname(data_store.__file__), "data"),
        os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"),
    ]
    return [f for r in roots for f in sorted(glob.glob(r + "/*.dcm"))]


def group_of(name: str, modality: str | None) -> str:
    n = name.lower()
    if modality == "US":
        if n.startswith(("color3d", "examples_ybr", "jpglossless", "color-p")):
            return "us-echo"
        if n.startswith(("obxxxx", "examples_palette")):
            return "us-obstetric"
        if n.startswith("gdcm-us-aloka"):
            return "us-pelvic"
        if n.startswith(("us1_", "examples_rgb", "examples_jpeg2k")):
            return "us-lymph-doppler"
        return "us-other"
    return {"CT": "ct", "MR": "mr", "CR": "radiograph", "DX": "radiograph"}.get(
        modality or "", "other-dicom"
    )


def dicom_frames() -> list[tuple[str, str, np.ndarray]]:
    """(group, name#frame, RGB uint8 frame) for every decodable, distinct frame."""
    from sdk.sources._dicom import DicomSource

    seen, out = set(), []
    for f in dicom_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                src = DicomSource(f, color="rgb")
                mod = src.metadata.get("modality")
                for fr in src:
                    h = hashlib.sha1(fr.image.tobytes()).hexdigest()
                    if h not in seen:
                        seen.add(h)
                        out.append(
                            (group_of(Path(f).name, mod), f"{Path(f).name}#{fr.index}", fr.image)
                        )
        except Exception:  # no pixel data, damaged on purpose, no decoder: not a frame
            continue
    return out


def screens(seed: int = 7) -> list[tuple[str, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, np.ndarray]] = []
    for h, w in ((480, 640), (600, 800), (256, 256)):
        for v in (0, 16, 64, 128, 200, 255):
            out.append(("screen-blank", f"level {v}", np.full((h, w), v, np.uint8)))
        yy, xx = np.mgrid[:h, :w]
        gx = (xx * 255.0 / (w - 1)).astype(np.uint8)
        out += [
            ("screen-pattern", "gradient", gx),
            ("screen-pattern", "gradient", gx[:, ::-1].copy()),
        ]
        out.append(("screen-pattern", "gradient", (yy * 255.0 / (h - 1)).astype(np.uint8)))
        for s in (4, 16, 64):
            out.append(
                (
                    "screen-pattern",
                    f"checker {s}",
                    (((yy // s + xx // s) % 2) * 255).astype(np.uint8),
                )
            )
        for period in (8, 32):
            g = (127.5 + 127.5 * np.sin(2 * np.pi * xx / period)).astype(np.uint8)
            out.append(("screen-pattern", f"grating {period}", g))
        grid = np.zeros((h, w), np.uint8)
        grid[::32] = 255
        grid[:, ::32] = 255
        out.append(("screen-pattern", "grid", grid))
        bars = np.zeros((h, w, 3), np.uint8)
        cols = [
            (255, 255, 255),
            (0, 255, 255),
            (255, 255, 0),
            (0, 255, 0),
            (255, 0, 255),
            (0, 0, 255),
            (255, 0, 0),
            (0, 0, 0),
        ]
        for k, c in enumerate(cols):
            bars[:, k * w // 8 : (k + 1) * w // 8] = c
        out.append(("screen-pattern", "colour bars", bars))
        circ = np.zeros((h, w), np.uint8)
        for r in range(10, max(h, w), 30):
            cv2.circle(circ, (w // 2, h // 2), r, 255, 2)
        out.append(("screen-pattern", "circles", circ))
        for bg, fg in ((0, 255), (255, 0), (30, 200)):
            t = np.full((h, w), bg, np.uint8)
            for k in range(12):
                s = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :.-"), 24))
                cv2.putText(
                    t,
                    s,
                    (10, 30 + k * (h // 13)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * w / 640,
                    fg,
                    1,
                    cv2.LINE_AA,
                )
            out.append(("screen-text", f"text {bg}/{fg}", t))
        out.append(("screen-noise", "uniform", rng.integers(0, 256, (h, w), dtype=np.uint8)))
        out.append(
            (
                "screen-noise",
                "gaussian",
                np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8),
            )
        )
        out.append(
            ("screen-noise", "salt", np.where(rng.random((h, w)) < 0.05, 255, 0).astype(np.uint8))
        )
        out.append(("screen-noise", "colour", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


def _uncalibrated(raw: np.ndarray, t: float) -> np.ndarray:
    """softmax(z) from raw = softmax(z / t): softmax(t * log raw) (exact up to float)."""
    return softmax(t * np.log(np.clip(raw, 1e-300, None)))


def evaluate(model: Path, n: int, ood_n: int) -> dict[str, Any]:
    an = Analyzer(model, threads=1).load()
    md = an.metadata
    if md.scope is None:
        raise SystemExit(f"{model} carries no scope block: run with --fit first")
    t = float((md.calibration or {}).get("temperature", 1.0))
    names = list(an.class_names)
    groups: dict[str, list[bool]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    missed: list[str] = []
    t0 = time.perf_counter()
    for g, name, img in dicom_frames() + screens():
        r = an.run(img, color="rgb")
        groups[g].append(not r.in_scope)
        scores[g].append(float(r.scope_score))
        if r.in_scope:
            missed.append(f"{g}: {name} (score {r.scope_score:.3f})")
    nb_s = time.perf_counter() - t0

    def phantom_rows(frames: list[tuple[np.ndarray, str]]) -> dict[str, Any]:
        flags, raws, ys, sc = [], [], [], []
        for img, label in frames:
            an.reset()
            r = an.run(img)
            flags.append(not r.in_scope)
            sc.append(float(r.scope_score))
            raws.append([r.raw_probs[c] for c in names])
            ys.append(names.index(label))
        raw, y = np.asarray(raws), np.asarray(ys)
        return {
            "n": len(flags),
            "flagged": float(np.mean(flags)),
            "median_scope_score": float(np.median(sc)),
            "accuracy": float(np.mean(raw.argmax(1) == y)),
            "ece_before": ece(_uncalibrated(raw, t), y),
            "ece_after": ece(raw, y),
        }

    fresh = {}
    for k, style in enumerate(("classic", "scanner")):
        frames = []
        for i in range(n):
            ss = int(np.random.SeedSequence([SEED, k, i]).generate_state(1)[0])
            label = synthetic.LABELS[i % 3]
            size = SIZES[(ss >> 1) % len(SIZES)]
            kw: dict[str, Any] = (
                {"style": "scanner"}
                if style == "scanner"
                else {"geometry": ("linear", "curvilinear")[ss % 2]}
            )
            img, _, info = synthetic.phantom(label, size, seed=ss, **kw)
            frames.append((img, info["label"]))
        fresh[style] = phantom_rows(frames)
        print(style, fresh[style], flush=True)
    ood = {}
    for s_i, (name, split) in enumerate(_splits()):
        labels = split.labels or synthetic.LABELS
        frames = []
        for i in range(ood_n):
            seed = int(np.random.SeedSequence([OOD_SEED, s_i, i]).generate_state(1)[0])
            img, _, info = synthetic.phantom(
                labels[i % len(labels)], (300, 400), seed=seed, style="scanner", split=split
            )
            frames.append((img, info["label"]))
        ood[name] = phantom_rows(frames)
        print(name, ood[name], flush=True)
    nb_all = [f for v in groups.values() for f in v]
    return {
        "model": model.name,
        "cpu_class": cpu_class(),
        "cpu": describe(),
        "scope": {
            k: v
            for k, v in md.scope.items()
            if k in ("threshold", "quantile", "summaries", "fitted_on")
        },
        "temperature": t,
        "calibration": md.calibration,
        "non_breast": {
            "n": len(nb_all),
            "flagged": float(np.mean(nb_all)),
            "groups": {
                g: {
                    "n": len(v),
                    "flagged": float(np.mean(v)),
                    "median_scope_score": float(np.median(scores[g])),
                }
                for g, v in sorted(groups.items())
            },
            "missed": missed,
            "seconds": round(nb_s, 1),
        },
        "fresh_phantoms": fresh,
        "fresh_phantoms_flagged": float(np.mean([fresh[s]["flagged"] for s in fresh])),
        "ood_splits": ood,
    }


def _markdown(doc: dict[str, Any], model_arg: str, n: int, ood_n: int) -> str:
    nb = doc["non_breast"]
    sc = doc["scope"]
    L = [
        f"# Out-of-scope flag and calibration: `{doc['model']}`",
        "",
        f"- Score: squared Mahalanobis distance of ({', '.join(sc['summaries'])}) to phantoms of"
        " both styles; `scope_score` = fraction of held-out phantoms at least as far;"
        f" `in_scope` = distance <= {sc['threshold']:.2f} (the held-out phantoms'"
        f" {sc['quantile']:.2f} quantile). Temperature T = {doc['temperature']:.3f}. Fitted by"
        " `export.pipeline.fit_scope_and_temperature` (seed streams of its own; nothing below"
        " was used).",
        f"- CPU: {doc['cpu']}. Reproduce: `python benchmarks/scope_eval.py"
        f" {model_arg} --n {n} --ood-n {ood_n}`",
        "",
        f"## Non-breast frames: {nb['flagged']:.1%} of {nb['n']} flagged",
        "",
        "| group | frames | flagged | median scope_score |",
        "|---|---:|---:|---:|",
    ]
    for g, r in nb["groups"].items():
        L.append(f"| {g} | {r['n']} | {r['flagged']:.1%} | {r['median_scope_score']:.3f} |")
    L += ["", "Not flagged: " + ("; ".join(nb["missed"]) if nb["missed"] else "none"), ""]
    L += [
        f"## Phantoms: {doc['fresh_phantoms_flagged']:.1%} of fresh phantoms flagged",
        "",
        "| set | n | flagged | median scope_score | accuracy (raw_probs) | ECE T=1 | ECE T |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"fresh {k}", v) for k, v in doc["fresh_phantoms"].items()]
    rows += [(f"OOD {k}", v) for k, v in doc["ood_splits"].items()]
    for name, r in rows:
        L.append(
            f"| {name} | {r['n']} | {r['flagged']:.1%} | {r['median_scope_score']:.3f} "
            f"| {r['accuracy']:.3f} | {r['ece_before']:.3f} | {r['ece_after']:.3f} |"
        )
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument(
        "--fit", action="store_true", help="(re)fit and embed the scope + temperature first"
    )
    ap.add_argument("--n", type=int, default=150, help="fresh phantoms per style")
    ap.add_argument("--ood-n", type=int, default=30, help="frames per OOD split")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    if args.fit:
        from export.pipeline import fit_scope_and_temperature

        print(json.dumps(fit_scope_and_temperature(args.model)), flush=True)
    doc = evaluate(args.model, args.n, args.ood_n)
    stem = f"scope-{args.model.stem}-{doc['cpu_class']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    (args.out / f"{stem}.md").write_text(_markdown(doc, str(args.model), args.n, args.ood_n))
    print(args.out / f"{stem}.md")
    if not math.isfinite(doc["non_breast"]["flagged"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
