"""``sonoedge batch``: re-analyze an archive (DICOM, video, images) on a Dask cluster.

One task per source file, run by a worker that keeps one :class:`sdk.Analyzer` per model for
its life; the driver appends each finished source's records to ``OUT/results.jsonl`` (one JSON
record per frame: ``source``, ``frame_index``, ``timestamp``, ``label``, ``probs``,
``raw_probs``, ``in_scope``, ``scope_score``, ``lesions`` (``Lesion.to_dict()``),
``mask_px``) in **one** append + fsync, then records the source in ``OUT/sources.jsonl``
(``status`` "ok" with its frame count, or "failed" with the error). A rerun skips the sources
already "ok" there and retries the failed ones; on start, records of a source that never
reached ``sources.jsonl`` (a run killed between the two writes) and any torn last line are
dropped, so every record in ``results.jsonl`` belongs to a finished source, exactly once.

**Why Dask and not Ray Data.** Issue #18 allowed either, Dask "if Ray cannot be held to
loopback reliably". Measured here (``benchmarks/batch_ray_loopback.py``, results in
``benchmarks/results/batch-ray-loopback.md``): Ray 2.60 with its defaults listens on all
interfaces (``:::port``) and the machine's address; ``_node_ip_address="127.0.0.1"`` alone does
not change that; with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` as well every socket stayed on
loopback in every trial. So Ray *can* be held to loopback, but only through an internal
environment variable named for other platforms, which a Ray release may drop without notice.
Dask's ``LocalCluster(host="127.0.0.1")`` binds scheduler, nannies and workers to loopback
through its documented API, starts in 1 to 2.5 s (Ray: 11 to 50 s in the trials, on the same
loaded machine), installs in seconds beside numpy 2 (Ray Data: ~3 minutes with pandas and
pyarrow) and needs nothing of the driver but a scheduler address for an existing cluster. We
chose Dask on those grounds; the tests assert loopback against the real cluster. A local cluster
is the default; ``--address`` uses an existing one (``tcp://HOST:8786``), whose workers must
have sonoedge installed.

Equality with a local Analyzer: each frame goes through ``Analyzer.run`` (no smoothing) exactly
as ``for f in sdk.sources.open_source(path): analyzer.run(f.image, timestamp=f.timestamp,
pixel_spacing_mm=f.pixel_spacing_mm)`` does; the tests compare record by record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import BackendUnavailableError, InputError, SDKError

__all__ = ["BatchSummary", "add_parser", "analyze_source", "find_sources", "run_batch"]

RESULTS = "results.jsonl"
SOURCES = "sources.jsonl"
#: Seconds one source may take before the run gives up waiting (a stuck decoder, a dead worker).
SOURCE_TIMEOUT_S = 3600.0

_ANALYZERS: dict[tuple[str | None, int | None], Any] = {}  # per worker process


def find_sources(root: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Every DICOM (by suffix or the ``DICM`` magic), video and image file under ``root``,
    sorted; ``exclude`` (the output folder, if inside) is skipped. Hidden files are ignored."""
    from sdk.sources._base import IMAGE_SUFFIXES
    from sdk.sources._dicom import is_dicom
    from sdk.sources._open import _DICOM_SUFFIXES
    from sdk.sources._streams import VIDEO_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the archive's root folder")
    ex = Path(exclude).resolve() if exclude else None
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if ex is not None and Path(dirpath).resolve() == ex:
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            suf = p.suffix.lower()
            if suf in _DICOM_SUFFIXES or suf in VIDEO_SUFFIXES or suf in IMAGE_SUFFIXES:
                out.append(p)
            elif suf in ("", ".ima", ".img") and p.is_file() and is_dicom(p):
                out.append(p)
    return out


def _analyzer(model: str | None, threads: int | None) -> Any:
    key = (model, threads)
    a = _ANALYZERS.get(key)
    if a is None:
        import sdk

        a = _ANALYZERS[key] = sdk.Analyzer(model, threads=threads).load()
    return a


def frame_record(source: str, frame: Any, r: Any) -> dict[str, Any]:
    """One ``results.jsonl`` record (full-precision probabilities; lesions as
    ``Lesion.to_dict()``)."""
    return {
        "source": source,
        "frame_index": int(frame.index),
        "timestamp": frame.timestamp,
        "label": r.label,
        "probs": r.probs,
        "raw_probs": r.raw_probs,
        "in_scope": bool(r.in_scope),
        "scope_score": r.scope_score,
        "lesions": [les.to_dict() for les in r.lesions],
        "mask_px": int(r.mask.sum()),
    }


