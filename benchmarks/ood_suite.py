"""Out-of-distribution suite: a model scored on each held-out region of the phantom factors.

For every pair of :data:`sdk.synthetic.OOD_SPLITS` (compounding, frequency, probe, unseen
descriptor combinations, processing, dense breasts) the *test* split is drawn (``style=
"scanner"`` phantoms, fresh seeds, exact masks), plus ``in-distribution``: frames of
:data:`sdk.synthetic.OOD_TRAIN`, the region a suite-aware model trains on. The ``.onnx`` model
runs through :class:`sdk.Analyzer` (the serving path); per split: mean Dice over the frames with
a lesion (``Result.mask`` vs the exact mask), image accuracy (``Result.label``), macro AUC of the
model's image-level probabilities (``Result.raw_probs``), all from :mod:`sdk.metrics`.

Run::

    python benchmarks/ood_suite.py sdk/models/default-fp32.onnx --n 60

writes ``benchmarks/results/ood-<model>-<cpu class>.md`` and ``.json``. Only our own generator
is used here: MUST / SIMUS-family simulators are reserved for the independent check.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdk import Analyzer, metrics, synthetic
from sdk.cpu import cpu_class, describe

SEED = 20_261_202  # fresh seed stream: not the training (0...) nor the report streams


def _splits() -> list[tuple[str, synthetic.Split]]:
    out = [("in-distribution", synthetic.OOD_TRAIN)]
    out += [(name, test) for name, (_, test) in synthetic.OOD_SPLITS.items()]
    return out


def evaluate(
    model: Path, n: int, size: tuple[int, int], threads: int = 1, refiner: Any = None
) -> list[dict[str, Any]]:
    """One row per split: ``split``, ``n``, ``dice``, ``accuracy``, ``macro_auc``, ``flagged``
    (fraction of frames the model called out of scope), ``seconds``. Every phantom is breast
    B-mode, so an out-of-scope verdict counts as a wrong label and its empty mask enters Dice;
    AUC reads ``raw_probs``, which an out-of-scope Result keeps."""
    analyzer = Analyzer(model, threads=threads, refiner=refiner)
    analyzer.load()
    rows = []
    for s_i, (name, split) in enumerate(_splits()):
        labels = split.labels or synthetic.LABELS
        names = list(analyzer.class_names) if hasattr(analyzer, "class_names") else None
        y_true, y_pred, scores, dices, flagged = [], [], [], [], 0
        t0 = time.perf_counter()
        for i in range(n):
            label = labels[i % len(labels)]
            seed = int(np.random.SeedSequence([SEED, s_i, i]).generate_state(1)[0])
            image, mask, info = synthetic.phantom(
                label, size, seed=seed, style="scanner", split=split
            )
            res = analyzer.run(image)
            names = names or list(res.raw_probs)
            y_true.append(names.index(info["label"]))
            flagged += not res.in_scope
            # Out of scope: no diagnosis, an id no true label has (a wrong answer).
            y_pred.append(names.index(res.label) if res.in_scope else len(names))
            scores.append([res.raw_probs[c] for c in names])
            if mask.any():
                dices.append(metrics.dice(res.mask > 0, mask > 0))
        auc = metrics.macro_auc(np.asarray(y_true), np.asarray(scores))
        rows.append(
            {
                "split": name,
                "definition": split.to_dict(),
                "n": n,
                "dice": float(np.mean(dices)) if dices else math.nan,
                "accuracy": metrics.accuracy(y_true, y_pred),
                "macro_auc": float(auc),
                "flagged": flagged / n,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        print(
            f"{name:16s} dice {rows[-1]['dice']:.3f} acc {rows[-1]['accuracy']:.3f} "
            f"auc {rows[-1]['macro_auc']:.3f} out of scope {rows[-1]['flagged']:.2f} "
            f"({rows[-1]['seconds']} s)",
            flush=True,
        )
    return rows


def _markdown(model: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# OOD suite: `{model.name}`",
        "",
        f"- Frames: {meta['n']} per split at {meta['size'][0]}x{meta['size'][1]}, "
        f'`style="scanner"` phantoms, seed stream {SEED}; CPU: {meta["cpu"]}.',
        "- Dice: mean over frames with a lesion (`Result.mask` vs the exact mask); accuracy:"
        " `Result.label` (an out-of-scope verdict counts as wrong); macro AUC:"
        " `Result.raw_probs` one-vs-rest (classes present); out of scope: fraction of frames"
        " `Result.in_scope` is False.",
        f"- Reproduce: `python benchmarks/ood_suite.py {meta['model_arg']} --n {meta['n']} "
        f"--size {meta['size'][0]} {meta['size'][1]}"
        + (
            ""
            if not meta.get("refiner")
            else " --refiner" + ("" if meta["refiner"] == "True" else f" {meta['refiner']}")
        )
        + "`",
        "",
        "| split | held out (test region) | n | Dice | accuracy | macro AUC | out of scope |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r["definition"]
        region = "; ".join(json.dumps(x, sort_keys=True) for x in d["include"]) or (
            "train region (all test regions excluded)"
        )
        lines.append(
            f"| {r['split']} | `{region}` | {r['n']} | {r['dice']:.3f} | {r['accuracy']:.3f} "
            f"| {r['macro_auc']:.3f} | {r['flagged']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="an .onnx model (sdk.Analyzer)")
    ap.add_argument("--n", type=int, default=60, help="frames per split")
    ap.add_argument("--size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--refiner",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="run a lesion refiner behind the model: the embedded one, or PATH",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    size = (int(args.size[0]), int(args.size[1]))
    rows = evaluate(args.model, args.n, size, args.threads, args.refiner)
    meta = {
        "model": args.model.name,
        "model_arg": str(args.model),
        "refiner": None if args.refiner is None else str(args.refiner),
        "n": args.n,
        "size": list(size),
        "cpu_class": cpu_class(),
        "cpu": describe(),
    }
    stem = f"ood-{args.model.stem}{'-refiner' if args.refiner else ''}-{meta['cpu_class']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    (args.out / f"{stem}.md").write_text(_markdown(args.model, rows, meta))
    print(args.out / f"{stem}.md")


if __name__ == "__main__":
    main()
