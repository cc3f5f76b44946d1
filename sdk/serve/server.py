"""The `sonoedge serve` process: one :class:`sdk.Analyzer` bound into Triton through PyTriton.

Runs **in PyTriton's own environment** (``sonoedge serve --setup`` makes it: PyTriton 0.7 needs
numpy < 2, the main install has numpy 2), started by ``sonoedge serve`` (``python -m
sdk.serve.server ...``) with the interpreter's library folder first on ``LD_LIBRARY_PATH`` (see
:func:`sdk.serve.server_env`).

Triton serves HTTP (KServe v2), gRPC and Prometheus metrics; its dynamic batcher groups up to
``--max-batch`` waiting requests of the same frame size into one call of :func:`_infer`, which
runs them through one ``Analyzer.run_batch`` (one model call) per colour mode. The Analyzer runs
without temporal smoothing (the clients of one server are different scanners); each client
numbers its own frames. SIGINT / SIGTERM stop Triton, its Python-backend stub and the proxy,
and remove PyTriton's workspace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

from sdk.serve import LOOPBACK_HOSTS, fix_ld_library_path
from sdk.serve._wire import (
    DEFAULT_MODEL_NAME,
    INPUT_FRAME,
    INPUT_OPTIONS,
    OUTPUT_MASK,
    OUTPUT_RESULT,
    error_to_json,
    result_to_json,
)

LOG = logging.getLogger("sonoedge.serve")

#: How long a lone request may wait for others to share its model call (microseconds). 0: only
#: requests already queued are batched (those that arrived while the model ran), as the SDK's
#: own stream() does; a scanner's frame never waits for a frame that may not come.
QUEUE_DELAY_US = 0


def _options(req: Any) -> dict[str, Any]:
    if INPUT_OPTIONS not in req.keys():
        return {}
    raw = req[INPUT_OPTIONS]
    item = np.asarray(raw).reshape(-1)[0]
    d = json.loads(item.decode() if isinstance(item, bytes | np.bytes_) else str(item))
    if not isinstance(d, dict):
        raise ValueError("options must be a JSON object")
    return d


def make_infer(analyzer: Any):
    """PyTriton's infer callable: a list of requests in (each one frame, batch axis 1), one
    response dict per request out.

    A failing frame fails its own request only: PyTriton answers a model call as a whole (an
    exception would fail every request Triton batched with it), so a frame's error travels as
    that request's ``result`` (``{"error": {...}}``, :func:`sdk.serve._wire.error_to_json`) and
    the client raises it as the same kind of ``sdk.errors`` error."""

    def _run_one(frame: np.ndarray, opts: dict[str, Any]) -> Any:
        roi = opts.get("roi")
        spacing = opts.get("pixel_spacing_mm")
        return analyzer.run(
            frame,
            roi=None if roi is None else tuple(roi),
            timestamp=opts.get("timestamp"),
            pixel_spacing_mm=None if spacing is None else tuple(spacing),
            color=opts.get("color", "bgr"),
        )

    def _safe_one(frame: np.ndarray | None, opts: dict[str, Any] | Exception) -> Any:
        if isinstance(opts, Exception):
            return opts
        try:
            return _run_one(frame, opts)
        except Exception as e:  # this request's answer, not the batch's end
            return e

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        frames: list[np.ndarray | None] = []
        opts: list[dict[str, Any] | Exception] = []
        for req in requests:
            try:
                f = np.asarray(req[INPUT_FRAME])
                if f.ndim == 4:  # [1, H, W, C]: the batch axis Triton adds
                    f = f[0]
                if f.ndim == 3 and f.shape[2] == 1:
                    f = f[:, :, 0]
                frames.append(np.ascontiguousarray(f))
                opts.append(_options(req))
            except Exception as e:
                frames.append(None)
                opts.append(e)
        results: list[Any] = [None] * len(frames)
        # Frames with nothing but a colour mode share one model call per mode (run_batch);
        # frames with an ROI, a spacing or a timestamp go one by one (run).
        groups: dict[str, list[int]] = {}
        for i, o in enumerate(opts):
            if isinstance(o, dict) and set(o) <= {"color"}:
                groups.setdefault(o.get("color", "bgr"), []).append(i)
            else:
                results[i] = _safe_one(frames[i], o)
        for color, idx in groups.items():
            try:
                if len(idx) == 1:
                    raise LookupError  # one frame: run() below
                batch = analyzer.run_batch([frames[i] for i in idx], color=color)
                for i, r in zip(idx, batch, strict=True):
                    results[i] = r
            except Exception:  # one bad frame in the group: each on its own, errors its own
                for i in idx:
                    results[i] = _safe_one(frames[i], {"color": color})
        out = []
        for r in results:
            if isinstance(r, Exception):
                out.append(
                    {
                        OUTPUT_MASK: np.zeros((1, 1, 1), np.uint8),
                        OUTPUT_RESULT: np.array([[error_to_json(r)]], dtype=object),
                    }
                )
            else:
                out.append(
                    {
                        OUTPUT_MASK: r.mask[None],
                        OUTPUT_RESULT: np.array([[result_to_json(r)]], dtype=object),
                    }
                )
        return out

    return infer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdk.serve.server", description=__doc__)
    p.add_argument("--model", default=None)
    p.add_argument("--name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--queue-delay-us", type=int, default=QUEUE_DELAY_US)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--allow-remote", action="store_true")
    p.add_argument("--log-verbose", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in LOOPBACK_HOSTS and not args.allow_remote:
        print(
            f"sonoedge serve: error: --host {args.host} is not loopback; pass --allow-remote to "
            "serve other machines (no authentication, no TLS: a trusted network only)",
            file=sys.stderr,
        )
        return 2
    fix_ld_library_path()  # before PyTriton starts tritonserver: its stub inherits the variable
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        print(
            f"sonoedge serve: error: PyTriton is not importable here ({e}); run "
            "`sonoedge serve --setup` and start the server with `sonoedge serve`",
            file=sys.stderr,
        )
        return 1

    import sdk
    from sdk.errors import SDKError

    try:
        analyzer = sdk.Analyzer(args.model, threads=args.threads).load()
    except SDKError as e:
        print(f"sonoedge serve: error: {e}", file=sys.stderr)
        return 1
    grpc_port = args.grpc_port if args.grpc_port is not None else args.port + 1
    metrics_port = args.metrics_port if args.metrics_port is not None else args.port + 2
    config = TritonConfig(
        http_address=args.host,
        http_port=args.port,
        grpc_address=args.host,
        grpc_port=grpc_port,
        metrics_address=args.host,
        metrics_port=metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        allow_sagemaker=False,
        allow_vertex_ai=False,
        exit_timeout_secs=5,
        log_verbose=args.log_verbose,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        LOG.warning("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = time.perf_counter()
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=args.name,
            infer_func=make_infer(analyzer),
            inputs=[
                Tensor(name=INPUT_FRAME, dtype=np.uint8, shape=(-1, -1, -1)),
                Tensor(name=INPUT_OPTIONS, dtype=bytes, shape=(1,), optional=True),
            ],
            outputs=[
                Tensor(name=OUTPUT_MASK, dtype=np.uint8, shape=(-1, -1)),
                Tensor(name=OUTPUT_RESULT, dtype=bytes, shape=(1,)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=False,
        )
        triton.run()  # non-blocking: returns once Triton and the model are ready
        h = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 literal
        info = {
            "http": f"http://{h}:{args.port}/{args.name}",
            "grpc": f"grpc://{h}:{grpc_port}/{args.name}",
            "metrics": f"http://{h}:{metrics_port}/metrics",
            "model": str(analyzer.path),
            "max_batch": args.max_batch,
            "startup_s": round(time.perf_counter() - t0, 2),
            "pid": os.getpid(),
        }
        print("SONOEDGE-SERVE-READY " + json.dumps(info), flush=True)
        print(
            f"sonoedge serve: {analyzer.path.name} ready in {info['startup_s']} s at "
            f"{info['grpc']} and {info['http']} (metrics {info['metrics']}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        # Bounded waits: wake every 0.5 s to see a signal or a dead Triton.
        while not stop.wait(0.5):
            if not triton.is_alive():
                print("sonoedge serve: error: Triton stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        triton.stop()  # Triton, the Python-backend stub, the proxy, the workspace
        analyzer.close()
    print("sonoedge serve: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
