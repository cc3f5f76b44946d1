"""Calibration of an artifact's image-level probabilities, with the estimator's own noise floor
(issue #13 item 4: ECE <= 0.05 on fresh phantoms and on the OOD suite).

The expected calibration error (``sdk.scope.ece``: top-class confidence, 15 equal-width bins)
is a biased estimator: on N frames even a *perfectly* calibrated model shows an ECE of roughly
``sqrt(2/pi) * sum_b sqrt(n_b p_b (1 - p_b)) / N`` -- ~0.07 at N = 200 and ~0.03 at N = 1000
for a model near 70 % accuracy. A figure like "ECE 0.078 on 150 phantoms" therefore says little
about calibration. This script reports, for each set:

* ``ece``: the ECE of the probabilities the Analyzer serves (``Result.raw_probs``:
  ``softmax(class_logits / T)``, T the artifact's fitted temperature), and ``ece_t1`` without T;
* ``null``: the mean and 95th percentile of the ECE of a perfectly calibrated model that gives
  *the same probabilities* (labels drawn from them, 200 draws) -- the floor the estimator cannot
  go under at this N;

A set is **calibrated within noise** when its ECE is below the null's 95th percentile. Sets:
``fresh`` scanner-style phantoms at the training size mix (seed stream of
``benchmarks/scope_eval.py``, sub-stream 1: never used in training, calibration or fitting) and
the OOD suite's splits (``benchmarks/ood_suite.py``'s seed stream and 300x400 frames). The
logits come from ONNX Runtime on the SDK's own preprocessing (the numbers the Analyzer's
``raw_probs`` are made of; in-scope or not, ``raw_probs`` is this softmax). Nothing here is
fitted. No MUST / SIMUS-family frame is used.

Run::

    python benchmarks/calibration_eval.py sdk/models/default-fp32.onnx --n 2000 --ood-n 1000
    # the OOD suite's twin (trained on sdk.synthetic.OOD_TRAIN only; no temperature of its own):
    python benchmarks/calibration_eval.py runs/demo-ood/edge_s.onnx --fit-region ood-train \
        --stem calibration-demo-ood-fp32-avx2

The shipped default was trained on every region of the generator, so the OOD splits are
regions it has seen; the twin's rows are the out-of-distribution calibration.

Writes ``benchmarks/results/calibration-<model stem>-<cpu class>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from export._pipeline.common import SCOPE_HOLDOUT_SEED, SCOPE_SIZES
from export._pipeline.scope import _scope_outputs
from sdk import synthetic
from sdk.artifact import read_onnx_file_metadata
from sdk.cpu import cpu_class, describe
from sdk.scope import ece, fit_temperature, softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ood_suite import SEED as OOD_SEED
from ood_suite import _splits
from scope_eval import SEED as FRESH_SEED

OOD_SIZE = (300, 400)


class _Frames:
    """A frame provider (``get(i)`` → image, mask, label id) over lazily drawn phantoms."""

    def __init__(self, draws: list[tuple[str, tuple[int, int], int, dict[str, Any]]], names):
        self.draws, self.names = draws, list(names)

    def __len__(self) -> int:
        return len(self.draws)

    def get(self, i: int) -> tuple[np.ndarray, None, int]:
        label, size, seed, kw = self.draws[i]
        img, _, info = synthetic.phantom(label, size, seed=seed, **kw)
        return img, None, self.names.index(info["label"])


def frame_sets(n: int, ood_n: int, names) -> dict[str, _Frames]:
    """The fresh scanner-style set and one set per OOD split (see the module docstring)."""
    draws = []
    for i in range(n):
        ss = int(np.random.SeedSequence([FRESH_SEED, 1, i]).generate_state(1)[0])
        size = tuple(SCOPE_SIZES[(ss >> 1) % len(SCOPE_SIZES)])
        draws.append((synthetic.LABELS[i % 3], size, ss, {"style": "scanner"}))
    sets = {"fresh scanner": _Frames(draws, names)}
    for s_i, (name, split) in enumerate(_splits()):
        labels = split.labels or synthetic.LABELS
        draws = []
        for i in range(ood_n):
            seed = int(np.random.SeedSequence([OOD_SEED, s_i, i]).generate_state(1)[0])
            kw = {"style": "scanner", "split": split}
            draws.append((labels[i % len(labels)], OOD_SIZE, seed, kw))
        sets[f"OOD {name}"] = _Frames(draws, names)
    return sets


def null_ece(p: np.ndarray, rng: np.random.Generator, draws: int = 200) -> np.ndarray:
    """ECEs of a perfectly calibrated model with probabilities ``p``: labels drawn from ``p``."""
    cum = np.cumsum(p, axis=1)
    out = np.empty(draws)
    for k in range(draws):
        y = (rng.random(len(p))[:, None] > cum).sum(axis=1).clip(0, p.shape[1] - 1)
        out[k] = ece(p, y)
    return out


def fit_region_temperature(model: Path, region: str, n: int = 600, threads: int = 1) -> float:
    """The temperature fitted (NLL, ``sdk.scope.fit_temperature``) on ``n`` scanner-style
    phantoms of a generator region (e.g. ``"ood-train"``: what the OOD suite's twin model was
    trained on), drawn on the export's held-out scope seed stream at the training size mix --
    as :func:`export.pipeline.fit_scope_and_temperature` would fit it for a model of that
    region. Never on frames of the evaluated sets."""
    from export.data import SyntheticFrames

    md = read_onnx_file_metadata(model)
    frames = SyntheticFrames(
        n,
        [tuple(s) for s in SCOPE_SIZES],
        SCOPE_HOLDOUT_SEED + 1,
        md.class_names,
        cache=False,
        style="scanner",
        split=region,
    )
    _, z, y = _scope_outputs(model, md, frames, threads)
    return fit_temperature(z, y)


def evaluate(
    model: Path,
    n: int,
    ood_n: int,
    threads: int = 1,
    fit_region: str | None = None,
    n_fit: int = 600,
) -> dict[str, Any]:
    md = read_onnx_file_metadata(model)
    if fit_region:
        t, t_source = fit_region_temperature(model, fit_region, n_fit, threads), fit_region
    else:
        t, t_source = float((md.calibration or {}).get("temperature", 1.0)), "artifact"
    rng = np.random.default_rng(0)
    rows = {}
    for name, frames in frame_sets(n, ood_n, md.class_names).items():
        t0 = time.perf_counter()
        _, z, y = _scope_outputs(model, md, frames, threads)
        p, p1 = softmax(z, t), softmax(z)
        nul = null_ece(p, rng)
        rows[name] = {
            "n": len(y),
            "accuracy": float((p.argmax(1) == y).mean()),
            "ece": ece(p, y),
            "ece_t1": ece(p1, y),
            "null_mean": float(nul.mean()),
            "null_p95": float(np.quantile(nul, 0.95)),
            "within_noise": bool(ece(p, y) <= np.quantile(nul, 0.95)),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, json.dumps(rows[name]), flush=True)
    return {
        "model": model.name,
        "temperature": t,
        "temperature_source": t_source,
        "cpu_class": cpu_class(),
        "cpu": describe(),
        "bins": 15,
        "sets": rows,
    }


def markdown(doc: dict[str, Any], command: str) -> str:
    L = [
        f"# Calibration of `{doc['model']}` with the ECE estimator's noise floor",
        "",
        f"- Probabilities: `Result.raw_probs` = softmax(class_logits / T), T = "
        f"{doc['temperature']:.3f} ("
        + (
            "the artifact's, fitted at export; nothing fitted here"
            if doc["temperature_source"] == "artifact"
            else f"fitted on held-out phantoms of the `{doc['temperature_source']}` region, "
            "the model's training region, not on any evaluated frame"
        )
        + f"). ECE: top-class confidence, {doc['bins']} equal-width bins (`sdk.scope.ece`).",
        "- null: ECE of a perfectly calibrated model with the same probabilities (labels drawn "
        "from them, 200 draws): mean / 95th percentile. Calibrated within noise: ECE <= null p95.",
        f"- CPU: {doc['cpu']}. Reproduce: `{command}`",
        "",
        "| set | n | accuracy | ECE (T) | ECE T=1 | null mean | null p95 | within noise |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in doc["sets"].items():
        L.append(
            f"| {name} | {r['n']} | {r['accuracy']:.3f} | **{r['ece']:.3f}** | "
            f"{r['ece_t1']:.3f} | {r['null_mean']:.3f} | "
            f"{r['null_p95']:.3f} | {'yes' if r['within_noise'] else 'no'} |"
        )
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--n", type=int, default=2000, help="fresh scanner-style phantoms (2000)")
    ap.add_argument("--ood-n", type=int, default=1000, help="phantoms per OOD split (1000)")
    ap.add_argument(
        "--fit-region",
        default=None,
        help="fit T on held-out phantoms of this generator region instead of reading the "
        "artifact's (e.g. ood-train for the OOD suite's twin, which carries no temperature)",
    )
    ap.add_argument("--stem", default=None, help="output file stem (calibration-MODEL-CPUCLASS)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    if args.n < 1 or args.ood_n < 1:
        ap.error("--n and --ood-n must be >= 1")
    doc = evaluate(args.model, args.n, args.ood_n, fit_region=args.fit_region)
    command = (
        f"python benchmarks/calibration_eval.py {args.model} --n {args.n} --ood-n {args.ood_n}"
        + (f" --fit-region {args.fit_region}" if args.fit_region else "")
    )
    doc["command"] = command
    stem = args.stem or f"calibration-{args.model.stem}-{cpu_class()}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(doc, command), encoding="utf-8")
    print(f"wrote {args.out / stem}.md / .json")
    if not all(math.isfinite(r["ece"]) for r in doc["sets"].values()):
        raise SystemExit("an ECE is not finite")


if __name__ == "__main__":
    main()
