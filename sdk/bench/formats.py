"""``sonoedge bench formats``: one ONNX model on several runtimes, timed in the same run.

Rows, for each ONNX model (default: the embedded ``default-fp32.onnx`` and ``default-int8.onnx``),
timed interleaved round-robin in one process (:func:`sdk.bench.compare`), so drift and the
load of other jobs hit every row alike:

* **bare ONNX Runtime** ``session.run`` on an already preprocessed batch-1 input: the anchor.
  CPU execution provider, ``threads`` intra-op threads, one inter-op thread, no spinning (the
  settings of the SDK's own backend).
* **OpenVINO** on the same ONNX file, when ``openvino`` is importable (otherwise the row says
  "not installed"): ``read_model`` → static batch-1 shape → ``compile_model("CPU")`` with
  ``INFERENCE_NUM_THREADS=threads``, ``NUM_STREAMS=1``, ``PERFORMANCE_HINT=LATENCY`` and
  ``INFERENCE_PRECISION_HINT=f32``. The last one matters: on CPUs with AVX512-BF16 / AMX,
  OpenVINO's CPU default is bf16, which would time a different precision than ONNX Runtime.
  Before timing, its outputs are compared with ONNX Runtime's (the largest ``|Δ mask_logits|``
  is in the row's note).
* **sonoedge Analyzer.run** end to end (600×800 uint8 phantom frame → mask + label + lesions),
  for every backend / device usable here: ONNX Runtime CPU always, its CUDA and TensorRT
  execution providers when this onnxruntime has them.

Columns: p50 / p95 / p99 ms; FPS = 1 / mean latency (one call after the other, batch 1);
ratio = the row's p50 / the p50 of the bare ONNX Runtime session on the same model, both from
this run; peak RSS.

**Peak RSS** is measured apart from the timing: each row runs again in its own fresh Python
process that imports only that row's runtime, loads the model, reads the same frames / input from
a ``.npy`` file, calls the row ``rss_calls`` times and reports its peak resident memory: the
high-water mark ``VmHWM`` of ``/proc/self/status`` on Linux (``ru_maxrss`` elsewhere; on Linux
``ru_maxrss`` would carry the parent benchmark's own peak into the child across fork + exec).
That is the whole process: interpreter, numpy, sdk, the runtime's libraries, the model, its
buffers. A process that loads nothing but the frames gives the baseline in the notes, the share
every row carries. One process per row, so rows do not share one peak; the timing stays
interleaved in one process.

This module also holds :class:`Report`, the md + json (+ PNG) writer shared with the ``scaling``
and ``soak`` suites, and :func:`section_markdown`, which ``benchmarks/readme_perf.py`` uses to
render their JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.bench.timing import compare, header_lines, machine_info
from sdk.errors import BackendUnavailableError, InputError, ModelError

__all__ = [
    "Report",
    "bench_machine_info",
    "latency_stats",
    "phantom_frames",
    "run",
    "section_markdown",
]

#: Repository root (the folder holding ``sdk/``): what a child process needs on its path.
_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- shared report


def latency_stats(t_s: np.ndarray) -> dict[str, float]:
    """p50 / p95 / p99 / mean in ms and FPS (1 / mean) of per-call times in seconds."""
    t = np.asarray(t_s, dtype=np.float64) * 1e3
    if t.size == 0:
        raise InputError("no timings to summarize: run at least one repeat")
    mean = float(t.mean())
    return {
        "p50_ms": float(np.percentile(t, 50)),
        "p95_ms": float(np.percentile(t, 95)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": mean,
        "fps": 1e3 / mean if mean > 0 else float("inf"),
        "n": int(t.size),
    }


def bench_machine_info(device: str | None = None) -> dict[str, Any]:
    """:func:`sdk.bench.machine_info` plus the OpenVINO version, read without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    info = machine_info(device)
    try:
        info["versions"] += f", openvino {version('openvino')}"
    except PackageNotFoundError:
        pass
    return info


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v.replace("|", "\\|")  # a bare pipe would split the markdown cell
    if fmt == "ratio":
        return f"{v:.2f}×"
    if fmt == "int":
        return f"{int(v)}"
    return format(v, fmt or "")


