"""The embedded default against its predecessor on the same fresh phantoms (issue #13 item 5).

Every model given runs through :class:`sdk.Analyzer` (its scope and temperature active, as
served) on the same 500 fresh 600x800 phantoms of the report seed stream (never used in
training, calibration, the INT8 budget or the scope fit): Dice / IoU at frame resolution,
image accuracy (an out-of-scope verdict counts as wrong), macro AUC, ms/frame
(``export.pipeline.report``).

Usage::

    git show 544c698:sdk/models/default-fp32.onnx > /tmp/old-fp32.onnx
    git show 544c698:sdk/models/default-int8.onnx > /tmp/old-int8.onnx
    python benchmarks/default_report.py --style scanner \\
        new-fp32=sdk/models/default-fp32.onnx new-int8=sdk/models/default-int8.onnx \\
        old-fp32=/tmp/old-fp32.onnx old-int8=/tmp/old-int8.onnx

``--style classic`` reports on the stylized phantoms the previous default was trained on.
Writes ``benchmarks/results/default-report-<style>-<cpu class>.{md,json,png}``; the first model
is the reference row of the drops. Evaluation is single-threaded (numbers do not depend on
timing).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from export.data import SyntheticFrames
from export.pipeline import REPORT_SEED, Artifact, report
from sdk.artifact import read_onnx_file_metadata
from sdk.cpu import cpu_class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH.onnx; the first is the reference")
    ap.add_argument("--style", choices=("scanner", "classic"), default="scanner")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--size", type=int, nargs=2, default=(600, 800), metavar=("H", "W"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    models = [m.split("=", 1) for m in args.models]
    names = read_onnx_file_metadata(models[0][1]).class_names
    # The report seed stream of the export stage (export.pipeline.report_frames), in the style
    # asked for: fresh frames for every model here.
    frames = SyntheticFrames(args.n, tuple(args.size), REPORT_SEED, names, style=args.style)
    rows = [
        Artifact(name, "onnx-int8" if "int8" in name else "onnx", Path(p), reference=(i == 0))
        for i, (name, p) in enumerate(models)
    ]
    stem = f"default-report-{args.style}-{cpu_class()}"
    paths = report(
        rows,
        frames,
        args.out,
        threads=1,
        progress=True,
        stem=stem,
        title=f"embedded defaults: {args.n} fresh {args.size[0]}x{args.size[1]} "
        f"{args.style}-style phantoms",
    )
    print(Path(paths[0]).read_text())


if __name__ == "__main__":
    main()
