"""``sonoedge train`` and ``sonoedge export``: training (:func:`export.train.train`, or a whole
recipe of :mod:`export.presets`) and the export pipeline (:func:`export.pipeline.run_export`).

``sdk/cli.py`` registers both with :func:`add_parser` (which also adds ``sonoedge doctor``,
:mod:`export.doctor`); this module imports torch only inside the handlers, so building the
``sonoedge`` parser stays light.

    sonoedge train --arch edge_s --data synthetic --epochs 30 --size 256 --out runs/edge_s
    sonoedge train --arch edge_s --data /data/BUSI --out runs/busi --resume
    sonoedge train --preset demo --threads 1 --out runs/demo
    sonoedge export runs/teacher/best.json --data synthetic --student edge_s \
        --formats onnx,onnx-int8,trt-fp16,trt-int8 --out runs/export
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdk.argtypes import size_type

__all__ = ["add_parser", "run", "run_export_cmd"]


_size = size_type(1)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` and ``export`` sub-commands on an ``argparse`` sub-parsers
    object; returns the ``train`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train a segmentation + classification model (needs the export extra)",
        description="Train a registered architecture with λ(BCE + Dice) + (1 - λ)CE on synthetic "
        "phantoms, a BUSI folder or a labelled CSV folder; a slab classifier (samask_cltr: "
        "cine slab + mask prompt) with CE on synthetic cine slabs. Writes last / best "
        "checkpoints (safetensors + JSON), metrics.json and curves.png into --out.",
    )
    p.add_argument("--arch", default=None, help="architecture name (e.g. edge_s)")
    p.add_argument(
        "--preset",
        default=None,
        help="run a whole recipe instead (training, export, INT8, report, shipping step): "
        "'demo' (the embedded default) or 'demo-ood' (its OOD-suite twin; see "
        "export/presets.py); uses --out, --threads, --device, --resume, --quiet",
    )
    p.add_argument(
        "--data",
        default=None,
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
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="training forward passes in float32, or under bfloat16 autocast (2.4-2.9x faster "
        "steps on CPUs with AMX / AVX-512 BF16; refused where bf16 is emulated); auto: bf16 "
        "where it is in hardware (fp32)",
    )
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
    p.add_argument(
        "--augment",
        choices=("standard", "ultrasound", "none"),
        default=None,
        help="training augmentation: standard transforms, plus the ultrasound ones "
        "(depth attenuation, speckle, ...), or none (default: standard; --no-augment = none)",
    )
    kd = p.add_argument_group("teacher (knowledge distillation) and deep supervision")
    kd.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="a trained checkpoint (best.json) to distill into --arch (class / pixel KD)",
    )
    kd.add_argument("--T", type=float, default=4.0, help="class KD temperature (4)")
    kd.add_argument(
        "--alpha-kd", type=float, default=None, help="class KD weight (1 with --teacher, else 0)"
    )
    kd.add_argument(
        "--beta-pixel",
        type=float,
        default=None,
        help="pixel KD weight on the mask (1 with --teacher, else 0)",
    )
    kd.add_argument(
        "--gamma-feat",
        type=float,
        default=0.0,
        help="feature KD weight on lesion-pooled features (0; both models need features)",
    )
    kd.add_argument(
        "--aux-weight",
        type=float,
        default=0.0,
        help="deep supervision on the model's intermediate masks (0; e.g. 0.4 for mtl_oca, nmtnet)",
    )
    kd.add_argument(
        "--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (0)"
    )
    kd.add_argument(
        "--presence-weight",
        type=float,
        default=0.0,
        help="weight of the image-level lesion-presence term (max mask logit vs 'has a lesion'; "
        "aimed at false blobs on lesion-free frames) (0)",
    )
    kd.add_argument(
        "--batch-dice",
        action="store_true",
        help="the mask's soft Dice over the whole batch, not per image (a lesion-free frame's "
        "false pixels then count)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)
    _add_export_parser(subparsers)
    from export import doctor  # `sonoedge doctor`: light to import (no torch, no TensorRT)

    doctor.add_parser(subparsers)
    from export import importer_cli  # `sonoedge import` / `sonoedge quantize` (issue #16)

    importer_cli.add_parser(subparsers)
    return p


def _add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    e = subparsers.add_parser(
        "export",
        help="distill, export to ONNX, quantize, build TensorRT engines and write a report",
        description="CHECKPOINT (a training run's best.json) → (distilled --student) → FP32 ONNX "
        "with metadata → INT8 for ONNX Runtime CPU and TensorRT Q/DQ → TensorRT engines (where "
        "TensorRT is installed) → report.md / report.json / report.png in --out.",
    )
    e.add_argument("checkpoint", type=Path, help="checkpoint (STEM, STEM.json or .safetensors)")
    e.add_argument("--data", default="synthetic", help="'synthetic' or the training folder")
    e.add_argument(
        "--student",
        default="edge_s",
        help="student architecture to distill into (edge_s); 'none' exports CHECKPOINT as is",
    )
    e.add_argument(
        "--formats",
        default="onnx,onnx-int8,trt-fp16,trt-int8",
        help="comma-separated: onnx, onnx-int8, trt-fp16, trt-int8 (all)",
    )
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--epochs", type=int, default=12, help="distillation epochs (12)")
    e.add_argument("--batch-size", type=int, default=16, help="distillation batch size (16)")
    e.add_argument("--lr", type=float, default=2e-3, help="distillation learning rate (2e-3)")
    e.add_argument("--T", type=float, default=4.0, help="KD temperature (4)")
    e.add_argument("--alpha-kd", type=float, default=1.0, help="weight of T²·KL on classes (1)")
    e.add_argument("--beta-pixel", type=float, default=1.0, help="weight of pixel KD (1)")
    e.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the same student trained without the teacher (the report's comparison)",
    )
    e.add_argument("--calib-frames", type=int, default=300, help="INT8 calibration frames (300)")
    e.add_argument("--eval-frames", type=int, default=200, help="held-out frames (200)")
    e.add_argument("--report-frames", type=int, default=200, help="report frames (200)")
    e.add_argument(
        "--report-size",
        type=_size,
        default=None,
        help="report frame size N or HxW, e.g. 600x800 (default: the model's input size)",
    )
    e.add_argument("--budget", type=float, default=0.01, help="INT8 Dice/accuracy budget (0.01)")
    e.add_argument(
        "--lesion-gate",
        action="store_true",
        help="fit the runtime's lesion gate (thresholds.max_lesion_normal_prob: a region the "
        "classifier calls normal is dropped) into each ONNX artifact before the report; "
        "synthetic data only",
    )
    e.add_argument(
        "--gate-frames", type=int, default=300, help="tuning phantoms of the lesion gate (300)"
    )
    e.add_argument("--threads", type=int, default=1, help="CPU threads (1)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(handler=run_export_cmd)
    return e


def run_export_cmd(args: argparse.Namespace) -> int:
    """Run ``sonoedge export``; prints the report table. Exit 1 when a format failed."""
    from export.pipeline import run_export  # torch is imported here, not with the parser

    student = None if str(args.student).lower() == "none" else args.student
    res = run_export(
        args.checkpoint,
        args.out,
        data=args.data,
        student=student,
        formats=[f for f in str(args.formats).split(",") if f.strip()],
        baseline=not args.no_baseline,
        distill_kwargs={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "T": args.T,
            "alpha_kd": args.alpha_kd,
            "beta_pixel": args.beta_pixel,
        },
        calib_frames=args.calib_frames,
        eval_frames=args.eval_frames,
        n_report=args.report_frames,
        report_size=args.report_size,
        budget=args.budget,
        threads=args.threads,
        progress=not args.quiet,
        lesion_gate=args.lesion_gate,
        gate_frames=args.gate_frames,
    )
    print(res.report[0].read_text(encoding="utf-8"))
    print("report: " + ", ".join(str(p) for p in res.report))
    return 0 if res.ok else 1


def _run_preset(args: argparse.Namespace) -> int:
    from export.presets import run_preset

    summary = run_preset(
        args.preset,
        args.out,
        threads=args.threads or 1,
        device="cpu" if args.device == "auto" else args.device,
        progress=not args.quiet,
        resume=args.resume,
    )
    print(Path(summary["report"][0]).read_text(encoding="utf-8"))
    print(
        f"preset {args.preset}: {summary['seconds']['total'] / 60:.1f} min; {args.out}/preset.json"
    )
    return 0 if summary["ok"] else 1


def _augment_option(args: argparse.Namespace) -> bool | str:
    from sdk.errors import InputError

    if args.no_augment and args.augment not in (None, "none"):
        raise InputError(f"--no-augment contradicts --augment {args.augment}; give one of them")
    if args.no_augment or args.augment == "none":
        return False
    return "ultrasound" if args.augment == "ultrasound" else True


def run(args: argparse.Namespace) -> int:
    """Run ``sonoedge train``; prints the best checkpoint and its validation metrics."""
    from sdk.errors import InputError

    if args.preset is not None:
        return _run_preset(args)
    if not args.arch or not args.data:
        raise InputError("sonoedge train needs --arch and --data (or --preset NAME)")
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
        augment=_augment_option(args),
        model_kwargs=args.model_kwargs,
        num_workers=args.workers,
        threads=args.threads,
        progress=not args.quiet,
        teacher=args.teacher,
        T=args.T,
        alpha_kd=args.alpha_kd,
        beta_pixel=args.beta_pixel,
        gamma_feat=args.gamma_feat,
        aux_weight=args.aux_weight,
        warmup_steps=args.warmup_steps,
        precision=args.precision,
        presence_weight=args.presence_weight,
        batch_dice=args.batch_dice,
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
