"""``sonoedge serve``: registered by :func:`add_parser` in ``sdk.cli.build_parser``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sdk.argtypes import int_type
from sdk.errors import InputError

_port = int_type(1, 65535, "a TCP port")
_batch = int_type(1, 64, "a batch size")
_threads = int_type(1, 4 * (os.cpu_count() or 1), "a thread count")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP / gRPC (Triton through PyTriton)",
        description=(
            "Serve the Analyzer inside Triton (PyTriton): KServe v2 HTTP on --port, gRPC on "
            "--grpc-port (default --port + 1), Prometheus metrics on --metrics-port (default "
            "--port + 2), dynamic batching up to --max-batch, health at /v2/health/ready. "
            "Clients: sdk.Analyzer('grpc://HOST:PORT/NAME') or 'http://HOST:PORT/NAME'. "
            "Loopback only unless --allow-remote. PyTriton needs numpy < 2: the server runs "
            "from its own environment, made once by `sonoedge serve --setup`. Stops cleanly on "
            "Ctrl-C / SIGTERM."
        ),
    )
    p.add_argument("--model", default=None, help="artifact (.onnx / .plan); default: embedded")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=_port, default=None, help="gRPC port (default --port+1)")
    p.add_argument("--metrics-port", type=_port, default=None, help="default --port + 2")
    p.add_argument("--max-batch", type=_batch, default=4, help="dynamic batch limit (default 4)")
    p.add_argument(
        "--queue-delay-us",
        type=int_type(0, 1_000_000, "microseconds"),
        default=0,
        help="how long a lone request may wait for others to batch with (0: only requests "
        "already queued are batched)",
    )
    p.add_argument("--name", default="sonoedge", help="model name in the URLs (default sonoedge)")
    p.add_argument("--threads", type=_threads, default=None, help="backend CPU threads")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (no authentication, no TLS: trusted networks)",
    )
    p.add_argument(
        "--setup",
        action="store_true",
        help="create the serve environment (numpy<2 + nvidia-pytriton + sonoedge) and exit",
    )
    p.add_argument(
        "--venv",
        default=None,
        help="serve environment (default: $SONOEDGE_SERVE_VENV, else build/venv-serve of a "
        "source checkout, else ~/.cache/sonoedge/venv-serve)",
    )
    p.add_argument(
        "--project",
        default=None,
        help="--setup: the sonoedge source tree to install there (default: this checkout, or "
        "the current folder when it is one, else the package index)",
    )
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from sdk.serve import LOOPBACK_HOSTS, default_serve_venv, serve_python, server_env

    if args.setup:
        from sdk.serve import setup_serve_env

        where = args.venv or default_serve_venv()
        print(f"sonoedge serve: creating the serve environment in {where} ...", file=sys.stderr)
        v = setup_serve_env(where, project=args.project)
        print(f"sonoedge serve: ready: {v} (now run `sonoedge serve`)")
        return 0
    if args.host not in LOOPBACK_HOSTS:
        if not args.allow_remote:
            from sdk.cli import UsageError

            raise UsageError(
                f"--host {args.host} would serve other machines; pass --allow-remote as well "
                "(the server has no authentication and no TLS: trusted networks only)"
            )
        print(
            f"sonoedge serve: WARNING: binding {args.host}: any machine that reaches it can "
            "send frames and read results (no authentication, no TLS)",
            file=sys.stderr,
        )
    if not args.name.replace("_", "").replace("-", "").isalnum():
        from sdk.cli import UsageError

        raise UsageError(f"--name {args.name!r}: letters, digits, '-' and '_' only")
    if args.model is not None and not os.path.isfile(args.model):
        raise InputError(f"--model {args.model}: no such file; give an exported .onnx / .plan")
    python = serve_python(args.venv)
    argv = [python, "-m", "sdk.serve.server", "--host", args.host, "--port", str(args.port)]
    for flag, value in (
        ("--grpc-port", args.grpc_port),
        ("--metrics-port", args.metrics_port),
        ("--max-batch", args.max_batch),
        ("--queue-delay-us", args.queue_delay_us),
        ("--name", args.name),
        ("--threads", args.threads),
        ("--model", args.model),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.allow_remote:
        argv.append("--allow-remote")
    # Replace this process: Ctrl-C and SIGTERM reach the server directly, which stops Triton.
    env = server_env(python)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, argv, env)
    return 0  # pragma: no cover - execve does not return
