"""Integrity of .onnx artifacts (issue #14): every artifact carries a SHA-256 digest of all its
bytes but the digest's own ``metadata_props`` entry, checked at load. One flipped byte of the
default model turned a malignant phantom into "normal 0.985, 0 lesions" with no error; now a
changed byte is a ModelError naming the file and how to regenerate it."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk.analyzer import default_model
from sdk.artifact import (
    DIGEST_KEY,
    onnx_digest,
    stamp_onnx_digest,
    verify_onnx_digest,
)
from sdk.errors import ModelError

# The reproducer of issue #14: this byte of default-fp32.onnx, 0xBE -> 0x5C (xor 0xE2), flipped
# the diagnosis of the phantom below without an error.
ISSUE_OFFSET, ISSUE_XOR = 625056, 0xBE ^ 0x5C


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> Path:
    """A stamped copy of the default model (stamping an already stamped file is a no-op)."""
    p = tmp_path_factory.mktemp("integrity") / "model.onnx"
    shutil.copyfile(default_model(), p)
    stamp_onnx_digest(p)
    return p


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from sdk import synthetic

    img, _, _ = synthetic.phantom("malignant", size=(120, 160), seed=2)
    return img


def _answer(res) -> dict:
    """Everything a Result says but its timings."""
    d = res.to_dict()
    d.pop("timings_ms", None)
    d.pop("timings", None)
    return d


@pytest.fixture(scope="module")
def reference(stamped, frame) -> dict:
    with sdk.Analyzer(stamped, threads=1) as a:
        return _answer(a.run(frame))


def test_stamp_verifies_and_covers_every_other_byte(stamped) -> None:
    data = stamped.read_bytes()
    computed, recorded = onnx_digest(data)
    assert recorded == f"sha256:{computed}" == verify_onnx_digest(stamped)
    # The definition: SHA-256 of the file without the digest's metadata_props entry. Stamping
    # appends that entry as the last top-level field, so the rest is the first len - n bytes.
    entry_len = len(data) - data.rindex(b"\x72", 0, data.index(DIGEST_KEY.encode()))
    assert hashlib.sha256(data[:-entry_len]).hexdigest() == computed
    assert stamp_onnx_digest(stamped) == recorded  # idempotent
    assert stamped.read_bytes() == data


def test_digest_is_the_model_without_its_entry_through_onnx(stamped) -> None:
    """Equivalently (for a canonically serialized file such as every export): SHA-256 of the
    ModelProto serialized by onnx without the digest entry; and onnx.load + save keeps it."""
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(stamped))
    recorded = {p.key: p.value for p in m.metadata_props}[DIGEST_KEY]
    keep = [p for p in m.metadata_props if p.key != DIGEST_KEY]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    assert recorded == "sha256:" + hashlib.sha256(m.SerializeToString()).hexdigest()
    resaved = stamped.with_name("resaved.onnx")
    onnx.save(onnx.load(str(stamped)), str(resaved))
    assert verify_onnx_digest(resaved) == recorded


def test_the_issue_byte_flip_is_a_model_error(stamped, tmp_path) -> None:
    b = bytearray(stamped.read_bytes())
    b[ISSUE_OFFSET] ^= ISSUE_XOR
    p = tmp_path / "flipped.onnx"
    p.write_bytes(bytes(b))
    with pytest.raises(ModelError) as info:
        sdk.Analyzer(p, threads=1).load()
    msg = str(info.value)
    assert str(p) in msg and "integrity check failed" in msg
    assert "re-export" in msg  # how to regenerate it


def test_shipped_default_message_says_how_to_restore_it(stamped, tmp_path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    p = d / "default-fp32.onnx"
    b = bytearray(stamped.read_bytes())
    b[ISSUE_OFFSET] ^= ISSUE_XOR
    p.write_bytes(bytes(b))
    with pytest.raises(ModelError, match=r"git checkout -- sdk/models/default-fp32\.onnx"):
        verify_onnx_digest(p)


def test_one_hundred_random_flips_never_change_the_result_silently(
    stamped, frame, reference, tmp_path
) -> None:
    """100 random single-byte changes of a stamped default model: each is refused with a
    ModelError (at load, or at run for the few that could load) or gives the identical Result."""
    data = stamped.read_bytes()
    rng = np.random.default_rng(14)
    refused = identical = 0
    for i, off in enumerate(rng.integers(0, len(data), 100)):
        b = bytearray(data)
        b[off] ^= int(rng.integers(1, 256))
        p = tmp_path / f"f{i}.onnx"
        p.write_bytes(bytes(b))
        try:
            with sdk.Analyzer(p, threads=1) as a:
                got = _answer(a.run(frame))
        except ModelError as e:
            assert str(p) in str(e), e
            refused += 1
        else:
            assert got == reference, f"byte {off} changed the result silently"
            identical += 1
        p.unlink()
    assert refused + identical == 100 and refused >= 95


def test_unstamped_model_loads_with_one_line_warning(stamped, frame, reference, tmp_path, caplog):
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(stamped))
    keep = [p for p in m.metadata_props if p.key != DIGEST_KEY]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    p = tmp_path / "plain.onnx"
    onnx.save(m, str(p))
    with caplog.at_level(logging.WARNING, logger="sdk.artifact"):
        with sdk.Analyzer(p, threads=1) as a:
            assert _answer(a.run(frame)) == reference
            assert a.backend.digest is None
    recs = [r for r in caplog.records if r.name == "sdk.artifact"]
    assert len(recs) == 1 and "no integrity digest" in recs[0].getMessage()
    assert str(p) in recs[0].getMessage() and "\n" not in recs[0].getMessage()


def test_stamped_model_loads_quietly_with_its_digest(stamped, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="sdk.artifact"):
        with sdk.Analyzer(stamped, threads=1) as a:
            a.load()
            assert a.backend.digest == verify_onnx_digest(stamped)
    assert not [r for r in caplog.records if r.name == "sdk.artifact"]


def _with_entry(data: bytes, value: bytes, key: bytes = DIGEST_KEY.encode()) -> bytes:
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(value)]) + value
    return data + b"\x72" + bytes([len(entry)]) + entry


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"sha256:" + b"0" * 64, "integrity check failed"),
        (b"sha256:zz", "integrity check failed"),
        (b"md5:abc", "integrity check failed"),
        (b"", "integrity check failed"),
    ],
)
def test_bad_digest_values_are_refused(stamped, tmp_path, value, match) -> None:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(stamped))
    keep = [p for p in m.metadata_props if p.key != DIGEST_KEY]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    p = tmp_path / "bad.onnx"
    p.write_bytes(_with_entry(m.SerializeToString(), value))
    with pytest.raises(ModelError, match=match):
        sdk.Analyzer(p, threads=1).load()


def test_two_digest_entries_are_refused(stamped, tmp_path) -> None:
    data = stamped.read_bytes()
    p = tmp_path / "two.onnx"
    p.write_bytes(_with_entry(data, b"sha256:" + b"0" * 64))
    with pytest.raises(ModelError, match=r"2 'sonoedge\.digest' entries"):
        verify_onnx_digest(p)


@pytest.mark.parametrize("data", [b"\xff" * 10, b"\x72\xff\xff\xff\xff\x0f", b"\x0b\x00"])
def test_non_protobuf_bytes_are_a_model_error(tmp_path, data) -> None:
    p = tmp_path / "g.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        verify_onnx_digest(p)


def test_embed_metadata_stamps(stamped, tmp_path) -> None:
    """The export stage's write path (every exported, quantized or imported artifact goes
    through embed_metadata) stamps a fresh digest, replacing a stale one."""
    pytest.importorskip("torch")
    from export.onnx_export import embed_metadata
    from sdk.artifact import read_onnx_file_metadata

    p = tmp_path / "m.onnx"
    shutil.copyfile(stamped, p)
    md = read_onnx_file_metadata(p)
    md.mask_threshold = 0.4
    embed_metadata(p, md)
    assert verify_onnx_digest(p) not in (None, verify_onnx_digest(stamped))
    assert sum(DIGEST_KEY.encode() in p.read_bytes() for _ in [0]) == 1


def test_cli_info_prints_the_digest(stamped, capsys) -> None:
    from sdk import cli

    assert cli.main(["info", str(stamped)]) in (0, None)
    out = capsys.readouterr().out
    d = json.loads(out[out.index("{") :])
    assert d["digest"] == f"{verify_onnx_digest(stamped)} (verified)"
