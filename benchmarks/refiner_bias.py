"""Fit a refiner's decision prior (metadata ``class_bias``) on tuning phantoms.

    python benchmarks/refiner_bias.py REFINER.onnx [--model FRAME.onnx] [--n 1200] [--start 0]
        [--split ood-train] [--grid -1 1 0.1] [--write OUT.onnx] [--out ROWS.jsonl]

A trained refiner's benign / malignant split can come out shifted (a run that calls more
malignant lesions benign than another with the same AUC). This adds one scalar ``b`` to the
malignant class logit (the others get 0) for every ``b`` of the grid, scores each behind the frame
model through ``sdk.Analyzer`` on the same tuning phantoms (``benchmarks/refiner_tuning.py``'s
stream: seeds ``TUNING_SEED + start + i``, disjoint from training, from the evaluation stream and
from every preset stream), and picks the ``b`` of highest image accuracy (``Result.label``; ties:
the smallest ``|b|``). ``--write`` copies the refiner with that bias into its metadata and a
provenance line saying how it was fitted. Fit on frames that are not the ones the decision to ship
is judged on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import sdk
from sdk.cpu import cpu_class, describe
from sdk.refiner import METADATA_KEY

sys.path.insert(0, str(Path(__file__).parent))
from refiner_eval import TUNING_SEED, _frames, _score


def with_bias(src: Path, dst: Path, bias: list[float], note: str | None = None) -> Path:
    """Copy refiner ``src`` to ``dst`` with metadata ``class_bias`` = ``bias`` (and a
    ``provenance["class_bias"]`` line ``note``); the copy is re-stamped with its digest."""
    import onnx

    from export.onnx_export import embed_props

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    md = json.loads(props[METADATA_KEY])
    md["class_bias"] = [float(b) for b in bias]
    if note is not None:
        md.setdefault("provenance", {})["class_bias"] = note
    shutil.copyfile(src, dst)
    return embed_props(dst, {METADATA_KEY: json.dumps(md)})


def fit(
    refiner: Path,
    model: Path,
    frames: list,
    grid: np.ndarray,
    threads: int = 2,
) -> tuple[float, list[dict[str, Any]]]:
    """``(best b, one row of _score per b)`` on ``frames`` (``refiner_eval._frames``)."""
    from sdk.refiner import LesionRefiner

    names = LesionRefiner(refiner, threads=1).class_names
    if "malignant" not in names:
        raise SystemExit(f"{refiner}: no 'malignant' class in {names}")
    k = names.index("malignant")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in grid:
            bias = [0.0] * len(names)
            bias[k] = round(float(b), 6)
            cand = with_bias(refiner, Path(tmp) / "r.onnx", bias)
            with sdk.Analyzer(model, threads=threads, refiner=cand) as a:
                r = _score(a, frames)
            rows.append({"b": bias[k], **{x: r[x] for x in ("dice", "accuracy", "macro_auc")}})
            rows[-1]["confusion"] = r["confusion"]
            print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (round(r["accuracy"], 9), -abs(r["b"])))
    return best["b"], rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("refiner", type=Path, help="the refiner .onnx")
    ap.add_argument(
        "--model", type=Path, default=None, help="frame model (default: the embedded FP32)"
    )
    ap.add_argument("--n", type=int, default=1200, help="tuning frames (default 1200)")
    ap.add_argument("--start", type=int, default=0, help="first tuning seed offset")
    ap.add_argument("--split", default=None, help="draw the phantoms in this split (ood-train)")
    ap.add_argument(
        "--grid", type=float, nargs=3, default=(-1.0, 1.0, 0.1), metavar=("LO", "HI", "STEP")
    )
    ap.add_argument("--write", type=Path, default=None, help="write the refiner with the best b")
    ap.add_argument("--out", type=Path, default=None, help="append the rows as JSON lines")
    args = ap.parse_args(argv)
    lo, hi, step = args.grid
    if not (step > 0 and hi >= lo):
        raise SystemExit("--grid LO HI STEP needs STEP > 0 and HI >= LO")
    grid = np.round(np.arange(lo, hi + step / 2, step), 6)
    model = args.model or sdk.default_model("fp32")
    frames = _frames(args.n, TUNING_SEED, args.start, split=args.split)
    b, rows = fit(args.refiner, model, frames, grid)
    seeds = f"{TUNING_SEED + args.start}..{TUNING_SEED + args.start + args.n - 1}"
    print(f"best b = {b:+.2f} (malignant logit) on seeds {seeds}")
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                row = {"refiner": str(args.refiner), "model": str(model), "seeds": seeds}
                row.update(split=args.split, cpu=describe(), cpu_class=cpu_class(), **r)
                f.write(json.dumps(row) + "\n")
    if args.write:
        from sdk.refiner import LesionRefiner

        names = LesionRefiner(args.refiner, threads=1).class_names
        bias = [b if n == "malignant" else 0.0 for n in names]
        note = (
            f"{time.strftime('%Y-%m-%d')}: malignant logit {b:+.2f}, fitted by `python "
            f"benchmarks/refiner_bias.py {args.refiner.name} --n {args.n} --start {args.start}"
            + (f" --split {args.split}" if args.split else "")
            + f"` (highest image accuracy over {len(grid)} values, tuning seeds {seeds}, "
            f"behind {Path(model).name})"
        )
        with_bias(args.refiner, args.write, bias, note)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
