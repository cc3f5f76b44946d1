"""``sdk.Analyzer("grpc://HOST:PORT/MODEL")`` / ``"http://HOST:PORT/MODEL"``: a client of
`sonoedge serve` (Triton + PyTriton, :mod:`sdk.serve`) with the Analyzer's API and its Result.

The server runs the whole Analyzer and returns the finished Result's fields (the mask as a
UINT8 tensor, the rest as one JSON BYTES tensor, :mod:`sdk.serve._wire`), so the Result here
equals a local Analyzer's on the same artifact: the mask exactly, the probabilities exactly
(Python floats survive JSON). ``timings`` holds the server's stages (``preprocess``, ``infer``,
``postprocess``) plus ``server_total``, ``network`` (round trip minus ``server_total``) and
``total`` (the whole call as this client saw it).

The client runs from the main numpy-2 install and speaks Triton's KServe v2 protocol directly:
``http://`` / ``https://`` with the stdlib only (JSON header + binary tensor extension),
``grpc://`` with ``grpcio`` and a hand-written codec of the few messages it needs
(:mod:`sdk.serve._grpc_wire`; ``pip install "sonoedge[remote]"``). Every call has a timeout;
every failure is an :class:`~sdk.errors.SDKError` that names the server and the fix.

What differs from a local Analyzer: temporal smoothing, the threshold, the backend, the
device and the threads belong to the server (set them on `sonoedge serve`); asking for them
here is an :class:`~sdk.errors.InputError`. ``frame_index`` counts this client's frames.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sdk.analyzer import AnalyzerClosedError, to_uint8
from sdk.errors import InputError, ModelError, SDKError
from sdk.result import Result
from sdk.serve._wire import (
    DEFAULT_MODEL_NAME,
    INPUT_FRAME,
    INPUT_OPTIONS,
    OUTPUT_MASK,
    OUTPUT_RESULT,
    deserialize_bytes,
    result_from_json,
    serialize_bytes,
)
from sdk.sources._base import check_pixel_spacing

__all__ = ["RemoteAnalyzer", "RemoteError", "RemoteTimeoutError", "ServerUnreachableError"]

DEFAULT_PORTS = {"http": 8000, "https": 8000, "grpc": 8001}
#: Largest message either way (a 4K RGB frame is 25 MB).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class RemoteError(SDKError, ConnectionError):
    """The serve endpoint failed a call (its message says what the server answered)."""


class ServerUnreachableError(RemoteError):
    """Nothing answers at the URL's host and port (no server, wrong port, a firewall)."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """The server did not answer within the client's ``timeout``."""


def _parse_url(url: str) -> tuple[str, str, int, str]:
    if not isinstance(url, str):
        raise InputError(f"a serve URL must be a string, got {type(url).__name__}")
    u = urllib.parse.urlsplit(url)
    scheme = u.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InputError(
            f"{url!r}: the scheme must be grpc://, http:// or https:// (e.g. "
            f"grpc://127.0.0.1:8001/{DEFAULT_MODEL_NAME})"
        )
    try:
        port = u.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise InputError(f"{url!r}: the port is not a number in 1..65535") from None
    host = u.hostname
    if not host:
        raise InputError(f"{url!r}: no host; e.g. {scheme}://127.0.0.1:{DEFAULT_PORTS[scheme]}/")
    name = u.path.strip("/") or DEFAULT_MODEL_NAME
    if "/" in name or u.query or u.fragment:
        raise InputError(
            f"{url!r}: the path must be just the model name (e.g. /{DEFAULT_MODEL_NAME})"
        )
    return scheme, host, port, name


class _Http:
    """KServe v2 over HTTP/1.1 with the stdlib: one keep-alive connection per thread."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float) -> None:
        self.scheme, self.host, self.port, self.timeout = scheme, host, port, timeout
        self.where = f"{scheme}://{host}:{port}"
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            if self.scheme == "https":
                c = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            c.connect = _nodelay(c.connect, c)  # type: ignore[method-assign]
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        # Two tries: a keep-alive connection the server closed is reopened once.
        for attempt in range(2):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except TimeoutError as e:
                self._drop()
                raise RemoteTimeoutError(
                    f"{self.where}: no answer within {self.timeout} s; raise the client's "
                    "timeout= or check the server's load (its /metrics)"
                ) from e
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop()
                if attempt:
                    raise ServerUnreachableError(
                        f"{self.where}: the connection was closed ({e}); is the server running?"
                    ) from e
            except OSError as e:
                self._drop()
                raise ServerUnreachableError(
                    f"{self.where}: cannot connect ({e.strerror or e}); start a server with "
                    f"`sonoedge serve --port {self.port}` or fix the host / port in the URL"
                ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def ready(self, name: str) -> tuple[bool, bool]:
        server = self.request("GET", "/v2/health/ready")[0] == 200
        model = server and self.request("GET", f"/v2/models/{name}/ready")[0] == 200
        return server, model

    def infer(self, name: str, inputs: list[tuple[str, str, list[int], bytes]]) -> dict:
        header = {
            "inputs": [
                {"name": n, "datatype": dt, "shape": sh, "parameters": {"binary_data_size": len(b)}}
                for n, dt, sh, b in inputs
            ],
            "outputs": [
                {"name": OUTPUT_MASK, "parameters": {"binary_data": True}},
                {"name": OUTPUT_RESULT, "parameters": {"binary_data": True}},
            ],
        }
        hj = json.dumps(header).encode()
        body = hj + b"".join(b for *_, b in inputs)
        status, hdrs, data = self.request(
            "POST",
            f"/v2/models/{name}/infer",
            body,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(hj)),
            },
        )
        if status != 200:
            raise _server_error(self.where, name, status, _error_text(data))
        n = int(hdrs.get("inference-header-content-length", len(data)))
        head = json.loads(data[:n])
        out, off = {}, n
        for o in head["outputs"]:
            size = int(o.get("parameters", {}).get("binary_data_size", 0))
            out[o["name"]] = (o["datatype"], o["shape"], data[off : off + size])
            off += size
        return out

    def close(self) -> None:
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()


