"""Can Ray (Ray Data) be held to loopback here? The measurement behind `sonoedge batch` using
Dask (sdk/batch.py docstring, issue #18 item 3).

Run it with an interpreter that has ``ray[data]`` (not a sonoedge dependency):

    python -m venv /tmp/venv-ray && /tmp/venv-ray/bin/pip install "ray[data]"
    /tmp/venv-ray/bin/python benchmarks/batch_ray_loopback.py --trials 3 --out benchmarks/results

Each trial starts a local Ray (``ray.init``) in a fresh process under one configuration, runs a
tiny Ray Data map, lists every listening TCP / UDP socket of the driver and all its descendant
processes (raylet, GCS, workers, ...) from /proc, and shuts Ray down. Configurations: Ray's
defaults; ``_node_ip_address="127.0.0.1"``; that plus ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(issue #18's recipe). A configuration is "held to loopback" when, in every trial, no socket of
the tree listens outside 127.0.0.0/8 / ::1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "serve"))

CONFIGS = {
    "defaults": ({}, {}),
    "node_ip=127.0.0.1": ({"_node_ip_address": "127.0.0.1"}, {}),
    "node_ip=127.0.0.1 + RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0": (
        {"_node_ip_address": "127.0.0.1"},
        {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    ),
}

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
import _loopback as L
import ray
kw = json.loads(sys.argv[1])
t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **kw)
ds = ray.data.range(64).map(lambda r: {"id": r["id"] * 2})
n = ds.count()
time.sleep(1.0)
socks = L.listening(L.descendants(os.getpid()))
ray.shutdown()
print("RESULT " + json.dumps({"rows": n, "start_s": round(time.perf_counter() - t0, 2),
      "sockets": socks}))
"""


def trial(kw: dict, env: dict) -> dict:
    e = {**os.environ, **env}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(kw), str(HERE.parent / "tests" / "serve")],
        capture_output=True,
        text=True,
        timeout=300,
        env=e,
    )
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (r.stderr or r.stdout)[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import ray
    from _loopback import is_loopback

    rows = []
    for name, (kw, env) in CONFIGS.items():
        outside_any, n_socks, starts, errors = [], [], [], []
        for _ in range(args.trials):
            res = trial(kw, env)
            if "error" in res:
                errors.append(res["error"])
                continue
            socks = res["sockets"]
            n_socks.append(len(socks))
            starts.append(res["start_s"])
            outside_any += [s for s in socks if not is_loopback(s[2])]
        held = not errors and not outside_any
        rows.append(
            {
                "config": name,
                "trials": args.trials,
                "errors": len(errors),
                "listening_sockets": n_socks,
                "outside_loopback": sorted({f"{s[1]} {s[2]}:{s[3]}" for s in outside_any})[:20],
                "outside_count": len(outside_any),
                "start_s": starts,
                "held_to_loopback": held,
                "error_tail": errors[:1],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    doc = {
        "ray": ray.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "batch-ray-loopback.json").write_text(json.dumps(doc, indent=2))
        md = [
            f"# Ray {ray.__version__}: held to loopback?",
            "",
            f"{doc['machine']}, Python {doc['python']}, {doc['date']}. "
            "Reproduce: `python benchmarks/batch_ray_loopback.py --trials "
            f"{args.trials} --out benchmarks/results` (with ray[data] installed).",
            "",
            "| configuration | trials | listening sockets per trial | outside loopback | "
            "start s | held to loopback |",
            "|---|--:|---|---|---|---|",
        ]
        for r in rows:
            outside = ", ".join(r["outside_loopback"][:6]) or "none"
            if r["errors"]:
                outside += f" ({r['errors']} trial(s) failed)"
            md.append(
                f"| {r['config']} | {r['trials']} | {r['listening_sockets']} | {outside} | "
                f"{r['start_s']} | {'yes' if r['held_to_loopback'] else 'no'} |"
            )
        md += [
            "",
            "- Sockets: every listening TCP / UDP socket of the driver process and all its "
            "descendants (GCS, raylet, workers, ...), read from /proc after a 64-row Ray Data "
            "map, before `ray.shutdown()`. `outside loopback` lists the first few addresses.",
            "- start s: `ray.init` + the map + the socket listing, per trial (the machine's 2 "
            "cores were shared with other jobs: treat them as ±50 %).",
            "- Verdict for `sonoedge batch`: Dask, see the docstring of `sdk/batch.py`.",
        ]
        (out / "batch-ray-loopback.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