def section_markdown(section: dict[str, Any]) -> str:
    """A report section (its JSON form) as a markdown table plus its notes.

    ``section``: ``{"title", "columns": [{"key", "header", "fmt"}], "rows": [{key: value}],
    "notes": [str]}``; ``fmt`` is a format spec (``".2f"``), ``"ratio"`` or ``"int"``; a row may
    carry ``"status"`` (e.g. "not installed") which fills its empty measurement cells.
    """
    cols = section["columns"]
    lines = []
    if section.get("title"):
        lines += [f"#### {section['title']}", ""]
    lines.append("| " + " | ".join(c["header"] for c in cols) + " |")
    lines.append(
        "|" + "|".join("---" if c.get("fmt") in (None, "") else "---:" for c in cols) + "|"
    )
    for row in section["rows"]:
        cells = []
        status, shown = row.get("status"), False
        for c in cols:
            v = row.get(c["key"])
            if v is None and status and c.get("fmt"):
                cells.append("" if shown else status)  # the status once, in the first cell
                shown = True
                continue
            cells.append(_fmt(v, c.get("fmt", "")))
        lines.append("| " + " | ".join(cells) + " |")
    notes = section.get("notes") or []
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    """A benchmark result: sections of rows, machine and versions, the command, PNG figures.

    ``figures`` maps a suffix to a function drawing the PNG at a given path; :meth:`write` puts
    them beside the tables as ``STEM-SUFFIX.png``. ``summary`` is machine-readable extra data
    (the soak's checks, series for plots) kept in the JSON.
    """

    suite: str
    title: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    _written_figures: list[str] = field(default_factory=list, repr=False)
    _figure_notes: list[str] = field(default_factory=list, repr=False)

    def markdown(self) -> str:
        """The whole report as markdown (figure links once :meth:`write` drew them)."""
        lines = header_lines(self.title, self.machine, self.command)
        for s in self.sections:
            lines.append(section_markdown(s))
        for name in self._written_figures:
            lines += [f"![{name}]({name})", ""]
        lines += [f"- {n}" for n in self._figure_notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "title": self.title,
            "machine": self.machine,
            "command": self.command,
            "sections": self.sections,
            "summary": self.summary,
            "figures": list(self._written_figures),
        }

    def write(self, out_dir: str | Path, stem: str) -> list[Path]:
        """Draw the figures (``STEM-SUFFIX.png``), then write ``STEM.md`` and ``STEM.json``, each
        atomically (temporary name, then rename). Without matplotlib the PNGs are skipped and
        the markdown says so. Returns the paths written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        self._written_figures, self._figure_notes = [], []
        for suffix, draw in self.figures.items():
            path = out / f"{stem}-{suffix}.png"
            tmp = path.with_name(path.name + ".tmp.png")
            try:
                draw(tmp)
                os.replace(tmp, path)
            except ImportError as e:
                self._figure_notes.append(
                    f"{path.name} not drawn: {e}; pip install matplotlib to get the plots"
                )
                continue
            finally:
                tmp.unlink(missing_ok=True)
            self._written_figures.append(path.name)
            written.append(path)
        texts = (self.markdown(), json.dumps(_json_safe(self.to_json()), indent=2))
        for ext, text in zip(("md", "json"), texts, strict=True):
            path = out / f"{stem}.{ext}"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            written.append(path)
        return written


def _json_safe(v: Any) -> Any:
    """NaN / inf become None (strict JSON); numpy scalars become Python numbers."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def new_figure(figsize: tuple[float, float] = (7.0, 4.5)) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot state); ImportError without it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- frames, sessions


