"""Refiner candidates on the *tuning* phantoms: the stream decisions about the refiner are made on.

    python benchmarks/refiner_tuning.py [REFINER.onnx ...] [--model FRAME.onnx ...] [--n 600]
        [--start 0]

Each candidate runs behind the embedded FP32 frame model through ``sdk.Analyzer`` on the same
fresh 600×800 scanner-style phantoms, seeds ``TUNING_SEED + start + i`` (labels cycling normal /
benign / malignant) -- disjoint from the refiner's training seeds, from the evaluation stream of
``benchmarks/refiner_eval.py`` (the reported figures, never used to decide) and from every
stream the demo preset trains, validates, calibrates and reports on (checked). The metrics are
``refiner_eval``'s. A refiner with ``flip`` in its metadata runs with test-time flip; to try it
on an existing file, copy the file with the field set (``export.onnx_export.embed_props``).
``--model`` (repeatable) puts each candidate refiner (default: the embedded one) behind other
frame models instead: frame-model candidates are compared here too, each with the refiner
behind it, as they would ship.

2026-12-03 (AMD EPYC avx512-vnni, 2 threads): the 128² refiner (v3) and test-time flip were
decided here (``benchmarks/results/refiner-tuning-avx512-vnni.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import sdk
from sdk.cpu import cpu_class, describe

sys.path.insert(0, str(Path(__file__).parent))
from refiner_eval import TUNING_SEED, _frames, _score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "refiner", nargs="*", type=Path, help="refiner .onnx files (default: the embedded one)"
    )
    ap.add_argument(
        "--model",
        action="append",
        type=Path,
        default=None,
        help="frame model .onnx in front of each refiner (repeatable; default: the embedded "
        "FP32 default)",
    )
    ap.add_argument("--n", type=int, default=600, help="frames (default 600)")
    ap.add_argument("--start", type=int, default=0, help="first tuning seed offset")
    ap.add_argument("--out", type=Path, default=None, help="append a JSON line per candidate")
    args = ap.parse_args(argv)
    fr = _frames(args.n, TUNING_SEED, args.start)
    refiners = args.refiner or [sdk.default_refiner()]
    for m in args.model or [sdk.default_model("fp32")]:
        for p in refiners:
            _one(m, p, fr, args)
    return 0


def _one(model: Path, refiner: Path, fr: list, args: argparse.Namespace) -> None:
    with sdk.Analyzer(model, threads=2, refiner=refiner) as a:
        r = _score(a, fr)
    row = {
        "model": str(model),
        "refiner": str(refiner),
        "seeds": f"{TUNING_SEED + args.start}..{TUNING_SEED + args.start + args.n - 1}",
        "cpu": describe(),
        "cpu_class": cpu_class(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **r,
    }
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
