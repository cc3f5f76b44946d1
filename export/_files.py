"""Atomic file writing for the export stage: every artifact, report and engine is written under a
temporary name in its folder and renamed when complete, so a crash never leaves half a file
under the real name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["part_path", "write_text", "writing"]


def part_path(out: Path) -> Path:
    """Temporary sibling of ``out`` (same folder, so the final rename is atomic)."""
    return out.with_name(f".{out.stem}.part{out.suffix}")


@contextlib.contextmanager
def writing(out: Path) -> Iterator[Path]:
    """Yield :func:`part_path` of ``out`` to write; renamed to ``out`` when the block completes,
    removed when it raises."""
    tmp = part_path(out)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written atomically."""
    with writing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
