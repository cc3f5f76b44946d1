"""``sonoedge import`` and ``sonoedge quantize``: a user's ONNX model into a sonoedge artifact
(:func:`export.importer.import_onnx`) and any FP32 artifact into INT8
(:func:`export.importer.quantize`).

    sonoedge import theirs.onnx --out model.onnx --classes normal,benign,malignant \\
        --mask-output seg --class-output cls --layout nhwc --color rgb \\
        --scale 255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
    sonoedge quantize model.onnx --out model.int8.onnx --data /data/BUSI --target cpu

Registered by :func:`export.cli.add_parser`. Malformed values (a size that is not HxW, a mean
that is not numbers, an unknown layout) are usage errors, exit 2, found by argparse; what only
the model can tell (a missing output, a class count) is a reported error, exit 1, one line.
Nothing heavy is imported until a handler runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from sdk.argtypes import float_type, int_type, size_type

__all__ = ["add_parser", "run_import", "run_quantize"]

_positive = int_type(1, None, "an integer")


def _classes(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(","))
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected two or more distinct comma-separated class names in the model's output "
            f"order, e.g. normal,benign,malignant; got {text!r}"
        )
    return names


def _numbers(positive: bool) -> object:
    def parse(text: str) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or one per channel (a,b,c), got {text!r}"
            ) from None
        if len(vals) not in (1, 3) or not all(math.isfinite(v) for v in vals):
            raise argparse.ArgumentTypeError(
                f"expected 1 or 3 finite numbers (a or a,b,c), got {text!r}"
            )
        if positive and min(vals) <= 0:
            raise argparse.ArgumentTypeError(f"expected numbers > 0, got {text!r}")
        return vals

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``import`` and ``quantize`` on the ``sonoedge`` sub-parsers."""
    p = subparsers.add_parser(
        "import",
        help="a user's ONNX model (any names, NCHW / NHWC, gray / RGB, logits / probabilities) "
        "→ a sonoedge artifact",
        description="Wrap SRC.onnx in adapter nodes so it obeys the SDK's model contract and "
        "write the artifact (metadata, integrity digest) to --out. A frame reaches the model as "
        "(pixel / scale - mean) / std per channel, in the stated colour order and layout; a gray "
        "frame fills every channel of an RGB / BGR model. Give --mask-output and / or "
        "--class-output: a segmentation-only model takes --classes normal,<lesion name>.",
    )
    p.add_argument("src", type=Path, help="the model's .onnx (external weights beside it)")
    p.add_argument("--out", type=Path, required=True, help="artifact to write (.onnx)")
    p.add_argument(
        "--classes",
        type=_classes,
        required=True,
        help="class names in the model's output order, e.g. normal,benign,malignant",
    )
    p.add_argument(
        "--mask-output",
        default=None,
        help="output holding the lesion mask [B,1|2,h,w] / [B,h,w,1|2] / [B,h,w] (required "
        "unless the model only classifies)",
    )
    p.add_argument(
        "--mask-activation",
        choices=("logits", "sigmoid", "softmax"),
        default="logits",
        help="logits (1 or 2 channels), sigmoid (1-channel probabilities) or softmax "
        "(2-channel probabilities; channel 1 = lesion). Default logits",
    )
    p.add_argument("--class-output", default=None, help="output with the class scores [B, K]")
    p.add_argument(
        "--class-activation",
        choices=("logits", "softmax"),
        default="logits",
        help="logits, or softmax probabilities (default logits)",
    )
    p.add_argument("--input", default=None, help="the image input (default: the only input)")
    p.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw", help="default nchw")
    p.add_argument("--color", choices=("gray", "rgb", "bgr"), default="gray", help="default gray")
    p.add_argument(
        "--size",
        type=size_type(1, 16384),
        default=None,
        help="input HxW (needed when the model's is dynamic)",
    )
    p.add_argument(
        "--scale",
        type=float_type(0.0, lo_open=True, what="a scale"),
        default=1.0,
        help="pixel / scale (1: pixels 0..255; 255: 0..1). Default 1",
    )
    p.add_argument("--mean", type=_numbers(False), default=(0.0,), help="a or a,b,c (0)")
    p.add_argument("--std", type=_numbers(True), default=(1.0,), help="a or a,b,c (1)")
    p.add_argument(
        "--threshold",
        type=float_type(0.0, 1.0, lo_open=True, hi_open=True, what="a threshold"),
        default=0.5,
        help="lesion-probability threshold of the mask (0.5)",
    )
    p.add_argument(
        "--min-lesion-area",
        type=int_type(0, None, "a pixel count"),
        default=16,
        help="smallest lesion kept, in frame pixels (16)",
    )
    p.set_defaults(handler=run_import)

    q = subparsers.add_parser(
        "quantize",
        help="an FP32 artifact (imported or exported) → INT8 within an accuracy budget, + report",
        description="Calibrate and quantize SRC (an FP32 sonoedge .onnx) for ONNX Runtime CPU or "
        "as a TensorRT Q/DQ graph (and a .plan where TensorRT exists), keeping Dice and accuracy "
        "within --budget of the FP32 model on held-out frames; writes --out and "
        "<out stem>.report.md / .json / .png beside it. --data: 'synthetic', an annotated folder "
        "(BUSI layout or labels.csv: ground truth), or a plain image folder (the budget is then "
        "agreement with the FP32 model).",
    )
    q.add_argument("src", type=Path, help="FP32 artifact (.onnx)")
    q.add_argument("--out", type=Path, required=True, help="INT8 artifact to write (.onnx)")
    q.add_argument("--data", default="synthetic", help="'synthetic' or a folder (synthetic)")
    q.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu", help="default cpu")
    q.add_argument(
        "--budget",
        type=float_type(0.0, 1.0, hi_open=True, what="a budget"),
        default=0.01,
        help="largest Dice / accuracy drop (0.01 = 1 point)",
    )
    q.add_argument("--calib-frames", type=_positive, default=300, help="calibration frames (300)")
    q.add_argument("--eval-frames", type=_positive, default=200, help="held-out frames (200)")
    q.add_argument("--report-frames", type=_positive, default=200, help="report frames (200)")
    q.add_argument("--threads", type=_positive, default=1, help="CPU threads (1)")
    q.set_defaults(handler=run_quantize)