def analyze_source(
    path: str, source: str, model: str | None = None, threads: int | None = 1
) -> dict[str, Any]:
    """Analyze every frame of one file (runs on a worker). Never raises: a failure is returned
    as ``{"status": "failed", "error": ...}`` so that one bad file does not stop the archive."""
    from sdk.sources import open_source

    t0 = time.perf_counter()
    try:
        a = _analyzer(model, threads)
        records = []
        with open_source(path) as src:
            for fr in src:
                r = a.run(fr.image, timestamp=fr.timestamp, pixel_spacing_mm=fr.pixel_spacing_mm)
                records.append(frame_record(source, fr, r))
            skipped = list(getattr(src, "skipped", []) or [])
        if not records:
            why = f" ({skipped[0].reason})" if skipped and hasattr(skipped[0], "reason") else ""
            raise SDKError(f"{source}: no frame could be read{why}")
        return {
            "source": source,
            "status": "ok",
            "frames": len(records),
            "seconds": round(time.perf_counter() - t0, 3),
            "records": records,
        }
    except Exception as e:  # every failure is this source's record, never the run's end
        return {
            "source": source,
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "seconds": round(time.perf_counter() - t0, 3),
            "records": [],
        }


def _append(path: Path, lines: list[str]) -> None:
    """All of ``lines`` in one write to a file opened O_APPEND, then fsync."""
    if not lines:
        return
    data = "".join(line + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(d, dict) and "source" in d:
            out.append(d)
    return out


def _recover(out: Path) -> set[str]:
    """The sources finished "ok" (last status in sources.jsonl); rewrites results.jsonl without
    records of other sources or torn lines (atomically: temp file + rename)."""
    status: dict[str, str] = {}
    for d in _read_jsonl(out / SOURCES):
        status[d["source"]] = d.get("status", "")
    done = {s for s, st in status.items() if st == "ok"}
    res = out / RESULTS
    if res.exists():
        raw = res.read_bytes()
        keep, dropped = [], 0
        for line in raw.splitlines():
            try:
                d = json.loads(line)
                ok = isinstance(d, dict) and d.get("source") in done
            except ValueError:
                ok = False
            if ok:
                keep.append(line)
            else:
                dropped += 1
        if dropped or (raw and not raw.endswith(b"\n")):
            tmp = res.with_suffix(".jsonl.tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in keep))
            os.replace(tmp, res)
    return done


@dataclass
class BatchSummary:
    """What :func:`run_batch` did."""

    out: Path
    sources: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "sources": self.sources,
            "skipped": self.skipped,
            "ok": self.ok,
            "failed": self.failed,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "failures": self.failures,
        }


def _dask() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise BackendUnavailableError(
            'sonoedge batch needs Dask distributed: pip install "sonoedge[batch]"'
        ) from e
    return distributed


def local_cluster(workers: int, **kwargs: Any) -> Any:
    """A Dask ``LocalCluster`` of ``workers`` single-threaded processes, every socket on
    127.0.0.1, no dashboard."""
    distributed = _dask()
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
        silence_logs=40,  # logging.ERROR
        **kwargs,
    )