def phantom_frames(n: int = 8, shape: tuple[int, int] = (600, 800), seed: int = 100) -> np.ndarray:
    """``n`` uint8 phantom frames (benign, malignant, normal in turn), stacked ``(n, H, W)``."""
    from sdk import synthetic

    labels = itertools.cycle(("benign", "malignant", "normal"))
    return np.stack(
        [synthetic.phantom(next(labels), size=shape, seed=seed + i)[0] for i in range(n)]
    )


def ort_session(path: str | Path, threads: int, provider: str = "CPUExecutionProvider") -> Any:
    """An ONNX Runtime session set up as the SDK's backend sets its own (its default ``spin``:
    :func:`sdk.backends.onnxruntime.session_options`)."""
    import onnxruntime as ort

    from sdk.backends.onnxruntime import session_options

    so = session_options(ort, int(threads))
    providers = [provider] + (
        ["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else []
    )
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # ORT raises its own exception types for bad files
        raise ModelError(
            f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}); pass a valid .onnx artifact"
        ) from e


def preprocessed_input(path: str | Path, frames: np.ndarray, batch: int = 1) -> np.ndarray:
    """The model input ``(batch, C, h, w)`` the SDK would feed for ``frames[0..batch)``."""
    from sdk import kernels as K
    from sdk.artifact import read_onnx_metadata

    md = read_onnx_metadata(ort_session(path, 1), str(path))
    return np.stack(
        [
            K.preprocess(
                frames[i % len(frames)],
                size=md.input_size,
                channels=md.channels,
                sigma=md.sigma,
                mean=md.mean,
                std=md.std,
            )
            for i in range(batch)
        ]
    ).astype(np.float32)


def _openvino_request(path: str | Path, threads: int, x: np.ndarray) -> tuple[Any, Any]:
    """(infer request, compiled model) of OpenVINO on CPU, static shape of ``x``, f32."""
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(
            "openvino is not installed: pip install openvino (or the bench extra)"
        ) from e
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0]: ov.PartialShape(list(x.shape))})
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": int(threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    return compiled.create_infer_request(), compiled


@dataclass
class _Spec:
    """One row: what to load and how to call it (JSON-able, so a child process can rebuild it)."""

    key: str
    kind: str  # "ort" | "openvino" | "analyzer" | "baseline"
    model: str = ""
    threads: int = 1
    device: str = "cpu"
    backend: str = "onnxruntime"  # analyzer rows
    precision: str = ""
    runtime: str = ""
    anchor: str | None = None  # key of the anchor row


def _load_row(
    spec: _Spec, frames: np.ndarray, x: np.ndarray | None
) -> tuple[Callable[[], Any], Callable[[], None]]:
    """Build the row's callable and its closer. Raises BackendUnavailableError when the
    runtime is missing here."""
    if spec.kind == "baseline":
        return (lambda: None), (lambda: None)
    if spec.kind == "ort":
        sess = ort_session(spec.model, spec.threads)
        name = sess.get_inputs()[0].name
        return (lambda: sess.run(None, {name: x})), (lambda: None)
    if spec.kind == "openvino":
        req, _ = _openvino_request(spec.model, spec.threads, x)  # type: ignore[arg-type]
        return (lambda: req.infer({0: x})), (lambda: None)
    if spec.kind == "analyzer":
        from sdk.analyzer import Analyzer

        a = Analyzer(spec.model, backend=spec.backend, device=spec.device, threads=spec.threads)
        a.load()
        it = itertools.count()
        n = len(frames)
        return (lambda: a.run(frames[next(it) % n])), a.close
    raise InputError(f"unknown row kind {spec.kind!r}")


def _child_main(spec_json: str) -> None:
    """Entry point of an RSS child process: load one row, call it, print its peak RSS."""
    import resource

    d = json.loads(spec_json)
    calls = int(d.pop("calls"))
    frames = np.load(d.pop("frames_path"))
    x_path = d.pop("x_path")
    x = np.load(x_path) if x_path else None
    fn, close = _load_row(_Spec(**d), frames, x)
    for _ in range(calls):
        fn()
    close()
    print(json.dumps({"peak_rss_mb": _own_peak_rss_mb(resource)}), flush=True)