def run_import(args: argparse.Namespace) -> int:
    """Run ``sonoedge import``; prints where the artifact is and what it maps."""
    from sdk.cli import UsageError

    if args.mask_output is None and args.class_output is None:
        raise UsageError(
            "give --mask-output NAME and / or --class-output NAME (the model's output names; "
            "`python -c \"import onnx; print([o.name for o in onnx.load('SRC').graph.output])\"`)"
        )
    from export.importer import import_onnx
    from sdk.artifact import read_onnx_file_metadata

    out = import_onnx(
        args.src,
        args.out,
        classes=args.classes,
        mask_output=args.mask_output,
        mask_activation=args.mask_activation,
        class_output=args.class_output,
        class_activation=args.class_activation,
        input=args.input,
        layout=args.layout,
        color=args.color,
        size=args.size,
        scale=args.scale,
        mean=args.mean,
        std=args.std,
        threshold=args.threshold,
        min_lesion_area_px=args.min_lesion_area,
    )
    md = read_onnx_file_metadata(out)
    imp = md.provenance["import"]
    print(
        json.dumps(
            {
                "artifact": str(out),
                "classes": list(md.class_names),
                "input": imp["input"],
                "mask": imp["mask"],
                "class_scores": imp["classes"],
                "synthesized": imp["synthesized"],
                "parity": md.accuracy.get("parity", {}).get("max_abs_diff"),
            },
            indent=2,
        )
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    """Run ``sonoedge quantize``; prints the report table."""
    from export.importer import quantize

    out = quantize(
        args.src,
        args.out,
        data=args.data,
        target=args.target,
        budget=args.budget,
        calib_frames=args.calib_frames,
        eval_frames=args.eval_frames,
        report_frames=args.report_frames,
        threads=args.threads,
    )
    md_path = out.with_name(f"{out.stem}.report.md")
    print(md_path.read_text(encoding="utf-8"))
    print(f"INT8 artifact: {out}; report: {md_path}")
    return 0
