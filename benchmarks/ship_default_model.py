"""Quantize the preset's no-teacher baseline for the CPU target and report FP32 + INT8 next to
the teacher and the distilled student on the same 500 fresh 600x800 phantoms.

Usage: ``python benchmarks/ship_default_model.py RUN_DIR`` after ``sonoedge train --preset demo
--out RUN_DIR``; then copy ``RUN_DIR/baseline{,.int8}.onnx`` to ``sdk/models/default-{fp32,int8}
.onnx`` and ``RUN_DIR/shipped/report.{json,png}`` beside them (see sdk/models/REPORT.md)."""

import sys
from pathlib import Path

from export.pipeline import (
    Artifact,
    _read_metadata,
    calibration_frames,
    heldout_set,
    quantize_cpu,
    report,
    report_frames,
)

run = Path(sys.argv[1])
sizes = [(128, 128), (256, 256), (480, 640), (600, 800)]
base = run / "baseline.onnx"
md = _read_metadata(base)
calib = calibration_frames("synthetic", md, 300, 0, frame_sizes=sizes, progress=True)
ev = heldout_set(base, "synthetic", 200, 0, frame_sizes=sizes)
q = quantize_cpu(base, calib, run / "baseline.int8.onnx", eval_frames=ev)
print("quantized", q)
rows = [
    Artifact("teacher edge_s", "onnx", run / "teacher.onnx", reference=True),
    Artifact("student fp32", "onnx", run / "student.onnx", note="distilled"),
    Artifact("baseline fp32", "onnx", base, note="same student, no teacher, same budget"),
    Artifact("baseline int8 (cpu)", "onnx-int8", q, note="percentile calibration"),
]
frames = report_frames("synthetic", md.class_names, 500, (600, 800), 0)
paths = report(
    rows,
    frames,
    run / "shipped",
    threads=1,
    progress=True,
    title="embedded default model: 500 fresh 600x800 phantoms",
)
print(paths)
print(Path(paths[0]).read_text())
