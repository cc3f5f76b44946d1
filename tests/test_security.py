"""Security properties of sonoedge (issue #7, item 6).

(a) No load path can unpickle: an AST scan of every module of ``sdk/`` and ``export/``.
(b) No path found in an artifact's metadata is ever opened: artifacts whose every free-text
    field (and unknown extra keys) holds paths are loaded, run, streamed and described while
    every Python-level file access is recorded.
(c) DICOM patient identifiers never reach logs, stdout / stderr, error messages, the reader's
    repr / metadata, or any file ``sonoedge run`` writes.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import io
import json
import logging
import os
import pathlib
import struct
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]

# ---- (a) no pickle on any load path -------------------------------------------------------------

PICKLE_MODULES = frozenset(
    {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
)
# Loaders that unpickle (or run code) whatever their arguments.
FORBIDDEN_CALLS = frozenset(
    {
        "torch.export.load",
        "torch.jit.load",
        "torch.hub.load",
        "torch.hub.load_state_dict_from_url",
        "torch.package.PackageImporter",
        "pandas.read_pickle",
        "numpy.lib.format.read_array",
    }
)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def scan_source(text: str, filename: str = "<src>") -> list[str]:
    """Unpickling constructs in Python source: ``file:line: what``. Aliases are resolved
    (``import numpy as np``, ``from torch import load as L``)."""
    tree = ast.parse(text, filename)
    aliases: dict[str, str] = {}
    found: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PICKLE_MODULES:
                    bad(node, f"import {a.name}")
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PICKLE_MODULES:
                bad(node, f"from {node.module} import ...")
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if a.name in PICKLE_MODULES or full in FORBIDDEN_CALLS:
                    bad(node, f"from {node.module} import {a.name}")
                aliases[a.asname or a.name] = full
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        kw = {k.arg: k.value for k in node.keywords}
        if full.split(".")[0] in PICKLE_MODULES:
            bad(node, f"{full}(...)")
        elif full in FORBIDDEN_CALLS:
            bad(node, f"{full}(...) unpickles")
        elif full == "torch.load" and not _is_const(kw.get("weights_only"), True):
            bad(node, "torch.load(...) without weights_only=True")
        elif full == "numpy.load" and "allow_pickle" in kw:
            if not _is_const(kw["allow_pickle"], False):
                bad(node, "numpy.load(..., allow_pickle=<not False>)")
        elif full in ("__import__", "importlib.import_module") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in PICKLE_MODULES:
                bad(node, f"{full}({arg.value!r})")
    return found


@pytest.mark.parametrize(
    "src",
    [
        "import pickle",
        "import cPickle as p",
        "import dill",
        "import joblib\njoblib.load('m.pkl')",
        "from pickle import loads",
        "import pickle as _p\n_p.loads(b'')",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "import torch\nflag = True\ntorch.load('m.pt', weights_only=flag)",
        "import torch as T\nT.load('m.pt', map_location='cpu')",
        "from torch import load\nload('m.pt')",
        "from torch import load as tl\ntl('m.pt')",
        "import torch\ntorch.jit.load('m.ts')",
        "import torch\ntorch.export.load('m.pt2')",
        "from torch import jit\njit.load('m.ts')",
        "from torch.export import load\nload('m.pt2')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npy', allow_pickle=1)",
        "from numpy import load\nload('a.npy', allow_pickle=True)",
        "import importlib\nimportlib.import_module('pickle')",
        "__import__('dill')",
        "import pandas as pd\npd.read_pickle('x')",
        "def f():\n    import torch\n    return torch.load(p)",
    ],
)
def test_scanner_flags_unpickling(src: str) -> None:
    """The scanner itself: every unpickling construct (aliased, nested, keyword-less) is
    reported, so the repository scan below can fail."""
    assert scan_source(src), f"not flagged:\n{src}"


@pytest.mark.parametrize(
    "src",
    [
        "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('a.npy')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
        "from safetensors.torch import load_file\nload_file('m.safetensors')",
        "import onnx\nonnx.load('m.onnx')",
        "import json\njson.load(open('m.json'))",
        "model.load_state_dict(sd)",
    ],
)
def test_scanner_accepts_safe_loads(src: str) -> None:
    """The scanner does not flag the safe loaders the project uses."""
    assert scan_source(src) == []


def test_no_pickle_on_any_load_path() -> None:
    """No module of sdk/ or export/ imports a pickle-family module or calls a loader that
    unpickles (torch.load without weights_only=True, np.load(allow_pickle=True),
    torch.jit.load, torch.export.load, ...)."""
    files = sorted(p for d in ("sdk", "export") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 30, "the scan found too few modules: wrong root?"
    found = []
    for p in files:
        found += scan_source(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    assert found == [], "unpickling on a load path:\n" + "\n".join(found)


# ---- (b) no path from metadata is ever opened ---------------------------------------------------

_AUDIT: dict[str, Any] = {"on": False, "events": []}


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["on"] and event in ("open", "os.listdir", "os.scandir", "shutil.copyfile"):
        _AUDIT["events"].append((event, str(args[0]) if args else ""))


_AUDIT_INSTALLED = False


class FileAccessRecorder:
    """Records every Python-level file open (builtins / io / os / pathlib / numpy / OpenCV,
    plus the interpreter's ``open`` audit events) and every stat / listdir, on any thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[str] = []
        self.touched: list[str] = []
        self._mp = monkeypatch

    @staticmethod
    def _name(p: Any) -> str:
        if isinstance(p, int):
            return f"<fd {p}>"
        if isinstance(p, bytes):
            return p.decode(errors="replace")
        return os.fspath(p) if isinstance(p, str | os.PathLike) else repr(p)

    def _wrap(self, owner: Any, attr: str, into: list[str], method: bool = False) -> None:
        orig = getattr(owner, attr)
        name = self._name

        if method:

            def wrapper(self_: Any, *a: Any, **k: Any) -> Any:
                into.append(name(self_))
                return orig(self_, *a, **k)
        else:

            def wrapper(*a: Any, **k: Any) -> Any:
                into.append(name(a[0] if a else k.get("file", k.get("path", "?"))))
                return orig(*a, **k)

        self._mp.setattr(owner, attr, wrapper)

    @contextmanager
    def recording(self) -> Iterator[FileAccessRecorder]:
        global _AUDIT_INSTALLED
        import cv2

        if not _AUDIT_INSTALLED:  # audit hooks cannot be removed: one, gated by a flag
            sys.addaudithook(_audit_hook)
            _AUDIT_INSTALLED = True
        for owner, attr in ((builtins, "open"), (io, "open"), (os, "open")):
            self._wrap(owner, attr, self.opened)
        for attr in ("open", "read_bytes", "read_text"):
            self._wrap(pathlib.Path, attr, self.opened, method=True)
        for owner, attr in ((np, "fromfile"), (np, "load"), (cv2, "imread")):
            self._wrap(owner, attr, self.opened)
        self._wrap(cv2, "VideoCapture", self.opened)
        for attr in ("stat", "lstat", "listdir", "scandir", "access"):
            self._wrap(os, attr, self.touched)
        _AUDIT["events"] = []
        _AUDIT["on"] = True
        try:
            yield self
        finally:
            _AUDIT["on"] = False
            self.opened += [p for e, p in _AUDIT["events"] if e == "open"]
            self.touched += [p for e, p in _AUDIT["events"] if e != "open"]
            self._mp.undo()

    def files_opened(self) -> set[str]:
        """Opened paths, resolved; module imports (.py / .pyc / .so) left out."""
        out = set()
        for p in self.opened:
            if p.startswith("<fd") or p.endswith((".py", ".pyc", ".so")):
                continue
            out.add(str(Path(p).resolve()) if p else p)
        return out

    def everything(self) -> list[str]:
        return self.opened + self.touched


SENTINEL_NAME = "sonoedge-sentinel-do-not-open.txt"


def _hostile_paths(root: Path) -> dict[str, str]:
    """Paths an attacker or a careless exporter could put in metadata. The sentinel exists,
    so opening it would succeed (and be recorded), not fail quietly."""
    secret = root / "secret"
    secret.mkdir(exist_ok=True)
    (secret / SENTINEL_NAME).write_text("never read me")
    return {
        "abs": str(secret / SENTINEL_NAME),
        "rel": f"../secret/{SENTINEL_NAME}",
        "etc": "/etc/passwd",
        "up": "../../x",
        "url": "file:///etc/passwd",
        "home": "~/.ssh/id_rsa",
        "unc": "\\\\server\\share\\x",
    }


def _hostile_metadata(d: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """``d`` with a path in every free-text field the schema allows, plus unknown keys."""
    d = json.loads(json.dumps(d))
    p = paths
    d["arch"] = p["etc"]
    d["class_names"] = [p["abs"], p["rel"], p["up"]][: len(d["class_names"])]
    d["input"]["name"] = p["rel"]
    d["input"]["file"] = p["abs"]  # unknown key inside a known section
    d["precision"] = p["up"]
    prov = d.setdefault("provenance", {})
    prov.setdefault("checkpoint", {})["path"] = p["abs"]
    prov["weights"] = p["rel"]
    prov["dataset"] = {"root": p["etc"], "files": [p["abs"], p["url"]]}
    d.setdefault("accuracy", {})["measured_on"] = p["rel"]
    d["tensorrt"] = {"engine": p["abs"], "timing_cache": p["rel"], "calibration": p["home"]}
    d["extra"] = {
        "external_data": p["rel"],
        "weights_path": p["abs"],
        "labels_file": p["etc"],
        "include": [p["up"], p["url"], p["home"], p["unc"]],
        "nested": {"$ref": p["abs"], "config": {"path": p["rel"]}},
    }
    d["thresholds"]["file"] = p["abs"]
    d["roi"]["mask_file"] = p["rel"]
    for k in ("weights_path", "external_data", "$ref", "include", "model_path", "config"):
        d[k] = p["abs"] if k != "include" else [p["rel"], p["etc"]]
    return d


def _assert_never_touched(rec: FileAccessRecorder, paths: dict[str, str]) -> None:
    needles = [SENTINEL_NAME, "passwd", "id_rsa", "share\\x", "../../x", "x\\share"]
    hits = [p for p in rec.everything() if any(n in p for n in needles)]
    assert hits == [], f"paths from the metadata were accessed: {hits}"


@pytest.fixture(scope="module")
def hostile_onnx(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the embedded default model whose sonoedge metadata is full of paths."""
    onnx = pytest.importorskip("onnx")
    from sdk.analyzer import default_model
    from sdk.artifact import METADATA_KEY, stamp_onnx_digest

    root = tmp_path_factory.mktemp("hostile")
    paths = _hostile_paths(root)
    art = root / "art"
    art.mkdir()
    path = art / "hostile.onnx"
    model = onnx.load(str(default_model()))
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = json.dumps(_hostile_metadata(json.loads(props[METADATA_KEY]), paths))
    props["external_data"] = paths["abs"]  # a foreign metadata_props entry, too
    props["model_path"] = paths["rel"]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    stamp_onnx_digest(path)  # an artifact exported that way: the digest check passes
    return path, paths


def _warm_up(tmp: Path) -> None:
    """Every lazy import the recorded paths take, done before recording starts."""
    import sdk
    from sdk import cli, synthetic

    frame, _, _ = synthetic.phantom("benign", size=(120, 160), seed=1)
    with sdk.Analyzer(None, threads=1) as a:
        a.run(frame)
        list(a.stream([frame, frame]))
    with open(os.devnull, "w") as null:
        old = sys.stdout
        sys.stdout = null
        try:
            cli.main(["info", str(sdk.analyzer.default_model())])
        finally:
            sys.stdout = old


def test_metadata_paths_are_never_opened_onnx(hostile_onnx, tmp_path, monkeypatch, capsys):
    """Loading, running, streaming and describing (`sonoedge info`) an ONNX artifact whose
    metadata is full of paths opens nothing but the artifact, and touches none of those
    paths, on any thread."""
    import sdk
    from sdk import cli, synthetic

    path, paths = hostile_onnx
    frame, _, _ = synthetic.phantom("malignant", size=(120, 160), seed=2)
    _warm_up(tmp_path)
    rec = FileAccessRecorder(monkeypatch)
    with rec.recording():
        with sdk.Analyzer(path, threads=1) as a:
            res = a.run(frame)
            recs = list(a.stream([frame, frame, frame], drop="latest"))
        code = cli.main(["info", str(path)])
    assert code == 0
    assert res.label in (paths["abs"], paths["rel"], paths["up"])  # the metadata was in use
    assert len(recs) == 3
    assert json.loads(capsys.readouterr().out)["extra"]["weights_path"] == paths["abs"]
    assert rec.files_opened() <= {str(path.resolve())}, rec.files_opened()
    assert any(p == str(path) for p in rec.touched), "the recorder missed the artifact's stat"
    _assert_never_touched(rec, paths)


@pytest.mark.parametrize("how", ["open", "os.open", "Path.read_text", "np.fromfile", "stat"])
def test_recorder_catches_access_from_any_thread(hostile_onnx, monkeypatch, how: str) -> None:
    """The recorder used above is not blind: touching a hostile path in any of these ways,
    from another thread, makes the check fail."""
    _, paths = hostile_onnx
    target = paths["abs"]

    def touch() -> None:
        if how == "open":
            with open(target, "rb") as f:
                f.read(1)
        elif how == "os.open":
            os.close(os.open(target, os.O_RDONLY))
        elif how == "Path.read_text":
            Path(target).read_text()
        elif how == "np.fromfile":
            np.fromfile(target, dtype=np.uint8)
        else:
            Path(target).exists()

    rec = FileAccessRecorder(monkeypatch)
    with rec.recording():
        t = threading.Thread(target=touch)
        t.start()
        t.join(10)
    with pytest.raises(AssertionError, match="accessed"):
        _assert_never_touched(rec, paths)


def test_metadata_paths_are_never_opened_plan(hostile_onnx, tmp_path, monkeypatch, capsys):
    """A .plan container with the same hostile metadata (valid checksum): read_plan,
    `sonoedge info`, and Analyzer.load (which needs TensorRT: it fails cleanly here) open the
    plan and nothing else. Positive control: the recorder does see the plan being opened."""
    import sdk
    from sdk import cli
    from sdk.artifact import PLAN_FORMAT_VERSION, PLAN_MAGIC, read_plan
    from sdk.errors import SDKError

    _, paths = hostile_onnx
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(hostile_onnx[0]))
    meta = {p.key: p.value for p in model.metadata_props}["sonoedge"].encode()
    engine = b"\x00not-an-engine" * 64
    plan = tmp_path / "art" / "hostile.plan"
    plan.parent.mkdir()
    head = struct.pack(
        "<8sIQQ32s",
        PLAN_MAGIC,
        PLAN_FORMAT_VERSION,
        len(meta),
        len(engine),
        hashlib.sha256(meta + engine).digest(),
    )
    plan.write_bytes(head + meta + engine)
    _warm_up(tmp_path)
    rec = FileAccessRecorder(monkeypatch)
    with rec.recording():
        md, eng = read_plan(plan)
        code = cli.main(["info", str(plan)])
        try:
            sdk.Analyzer(plan, threads=1).load()
        except SDKError:
            pass  # no TensorRT / GPU here: BackendUnavailableError, never a crash
    assert eng == engine and md.extra["weights_path"] == paths["abs"]
    assert code == 0 and "engine_bytes" in capsys.readouterr().out
    assert str(plan.resolve()) in rec.files_opened(), "the recorder missed the plan itself"
    assert rec.files_opened() <= {str(plan.resolve())}, rec.files_opened()
    _assert_never_touched(rec, paths)


def test_unknown_output_role_with_a_path_is_refused_unopened(
    hostile_onnx, tmp_path, monkeypatch
) -> None:
    """An output role (the one metadata field that names something to look up) pointing at a
    path is refused as ModelError at load -- and the path is not opened either."""
    onnx = pytest.importorskip("onnx")
    import sdk
    from sdk.artifact import METADATA_KEY, stamp_onnx_digest
    from sdk.errors import ModelError

    src, paths = hostile_onnx
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    d = json.loads(props[METADATA_KEY])
    d["outputs"]["features"] = paths["abs"]
    props[METADATA_KEY] = json.dumps(d)
    onnx.helper.set_model_props(model, props)
    path = tmp_path / "role.onnx"
    onnx.save(model, str(path))
    stamp_onnx_digest(path)  # an artifact exported that way: the digest check passes
    _warm_up(tmp_path)
    rec = FileAccessRecorder(monkeypatch)
    with rec.recording(), pytest.raises(ModelError, match="graph lacks"):
        sdk.Analyzer(path, threads=1).load()
    _assert_never_touched(rec, paths)


# ---- (c) DICOM patient identifiers never leak -----------------------------------------------

PHI = {
    "PatientName": "Zzphiroglyph^Qxylophonist",
    "PatientID": "PHI-ID-83920417",
    "PatientBirthDate": "18910723",
    "PatientSex": "O",
    "PatientAge": "097Y",
    "OtherPatientIDs": "OTHERPHI-4411",
    "StudyDate": "18920814",
    "StudyTime": "235959.123456",
    "AccessionNumber": "ACCPHI55221",
    "InstitutionName": "Phimemorial Quokka Hospital",
    "InstitutionAddress": "7 Phiquokka Lane",
    "ReferringPhysicianName": "Drphiwvutsr^Xavierphi",
    "OperatorsName": "Opphiklmno^Yolandaphi",
    "StudyID": "STUDYPHI77",
    "PatientAddress": "99 Phisecret Road",
    "PatientTelephoneNumbers": "555-0199-PHI",
    "OtherPatientNames": "Aliasphi^Zebedee",
    "PatientMotherBirthName": "Motherphi^Ursula",
}


def _secrets() -> list[str]:
    """Every identifying string long enough to be unmistakable, whole and by name part."""
    out = set()
    for v in PHI.values():
        for s in (v, *v.split("^"), v.replace("^", " ")):
            if len(s) >= 8:
                out.add(s.lower())
    return sorted(out)


def _leaks(text: str | bytes) -> list[str]:
    low = text.lower() if isinstance(text, str) else text.lower().decode("latin-1")
    return [s for s in _secrets() if s in low]


@pytest.fixture(scope="module")
def phi_dicom(tmp_path_factory) -> Path:
    """A real 2-frame ultrasound DICOM (pydicom's test data) re-written with distinctive
    identifiers in every PHI attribute the reader knows of, and a few it does not."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    src = get_testdata_file("OBXXXX1A_2frame.dcm")
    if src is None:
        pytest.skip("pydicom test file OBXXXX1A_2frame.dcm not available")
    ds = pydicom.dcmread(src)
    for k, v in PHI.items():
        setattr(ds, k, v)
    out = tmp_path_factory.mktemp("dicom") / "cine.dcm"
    ds.save_as(out)
    raw = out.read_bytes()
    assert all(v.encode() in raw for v in PHI.values())  # the identifiers are really in it
    return out


def test_dicom_reader_exposes_no_identifiers(phi_dicom, caplog) -> None:
    """The reader's repr, metadata and frame metadata hold none of the identifiers (off by
    default); include_phi=True does return them (so they were there to leak)."""
    from sdk.sources import DicomSource, open_source

    with caplog.at_level(logging.DEBUG):
        src = open_source(phi_dicom)
        frames = list(src)
    assert isinstance(src, DicomSource) and len(frames) == 2
    text = repr(src) + repr(src.metadata) + "".join(repr(dict(f.metadata)) for f in frames)
    text += caplog.text
    assert _leaks(text) == []
    opted = DicomSource(phi_dicom, include_phi=True)
    assert opted.metadata["phi"]["PatientID"] == PHI["PatientID"]


def test_sonoedge_run_on_dicom_leaks_no_identifiers(phi_dicom, tmp_path, caplog, capsys):
    """`sonoedge run cine.dcm --out DIR` with every logger at DEBUG and warnings recorded:
    no identifier in the logs, stdout / stderr, warnings, or the bytes of any file written
    (MP4, JSONL, CSV, JSON, PNG)."""
    from sdk import cli

    out = tmp_path / "results"
    caplog.set_level(logging.DEBUG)
    for name in ("sdk", "pydicom", "export"):
        caplog.set_level(logging.DEBUG, logger=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["run", str(phi_dicom), "--out", str(out), "--threads", "1"])
    std = capsys.readouterr()
    assert code == 0, std.err
    written = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"annotated.mp4", "frames.jsonl", "frames.csv", "latency.json", "latency.png"} <= set(
        written
    )
    assert written["frames.jsonl"].count(b"\n") == 2
    channels = {
        "log": caplog.text,
        "log args": " ".join(repr(r.args) for r in caplog.records),
        "stdout": std.out,
        "stderr": std.err,
        "warnings": " ".join(str(w.message) for w in caught),
        **written,
    }
    leaked = {name: _leaks(v) for name, v in channels.items() if _leaks(v)}
    assert leaked == {}


def test_sonoedge_run_on_a_truncated_dicom_reports_without_identifiers(
    phi_dicom, tmp_path, capsys
) -> None:
    """A truncated copy: `sonoedge run` fails with exit code 1 and an error naming the
    problem, with no identifier in it."""
    from sdk import cli

    raw = phi_dicom.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    code = cli.main(["run", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "truncated" in err
    assert _leaks(err) == []


@pytest.fixture(scope="module")
def phi_raw(phi_dicom) -> tuple[bytes, int, int, list[int]]:
    """The file's bytes, where its pixel data starts, where PatientName's value is, and the
    offsets of every short-VR element's 2-byte length (explicit VR little endian)."""
    import re

    raw = phi_dicom.read_bytes()
    pixel_tag = raw.find(b"\xe0\x7f\x10\x00")
    name_at = raw.find(PHI["PatientName"].encode())
    assert pixel_tag > 0 and name_at > 0
    vrs = rb"(AE|AS|CS|DA|DS|DT|IS|LO|LT|PN|SH|ST|TM|UI|US|UL|SS|SL|FL|FD)"
    lengths = [
        132 + m.start() + 6 for m in re.finditer(rb"[\x00-\xff]{4}" + vrs, raw[132:pixel_tag])
    ]
    assert len(lengths) > 50
    return raw, pixel_tag, name_at, lengths


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    where=st.sampled_from(["header", "near-phi", "length"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
)
@example(where="near-phi", edits=[(0, 0xFF)])  # PatientName's VR
@example(where="near-phi", edits=[(2, 0xFF)])  # its length, low byte
@example(where="near-phi", edits=[(3, 0x7F)])  # its length, high byte: swallows what follows
@example(where="header", edits=[(4100, 0x49)])
@example(where="header", edits=[(263, 1)])  # SOPClassUID swallows StudyDate, AccessionNumber...
def test_damaged_dicom_header_is_a_source_error_without_identifiers(
    phi_raw, tmp_path_factory, where: str, edits: list[tuple[int, int]]
) -> None:
    """Bytes of the header overwritten (anywhere, around the identifiers, or in element
    lengths, so that one element swallows the identifiers after it): the reader yields frames
    or raises SourceError -- never another exception -- and no message, repr or metadata
    carries an identifier."""
    from sdk.errors import SourceError
    from sdk.sources import DicomSource

    raw, pixel_tag, name_at, lengths = phi_raw
    b = bytearray(raw)
    for pos, value in edits:
        if where == "header":
            i = 132 + pos % (pixel_tag + 12 - 132)
        elif where == "near-phi":
            i = name_at - 4 + pos % 48  # the element's VR / length and its value
        else:  # an element's length: it then swallows (or cuts) the elements after it
            i = lengths[pos % len(lengths)] + pos // len(lengths) % 2
        b[i] = value
    path = tmp_path_factory.mktemp("fz") / "f.dcm"
    path.write_bytes(bytes(b))
    text = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = DicomSource(path)
            text += repr(src) + repr(src.metadata)
            for f in src:
                text += repr(dict(f.metadata))
    except SourceError as e:
        text += str(e)
    assert _leaks(text) == [], text[:500]


def test_redaction_is_not_a_no_op() -> None:
    """The reader's redaction of identifiers in pydicom messages replaces each of them."""
    pydicom = pytest.importorskip("pydicom")
    from sdk.sources._dicom import _redact

    ds = pydicom.Dataset()
    for k, v in PHI.items():
        setattr(ds, k, v)
    ds.OtherPatientIDs = ["OTHERPHI-4411", "OTHERPHI-9"]
    msg = "bad value " + " / ".join(PHI.values()) + " OTHERPHI-9"
    assert _leaks(msg)
    assert _leaks(_redact(msg, ds)) == []
    assert "OTHERPHI-9" not in _redact(msg, ds)


def test_capture_threads_see_no_identifiers_either(phi_dicom, caplog) -> None:
    """Streaming the DICOM (capture on its own thread) logs nothing identifying either."""
    import sdk

    with caplog.at_level(logging.DEBUG), sdk.Analyzer(None, threads=1) as a:
        recs = list(a.stream(phi_dicom, keep_frames=False))
    assert len(recs) == 2
    text = caplog.text + "".join(json.dumps(r.to_dict()) for r in recs)
    assert _leaks(text) == []
    for t in threading.enumerate():
        if t.name == "sonoedge-capture":
            t.join(5)
            assert not t.is_alive()
