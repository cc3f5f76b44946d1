"""Quantize the embedded default model for the CPU target and report FP32 + INT8 on the same 500
fresh 600x800 phantoms.

Usage::

    python benchmarks/ship_default_model.py [--fp32 sdk/models/default-fp32.onnx] \
        [--run RUN_DIR] [--out runs/ship-default]

``--fp32``: the FP32 source (default: the shipped ``sdk/models/default-fp32.onnx``, the demo
preset's no-teacher baseline); it is never retrained here. ``--run``: a ``sonoedge train --preset
demo`` run folder; when it holds ``teacher.onnx`` / ``student.onnx`` they are reported too, the
teacher as the reference row (as in the first shipped report). Writes ``OUT/default-int8.onnx``
and ``OUT/shipped/report.{md,json,png}``; copy the INT8 file and ``report.{json,png}`` to
``sdk/models/`` and the table into ``sdk/models/REPORT.md``.

The INT8 file is :func:`export.pipeline.quantize_cpu` -- the export stage's CPU recipe (QDQ, uint8
activations, per-channel int8 weights: 7-bit dense, 8-bit depthwise, ReLU6 folded into the
uint8 outputs; see ``export/quantize.py``), percentile calibration on 300 phantoms of the
training size mix, the 1-point budget on 200 held-out phantoms of the same mix. All phantoms in
the classic style the model was trained on (``int8_recipe.use_classic_phantoms``). Evaluation
runs single-threaded (``OMP_NUM_THREADS=1`` is set here): its numbers do not depend on timing.
"""

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from export.pipeline import (
    Artifact,
    calibration_frames,
    heldout_set,
    quantize_cpu,
    report,
    report_frames,
)
from sdk.artifact import read_onnx_file_metadata

from int8_recipe import use_classic_phantoms  # isort: skip  (benchmarks/, this script's folder)

use_classic_phantoms()  # the phantoms the default model was trained and reported on

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--fp32", type=Path, default=Path("sdk/models/default-fp32.onnx"))
ap.add_argument("--run", type=Path, default=None, help="demo preset run folder (optional rows)")
ap.add_argument("--out", type=Path, default=Path("runs/ship-default"))
args = ap.parse_args()

sizes = [(128, 128), (256, 256), (480, 640), (600, 800)]  # the preset's training size mix
args.out.mkdir(parents=True, exist_ok=True)
base = args.out / "default-fp32.onnx"
shutil.copyfile(args.fp32, base)
md = read_onnx_file_metadata(base)
calib = calibration_frames("synthetic", md, 300, 0, frame_sizes=sizes, progress=True)
ev = heldout_set(base, "synthetic", 200, 0, frame_sizes=sizes)
q = quantize_cpu(base, calib, args.out / "default-int8.onnx", eval_frames=ev)
qmd = read_onnx_file_metadata(q)
print("quantized", q, "float nodes:", qmd.provenance["quantization"]["float_nodes"])
print("held-out (200, size mix):", qmd.accuracy["fp32_reference"], qmd.accuracy["int8"])

rows = []
run = args.run
if run is not None and (run / "teacher.onnx").exists():
    rows.append(Artifact("teacher edge_s", "onnx", run / "teacher.onnx", reference=True))
if run is not None and (run / "student.onnx").exists():
    rows.append(Artifact("student fp32", "onnx", run / "student.onnx", note="distilled"))
rows += [
    Artifact(
        "baseline fp32",
        "onnx",
        base,
        reference=not rows,
        note="sdk/models/default-fp32.onnx (no teacher)",
    ),
    Artifact(
        "baseline int8 (cpu)",
        "onnx-int8",
        q,
        note="sdk/models/default-int8.onnx: export CPU recipe (dense weights 7-bit, depthwise "
        "8-bit, ReLU6 folded), percentile calibration",
    ),
]
frames = report_frames("synthetic", md.class_names, 500, (600, 800), 0)
paths = report(
    rows,
    frames,
    args.out / "shipped",
    threads=1,
    progress=True,
    title="embedded default model: 500 fresh 600x800 phantoms",
)
print(paths)
print(Path(paths[0]).read_text())