def _own_peak_rss_mb(resource: Any) -> float:
    """Peak resident memory of this process's own address space, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: Linux carries the parent's
    peak into a child across fork + exec (``ru_maxrss`` is the max over every address space the
    process had), so a child of a 230 MB benchmark process would report at least 230 MB. Other
    systems: ``ru_maxrss`` (bytes on macOS, KiB elsewhere).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def measure_peak_rss(
    spec: _Spec, frames_path: Path, x_path: Path | None, calls: int, timeout_s: float = 300.0
) -> float | str:
    """Peak RSS in MiB of a fresh process running ``spec`` ``calls`` times, or why not."""
    d = {**spec.__dict__, "calls": calls, "frames_path": str(frames_path)}
    d["x_path"] = str(x_path) if x_path is not None else ""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env["OMP_NUM_THREADS"] = str(spec.threads)
    code = "import sys; from sdk.bench.formats import _child_main; _child_main(sys.argv[1])"
    try:
        p = subprocess.run(
            [sys.executable, "-c", code, json.dumps(d)],
            capture_output=True,
            text=True,
            env=env,
            # not the caller's folder: `python -c` puts the cwd first on sys.path, and a source
            # checkout there (without the compiled kernels) would shadow the installed package
            cwd=tempfile.gettempdir(),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last[:200]}"
    try:
        return float(json.loads(p.stdout.strip().splitlines()[-1])["peak_rss_mb"])
    except (ValueError, KeyError, IndexError):
        return f"failed: unexpected output {p.stdout[-200:]!r}"


# --------------------------------------------------------------------------- the suite


def _analyzer_devices() -> list[str]:
    """Devices of the onnxruntime backend usable here: cpu, then cuda / tensorrt EPs."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    devs = ["cpu"]
    if "CUDAExecutionProvider" in have:
        devs.append("cuda")
    if "TensorrtExecutionProvider" in have:
        devs.append("tensorrt")
    return devs


def _check_models(models: Sequence[str | Path] | None) -> list[Path]:
    from sdk.analyzer import default_model

    if not models:
        return [default_model("fp32"), default_model("int8")]
    out = []
    for m in models:
        p = Path(m)
        if p.suffix.lower() != ".onnx":
            raise InputError(
                f"{p.name}: bench formats compares runtimes on one ONNX file; pass .onnx "
                "artifacts (time a TensorRT .plan through the Analyzer: `sonoedge run`)"
            )
        if not p.is_file():
            raise ModelError(f"{p}: no such file; pass the path of an exported .onnx artifact")
        out.append(p)
    return out


_COLUMNS = [
    {"key": "row", "header": "row", "fmt": ""},
    {"key": "model", "header": "model", "fmt": ""},
    {"key": "precision", "header": "precision", "fmt": ""},
    {"key": "p50_ms", "header": "p50 ms", "fmt": ".3f"},
    {"key": "p95_ms", "header": "p95 ms", "fmt": ".3f"},
    {"key": "p99_ms", "header": "p99 ms", "fmt": ".3f"},
    {"key": "fps", "header": "FPS", "fmt": ".1f"},
    {"key": "ratio", "header": "vs bare ORT", "fmt": "ratio"},
    {"key": "peak_rss_mb", "header": "peak RSS MB", "fmt": ".0f"},
    {"key": "note", "header": "note", "fmt": ""},
]


