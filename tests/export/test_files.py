"""export/_files.py: atomic writes leave the complete file or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from export._files import part_path, write_text, writing


def test_writing_renames_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with writing(out) as tmp:
        assert tmp == part_path(out) and tmp.parent == out.parent and tmp.name != out.name
        tmp.write_bytes(b"model")
        assert not out.exists()
    assert out.read_bytes() == b"model" and sorted(tmp_path.iterdir()) == [out]


def test_writing_leaves_nothing_when_it_raises(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), writing(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]


def test_write_text(tmp_path: Path) -> None:
    write_text(tmp_path / "r.md", "# report\n")
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == "# report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]
