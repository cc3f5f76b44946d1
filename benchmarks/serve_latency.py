"""`sonoedge serve` latency against the direct call, in the same run (issue #18 item 5).

    python benchmarks/serve_latency.py --repeat 200 --out benchmarks/results

Starts a real server (the embedded default model, ``--max-batch 4``, 1 backend thread) on
127.0.0.1 and measures, interleaved round by round on the same 600×800 uint8 phantom frames:

* direct: ``sdk.Analyzer.run`` in this process (1 thread), the anchor;
* http / grpc, 1 client: ``sdk.Analyzer("http://..." / "grpc://...").run``, one call at a time;
* direct / http / grpc, 4 clients: 4 threads, each with its own Analyzer (local: 4 local
  Analyzers; remote: 4 clients of the one server, whose dynamic batcher may group them).

Latency is the caller's wall time per call (``Result.timings["total"]`` for remote calls, which
includes the network); throughput is all calls / wall time. Ratios are against the direct row
with the same number of clients. Never asserted anywhere: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

import sdk
from sdk import synthetic
from sdk.serve import launch


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _round(
    make, frames: list[np.ndarray], clients: int, n: int, lat: list[float], srv: list[float]
) -> float:
    """n calls per client, ``clients`` threads; returns the wall time; appends latencies (ms)
    and, for remote calls, the server's own Analyzer time (``timings["server_total"]``)."""
    analyzers = [make() for _ in range(clients)]
    for a in analyzers:
        a.run(frames[0])  # connection / warm-up, not timed
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def work(a, k0: int) -> None:
        mine, server = [], []
        barrier.wait(timeout=60)
        for i in range(n):
            t = time.perf_counter()
            r = a.run(frames[(k0 + i) % len(frames)])
            mine.append((time.perf_counter() - t) * 1e3)
            if "server_total" in r.timings:
                server.append(r.timings["server_total"])
        with lock:
            lat.extend(mine)
            srv.extend(server)

    threads = [threading.Thread(target=work, args=(a, k)) for k, a in enumerate(analyzers)]
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    for a in analyzers:
        a.close()
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="calls per row and client (200)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (4)")
    ap.add_argument("--out", default=None, help="write serve-latency-<stem>.md/.json/.png here")
    ap.add_argument("--stem", default="serve-latency-cpu-2c")
    args = ap.parse_args()
    frames = [
        synthetic.phantom(k, size=(600, 800), seed=s)[0]
        for s, k in enumerate(["malignant", "benign", "normal", "malignant"])
    ]
    server = launch(max_batch=4, threads=1, timeout=180)
    try:
        rows = {
            (name, c): {"lat": [], "srv": [], "wall": 0.0, "calls": 0}
            for c in (1, 4)
            for name in ("direct", "http", "grpc")
        }
        makers = {
            "direct": lambda: sdk.Analyzer(threads=1).load(),
            "http": lambda: sdk.Analyzer(server.http_url).load(),
            "grpc": lambda: sdk.Analyzer(server.grpc_url).load(),
        }
        per_round = max(1, args.repeat // args.rounds)
        for r in range(args.rounds):
            for (name, c), row in rows.items():
                row["wall"] += _round(makers[name], frames, c, per_round, row["lat"], row["srv"])
                row["calls"] += per_round * c
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.stop()
    table = []
    for (name, c), row in rows.items():
        d = rows[("direct", c)]
        p50, p99 = _pct(row["lat"], 50), _pct(row["lat"], 99)
        fps = row["calls"] / row["wall"]
        table.append(
            {
                "path": name,
                "clients": c,
                "calls": row["calls"],
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "calls_per_s": round(fps, 1),
                "server_p50_ms": round(_pct(row["srv"], 50), 3) if row["srv"] else None,
                "p50_vs_direct": round(p50 / _pct(d["lat"], 50), 2),
                "p99_vs_direct": round(p99 / _pct(d["lat"], 99), 2),
                "throughput_vs_direct": round(fps / (d["calls"] / d["wall"]), 2),
            }
        )
    machine = _machine()
    doc = {"machine": machine, "args": vars(args), "rows": table}
    md = _markdown(doc)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.stem}.json").write_text(json.dumps(doc, indent=2))
        (out / f"{args.stem}.md").write_text(md)
        _plot(table, out / f"{args.stem}.png")
    return 0


def _machine(serve: bool = True) -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    base = f"{cpu}, {os.cpu_count()} cores, no GPU; python {platform.python_version()}, "
    if not serve:
        import distributed

        return (
            f"{base}numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"dask distributed {distributed.__version__}; {when}"
        )
    return (
        f"{base}numpy {np.__version__} (client) / < 2 (server), onnxruntime "
        f"{onnxruntime.__version__}, PyTriton 0.7 (tritonserver 2.51); {when}"
    )


def _markdown(doc: dict) -> str:
    a = doc["args"]
    lines = [
        "# sonoedge serve: latency against the direct call",
        "",
        "| path | clients | calls | p50 ms | p99 ms | server Analyzer p50 ms | calls/s | "
        "p50 vs direct | p99 vs direct | throughput vs direct |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['path']} | {r['clients']} | {r['calls']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | "
            + ("–" if r["server_p50_ms"] is None else f"{r['server_p50_ms']:.2f}")
            + f" | {r['calls_per_s']:.1f} | {r['p50_vs_direct']:.2f}× | "
            f"{r['p99_vs_direct']:.2f}× | {r['throughput_vs_direct']:.2f}× |"
        )
    lines += [
        "",
        "- 600×800 uint8 phantom frames, the embedded default model (FP32, 128×128 input); "
        "server: `sonoedge serve --max-batch 4 --threads 1` (queue delay 0) on 127.0.0.1 "
        "(PyTriton, its own numpy<2 environment); direct: `sdk.Analyzer(threads=1).run` in "
        "the benchmark process.",
        "- Latency: the caller's wall time per call (remote: request + server Analyzer + "
        "response, the frame's 480 kB each way included); server Analyzer: the "
        "Analyzer's own time inside the server (`timings['server_total']`), the rest of a "
        "remote call is transport: Triton, its Python-backend stub, PyTriton's proxy and the "
        "client. 4 clients: 4 threads, one Analyzer "
        "each (local) or one client each of the same server. Rows interleaved in "
        f"{a['rounds']} rounds of {max(1, a['repeat'] // a['rounds'])} calls per client.",
        "- Client, server and Triton share the machine's cores: on 2 cores the 4-client rows "
        "measure contention as much as serving.",
        "",
        f"Machine: {doc['machine']}. Reproduce: `python benchmarks/serve_latency.py --repeat "
        f"{a['repeat']} --rounds {a['rounds']} --out benchmarks/results --stem {a['stem']}`.",
    ]
    return "\n".join(lines) + "\n"


def _plot(table: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the bench / test extras
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, c in zip(axes, (1, 4), strict=True):
        rows = [r for r in table if r["clients"] == c]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
        ax.bar(x + 0.2, [r["p99_ms"] for r in rows], 0.4, label="p99")
        ax.set_xticks(x, [r["path"] for r in rows])
        ax.set_ylabel("ms per call")
        ax.set_title(f"{c} client(s), 600×800 frames")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