def run_batch(
    source_dir: str | Path,
    out: str | Path,
    *,
    workers: int = 2,
    address: str | None = None,
    model: str | Path | None = None,
    threads: int | None = 1,
    progress: bool = True,
    retry_failed: bool = True,
    source_timeout: float = SOURCE_TIMEOUT_S,
    client: Any = None,
) -> BatchSummary:
    """Analyze every source under ``source_dir`` into ``out`` (see the module docstring).

    ``address``: an existing Dask scheduler (``tcp://host:8786``); None starts a local cluster
    of ``workers`` processes on 127.0.0.1 and stops it at the end. ``client``: an existing
    ``distributed.Client`` (tests, notebooks); neither it nor its cluster is closed here."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise InputError(f"workers must be an integer in 1..256, got {workers!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    model_s = None if model is None else str(Path(model).resolve())
    if model_s is not None and not Path(model_s).is_file():
        raise InputError(f"--model {model}: no such file; give an exported .onnx / .plan")
    root = Path(source_dir)
    sources = find_sources(root, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    done = _recover(out)
    rels = {p: p.relative_to(root).as_posix() for p in sources}
    todo = [p for p in sources if rels[p] not in done]
    summary = BatchSummary(out=out, sources=len(sources), skipped=len(sources) - len(todo))
    if not retry_failed:
        failed_before = {
            d["source"] for d in _read_jsonl(out / SOURCES) if d.get("status") == "failed"
        }
        summary.skipped += sum(rels[p] in failed_before for p in todo)
        todo = [p for p in todo if rels[p] not in failed_before]
    (out / RESULTS).touch()
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary

    distributed = _dask()
    cluster = own_client = None
    try:
        if client is None:
            if address is not None:
                own_client = distributed.Client(address, timeout=30)
            else:
                cluster = local_cluster(min(workers, len(todo)))
                own_client = distributed.Client(cluster, timeout=30)
            client = own_client
        futures = [
            client.submit(analyze_source, str(p.resolve()), rels[p], model_s, threads, pure=False)
            for p in todo
        ]
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        wait_s = source_timeout * math.ceil(len(todo) / n_workers) + 60
        bar = tqdm(total=len(todo), unit="source", disable=not progress, file=sys.stderr)
        try:
            for fut in distributed.as_completed(futures, timeout=wait_s):
                res = fut.result()
                rec = {k: v for k, v in res.items() if k != "records"}
                lines = [json.dumps(r, allow_nan=False) for r in res["records"]]
                _append(out / RESULTS, lines)
                _append(out / SOURCES, [json.dumps(rec)])
                if res["status"] == "ok":
                    summary.ok += 1
                    summary.frames += res["frames"]
                else:
                    summary.failed += 1
                    summary.failures.append(rec)
                bar.update(1)
                bar.set_postfix(frames=summary.frames, failed=summary.failed, refresh=False)
        finally:
            bar.close()
    finally:
        if own_client is not None:
            own_client.close(timeout=30)
        if cluster is not None:
            cluster.close(timeout=30)
    summary.seconds = time.perf_counter() - t0
    return summary


# ---- CLI ---------------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    from sdk.argtypes import int_type

    p = sub.add_parser(
        "batch",
        help="re-analyze an archive of DICOM / video / images on a Dask cluster (resumable)",
        description=(
            "Analyze every DICOM, video and image under SOURCE_DIR on a Dask cluster (a local "
            "one of --workers processes on 127.0.0.1 by default; an existing one with "
            "--address). Writes OUT/results.jsonl (one record per frame) and OUT/sources.jsonl "
            "(one line per finished source: ok or failed with the error). Rerunning skips the "
            "sources already done and retries the failed ones. Needs the batch extra: "
            'pip install "sonoedge[batch]".'
        ),
    )
    p.add_argument("source_dir", help="archive root folder")
    p.add_argument("--out", required=True, help="output folder (created; resumed if it exists)")
    p.add_argument(
        "--workers", type=int_type(1, 256, "a worker count"), default=2, help="local workers (2)"
    )
    p.add_argument("--address", default=None, help="existing Dask scheduler, tcp://HOST:8786")
    p.add_argument("--model", default=None, help="artifact (.onnx / .plan); default: embedded")
    p.add_argument(
        "--threads", type=int_type(1, 64, "a thread count"), default=1, help="per worker (1)"
    )
    p.add_argument("--no-retry-failed", action="store_true", help="skip sources that failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    s = run_batch(
        args.source_dir,
        args.out,
        workers=args.workers,
        address=args.address,
        model=args.model,
        threads=args.threads,
        progress=not args.quiet,
        retry_failed=not args.no_retry_failed,
    )
    print(
        f"sonoedge batch: {s.sources} sources: {s.ok} analyzed ({s.frames} frames), "
        f"{s.skipped} already done, {s.failed} failed, {s.seconds:.1f} s -> "
        f"{s.out / RESULTS}"
    )
    for f in s.failures[:20]:
        print(f"  failed: {f['source']}: {f['error']}", file=sys.stderr)
    if s.failed:
        print(
            f"sonoedge batch: {s.failed} source(s) failed (see {s.out / SOURCES}); rerun to retry",
            file=sys.stderr,
        )
        return 1
    return 0
