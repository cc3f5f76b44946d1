"""The issue-4 model table: parameters, MACs, ONNX Runtime FP32 CPU latency, and Dice / accuracy
after one short, identical training run on phantoms per model.

    pip install .
    python benchmarks/models_table.py --out benchmarks/results/models-cpu-xeon-2c.md

Heavy models (sam_mtl, sam_mtl_vitb: ~30-40 GMACs per frame) and the 3D samask_cltr are
profiled but not trained here: a 3-epoch run would take over an hour on 2 CPU cores, and
`export.train` takes 2-D models only. The row says so instead of printing a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

from sdk.cpu import describe

TRAINED = ("edge_s", "mtl_oca", "nmtnet", "acsnet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile-json", type=Path, help="reuse `python -m export.profile --json`")
    p.add_argument("--runs", type=Path, default=Path("runs/models_table"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n-train", type=int, default=320)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--size", type=int, default=96)
    args = p.parse_args()

    from export.models import list_models
    from export.profile import profile_model
    from export.train import train

    if args.profile_json:
        prof = {m["name"]: m for m in json.loads(args.profile_json.read_text())}
    else:
        prof = {n: profile_model(n) for n in list_models()}
    trained: dict[str, dict] = {}
    for name in TRAINED:
        t0 = time.perf_counter()
        best = train(
            name,
            "synthetic",
            args.runs / name,
            epochs=args.epochs,
            batch_size=8,
            lr=2e-3,
            seed=0,
            size=(args.size, args.size),
            n_train=args.n_train,
            n_val=args.n_val,
            threads=1,
            progress=False,
        )
        metrics = json.loads((best.parent / "metrics.json").read_text())
        ep = metrics["epochs"][metrics["best_epoch"]]  # the epoch best.json was saved from
        trained[name] = {"val": ep["val"], "seconds": time.perf_counter() - t0}
        print(name, trained[name], flush=True)

    lines = [
        "### Models (issue 4)",
        "",
        f"- machine: {describe()}; {os.cpu_count()} cores; "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- command: `python benchmarks/models_table.py --out {args.out}`",
        "- latency: ONNX Runtime FP32, CPU, 2 intra-op threads, no spinning, median of 50, "
        "batch 1, the model's default input (`python -m export.profile --json`)",
        f"- training: the same short run for every model: {args.n_train} synthetic phantoms, "
        f"{args.epochs} epochs, {args.size}×{args.size}, batch 8, AdamW 2e-3, seed 0, 1 thread; "
        f"validated on {args.n_val} held-out phantoms (mask Dice on the model's mask grid). "
        "Short runs, not converged: for comparison between models only.",
        "",
        "| model | default input | params | GMACs | ORT FP32 ms (2 thr) | Dice | accuracy | "
        "macro AUC | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in list_models():
        m = prof[name]
        shape = "×".join(str(s) for s in m["input_shapes"][0][1:])
        if len(m["input_shapes"]) > 1:
            shape += " + mask"
        lat = m.get("latency") or {}
        t = trained.get(name)
        if t:
            v = t["val"]
            auc = v.get("macro_auc", float("nan"))
            cols = f"{v['dice']:.3f} | {v['accuracy']:.3f} | {auc:.3f} | {t['seconds']:.0f}"
        else:
            cols = "not trained here (cost) | – | – | –"
        lines.append(
            f"| {name} | {shape} | {m['params'] / 1e6:.2f} M | {m['gmacs']:.2f} | "
            f"{lat.get('median_ms', float('nan')):.1f} | {cols} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
