"""``sonoedge bench e2e``: the whole frame path against the bare ONNX Runtime call.

In one run, interleaved: ``Analyzer.run(frame)`` on 600×800 uint8 phantom frames (preprocess +
inference + post-process + lesions + pooling) and ``session.run`` of the same ONNX model on an
already preprocessed input (the anchor: what a hand-rolled script pays for inference alone).
Also the streaming throughput (``Analyzer.stream`` over the same frames, a source that is always
ahead: with the default ``max_batch=4`` the frames waiting share model calls; ``max_batch=1``
alongside). Both with the SDK's default ``spin=True`` (ONNX Runtime's threads busy-wait within a
call, sleep between calls) and with ``spin=False``; each anchor is a bare session with the same
options (:func:`sdk.backends.onnxruntime.session_options`), so a ratio compares the SDK's own work.
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
    from sdk import synthetic

    frames = [
        synthetic.phantom(lbl, size=frame_shape, seed=100 + i)[0]
        for i, lbl in zip(
            range(n_frames), ["benign", "malignant", "normal"] * n_frames, strict=False
        )
    ]
    rows = []
    for spin in (True, False):  # the SDK's default, then no busy-waiting at all
        rows += _rows(model, frames, threads, spin, repeat, frame_shape)
    return Table(f"End to end: {Path(model).name}", rows, machine_info(), command)


def _rows(
    model: str | Path,
    frames: list[np.ndarray],
    threads: int,
    spin: bool,
    repeat: int,
    frame_shape: tuple[int, int],
) -> list[Row]:
    """The end-to-end row and the streaming rows for one ``spin`` setting: the Analyzer and its
    anchor, a bare session with the same options (``session_options``), interleaved."""
    import onnxruntime as ort

    from sdk import kernels as K
    from sdk.analyzer import Analyzer
    from sdk.backends.onnxruntime import session_options

    n_frames = len(frames)
    a = Analyzer(model, threads=threads, spin=spin).load()
    md = a.metadata
    sess = ort.InferenceSession(
        str(model), session_options(ort, threads, spin), providers=["CPUExecutionProvider"]
    )
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
    # The default max_batch (waiting frames share a call), then one frame per call.
    for max_batch in (MAX_BATCH, 1) if spin else (MAX_BATCH,):
        t0 = time.perf_counter()
        src = (frames[i % n_frames] for i in range(n_stream))
        count = sum(1 for _ in a.stream(src, max_batch=max_batch))
        streams.append((max_batch, count, time.perf_counter() - t0))
    a.close()
    size = f"{frame_shape[0]}×{frame_shape[1]} u8 → {md.input_size[0]}×{md.input_size[1]}"
    how = "spin within calls (default)" if spin else "spin=False"
    return [
        Row(
            f"end-to-end {size}, {md.precision}, {how}",
            "sonoedge Analyzer.run",
            "bare ORT session.run",
            med,
            p90,
            bmed,
            note=f"{threads} threads; p99 {p99 / 1e3:.2f} ms = {p99 / med:.2f}× p50",
        ),
        *(
            Row(
                f"streaming throughput, max_batch={mb}, {how}"
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
