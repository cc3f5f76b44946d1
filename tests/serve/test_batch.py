"""`sonoedge batch` on a real local Dask cluster on 127.0.0.1 (issue #18 items 3 and 4): an
archive of real DICOM files (pydicom-data), a video written with OpenCV, PNG images and a broken
file; records equal to the local Analyzer's; failures per source; resume after a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from _loopback import assert_loopback_only, descendants

import sdk
from sdk import synthetic

pytestmark = pytest.mark.batch
distributed = pytest.importorskip(
    "distributed", reason='sonoedge batch needs Dask distributed: pip install "sonoedge[batch]"'
)
pytest.importorskip("pydicom", reason="the archive's DICOM files need pydicom + pydicom-data")

from sdk.batch import RESULTS, SOURCES, frame_record, local_cluster, run_batch  # noqa: E402

SONOEDGE = [sys.executable, "-c", "import sys; from sdk.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("archive")
    (root / "dicom" / "study1").mkdir(parents=True)
    for name in ("US1_UNCR.dcm", "OBXXXX1A_rle_2frame.dcm"):  # RGB US frame; 2-frame RLE cine
        shutil.copy(get_testdata_file(name), root / "dicom" / "study1" / name)
    # a DICOM without a suffix (found by its magic)
    shutil.copy(get_testdata_file("OBXXXX1A_2frame.dcm"), root / "dicom" / "IM0001")
    (root / "video").mkdir()
    w = cv2.VideoWriter(
        str(root / "video" / "loop.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240), False
    )
    assert w.isOpened()
    for k in range(5):
        w.write(synthetic.phantom(("benign", "malignant")[k % 2], size=(240, 320), seed=k)[0])
    w.release()
    (root / "img").mkdir()
    for k, kind in enumerate(("malignant", "benign", "normal")):
        frame = synthetic.phantom(kind, size=(300, 400), seed=20 + k)[0]
        cv2.imwrite(str(root / "img" / f"p{k}.png"), frame)
    (root / "img" / "broken.png").write_bytes(b"not a png at all")
    (root / "notes.txt").write_text("not a frame source: ignored")
    return root


def _local_records(root: Path) -> dict[str, list[dict]]:
    """What a local Analyzer gives, by the loop the batch docstring names."""
    from sdk.sources import open_source

    out: dict[str, list[dict]] = {}
    with sdk.Analyzer(threads=1) as a:
        for rel in ("dicom/IM0001", "dicom/study1/OBXXXX1A_rle_2frame.dcm",
                    "dicom/study1/US1_UNCR.dcm", "img/p0.png", "img/p1.png", "img/p2.png",
                    "video/loop.avi"):  # fmt: skip
            with open_source(root / rel) as src:
                out[rel] = [
                    json.loads(
                        json.dumps(
                            frame_record(
                                rel,
                                f,
                                a.run(
                                    f.image,
                                    timestamp=f.timestamp,
                                    pixel_spacing_mm=f.pixel_spacing_mm,
                                ),
                            )
                        )
                    )
                    for f in src
                ]
    return out


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path, monkeypatch):
    """Run from a scratch folder: `python -c` (the CLI runs below) and the Dask workers put the
    working directory first on sys.path, and the checkout's sdk/ has no compiled kernels under
    a non-editable install (CI's) -- every source then failed with KernelError. For the same
    reason no entry of sys.path (which spawned workers inherit) may name the checkout: a
    benchmark helper an earlier test imported used to put it there."""
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != root])


def _read(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def test_cli_batch_equals_local_records_failures_and_resume(archive, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [*SONOEDGE, "batch", str(archive), "--out", str(out), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # one source (broken.png) failed: exit 1, said in one line, no traceback
    assert r.returncode == 1, r.stderr[-2000:]
    assert "img/broken.png" in r.stderr and "Traceback" not in r.stderr
    assert "7 analyzed" in r.stdout and "1 failed" in r.stdout
    assert "source/s" in r.stderr or "source" in r.stderr  # the progress bar
    records = _read(out, RESULTS)
    sources = {d["source"]: d for d in _read(out, SOURCES)}
    assert sources["img/broken.png"]["status"] == "failed"
    assert "img/broken.png" in sources["img/broken.png"]["error"]
    want = _local_records(archive)
    assert {s for s, d in sources.items() if d["status"] == "ok"} == set(want)
    got: dict[str, list[dict]] = {}
    for rec in records:
        got.setdefault(rec["source"], []).append(rec)
    assert set(got) == set(want)
    for src, recs in want.items():
        assert sorted(got[src], key=lambda d: d["frame_index"]) == recs, src
        assert sources[src]["frames"] == len(recs)
    assert sum(len(v) for v in want.values()) == len(records) == 1 + 2 + 2 + 3 + 5
    for rec in records:
        assert {"source", "frame_index", "label", "probs", "in_scope", "lesions"} <= set(rec)

    # rerun: every finished source skipped, the failed one retried (and failing again)
    s = run_batch(archive, out, workers=1, progress=False)
    assert (s.skipped, s.ok, s.failed) == (7, 0, 1)
    assert _read(out, RESULTS) == records

    # a crash between the two writes: records of a source that never reached sources.jsonl,
    # and a torn last line; the rerun drops them and redoes that source exactly once
    lines = (out / SOURCES).read_text().splitlines()
    victim = json.loads(next(line for line in lines if '"video/loop.avi"' in line))["source"]
    (out / SOURCES).write_text("\n".join(x for x in lines if victim not in x) + "\n")
    with open(out / RESULTS, "a") as f:
        f.write('{"source": "video/loop.avi", "frame_in')
    s = run_batch(archive, out, workers=1, progress=False, retry_failed=False)
    assert (s.ok, s.frames, s.failed) == (1, 5, 0)
    again = _read(out, RESULTS)
    assert sorted(json.dumps(d, sort_keys=True) for d in again) == sorted(
        json.dumps(d, sort_keys=True) for d in records
    )


def test_cluster_listens_on_loopback_only_and_is_stopped(archive, tmp_path):
    """The cluster run_batch starts by default (scheduler in this process, nannies and workers
    as children), used through its address as `--address` does: every listening socket on
    loopback while it runs; all gone afterwards."""
    cluster = local_cluster(2)
    client = distributed.Client(cluster, timeout=30)
    try:
        tree = descendants(os.getpid())
        socks = assert_loopback_only(tree, at_least=3)  # scheduler + 2 workers (+ nannies)
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        s = run_batch(
            archive / "img", tmp_path / "o", address=cluster.scheduler_address, progress=False
        )
        assert (s.ok, s.failed) == (3, 1)
        assert_loopback_only(descendants(os.getpid()), at_least=3)
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    finally:
        client.close(timeout=30)
        cluster.close(timeout=30)
    ports = {p for *_, p in socks}
    from _loopback import listening

    left = [x for x in listening(descendants(os.getpid())) if x[3] in ports]
    assert not left, f"cluster sockets still listening after close: {left}"


def test_bad_arguments_are_clear(tmp_path):
    from sdk.errors import InputError

    with pytest.raises(InputError, match="not a folder"):
        run_batch(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(InputError, match="workers"):
        run_batch(tmp_path, tmp_path / "o", workers=0)
    with pytest.raises(InputError, match="no such file"):
        run_batch(tmp_path, tmp_path / "o", model=tmp_path / "nope.onnx")
    r = subprocess.run(
        [*SONOEDGE, "batch", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
