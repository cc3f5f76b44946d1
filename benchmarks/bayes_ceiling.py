"""The best accuracy and macro AUC *any* classifier can reach on ``style="scanner"`` phantoms.

Why this exists: the scanner-style generator draws each lesion's BI-RADS descriptors
*independently* with class-dependent probabilities (``sdk.synthetic._factors.DESCRIPTOR_PROBS``,
from Stavros 1995 / Hong 2005, issue #13 item 1: "a benign mass can shadow, a malignant one can
look circumscribed, as in real series"), and the rendered lesion depends on its descriptors and
size only -- never on its label directly (``sdk/synthetic/_lesions.py``). A benign and a malignant
lesion with the same descriptors are drawn from the same picture distribution, so no model can
tell them apart better than the Bayes classifier on (descriptors, size). This script computes
that ceiling exactly (enumerating every descriptor combination; the size term in closed form)
and checks it by Monte Carlo through the generator's own ``draw_lesion_descriptors``.

Assumptions, all in the model's favour: a perfect descriptor reader, the size in millimetres
read exactly (the frame's depth scale is not an input of the model), and normal frames always
recognised. Real models sit below this line.

Usage::

    python benchmarks/bayes_ceiling.py [--mc 200000] [--out benchmarks/results/bayes-ceiling]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np

from sdk.synthetic._factors import DESCRIPTOR_PROBS, draw_lesion_descriptors

NAMES = ("shape", "orientation", "margin", "echo_pattern", "posterior", "calcifications")
#: size_mm is log-uniform on these ranges (``draw_lesion_descriptors``).
SIZE = {"benign": (5.0, 25.0), "malignant": (6.0, 30.0)}


def _p(label: str, name: str, value) -> float:
    probs = DESCRIPTOR_PROBS[label][name]
    if name == "calcifications":
        value = "yes" if value in (True, "yes") else "no"
    return float(probs.get(value, 0.0))


def _size_density(label: str, size: float) -> float:
    lo, hi = SIZE[label]
    return 1.0 / (size * math.log(hi / lo)) if lo <= size <= hi else 0.0


def exact_bm_accuracy(with_size: bool) -> float:
    """Bayes accuracy of benign vs malignant (equal priors) over the descriptors (and size)."""
    values = [
        sorted(set(DESCRIPTOR_PROBS["benign"][n]) | set(DESCRIPTOR_PROBS["malignant"][n]))
        for n in NAMES
    ]
    # The size term: on the overlap [6, 25] mm both log-uniform densities are 1 / (s ln 5)
    # (both ranges span a factor of 5): no information; below 6 mm only benign, above 25 mm
    # only malignant -- each a fraction ln(6/5) / ln 5 of its class.
    tail = math.log(6.0 / 5.0) / math.log(5.0) if with_size else 0.0
    acc = 0.0
    for combo in itertools.product(*values):
        pb = math.prod(_p("benign", n, v) for n, v in zip(NAMES, combo, strict=True))
        pm = math.prod(_p("malignant", n, v) for n, v in zip(NAMES, combo, strict=True))
        acc += 0.5 * max(pb, pm)
    return tail + (1.0 - tail) * acc


def _posterior_malignant(d: dict, with_size: bool) -> float:
    lb = math.prod(_p("benign", n, d[n]) for n in NAMES)
    lm = math.prod(_p("malignant", n, d[n]) for n in NAMES)
    if with_size:
        lb *= _size_density("benign", d["size_mm"])
        lm *= _size_density("malignant", d["size_mm"])
    return lm / (lb + lm)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC with ties counted half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(positive.sum())
    n0 = len(score) - n1
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def monte_carlo(n: int, with_size: bool, seed: int = 0) -> dict[str, float]:
    """Draw n lesion frames of each class plus n normal frames; score the Bayes classifier:
    accuracy (3 classes) and macro one-vs-rest AUC, normal frames perfectly recognised."""
    rng = np.random.default_rng(seed)
    pm = []
    for label in ("benign", "malignant"):
        pm += [
            _posterior_malignant(draw_lesion_descriptors(rng, label), with_size) for _ in range(n)
        ]
    pm_l = np.asarray(pm)
    y = np.array([0] * n + [1] * n + [2] * n)  # benign, malignant, normal
    # Posteriors (benign, malignant, normal): lesion frames split by pm, normal frames certain.
    probs = np.zeros((3 * n, 3))
    probs[: 2 * n, 0] = 1.0 - pm_l
    probs[: 2 * n, 1] = pm_l
    probs[2 * n :, 2] = 1.0
    acc = float((probs.argmax(1) == y).mean())
    aucs = [_auc(probs[:, k], y == k) for k in range(3)]
    return {
        "accuracy": acc,
        "macro_auc": float(np.mean(aucs)),
        "auc_benign": aucs[0],
        "auc_malignant": aucs[1],
        "auc_normal": aucs[2],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mc", type=int, default=200_000, help="Monte Carlo lesions per class")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bayes-ceiling"))
    args = ap.parse_args()
    rows = []
    for with_size in (False, True):
        bm = exact_bm_accuracy(with_size)
        mc = monte_carlo(args.mc, with_size)
        rows.append(
            {
                "reader": "descriptors + exact size (mm)" if with_size else "descriptors",
                "benign_vs_malignant_accuracy_exact": bm,
                "three_class_accuracy_exact": 1.0 / 3.0 + 2.0 / 3.0 * bm,
                **{f"mc_{k}": v for k, v in mc.items()},
            }
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "mc": args.mc}, indent=2))
    lines = [
        "# Bayes ceiling of scanner-style phantoms (balanced classes, one lesion a frame)",
        "",
        "The best any classifier can do when it reads every BI-RADS descriptor perfectly and",
        "knows every normal frame: descriptors are drawn independently of the picture's label",
        "with class-dependent probabilities (`sdk.synthetic._factors.DESCRIPTOR_PROBS`).",
        f"Exact enumeration; Monte Carlo check with {args.mc} lesions per class.",
        "Reproduce: `python benchmarks/bayes_ceiling.py`",
        "",
        "| reader | benign vs malignant acc. | 3-class accuracy (exact) | 3-class accuracy (MC) "
        "| macro AUC (MC) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reader']} | {r['benign_vs_malignant_accuracy_exact']:.4f} | "
            f"{r['three_class_accuracy_exact']:.4f} | {r['mc_accuracy']:.4f} | "
            f"{r['mc_macro_auc']:.4f} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
