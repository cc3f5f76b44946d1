"""``sonoedge bench e2e``: the whole frame path against the bare ONNX Runtime call.

In one run, interleaved: ``Analyzer.run(frame)`` on 600×800 uint8 phantom frames (preprocess +
inference + post-process + lesions + pooling) and ``session.run`` of the same ONNX model on an
already preprocessed input (the anchor: what a hand-rolled script pays for inference alone).
Also the streaming throughput (``Analyzer.stream`` over the same frames, a source that is always
ahead: with the default ``max_batch=4`` the frames waiting share model calls; ``max_batch=1``
alongside).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sdk.bench.timing import Row, Table, compare, machine_info, summarize
from sdk.stream import MAX_BATCH

__all__ = ["run"]


def run(
    model: str | Path,
    threads: int = 2,
    repeat: int = 300,
    frame_shape: tuple[int, int] = (600, 800),
    n_frames: int = 16,
    command: str = "",
) -> Table:
    import onnxruntime as ort

    from sdk import kernels as K
    from sdk import synthetic
    from sdk.analyzer import Analyzer

    frames = [
        synthetic.phantom(lbl, size=frame_shape, seed=100 + i)[0]
        for i, lbl in zip(
            range(n_frames), ["benign", "malignant", "normal"] * n_frames, strict=False
        )
    ]
    a = Analyzer(model, threads=threads).load()
    md = a.metadata
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the SDK's backend
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    x = K.preprocess(
        frames[0],
        size=md.input_size,
        channels=md.channels,
        sigma=md.sigma,
        mean=md.mean,
        std=md.std,
    )[None]
    name = sess.get_inputs()[0].name
    it = iter(range(10**9))

    t = compare(
        {
            "sonoedge Analyzer.run": lambda: a.run(frames[next(it) % n_frames]),
            "bare ORT session.run": lambda: sess.run(None, {name: x}),
        },
        repeat=repeat,
        warmup=10,
    )
    e2e, bare = t["sonoedge Analyzer.run"], t["bare ORT session.run"]
    med, p90 = summarize(e2e)
    bmed, _ = summarize(bare)
    p99 = float(np.percentile(e2e, 99) * 1e6)
    n_stream = max(repeat, 100)
    streams = []
    for max_batch in (MAX_BATCH, 1):  # the default (waiting frames batched), then one per call
        t0 = time.perf_counter()
        src = (frames[i % n_frames] for i in range(n_stream))
        count = sum(1 for _ in a.stream(src, max_batch=max_batch))
        streams.append((max_batch, count, time.perf_counter() - t0))
    a.close()
    size = f"{frame_shape[0]}×{frame_shape[1]} u8 → {md.input_size[0]}×{md.input_size[1]}"
    rows = [
        Row(
            f"end-to-end {size}, {md.precision}",
            "sonoedge Analyzer.run",
            "bare ORT session.run",
            med,
            p90,
            bmed,
            note=f"{threads} threads; p99 {p99 / 1e3:.2f} ms = {p99 / med:.2f}× p50",
        ),
        *(
            Row(
                f"streaming throughput, max_batch={mb}"
                + (" (default: waiting frames share a call)" if mb > 1 else ""),
                "Analyzer.stream",
                None,
                wall / count * 1e6,
                wall / count * 1e6,
                None,
                note=f"{count / wall:.1f} frames/s over {count} frames = "
                f"{count / wall * med / 1e6:.2f}× 1/p50",
            )
            for mb, count, wall in streams
        ),
    ]
    return Table(f"End to end: {Path(model).name}", rows, machine_info(), command)