def run(
    models: Sequence[str | Path] | None = None,
    threads: int = 1,
    repeat: int = 200,
    warmup: int = 10,
    frame_shape: tuple[int, int] = (600, 800),
    n_frames: int = 8,
    rss: bool = True,
    rss_calls: int = 50,
    command: str = "",
) -> Report:
    """Time every row interleaved (see the module docstring) and measure peak RSS per row.

    Args:
        models: ``.onnx`` artifacts (default: the embedded FP32 and INT8 models).
        threads: intra-op threads of every runtime (ONNX Runtime, OpenVINO, the Analyzer).
        repeat: interleaved timed calls per row; warmup: untimed calls per row first.
        frame_shape, n_frames: the uint8 phantom frames the Analyzer rows cycle through (the
            bare rows take ``frames[0]`` preprocessed).
        rss: measure peak RSS (one child process per row); rss_calls: calls in each child.
    """
    if int(threads) < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if int(repeat) < 1 or int(warmup) < 0:
        raise InputError(f"repeat must be >= 1 and warmup >= 0, got {repeat}, {warmup}")
    paths = _check_models(models)
    frames = phantom_frames(n_frames, frame_shape)
    devices = _analyzer_devices()

    specs: list[_Spec] = []
    inputs: dict[str, np.ndarray] = {}
    precisions: dict[str, str] = {}
    for p in paths:
        from sdk.artifact import read_onnx_metadata

        md = read_onnx_metadata(ort_session(p, 1), str(p))
        precisions[str(p)] = md.precision
        inputs[str(p)] = preprocessed_input(p, frames)
        anchor = f"{p.name}: bare ORT"
        common = {"model": str(p), "threads": threads, "precision": md.precision}
        specs.append(_Spec(anchor, "ort", runtime="bare ONNX Runtime session.run", **common))
        specs.append(
            _Spec(
                f"{p.name}: OpenVINO",
                "openvino",
                runtime="OpenVINO CPU (f32 hint)",
                anchor=anchor,
                **common,
            )
        )
        for backend, dev in [("onnxruntime", d) for d in devices] + [("openvino", "cpu")]:
            runtime = (
                f"sonoedge Analyzer.run, {backend} {dev}, "
                f"{frame_shape[0]}×{frame_shape[1]} u8 frame"
            )
            specs.append(
                _Spec(
                    f"{p.name}: Analyzer {backend} {dev}",
                    "analyzer",
                    device=dev,
                    backend=backend,
                    runtime=runtime,
                    anchor=anchor,
                    **common,
                )
            )

    fns: dict[str, Callable[[], Any]] = {}
    closers: list[Callable[[], None]] = []
    status: dict[str, str] = {}
    notes: dict[str, str] = {}
    try:
        for s in specs:
            try:
                fn, close = _load_row(s, frames, inputs.get(s.model))
            except BackendUnavailableError as e:
                status[s.key] = "not installed" if s.kind == "openvino" else "not available"
                notes[s.key] = str(e)
                continue
            except Exception as e:
                if s.kind != "openvino":
                    raise
                # OpenVINO refusing a graph (an op it lacks) is a result, not a crash.
                status[s.key] = "failed"
                notes[s.key] = f"OpenVINO: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                continue
            fns[s.key] = fn
            closers.append(close)
            if s.kind == "openvino":
                notes[s.key] = _openvino_parity(s, inputs[s.model])
        timings = compare(fns, repeat=repeat, warmup=warmup) if fns else {}
    finally:
        for c in closers:
            c()

    rss_mb: dict[str, float | str] = {}
    baseline: float | str | None = None
    if rss:
        with tempfile.TemporaryDirectory(prefix="sonoedge-formats-") as td:
            fp = Path(td) / "frames.npy"
            np.save(fp, frames)
            xps = {}
            for i, (m, x) in enumerate(inputs.items()):
                xps[m] = Path(td) / f"x{i}.npy"
                np.save(xps[m], x)
            baseline = measure_peak_rss(_Spec("baseline", "baseline"), fp, None, 1)
            for s in specs:
                if s.key in fns:
                    rss_mb[s.key] = measure_peak_rss(s, fp, xps[s.model], rss_calls)

    rows = []
    for s in specs:
        row: dict[str, Any] = {
            "key": s.key,
            "row": s.runtime,
            "model": Path(s.model).name,
            "precision": s.precision,
            "kind": s.kind,
            "device": s.device,
            "threads": s.threads,
            "anchor": s.anchor,
            "status": status.get(s.key),
            "note": notes.get(s.key, ""),
        }
        if s.key in timings:
            row.update(latency_stats(timings[s.key]))
            row["ratio"] = None
        r = rss_mb.get(s.key)
        row["peak_rss_mb"] = r if isinstance(r, float) else None
        if isinstance(r, str):
            row["note"] = (row["note"] + "; " if row["note"] else "") + f"RSS {r}"
        rows.append(row)
    by_key = {r["key"]: r for r in rows}
    for r in rows:
        a = by_key.get(r["anchor"]) if r["anchor"] else r
        if "p50_ms" in r and a is not None and a.get("p50_ms"):
            r["ratio"] = r["p50_ms"] / a["p50_ms"]

    section_notes = [
        f"All rows timed in one process, interleaved round-robin: {repeat} calls each after "
        f"{warmup} warm-up calls, {threads} thread(s) per runtime. Bare rows: batch 1, input "
        "preprocessed once from a phantom frame; Analyzer rows: the whole frame path on "
        f"{n_frames} cycled {frame_shape[0]}×{frame_shape[1]} uint8 phantom frames.",
        "vs bare ORT = row p50 / p50 of the bare ONNX Runtime session on the same model, same "
        "run (below 1: faster). FPS = 1 / mean latency, calls one after the other.",
        _rss_note(rss, rss_calls, baseline),
        "OpenVINO: static batch-1 shape, INFERENCE_PRECISION_HINT=f32 (its CPU default can be "
        "bf16), NUM_STREAMS=1, PERFORMANCE_HINT=LATENCY.",
    ]
    if devices == ["cpu"]:
        section_notes.append(
            "No CUDA / TensorRT execution provider in this onnxruntime: CPU Analyzer rows only."
        )
    report = Report(
        suite="formats",
        title="Formats and runtimes: " + ", ".join(p.name for p in paths),
        sections=[{"title": "", "columns": _COLUMNS, "rows": rows, "notes": section_notes}],
        machine=bench_machine_info(),
        command=command,
        summary={
            "repeat": repeat,
            "warmup": warmup,
            "threads": threads,
            "baseline_rss_mb": baseline if isinstance(baseline, float) else None,
        },
    )
    return report


