"""``sonoedge train``: multi-task training from the command line (see :func:`export.train.train`).

``sdk/cli.py`` registers it with :func:`add_parser`; this module imports torch only inside
:func:`run`, so building the ``sonoedge`` parser stays light.

    sonoedge train --arch edge_s --data synthetic --epochs 30 --size 256 --out runs/edge_s
    sonoedge train --arch edge_s --data /data/BUSI --out runs/busi --resume
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")
    return parts[0], parts[1]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "train",
        help="train a segmentation + classification model (needs the export extra)",
        description="Train a registered architecture with λ(BCE + Dice) + (1 - λ)CE on synthetic "
        "phantoms, a BUSI folder or a labelled CSV folder. Writes last / best checkpoints "
        "(safetensors + JSON), metrics.json and curves.png into --out.",
    )
    p.add_argument("--arch", required=True, help="architecture name (e.g. edge_s)")
    p.add_argument(
        "--data",
        required=True,
        help="'synthetic', a BUSI folder, a folder with labels.csv, or a CSV file",
    )
    p.add_argument("--epochs", type=int, default=30, help="total epochs (30)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (16)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of everything (0)")
    p.add_argument(
        "--size",
        type=_size,
        default=None,
        help="input size N or HxW (default: the model's input size)",
    )
    p.add_argument("--n-train", type=int, default=600, help="synthetic training frames (600)")
    p.add_argument("--n-val", type=int, default=None, help="synthetic validation frames")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="held-out fraction of a folder dataset (0.2)",
    )
    p.add_argument("--lam", type=float, default=0.6, help="λ, the segmentation weight (0.6)")
    p.add_argument(
        "--no-class-weights", action="store_true", help="plain CE instead of balanced class weights"
    )
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is best on a busy shared CPU)",
    )
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default=None,
        help="factory options as JSON, e.g. '{\"pretrained\": false}'",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``sonoedge train``; prints the best checkpoint and its validation metrics."""
    from export.train import train  # torch is imported here, not when the parser is built

    best = train(
        args.arch,
        args.data,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        size=args.size,
        n_train=args.n_train,
        n_val=args.n_val,
        val_fraction=args.val_fraction,
        lam=args.lam,
        class_weighting=not args.no_class_weights,
        augment=not args.no_augment,
        model_kwargs=args.model_kwargs,
        num_workers=args.workers,
        threads=args.threads,
        progress=not args.quiet,
    )
    meta = json.loads(best.read_text(encoding="utf-8"))
    val = meta["train"]["val"]
    auc = "n/a" if val["macro_auc"] is None else f"{val['macro_auc']:.3f}"
    print(
        f"best checkpoint: {best} (epoch {meta['epoch'] + 1}) dice {val['dice']:.3f} "
        f"iou {val['iou']:.3f} accuracy {val['accuracy']:.3f} macro AUC {auc}"
    )
    print(f"metrics: {best.parent / 'metrics.json'}  curves: {best.parent / 'curves.png'}")
    return 0
