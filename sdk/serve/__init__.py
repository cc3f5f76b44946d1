"""`sonoedge serve`: the Analyzer inside Triton through PyTriton, and what starts it.

**Two environments.** PyTriton 0.7 (which bundles tritonserver 2.51 with the Python backend
only) requires numpy < 2; the main sonoedge install uses numpy 2. So the server runs from its
own virtual environment, the *serve environment* (``sonoedge serve --setup`` creates it:
``numpy<2``, ``nvidia-pytriton`` and this project), while the client
(:class:`sdk.remote.RemoteAnalyzer`) speaks Triton's KServe v2 protocol from the main install:
HTTP with the stdlib only, gRPC with ``grpcio`` alone (no tritonclient, whose protobuf pin
would downgrade the main install's). ``sonoedge serve`` run from the main install finds the
serve environment and replaces itself with ``python -m sdk.serve.server`` there.

**The LD_LIBRARY_PATH pitfall.** Triton's Python-backend stub links against libpython; with a
pyenv-built interpreter (shared libpython outside the system folders) the stub picks another
libpython or none and model loads fail with ``'_thread.RLock' object has no attribute
'_recursion_count'``. :func:`fix_ld_library_path` puts the interpreter's own ``LIBDIR`` first
on ``LD_LIBRARY_PATH`` before Triton starts; the launcher does the same for the child.

**Loopback by default.** HTTP, gRPC and metrics bind to 127.0.0.1 unless ``--host`` names
another address *and* ``--allow-remote`` is given (then with a warning: Triton has no
authentication or TLS here).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import BackendUnavailableError, InputError, SDKError

__all__ = [
    "LOOPBACK_HOSTS",
    "ServerProcess",
    "default_serve_venv",
    "fix_ld_library_path",
    "free_port",
    "launch",
    "serve_python",
    "server_env",
    "setup_serve_env",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The serve environment's requirements (kept with the `serve` extra of pyproject.toml).
SERVE_REQUIREMENTS = ("numpy<2", "nvidia-pytriton>=0.7,<0.8")


def default_serve_venv() -> Path:
    """Where the serve environment lives: ``$SONOEDGE_SERVE_VENV``, else ``build/venv-serve``
    of a source checkout, else ``~/.cache/sonoedge/venv-serve``."""
    env = os.environ.get("SONOEDGE_SERVE_VENV")
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "sdk").is_dir():
        return root / "build" / "venv-serve"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sonoedge" / "venv-serve"


def _has_pytriton(python: str) -> bool:
    try:
        r = subprocess.run(
            [python, "-c", "import pytriton, numpy; assert int(numpy.__version__[0]) < 2"],
            capture_output=True,
            timeout=60,
            env=server_env(python),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def serve_python(venv: str | Path | None = None) -> str:
    """The interpreter that runs the server: the serve environment's, or this one when PyTriton
    (with numpy < 2) imports here. Raises :class:`BackendUnavailableError` saying how to make
    one."""
    v = Path(venv) if venv else default_serve_venv()
    py = v / "bin" / "python"
    if py.is_file() and _has_pytriton(str(py)):
        return str(py)
    try:
        import numpy
        import pytriton  # noqa: F401

        if int(numpy.__version__.split(".")[0]) < 2:
            return sys.executable
    except ImportError:
        pass
    raise BackendUnavailableError(
        f"no serve environment at {v} (PyTriton needs numpy < 2, its own virtualenv): run "
        f"`sonoedge serve --setup` (or set SONOEDGE_SERVE_VENV to one with "
        f"{' '.join(SERVE_REQUIREMENTS)} and sonoedge installed)"
    )


def _libdir(python: str) -> str | None:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return sysconfig.get_config_var("LIBDIR")
    try:
        r = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


def server_env(python: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``python``'s own library folder first
    on ``LD_LIBRARY_PATH`` (the pyenv pitfall, see the module docstring)."""
    env = dict(os.environ if base is None else base)
    libdir = _libdir(python or sys.executable)
    if libdir and os.path.isdir(libdir):
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir] + [p for p in parts if p != libdir])
    return env


def fix_ld_library_path() -> None:
    """This process's interpreter library folder first on ``LD_LIBRARY_PATH`` (inherited by the
    tritonserver process PyTriton starts, and by its Python-backend stub)."""
    value = server_env().get("LD_LIBRARY_PATH")
    if value:
        os.environ["LD_LIBRARY_PATH"] = value


def _source_checkout() -> Path | None:
    """The sonoedge source tree to install into the serve environment: the one this module runs
    from (an editable install), else the current folder when it is one (CI installs the
    checkout non-editable and runs from its root)."""
    for cand in (Path(__file__).resolve().parents[2], Path.cwd()):
        pp = cand / "pyproject.toml"
        try:
            if pp.is_file() and 'name = "sonoedge"' in pp.read_text() and (cand / "sdk").is_dir():
                return cand
        except OSError:
            continue
    return None


