"""``open_source``: one entry point from whatever the caller holds to a :class:`FrameSource`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import InputError, SourceError
from sdk.sources._base import IMAGE_SUFFIXES, FrameSource
from sdk.sources._dicom import DicomSource, is_dicom
from sdk.sources._streams import (
    VIDEO_SUFFIXES,
    ArraySource,
    ImageSequenceSource,
    IteratorSource,
    VideoSource,
)

__all__ = ["open_source"]

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})


def open_source(obj: Any, color: str = "gray", **kwargs: Any) -> FrameSource:
    """Open ``obj`` as a frame source.

    Dispatch:

    * a :class:`FrameSource` -> itself;
    * ``int`` -> camera (``cv2.VideoCapture(index)``);
    * ``str`` containing ``!`` -> GStreamer pipeline;
    * a folder, a glob pattern or a list of paths -> :class:`ImageSequenceSource`;
    * ``.dcm`` / ``.dicom`` or any file with the ``DICM`` magic -> :class:`DicomSource`;
    * a video suffix (``.mp4``, ``.avi``, ``.mov``, ...) -> :class:`VideoSource`;
    * an image suffix -> a one-frame :class:`ImageSequenceSource`;
    * ``np.ndarray`` -> :class:`ArraySource` (one frame or a stack);
    * any other iterable -> :class:`IteratorSource`.

    Args:
        obj: what to read.
        color: ``"gray"`` (default), ``"rgb"`` or ``"keep"``.
        **kwargs: passed to the chosen source (e.g. ``fps``, ``include_phi``, ``max_frames``).

    Raises:
        SourceError: a path that does not exist or cannot be read.
        InputError: an object of a type no source accepts.
    """
    if isinstance(obj, FrameSource):
        return obj
    if isinstance(obj, bool):
        raise InputError("open_source: a bool is not a source (camera indices are ints)")
    if isinstance(obj, int | np.integer):
        return VideoSource(int(obj), color=color, **kwargs)
    if isinstance(obj, str) and "!" in obj:
        return VideoSource(obj, color=color, **kwargs)
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.is_dir() or any(c in str(obj) for c in "*?["):
            return ImageSequenceSource(obj, color=color, **kwargs)
        if not path.exists():
            raise SourceError(f"{path} does not exist")
        suffix = path.suffix.lower()
        if suffix in _DICOM_SUFFIXES or is_dicom(path):
            return DicomSource(path, color=color, **kwargs)
        if suffix in VIDEO_SUFFIXES:
            return VideoSource(path, color=color, **kwargs)
        if suffix in IMAGE_SUFFIXES:
            return ImageSequenceSource([path], color=color, **kwargs)
        raise SourceError(
            f"{path}: unknown file type {suffix or '(no suffix)'!r}; expected DICOM, a video "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) or an image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if isinstance(obj, np.ndarray):
        return ArraySource(obj, color=color, **kwargs)
    if isinstance(obj, list | tuple) and obj and all(isinstance(o, str | Path) for o in obj):
        return ImageSequenceSource(obj, color=color, **kwargs)
    if isinstance(obj, Iterable) and not isinstance(obj, bytes | bytearray | dict):
        return IteratorSource(obj, color=color, **kwargs)
    raise InputError(
        f"open_source: cannot read a {type(obj).__name__}; give a path, a folder, a camera index, "
        "a GStreamer pipeline, a NumPy array or an iterable of frames"
    )