def _rss_note(rss: bool, calls: int, baseline: float | str | None) -> str:
    if not rss:
        return "peak RSS not measured (rss=False)."
    base = f"{baseline:.0f} MB" if isinstance(baseline, float) else str(baseline)
    return (
        "peak RSS = high-water resident memory (Linux VmHWM) of a fresh Python process per row "
        f"that imports only that row's runtime, loads the model and makes {calls} calls: the "
        "whole process, interpreter included; baseline (Python + numpy + sdk + the frames, no "
        f"runtime): {base}."
    )


def _openvino_parity(spec: _Spec, x: np.ndarray) -> str:
    """Compare OpenVINO's outputs with ONNX Runtime's on ``x``; a note for the row."""
    sess = ort_session(spec.model, 1)
    feed = {sess.get_inputs()[0].name: x}
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
    req, compiled = _openvino_request(spec.model, 1, x)
    got = req.infer({0: x})
    diffs = []
    for out in compiled.outputs:
        name = out.get_any_name()
        if name in ref:
            diffs.append((name, float(np.abs(np.asarray(got[out]) - ref[name]).max())))
    d = dict(diffs)
    if "mask_logits" in d:
        return f"max abs Δ mask_logits vs ORT {d['mask_logits']:.2g}"
    return "outputs: " + ", ".join(f"{k} Δ {v:.2g}" for k, v in diffs)
