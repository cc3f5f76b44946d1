"""``sonoedge bench scaling``: latency against input size and batch, throughput against streams.

Three sweeps, each a table and a PNG:

* **input size** (default 128, 256, 384, 512): ``edge_s`` exported to ONNX at each size with
  random weights (the embedded models have a fixed H×W) into a temporary folder, at the
  configuration of the ``model``'s checkpoint when it is an ``edge_s`` artifact. Rows per size,
  all timed interleaved in one run: the bare ONNX Runtime session (batch 1, preprocessed
  input) and ``Analyzer.run`` end to end on 600×800 uint8 phantom frames. Inference time does
  not depend on the weights; the post-process does a little (contours and pooling per lesion
  found), so the mean lesions per frame is in each row's note. Needs the export stage (torch,
  onnx): the runtime-only install reports a clear error; ``sizes=()`` skips the sweep.
* **batch** (default 1, 2, 4, 8): the bare ONNX Runtime session on ``model`` (dynamic batch
  axis) with B preprocessed phantom frames per call, interleaved; per-frame time and frames/s
  against batch 1. ``Analyzer.run`` takes one frame per call, so it has no batch rows.
* **concurrent streams** (default 1, 2, 4): the SDK's documented way to serve several streams,
  one :class:`sdk.Analyzer` per stream, each on its own thread, each consuming its own cycled
  frames through ``Analyzer.stream(drop="none")``. The configurations are interleaved in rounds
  (1, 2, 4, 1, 2, 4, ...); aggregate throughput = all frames / wall time of the round, per-frame
  latency = each Result's ``timings["total"]``.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.bench.formats import (
    Report,
    bench_machine_info,
    latency_stats,
    new_figure,
    ort_session,
    phantom_frames,
    preprocessed_input,
)
from sdk.bench.timing import compare
from sdk.errors import BackendUnavailableError, InputError, SDKError

__all__ = ["batch_sweep", "export_edge_s_sizes", "run", "size_sweep", "streams_sweep"]

#: edge_s takes sizes divisible by this (its encoder's stride).
SIZE_DIVISOR = 16


def _check_list(name: str, values: Sequence[int], lo: int, hi: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be integers, got {values!r}") from None
    bad = [v for v in out if not lo <= v <= hi]
    if bad:
        raise InputError(f"{name} must be within {lo}..{hi}, got {bad}")
    if len(set(out)) != len(out):
        raise InputError(f"{name} has duplicates: {list(out)}")
    return out


# --------------------------------------------------------------------------- export


def export_edge_s_sizes(
    sizes: Sequence[int], out_dir: str | Path, like: Any = None, threads: int = 1
) -> dict[int, Path]:
    """Export ``edge_s`` with random weights (seed 0) at each square ``size`` into ``out_dir``,
    with sonoedge metadata so :class:`sdk.Analyzer` runs it.

    ``like``: the :class:`sdk.artifact.Metadata` of an artifact whose configuration to copy
    (channels, normalization, thresholds, and the checkpoint config when it is ``edge_s``).

    Raises:
        BackendUnavailableError: torch, onnx or the ``export`` package is missing.
        InputError: a size not divisible by 16 or out of 32..2048.
    """
    sizes = _check_list("sizes", sizes, 32, 2048)
    odd = [s for s in sizes if s % SIZE_DIVISOR]
    if odd:
        raise InputError(f"edge_s needs sizes divisible by {SIZE_DIVISOR}, got {odd}")
    try:
        import onnx  # noqa: F401  (embed_metadata needs it)
        import torch

        from export.models import create_model, model_defaults
        from export.onnx_export import embed_metadata, to_onnx_file
    except ImportError as e:
        raise BackendUnavailableError(
            f"the input-size sweep exports edge_s at each size, which needs the export stage "
            f"({e.name or e} is missing): pip install 'sonoedge[export]' (torch, onnx), or "
            "skip that sweep with --sizes none"
        ) from e
    from sdk.artifact import Metadata

    config: dict[str, Any] = {}
    if like is not None and like.arch == "edge_s":
        ck = (like.provenance or {}).get("checkpoint") or {}
        config = dict(ck.get("config") or {})
    valid = model_defaults("edge_s")
    config = {k: v for k, v in config.items() if k in valid}
    if like is not None:
        config["input_channels"] = list(like.channels)
    config["pretrained"] = False
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(0)
        model = create_model("edge_s", **config).eval()
        head = {k: v.numpy() for k, v in model.head_weights().items()}
        same_channels = like is not None and tuple(like.channels) == tuple(model.input_channels)
        paths = {}
        for s in sizes:
            path = to_onnx_file(model, (model.example_input(1, (s, s)),), out / f"edge_s-{s}.onnx")
            md = Metadata(
                arch="edge_s",
                class_names=tuple(model.class_names),
                channels=tuple(model.input_channels),
                input_size=(s, s),
                mean=tuple(like.mean) if same_channels else tuple(model.input_mean),
                std=tuple(like.std) if same_channels else tuple(model.input_std),
                sigma=like.sigma if like is not None else 1.0,
                outputs={
                    "mask_logits": "mask_logits",
                    "class_logits": "class_logits",
                    "features": "features",
                },
                head=head,
                mask_threshold=like.mask_threshold if like is not None else 0.5,
                min_lesion_area_px=like.min_lesion_area_px if like is not None else 16,
                precision="fp32",
                provenance={
                    "purpose": "latency benchmark (sonoedge bench scaling): random weights, "
                    "not for analysis",
                    "config": {
                        k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items()
                    },
                },
            )
            paths[s] = embed_metadata(path, md)
    finally:
        torch.set_num_threads(prev)
    return paths


# --------------------------------------------------------------------------- sweeps


def size_sweep(
    model: Path,
    sizes: Sequence[int],
    frames: np.ndarray,
    threads: int,
    repeat: int,
    warmup: int,
) -> tuple[dict[str, Any], Callable[[Path], None]]:
    """The input-size section and its plot (see the module docstring)."""
    from sdk.analyzer import Analyzer
    from sdk.artifact import read_onnx_metadata

    like = read_onnx_metadata(ort_session(model, 1), str(model))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sonoedge-scaling-") as td:
        paths = export_edge_s_sizes(sizes, td, like, threads=1)
        fns: dict[str, Callable[[], Any]] = {}
        analyzers = []
        lesions: dict[int, float] = {}
        try:
            for s, p in paths.items():
                sess = ort_session(p, threads)
                name = sess.get_inputs()[0].name
                x = preprocessed_input(p, frames)
                fns[f"bare {s}"] = lambda sess=sess, name=name, x=x: sess.run(None, {name: x})
                a = Analyzer(p, backend="onnxruntime", device="cpu", threads=threads).load()
                analyzers.append(a)
                lesions[s] = float(np.mean([len(a.run(f).lesions) for f in frames]))
                it = itertools.count()
                fns[f"e2e {s}"] = lambda a=a, it=it: a.run(frames[next(it) % len(frames)])
            ref = ort_session(model, threads)
            ref_name = ref.get_inputs()[0].name
            ref_x = preprocessed_input(model, frames)
            fns["reference"] = lambda: ref.run(None, {ref_name: ref_x})
            t = compare(fns, repeat=repeat, warmup=warmup)
        finally:
            for a in analyzers:
                a.close()
    first = {k: latency_stats(t[f"{k} {sizes[0]}"])["p50_ms"] for k in ("bare", "e2e")}
    for s in sizes:
        bare = latency_stats(t[f"bare {s}"])
        for kind, label in (("bare", "bare ONNX Runtime session.run"), ("e2e", "Analyzer.run")):
            st = latency_stats(t[f"{kind} {s}"])
            rows.append(
                {
                    "size": f"{s}×{s}",
                    "side": s,
                    "path": label,
                    "kind": kind,
                    **st,
                    "vs_first": st["p50_ms"] / first[kind],
                    "ratio": st["p50_ms"] / bare["p50_ms"],
                    "note": f"{lesions[s]:.1f} lesions/frame" if kind == "e2e" else "",
                }
            )
    st = latency_stats(t["reference"])
    h, w = like.input_size
    rows.append(
        {
            "size": f"{h}×{w}",
            "side": h,
            "path": f"bare ONNX Runtime session.run, {model.name} itself",
            "kind": "reference",
            **st,
            "vs_first": st["p50_ms"] / first["bare"],
            "ratio": None,
            "note": f"{like.arch}, {like.precision}, trained weights: checks the exports",
        }
    )
    section = {
        "title": "Latency against model input size",
        "columns": [
            {"key": "size", "header": "input", "fmt": ""},
            {"key": "path", "header": "path", "fmt": ""},
            {"key": "p50_ms", "header": "p50 ms", "fmt": ".3f"},
            {"key": "p95_ms", "header": "p95 ms", "fmt": ".3f"},
            {"key": "p99_ms", "header": "p99 ms", "fmt": ".3f"},
            {"key": "fps", "header": "FPS", "fmt": ".1f"},
            {"key": "vs_first", "header": f"vs {sizes[0]}×{sizes[0]}", "fmt": "ratio"},
            {"key": "ratio", "header": "vs bare ORT", "fmt": "ratio"},
            {"key": "note", "header": "note", "fmt": ""},
        ],
        "rows": rows,
        "notes": [
            "edge_s exported at each size with random weights (seed 0), configuration of "
            f"{model.name}'s checkpoint; inference latency does not depend on the weights, the "
            "post-process does a little (per lesion found: see lesions/frame).",
            f"Interleaved in one run: {repeat} calls per row after {warmup} warm-up, "
            f"{threads} thread(s). Bare rows: batch 1, preprocessed input; Analyzer rows: "
            f"{frames.shape[1]}×{frames.shape[2]} uint8 phantom frames, whole frame path. "
            "vs bare ORT: row p50 / bare p50 at the same size.",
        ],
    }

    def plot(path: Path) -> None:
        fig = new_figure()
        ax = fig.subplots()
        for kind, label in (("bare", "bare ORT session.run"), ("e2e", "Analyzer.run (e2e)")):
            rs = [r for r in rows if r["kind"] == kind]
            xs = [r["side"] for r in rs]
            p50 = np.array([r["p50_ms"] for r in rs])
            p95 = np.array([r["p95_ms"] for r in rs])
            ax.errorbar(
                xs, p50, yerr=[np.zeros_like(p50), p95 - p50], marker="o", capsize=3, label=label
            )
        refs = [r for r in rows if r["kind"] == "reference"]
        if refs:
            ax.plot(
                [r["side"] for r in refs],
                [r["p50_ms"] for r in refs],
                "k*",
                markersize=10,
                label=f"bare ORT, {model.name} (trained)",
            )
        ax.set_ylim(bottom=0)
        ax.set(
            xlabel="model input side (px)",
            ylabel="latency ms (p50, bar to p95)",
            title=f"Latency vs input size (edge_s, {threads} thread(s))",
            xticks=list(sizes),
        )
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(path, format="png")

    return section, plot


def batch_sweep(
    model: Path,
    batches: Sequence[int],
    frames: np.ndarray,
    threads: int,
    repeat: int,
    warmup: int,
) -> tuple[dict[str, Any], Callable[[Path], None] | None]:
    """The batch section and its plot (None when the model's batch axis is fixed)."""
    sess = ort_session(model, threads)
    inp = sess.get_inputs()[0]
    fixed = isinstance(inp.shape[0], int)
    columns = [
        {"key": "batch", "header": "batch", "fmt": "int"},
        {"key": "p50_ms", "header": "p50 ms / call", "fmt": ".3f"},
        {"key": "p95_ms", "header": "p95 ms / call", "fmt": ".3f"},
        {"key": "p99_ms", "header": "p99 ms / call", "fmt": ".3f"},
        {"key": "ms_per_frame", "header": "p50 ms / frame", "fmt": ".3f"},
        {"key": "frames_per_s", "header": "frames/s", "fmt": ".1f"},
        {"key": "ratio", "header": "per frame vs batch 1", "fmt": "ratio"},
    ]
    title = f"Latency against batch: bare ONNX Runtime, {model.name}"
    if fixed:
        row = {"batch": inp.shape[0], "status": f"{model.name} has a fixed batch axis"}
        return {"title": title, "columns": columns, "rows": [row], "notes": []}, None
    xs = {b: preprocessed_input(model, frames, batch=b) for b in batches}
    fns = {b: (lambda x=x: sess.run(None, {inp.name: x})) for b, x in xs.items()}
    t = compare(fns, repeat=repeat, warmup=warmup)
    base = latency_stats(t[batches[0]])["p50_ms"] / batches[0]
    rows = []
    for b in batches:
        st = latency_stats(t[b])
        per = st["p50_ms"] / b
        rows.append(
            {
                "batch": b,
                **st,
                "ms_per_frame": per,
                "frames_per_s": b * st["fps"],
                "ratio": per / base,
            }
        )
    section = {
        "title": title,
        "columns": columns,
        "rows": rows,
        "notes": [
            f"Interleaved in one run: {repeat} calls per batch after {warmup} warm-up, "
            f"{threads} intra-op thread(s); B different preprocessed phantom frames per call. "
            "frames/s = B / mean call time. Analyzer.run takes one frame per call (no batch "
            "rows).",
        ],
    }

    def plot(path: Path) -> None:
        fig = new_figure((10.0, 4.0))
        ax1, ax2 = fig.subplots(1, 2)
        bs = [r["batch"] for r in rows]
        ax1.plot(bs, [r["ms_per_frame"] for r in rows], "o-")
        ax1.set(xlabel="batch", ylabel="ms per frame (p50 / B)", title="time per frame", ylim=0)
        ax2.plot(bs, [r["frames_per_s"] for r in rows], "s-", color="C1")
        ax2.set(xlabel="batch", ylabel="frames/s (B / mean)", title="throughput", ylim=0)
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xticks(bs, labels=[str(b) for b in bs])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
        fig.suptitle(f"Batch, bare ONNX Runtime ({model.name}, {threads} thread(s))")
        fig.tight_layout()
        fig.savefig(path, format="png")

    return section, plot


def _streams_round(
    analyzers: list[Any], n: int, frames: np.ndarray, frames_per_stream: int
) -> tuple[float, list[float], int]:
    """n streams at once, one thread + one Analyzer each: (wall s, latencies ms, frames lost)."""
    from sdk.result import Result

    barrier = threading.Barrier(n + 1)
    lats: list[list[float]] = [[] for _ in range(n)]
    lost = [0] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            a = analyzers[i]
            a.reset()
            src = (frames[(7 * i + k) % len(frames)] for k in range(frames_per_stream))
            barrier.wait()
            got = 0
            for rec in a.stream(src, drop="none"):
                if isinstance(rec, Result):
                    lats[i].append(rec.timings["total"])
                    got += 1
            lost[i] = frames_per_stream - got
        except BaseException as e:  # re-raised on the calling thread
            errors.append(e)
            barrier.abort()

    ts = [threading.Thread(target=worker, args=(i,), name=f"bench-stream-{i}") for i in range(n)]
    for th in ts:
        th.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for th in ts:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        e = errors[0]
        if isinstance(e, SDKError):
            raise e
        raise RuntimeError(f"a stream thread failed: {type(e).__name__}: {e}") from e
    return wall, [v for lat in lats for v in lat], sum(lost)


def streams_sweep(
    model: Path,
    streams: Sequence[int],
    frames: np.ndarray,
    threads: int,
    frames_per_stream: int,
    rounds: int,
) -> tuple[dict[str, Any], Callable[[Path], None]]:
    """The concurrent-streams section and its plot (see the module docstring)."""
    from sdk.analyzer import Analyzer

    analyzers = [
        Analyzer(model, backend="onnxruntime", device="cpu", threads=threads).load()
        for _ in range(max(streams))
    ]
    walls: dict[int, float] = dict.fromkeys(streams, 0.0)
    lats: dict[int, list[float]] = {n: [] for n in streams}
    lost: dict[int, int] = dict.fromkeys(streams, 0)
    try:
        for n in streams:  # warm-up: sessions, buffers, thread start-up
            _streams_round(analyzers, n, frames, min(8, frames_per_stream))
        for _ in range(rounds):
            for n in streams:
                wall, lat, nlost = _streams_round(analyzers, n, frames, frames_per_stream)
                walls[n] += wall
                lats[n] += lat
                lost[n] += nlost
    finally:
        for a in analyzers:
            a.close()
    fps1 = None
    rows = []
    for n in streams:
        st = latency_stats(np.asarray(lats[n]) / 1e3)
        total = n * frames_per_stream * rounds
        fps = total / walls[n] if walls[n] > 0 else float("nan")
        if fps1 is None:
            fps1 = fps / streams[0]
        rows.append(
            {
                "streams": n,
                "frames": total,
                "p50_ms": st["p50_ms"],
                "p95_ms": st["p95_ms"],
                "p99_ms": st["p99_ms"],
                "aggregate_fps": fps,
                "speedup": fps / (fps1 * streams[0]) if fps1 else None,
                "efficiency": fps / (fps1 * n) if fps1 else None,
                "lost": lost[n],
            }
        )
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    section = {
        "title": f"Throughput against concurrent streams: {model.name}",
        "columns": [
            {"key": "streams", "header": "streams", "fmt": "int"},
            {"key": "frames", "header": "frames", "fmt": "int"},
            {"key": "p50_ms", "header": "p50 ms / frame", "fmt": ".3f"},
            {"key": "p95_ms", "header": "p95 ms", "fmt": ".3f"},
            {"key": "p99_ms", "header": "p99 ms", "fmt": ".3f"},
            {"key": "aggregate_fps", "header": "aggregate frames/s", "fmt": ".1f"},
            {"key": "speedup", "header": f"vs {streams[0]} stream(s)", "fmt": "ratio"},
            {"key": "efficiency", "header": "per-stream efficiency", "fmt": ".2f"},
            {"key": "lost", "header": "frames lost", "fmt": "int"},
        ],
        "rows": rows,
        "notes": [
            "One Analyzer per stream, each on its own thread (the SDK's documented way to serve "
            f"several streams), Analyzer.stream(drop='none') over {frames.shape[1]}×"
            f"{frames.shape[2]} uint8 phantom frames; {threads} ONNX Runtime thread(s) per "
            f"Analyzer, {cores} cores visible. {rounds} round(s) of {frames_per_stream} frames "
            "per stream, configurations interleaved round by round.",
            "aggregate frames/s = all frames / wall time; latency = Result.timings['total'] "
            "(the analyzer's own time for the frame, contention included, queue wait not); "
            "efficiency = aggregate / (streams × single-stream rate).",
        ],
    }

    def plot(path: Path) -> None:
        fig = new_figure((10.0, 4.0))
        ax1, ax2 = fig.subplots(1, 2)
        ns = [r["streams"] for r in rows]
        ax1.plot(ns, [r["aggregate_fps"] for r in rows], "o-", label="measured")
        if fps1:
            ax1.plot(ns, [fps1 * n for n in ns], ":", color="gray", label="linear scaling")
        ax1.set(xlabel="concurrent streams", ylabel="aggregate frames/s", title="throughput")
        ax1.set_ylim(bottom=0)
        ax1.legend()
        ax2.plot(ns, [r["p50_ms"] for r in rows], "o-", label="p50")
        ax2.plot(ns, [r["p99_ms"] for r in rows], "s--", label="p99")
        ax2.set(xlabel="concurrent streams", ylabel="ms per frame", title="latency per frame")
        ax2.set_ylim(bottom=0)
        ax2.legend()
        for ax in (ax1, ax2):
            ax.set_xticks(ns)
            ax.grid(alpha=0.3)
        fig.suptitle(
            f"One Analyzer per stream thread ({threads} thread(s) each, {cores} cores visible)"
        )
        fig.tight_layout()
        fig.savefig(path, format="png")

    return section, plot


def run(
    model: str | Path | None = None,
    sizes: Sequence[int] = (128, 256, 384, 512),
    batches: Sequence[int] = (1, 2, 4, 8),
    streams: Sequence[int] = (1, 2, 4),
    threads: int = 1,
    repeat: int = 100,
    warmup: int = 5,
    frames_per_stream: int = 200,
    rounds: int = 3,
    frame_shape: tuple[int, int] = (600, 800),
    n_frames: int = 8,
    command: str = "",
) -> Report:
    """All three sweeps as one report (an empty sequence skips that sweep).

    Args:
        model: ``.onnx`` artifact for the batch and streams sweeps and the configuration of
            the size sweep (default: the embedded FP32 model).
        sizes, batches, streams: the sweep points.
        threads: ONNX Runtime intra-op threads (per Analyzer in the streams sweep).
        repeat, warmup: interleaved timed / untimed calls per row (sizes and batches).
        frames_per_stream, rounds: frames each stream analyzes per round, and rounds.
    """
    from sdk.analyzer import default_model

    path = Path(model) if model is not None else default_model("fp32")
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise InputError(f"{path}: bench scaling needs an existing .onnx artifact")
    if int(threads) < 1 or int(repeat) < 1 or int(warmup) < 0:
        raise InputError(
            f"threads and repeat must be >= 1, warmup >= 0; got {threads}, {repeat}, {warmup}"
        )
    if int(frames_per_stream) < 1 or int(rounds) < 1:
        raise InputError(
            f"frames_per_stream and rounds must be >= 1, got {frames_per_stream}, {rounds}"
        )
    sizes = _check_list("sizes", sizes, 32, 2048)
    batches = _check_list("batches", batches, 1, 256)
    streams = _check_list("streams", streams, 1, 64)
    if not (sizes or batches or streams):
        raise InputError("every sweep is empty: give sizes, batches or streams")
    frames = phantom_frames(n_frames, frame_shape)
    report = Report(
        suite="scaling",
        title=f"Scaling: {path.name}",
        machine=bench_machine_info(),
        command=command,
        summary={"threads": threads, "repeat": repeat, "warmup": warmup},
    )
    for name, values, sweep in (
        ("size", sizes, lambda: size_sweep(path, sizes, frames, threads, repeat, warmup)),
        ("batch", batches, lambda: batch_sweep(path, batches, frames, threads, repeat, warmup)),
        (
            "streams",
            streams,
            lambda: streams_sweep(path, streams, frames, threads, frames_per_stream, rounds),
        ),
    ):
        if not values:
            continue
        section, plot = sweep()
        report.sections.append(section)
        if plot is not None:
            report.figures[name] = plot
    return report
