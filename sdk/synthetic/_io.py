"""Atomic file writes: a crash never leaves a half-written PNG or manifest behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from sdk.errors import SourceError

__all__ = ["write_bytes_atomic", "write_image_atomic"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_image_atomic(path: Path, image: np.ndarray) -> None:
    """Encode ``image`` by the suffix of ``path`` (PNG, JPEG, GIF...) and write it atomically."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise SourceError(f"OpenCV could not encode {path.name} as {path.suffix}")
    write_bytes_atomic(path, buf.tobytes())