def _nodelay(connect: Any, conn: http.client.HTTPConnection) -> Any:
    """``connect`` that turns Nagle's algorithm off: http.client writes the header and the
    frame in separate sends, and Nagle + the server's delayed ACK then add ~40 ms per call."""

    def wrapped() -> None:
        connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    return wrapped


class _Grpc:
    """KServe v2 over gRPC with grpcio and raw-bytes messages (sdk.serve._grpc_wire)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            import grpc
        except ImportError as e:
            from sdk.errors import BackendUnavailableError

            raise BackendUnavailableError(
                'grpc:// needs grpcio: pip install "sonoedge[remote]" (or use http:// with the '
                "server's HTTP port)"
            ) from e
        self._grpc = grpc
        self.where = f"grpc://{host}:{port}"
        self.port, self.timeout = port, timeout
        self._channel = grpc.insecure_channel(
            f"{host}:{port}",
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        from sdk.serve import _grpc_wire as W

        self._W = W
        self._calls = {
            m: self._channel.unary_unary(W.SERVICE + m)
            for m in ("ServerReady", "ModelReady", "ModelInfer")
        }

    def _call(self, method: str, req: bytes, name: str = "") -> bytes:
        grpc = self._grpc
        try:
            return self._calls[method](req, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            detail = e.details() if hasattr(e, "details") else str(e)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RemoteTimeoutError(
                    f"{self.where}: no answer within {self.timeout} s; raise the client's "
                    "timeout= or check the server's load (its /metrics)"
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServerUnreachableError(
                    f"{self.where}: cannot connect ({detail}); start a server with `sonoedge "
                    f"serve` (gRPC on --port + 1 by default) or fix the host / port in the URL"
                ) from None
            raise _server_error(self.where, name, code, detail or "") from None

    def ready(self, name: str) -> tuple[bool, bool]:
        W = self._W
        server = W.ready_flag(self._call("ServerReady", b""))
        model = server and W.ready_flag(self._call("ModelReady", W.model_ready_request(name)))
        return server, model

    def infer(self, name: str, inputs: list[tuple[str, str, list[int], bytes]]) -> dict:
        W = self._W
        req = W.infer_request(name, inputs, [OUTPUT_MASK, OUTPUT_RESULT])
        return W.infer_response(self._call("ModelInfer", req, name))

    def close(self) -> None:
        self._channel.close()


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", data[:500]))
    except (ValueError, AttributeError):
        return data[:500].decode(errors="replace")


def _server_error(where: str, name: str, status: Any, text: str) -> SDKError:
    low = text.lower()
    if "unknown model" in low or ("model" in low and "not found" in low):
        return ModelError(
            f"{where}: the server has no model {name!r} ({text}); put the name `sonoedge serve "
            f"--name` printed in the URL path, e.g. {where}/{DEFAULT_MODEL_NAME}"
        )
    if "inputerror" in low or "sdk.errors" in low:
        return InputError(f"{where}: the server refused the frame: {text}")
    return RemoteError(f"{where}: the server failed the call (status {status}): {text}")


def _check_bit_depth(bit_depth: Any) -> int | None:
    """None or an integer in [8, 32] (what sdk.Analyzer accepts), else InputError."""
    if bit_depth is None:
        return None
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or not 8 <= bit_depth <= 32:
        raise InputError(
            f"bit_depth must be None or an integer in [8, 32] (the scanner's bits per pixel), "
            f"got {bit_depth!r}"
        )
    return bit_depth


class RemoteAnalyzer:
    """A `sonoedge serve` endpoint with the :class:`sdk.Analyzer` API (see the module
    docstring). ``timeout``: seconds for every call (connect and answer); ``workers``: requests
    ``run_batch`` keeps in flight (the server's dynamic batcher groups them)."""

    def __init__(
        self,
        path: str,
        backend: str = "auto",
        device: str = "auto",
        threshold: float | None = None,
        smoothing: float = 0.0,
        threads: int | None = None,
        bit_depth: int | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        spin: bool = True,
        refiner: Any = None,
        *,
        timeout: float = 30.0,
        workers: int = 4,
    ) -> None:
        scheme, host, port, name = _parse_url(path)
        if refiner is not None and refiner is not False:
            raise InputError(
                f"refiner={refiner!r}: a remote Analyzer takes the refiner from the server "
                "(`sonoedge serve` runs the embedded one with the embedded default model); use a "
                "local sdk.Analyzer(..., refiner=...) for another"
            )
        if spin is not True:
            raise InputError(
                f"spin={spin!r}: how the server's threads wait is the server's; a remote Analyzer "
                "cannot set it (use a local sdk.Analyzer)"
            )
        server_side = {
            "backend": (backend, "auto"),
            "device": (device, "auto"),
            "threshold": (threshold, None),
            "threads": (threads, None),
            "smoothing": (smoothing, 0.0),
        }
        for arg, (value, default) in server_side.items():
            if value != default:
                raise InputError(
                    f"{arg}={value!r}: a remote Analyzer takes {arg} from the server; start "
                    f"`sonoedge serve` with it (or use a local sdk.Analyzer)"
                )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 < timeout <= 3600)
        ):
            raise InputError(f"timeout must be seconds in (0, 3600], got {timeout!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
            raise InputError(f"workers must be an integer in 1..64, got {workers!r}")
        self.url = path
        self.path = path
        self.scheme, self.host, self.port, self.model_name = scheme, host, port, name
        self.timeout = float(timeout)
        self.workers = workers
        self.bit_depth = _check_bit_depth(bit_depth)
        self.pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        self.smoothing = 0.0
        self._client: _Http | _Grpc | None = None
        self._ready = False
        self._closed = False
        self._lock = threading.Lock()
        self._frame_index = 0

    # ---- lifecycle ---------------------------------------------------------------------------
    def load(self) -> RemoteAnalyzer:
        """Connect and check that the server and the model are ready (bounded by ``timeout``)."""
        with self._lock:
            if self._closed:
                raise AnalyzerClosedError(self._closed_message())
            if self._ready:
                return self
            if self._client is None:
                if self.scheme == "grpc":
                    self._client = _Grpc(self.host, self.port, self.timeout)
                else:
                    self._client = _Http(self.scheme, self.host, self.port, self.timeout)
            server, model = self._client.ready(self.model_name)
            if not server:
                raise ServerUnreachableError(
                    f"{self._client.where}: the server answers but is not ready; wait for "
                    "`sonoedge serve` to print its URLs"
                )
            if not model:
                raise ModelError(
                    f"{self._client.where}: the server has no ready model "
                    f"{self.model_name!r}; use the name `sonoedge serve --name` set (default "
                    f"{DEFAULT_MODEL_NAME!r}) as the URL path"
                )
            self._ready = True
        return self

    def close(self) -> None:
        """Close the connections. Final, like :meth:`sdk.Analyzer.close`. Idempotent."""
        with self._lock:
            self._closed = True
            self._ready = False
            if self._client is not None:
                self._client.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _closed_message(self) -> str:
        return f"{self.url}: this Analyzer was closed; create a new sdk.Analyzer to go on"

    def __enter__(self) -> RemoteAnalyzer:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def reset(self) -> None:
        """Restart the frame counter (no temporal state here: smoothing is the server's)."""
        with self._lock:
            self._frame_index = 0

    def __repr__(self) -> str:
        return f"RemoteAnalyzer({self.url!r})"

    # ---- the frame path ----------------------------------------------------------------------
    def run(
        self,
        frame: np.ndarray,
        *,
        roi: tuple[int, int, int, int] | None = None,
        timestamp: float | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
        color: str = "bgr",
    ) -> Result:
        """Analyze one frame on the server; the same arguments and Result as
        :meth:`sdk.Analyzer.run` (the frame's checks run here, the rest on the server)."""
        if not self._ready:
            self.load()
        if color not in ("bgr", "rgb"):
            raise InputError(f"color must be 'bgr' or 'rgb', got {color!r}")
        f = to_uint8(frame, self.bit_depth)
        if f.ndim == 3 and f.shape[2] == 4:  # BGRA / RGBA: the alpha plane is not image
            f = f[:, :, :3]
        f = np.ascontiguousarray(f if f.ndim == 3 else f[:, :, None])
        opts: dict[str, Any] = {}
        if color != "bgr":
            opts["color"] = color
        if roi is not None:
            opts["roi"] = [int(v) for v in roi]
        if timestamp is not None:
            opts["timestamp"] = float(timestamp)
        spacing = check_pixel_spacing(pixel_spacing_mm) or self.pixel_spacing_mm
        if spacing is not None:
            opts["pixel_spacing_mm"] = list(spacing)
        inputs = [(INPUT_FRAME, "UINT8", [1, *f.shape], f.tobytes())]
        if opts:
            inputs.append(
                (INPUT_OPTIONS, "BYTES", [1, 1], serialize_bytes([json.dumps(opts).encode()]))
            )
        with self._lock:
            if self._closed:
                raise AnalyzerClosedError(self._closed_message())
            index = self._frame_index
            self._frame_index += 1
        client = self._client
        assert client is not None
        t0 = time.perf_counter()
        out = client.infer(self.model_name, inputs)
        total = (time.perf_counter() - t0) * 1e3
        return self._result(out, index, total)

    def _result(self, out: dict, index: int, total_ms: float) -> Result:
        where = getattr(self._client, "where", self.url)
        try:
            _, mshape, mraw = out[OUTPUT_MASK]
            _, _, rraw = out[OUTPUT_RESULT]
            (payload,) = deserialize_bytes(rraw, 1)
            mask = np.frombuffer(mraw, np.uint8).reshape(mshape[-2:]).copy()
            r = result_from_json(payload, mask, index, where)
        except SDKError:  # the server's own answer for this frame (e.g. an InputError)
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise RemoteError(
                f"{where}: the answer is not a sonoedge Result ({type(e).__name__}: {e}); is "
                "this a `sonoedge serve` endpoint of the same sonoedge version?"
            ) from e
        server_total = float(r.timings.get("total", 0.0))
        r.timings = {
            **r.timings,
            "server_total": server_total,
            "network": max(total_ms - server_total, 0.0),
            "total": total_ms,
        }
        return r

    def run_batch(self, frames: Iterable[np.ndarray], color: str = "bgr") -> list[Result]:
        """Analyze frames, up to ``workers`` requests in flight (the server batches them);
        Results in order, ``frame_index`` in order. Raises the first failing frame's error."""
        frames = list(frames)
        if not frames:
            return []
        if not self._ready:
            self.load()
        with ThreadPoolExecutor(max_workers=min(self.workers, len(frames))) as pool:
            futures = [pool.submit(self.run, f, color=color) for f in frames]
            results = [fu.result(timeout=self.timeout * len(frames)) for fu in futures]
        base = min(r.frame_index for r in results)
        for k, r in enumerate(results):
            r.frame_index = base + k
        return results

    def stream(
        self,
        source: Any,
        drop: str = "none",
        queue_size: int = 4,
        color: str = "gray",
        max_frames: int | None = None,
        keep_frames: bool = False,
        pipeline: bool = True,
        max_batch: int = 4,
    ) -> Iterator[Result]:
        """Analyze every frame of a source (what :func:`sdk.sources.open_source` opens), one
        request per frame, in order; the arguments of :meth:`sdk.Analyzer.stream`. Simpler than
        the local stream: no dropping (``drop`` must be "none"), no pipelining or client-side
        batching (``queue_size`` / ``pipeline`` / ``max_batch`` have no effect: the server
        batches what its clients send at once); a failing frame raises."""
        if drop != "none":
            raise InputError(
                f"drop={drop!r}: a remote Analyzer streams every frame (drop='none'); drop "
                "frames before sending them, or use a local sdk.Analyzer"
            )
        if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 0):
            raise InputError(f"max_frames must be None or >= 0, got {max_frames!r}")
        from sdk.sources import open_source

        if not self._ready:
            self.load()
        with open_source(source, color=color) as src:
            for k, fr in enumerate(src):
                if max_frames is not None and k >= max_frames:
                    break
                r = self.run(
                    fr.image,
                    timestamp=fr.timestamp,
                    pixel_spacing_mm=fr.pixel_spacing_mm,
                    color="rgb" if fr.image.ndim == 3 else "bgr",
                )
                if keep_frames:
                    r.frame = fr.image
                yield r
