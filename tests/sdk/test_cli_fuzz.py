"""A fuzz of `sonoedge`'s arguments (issue 14): whatever the command line, the exit code is 0, 1
or 2, nothing prints a traceback (or our "internal error" line), nothing hangs. In-process
(`sdk.cli.main`) on a two-frame folder with a tiny model, so each example costs milliseconds; a
SIGALRM guard turns a hang into a failure instead of a stuck suite."""

from __future__ import annotations

import contextlib
import os
import signal

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sdk.cli import build_parser, main  # noqa: E402

GUARD_S = 120  # far above any example (tens of ms): only a hang reaches it

ODD = [
    "inf",
    "-inf",
    "nan",
    "NaN",
    "0",
    "-0",
    "-1",
    "1",
    "2",
    "0.5",
    "1e309",
    "1e-320",
    "99999999999999999999",
    "2147483648",
    "",
    " ",
    "²",
    "٣",
    "1x2",
    "0x10",
    "abc",
    "-",
    "a\x00b",
    "/dev/null/x",
    "/proc/x",
    "*",
    "[",
]
VALUE = st.one_of(
    st.sampled_from(ODD),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_onnx) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "frames"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(src / f"f{i}.png"), rng.integers(0, 255, (40, 48), np.uint8))
    (root / "afile.txt").write_text("text")
    (root / "not.onnx").write_text("not a model")
    return {
        "root": str(root),
        "folder": str(src),
        "glob": str(src / "*.png"),
        "image": str(src / "f0.png"),
        "afile": str(root / "afile.txt"),
        "model": str(tiny_onnx),
        "bad_model": str(root / "not.onnx"),
    }


@contextlib.contextmanager
def _guard(argv: list[str]):  # type: ignore[no-untyped-def]
    def hung(*_):  # type: ignore[no-untyped-def]
        raise AssertionError(f"sonoedge {argv} ran for over {GUARD_S} s (a hang)")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _call(argv: list[str], capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with _guard(argv):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help (0) or a usage error (2)
            code = e.code if isinstance(e.code, int) else 2
    err = capsys.readouterr().err
    return code, err


def _run_argv(draw, w: dict[str, str]) -> list[str]:  # type: ignore[no-untyped-def]
    source = draw(
        st.one_of(
            st.sampled_from(
                [
                    w["folder"],
                    w["glob"],
                    w["image"],
                    w["afile"],
                    "nope.mp4",
                    "7",
                    "²",
                    "",
                    "2147483648",
                ]
            ),
            VALUE,
        )
    )
    argv = ["run", source, "--quiet"]
    options = {
        "--model": st.one_of(st.sampled_from([w["model"], w["bad_model"], "nope.onnx"]), VALUE),
        "--out": st.one_of(
            st.sampled_from(["out", w["afile"], w["folder"], "/dev/null/x", "out/a/b"]), VALUE
        ),
        "--fps": VALUE,
        "--max-frames": VALUE,
        "--threads": VALUE,
        "--smoothing": VALUE,
        "--drop": st.one_of(st.sampled_from(["none", "latest"]), VALUE),
        "--backend": st.one_of(st.sampled_from(["auto", "onnxruntime", "tensorrt"]), VALUE),
        "--device": st.one_of(st.sampled_from(["auto", "cpu", "cuda", "tensorrt"]), VALUE),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5))
    if "--model" not in chosen:
        argv += ["--model", w["model"]]  # the default model is slower to load: mostly tiny
    for opt in chosen:
        argv += [f"{opt}={draw(options[opt])}"]  # `=`: a value starting with '-' stays a value
    return argv


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_run(data, world, capsys) -> None:
    argv = _run_argv(data.draw, world)
    cwd = os.getcwd()
    os.chdir(world["root"])  # relative --out values land in the fixture's folder
    try:
        code, err = _call(argv, capsys)
    finally:
        os.chdir(cwd)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code:
        assert "error:" in err, (argv, err)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_parse_other_commands(data, capsys) -> None:
    """demo / phantom / bench / info: every numeric option parsed within its bounds or refused
    with exit 2 (running them is the other tests' job: a demo of 2000 frames is valid)."""
    command = data.draw(st.sampled_from(["demo", "phantom", "bench", "info"]))
    opts = {
        "demo": ["--seed", "--size", "--frames"],
        "phantom": ["--seed", "--size", "--per-class", "--frames", "--fps", "--frequency"],
        "bench": ["--threads", "--repeat", "--frames", "--sizes", "--batches", "--rounds"],
        "info": ["--extract-plan"],
    }[command]
    argv = [command]
    if command == "phantom":
        argv += ["--out", "x"]
    if command == "bench":
        argv += [data.draw(st.sampled_from(["kernels", "e2e", "soak", "scaling"]))]
    for opt in data.draw(st.lists(st.sampled_from(opts), unique=True, min_size=1)):
        argv += [f"{opt}={data.draw(VALUE)}"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error: argument" in err, (argv, err)
        return
    for name in ("seed", "per_class", "frames", "repeat", "rounds", "threads"):
        v = getattr(args, name, None)
        assert v is None or (isinstance(v, int) and 0 <= v < 2**32), (argv, name, v)
    for name in ("fps", "frequency"):
        v = getattr(args, name, None)
        assert v is None or (np.isfinite(v) and 0 < v <= 1000), (argv, name, v)
    size = getattr(args, "size", None)
    assert size is None or (
        (isinstance(size, int) and 16 <= size <= 1024)
        or (isinstance(size, tuple) and all(32 <= s <= 4096 for s in size))
    ), (argv, size)


def test_fuzz_world_sanity(world, capsys) -> None:
    """The fixture's good case runs (so the fuzz is not only exercising refusals)."""
    cwd = os.getcwd()
    os.chdir(world["root"])
    try:
        code, err = _call(["run", world["folder"], "--model", world["model"], "--quiet"], capsys)
    finally:
        os.chdir(cwd)
    assert code == 0, err
