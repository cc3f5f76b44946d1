"""Bare ONNX Runtime latency of the embedded defaults against their predecessors, in one run.

Issue #13 item 5 bounds the new default's bare latency at 2.5x the previous default's, "measured
in one run against a copy of it". Every model here gets a session set up as the SDK's backend
sets its own (``sdk.bench.formats``: CPU provider, N intra-op threads, one inter-op thread, no
spinning); the timed calls of all models are interleaved in one shuffled loop, so a slow spell of
the (shared, virtual) machine hits every model alike. Input: one preprocessed 600x800 phantom
per model (the values do not change the work of a CNN).

Usage::

    git show 544c698:sdk/models/default-fp32.onnx > /tmp/old-fp32.onnx
    git show 544c698:sdk/models/default-int8.onnx > /tmp/old-int8.onnx
    python benchmarks/default_latency.py old-fp32=/tmp/old-fp32.onnx old-int8=/tmp/old-int8.onnx \\
        new-fp32=sdk/models/default-fp32.onnx new-int8=sdk/models/default-int8.onnx

writes ``benchmarks/results/default-latency-<cpu class>.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from sdk import kernels, synthetic
from sdk.artifact import read_onnx_file_metadata
from sdk.bench.formats import ort_session
from sdk.cpu import cpu_class, describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH.onnx, in table order")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--repeat", type=int, default=300, help="timed calls per model and setting")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    frame, _, _ = synthetic.phantom("malignant", (600, 800), seed=7)
    inputs = {}
    for name, path in models.items():
        md = read_onnx_file_metadata(path)
        x = kernels.preprocess(
            frame, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std
        )
        inputs[name] = (x[None], md.input_size)
    rows = []
    for threads in args.threads:
        sessions = {}
        for name, path in models.items():
            s = ort_session(path, threads)
            feed = {s.get_inputs()[0].name: inputs[name][0]}
            for _ in range(20):  # warm-up
                s.run(None, feed)
            sessions[name] = (s, feed)
        order = [n for n in models for _ in range(args.repeat)]
        random.Random(threads).shuffle(order)
        times: dict[str, list[float]] = {n: [] for n in models}
        for name in order:
            s, feed = sessions[name]
            t = time.perf_counter()
            s.run(None, feed)
            times[name].append((time.perf_counter() - t) * 1e3)
        for name in models:
            a = np.asarray(times[name])
            rows.append(
                {
                    "model": name,
                    "path": models[name],
                    "input": list(inputs[name][1]),
                    "threads": threads,
                    "p50_ms": float(np.median(a)),
                    "p90_ms": float(np.percentile(a, 90)),
                }
            )
    first = {r["threads"]: r["p50_ms"] for r in rows if r["model"] == next(iter(models))}
    cls = cpu_class()
    doc = {"cpu": describe(), "cpu_class": cls, "repeat": args.repeat, "rows": rows}
    lines = [
        "# Bare ONNX Runtime latency: the embedded defaults and their predecessors, one run",
        "",
        f"- CPU: {describe()}; {args.repeat} timed calls per model and thread count, all models "
        "interleaved in one shuffled loop; SDK session options (no spinning), batch 1.",
        "- Reproduce: see `benchmarks/default_latency.py` (the docstring's command).",
        "",
        f"| model | input | threads | p50 ms | p90 ms | p50 / {next(iter(models))} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input'][0]}×{r['input'][1]} | {r['threads']} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p50_ms'] / first[r['threads']]:.2f}× |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"default-latency-{cls}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
