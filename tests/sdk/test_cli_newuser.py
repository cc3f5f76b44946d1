"""What a new user meets first (issue 14, "found as a new user"): the README's install line for
DICOM, `sonoedge doctor`'s DICOM line, `sdk.backends` without a prior import, messages that
point to the default model, `run --help` naming every backend, the demo's outputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sdk.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_backends_is_reachable_from_a_bare_import() -> None:
    code = "import sdk; print(callable(sdk.backends.available), sorted(sdk.backends.BACKENDS))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("True") and "onnxruntime" in r.stdout and "torch" in r.stdout
    assert "backends" in dir(__import__("sdk"))


def test_missing_artifact_points_to_the_default_model(tmp_path) -> None:
    import sdk
    from sdk.errors import ModelError

    with pytest.raises(ModelError, match=r"no such artifact") as e:
        sdk.Analyzer(tmp_path / "model.onnx").load()
    assert "sdk.Analyzer()" in str(e.value) and "sdk.default_model()" in str(e.value)


def test_run_help_lists_every_registered_backend(capsys) -> None:
    from sdk.backends import BACKENDS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("auto", *BACKENDS):
        assert name in text
    assert "torch" in text and "openvino" in text


def test_doctor_has_a_dicom_line(monkeypatch) -> None:
    import export.doctor as D

    c = D.check_dicom()
    assert c.name == "DICOM" and c.status in (D.OK, D.MISSING)
    if importlib.util.find_spec("pydicom") is not None and c.status == D.OK:
        assert "pydicom" in c.detail and "JPEG 2000" in c.detail
    real = importlib.util.find_spec

    def without(*names):  # type: ignore[no-untyped-def]
        return lambda name, *a: None if name in names else real(name, *a)

    monkeypatch.setattr(D.importlib.util, "find_spec", without("pydicom"))
    c = D.check_dicom()
    assert c.status == D.MISSING and ".[data]" in c.fix and "pydicom not installed" in c.detail
    assert not c.failed  # optional: videos and images need no pydicom
    monkeypatch.setattr(D.importlib.util, "find_spec", without("openjpeg"))
    c = D.check_dicom()
    assert c.status == D.MISSING and "pylibjpeg-openjpeg" in c.detail and "JPEG 2000" in c.detail
    # and the report has the line
    assert "check_dicom" in Path(D.__file__).read_text().split("def environment_report")[1]


def test_readme_gives_the_dicom_install_and_the_exact_scipy_call() -> None:
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("no README next to the tests (installed package)")
    text = readme.read_text(encoding="utf-8")
    assert 'pip install ".[data]"' in text
    gd = text.split("K.gaussian_gradient_magnitude(x[0]", 1)[1].split("\nres =", 1)[0]
    assert 'mode="nearest"' in gd


def test_gitignore_covers_the_default_output_folders() -> None:
    gi = ROOT / ".gitignore"
    if not gi.is_file():
        pytest.skip("no .gitignore (installed package)")
    lines = gi.read_text().splitlines()
    assert "/sonoedge-demo/" in lines and "/sonoedge-run/" in lines


def test_demo_says_the_model_ships_and_prints_only_what_exists(tmp_path, capsys) -> None:
    import sdk.demo

    assert "Until the embedded default model ships" not in (sdk.demo.__doc__ or "")
    assert "embedded default model" in (sdk.demo.__doc__ or "")
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "2"]) == 0
    wrote = [x[6:] for x in capsys.readouterr().out.splitlines() if x.startswith("wrote ")]
    assert len(wrote) == 5 and all(Path(w).is_file() for w in wrote)