def setup_serve_env(
    venv: str | Path | None = None, quiet: bool = False, project: str | Path | None = None
) -> Path:
    """Create the serve environment: a virtualenv from this interpreter's base Python with
    ``numpy<2``, ``nvidia-pytriton`` and sonoedge: ``project`` (a source tree), else the source
    checkout (:func:`_source_checkout`) installed editable -- it then runs the checkout's code
    -- else the same version from the package index. ~2 minutes here (pip, then the C++
    kernels' build in ``build/serve-<wheel tag>``, apart from the main build tree)."""
    v = Path(venv) if venv else default_serve_venv()
    base = getattr(sys, "_base_executable", sys.executable)
    q = ["-q"] if quiet else []
    root = Path(project).resolve() if project else _source_checkout()
    if root is not None:
        if not (root / "pyproject.toml").is_file():
            raise InputError(f"{root} is not a sonoedge source tree (no pyproject.toml)")
        project_args = ["-e", str(root), "-C", "build-dir=build/serve-{wheel_tag}"]
    else:
        from importlib.metadata import version

        project_args = [f"sonoedge=={version('sonoedge')}"]
    py = str(v / "bin" / "python")
    steps = [
        [base, "-m", "venv", str(v)],
        [py, "-m", "pip", "install", *q, *SERVE_REQUIREMENTS],
        [py, "-m", "pip", "install", *q, "numpy<2", *project_args],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, timeout=1800, cwd=root)
        if r.returncode != 0:
            raise SDKError(f"`{' '.join(cmd)}` failed (exit {r.returncode}); see its output above")
    if not _has_pytriton(py):
        raise SDKError(f"{v}: PyTriton does not import there after the setup; see pip's output")
    return v


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS's choice; another process may take it before the
    server binds it, so launch() reports a clear error in that case)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running `sonoedge serve` started by :func:`launch`; ``stop()`` ends it (also as a
    context manager)."""

    proc: subprocess.Popen
    info: dict[str, Any]
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def http_url(self) -> str:
        return str(self.info["http"])

    @property
    def grpc_url(self) -> str:
        return str(self.info["grpc"])

    @property
    def metrics_url(self) -> str:
        return str(self.info["metrics"])

    def pids(self) -> list[int]:
        """The server's process and all its descendants (tritonserver, stub, proxy)."""
        return _descendants(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait (bounded); SIGKILL to the whole process group if it lingers."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL ignored
            pass
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the group we created with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def launch(
    model: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    max_batch: int = 4,
    queue_delay_us: int = 0,
    name: str = "sonoedge",
    threads: int | None = None,
    python: str | None = None,
    timeout: float = 120.0,
    log_path: str | Path | None = None,
) -> ServerProcess:
    """Start `sonoedge serve` in its own process group and wait (at most ``timeout`` s) until
    Triton and the model are ready. Ports default to free ones on ``host``. Raises
    :class:`SDKError` with the server's last output if it fails to start."""
    if host not in LOOPBACK_HOSTS:
        raise InputError(f"launch() serves loopback only; got host {host!r}")
    py = python or serve_python()
    port = port or free_port(host)
    grpc_port = grpc_port or free_port(host)
    metrics_port = metrics_port or free_port(host)
    cmd = [py, "-m", "sdk.serve.server", "--host", host, "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    cmd += ["--max-batch", str(max_batch), "--queue-delay-us", str(queue_delay_us)]
    cmd += ["--name", name]
    if model is not None:
        cmd += ["--model", str(model)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if log_path is None:
        import tempfile

        fd, name_ = tempfile.mkstemp(prefix="sonoedge-serve-", suffix=".log")
        os.close(fd)
        log_path = name_
    log = Path(log_path)
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(py),
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    info: dict[str, Any] | None = None
    for _ in range(int(timeout / 0.05) + 1):  # bounded in count and time
        if time.monotonic() > deadline or proc.poll() is not None:
            break
        for line in log.read_bytes().splitlines():
            if line.startswith(b"SONOEDGE-SERVE-READY "):
                info = json.loads(line.split(b" ", 1)[1])
        if info is not None:
            break
        time.sleep(0.05)
    if info is None:
        server = ServerProcess(proc, {}, log)
        server.stop(timeout=5)
        tail = log.read_text(errors="replace")[-3000:]
        why = "exited" if proc.returncode not in (None, -9) else f"not ready after {timeout} s"
        raise SDKError(f"sonoedge serve {why}: {' '.join(cmd)}\n{tail}".rstrip())
    # The READY line is printed after Triton reported the model ready; check over HTTP too.
    url = f"http://{host}:{port}/v2/models/{name}/ready"
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return ServerProcess(proc, info, log)
