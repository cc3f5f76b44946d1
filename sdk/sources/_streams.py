"""Video files, cameras, GStreamer pipelines, image sequences, arrays and iterators."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk.errors import InputError, SourceError
from sdk.sources._base import (
    IMAGE_SUFFIXES,
    Frame,
    FrameSource,
    check_pixel_spacing,
    convert_color,
    read_image,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "ArraySource",
    "ImageSequenceSource",
    "IteratorSource",
    "VideoSource",
]

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm", ".gif", ".ogv"}
)


class VideoSource(FrameSource):
    """Frames from ``cv2.VideoCapture``: a video file, a camera index or a GStreamer pipeline.

    Args:
        target: a file path, an ``int`` camera index, or a pipeline string (contains ``!``,
            opened with ``cv2.CAP_GSTREAMER``; needs an OpenCV built with GStreamer).
        color: ``"gray"`` (default), ``"rgb"`` or ``"keep"`` (BGR from OpenCV becomes RGB).
        max_frames: stop after this many frames (cameras run forever otherwise).

    Timestamps: the container's position (``CAP_PROP_POS_MSEC``) for files, wall-clock seconds
    since the first frame for live sources.

    Raises:
        SourceError: the file does not exist, cannot be opened, or yields no frame.
    """

    kind = "video"

    def __init__(
        self, target: str | Path | int, color: str = "gray", max_frames: int | None = None
    ) -> None:
        super().__init__(color)
        self.target = target
        self.max_frames = max_frames
        self.live = isinstance(target, int) or (isinstance(target, str) and "!" in target)
        if isinstance(target, int):
            self._cap = cv2.VideoCapture(target)
            label = f"camera {target}"
        elif self.live:
            self._cap = cv2.VideoCapture(str(target), cv2.CAP_GSTREAMER)
            label = f"GStreamer pipeline {target!r}"
        else:
            path = Path(target)
            if not path.is_file():
                raise SourceError(f"video file {path} does not exist")
            self._cap = cv2.VideoCapture(str(path))
            label = str(path)
        self._label = label
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"cannot open {label}: not a video OpenCV can decode (corrupt file, unknown "
                "codec, busy or missing device, or OpenCV built without that backend)"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not self.live and count > 0:
            self.n_frames = min(count, max_frames) if max_frames is not None else count
        self.metadata.update(
            {
                "path": label,
                "fps": fps if fps > 0 else None,
                "width": int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                "live": self.live,
            }
        )
        self._started = False

    def _frames(self) -> Iterator[Frame]:
        if self._started:
            if self.live:
                raise SourceError(f"{self._label} is live: it can be iterated once")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._started = True
        i = 0
        t0 = None
        fps = self.metadata["fps"]
        while self.max_frames is None or i < self.max_frames:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                break
            if self.live:
                now = time.monotonic()
                t0 = now if t0 is None else t0
                ts = now - t0
            else:
                pos = self._cap.get(cv2.CAP_PROP_POS_MSEC)
                ts = (i / fps) if fps else (pos / 1000.0 if pos >= 0 else None)
            yield Frame(convert_color(bgr, self.color, "BGR"), i, ts, self.metadata)
            i += 1
        if i == 0:
            raise SourceError(f"{self._label}: no frame could be decoded")

    def close(self) -> None:
        self._cap.release()
        super().close()


def _natural_key(path: Path) -> list[object]:
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class ImageSequenceSource(FrameSource):
    """Image files as frames, in natural order (``f2`` before ``f10``).

    Args:
        target: a folder (every image file in it), a glob pattern (``"cine/*.png"``) or an
            explicit list of paths.
        color: colour mode (see :func:`~sdk.sources.convert_color`).
        fps: frame rate for timestamps (``None``: no timestamps).
        pixel_spacing_mm: physical ``(dy, dx)`` to report, if known.

    Non-image files in a folder are skipped and reported in ``skipped``; an unreadable image is
    skipped the same way while iterating.

    Raises:
        SourceError: missing folder, or no image at all.
    """

    kind = "images"

    def __init__(
        self,
        target: str | Path | Iterable[str | Path],
        color: str = "gray",
        fps: float | None = None,
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(color)
        pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        if isinstance(target, str | Path):
            p = Path(target)
            if p.is_dir():
                entries = sorted(
                    (e for e in p.iterdir() if not e.name.startswith(".")), key=_natural_key
                )
                where = str(p)
            elif any(c in str(target) for c in "*?["):
                base = Path(str(target)).parent
                entries = sorted(base.glob(Path(str(target)).name), key=_natural_key)
                where = str(target)
            else:
                raise SourceError(f"image folder {p} does not exist")
        else:
            entries = [Path(e) for e in target]
            where = f"{len(entries)} files"
        self.paths: list[Path] = []
        for e in entries:
            if e.is_dir():
                self._skip(e, "subfolder")
            elif e.suffix.lower() not in IMAGE_SUFFIXES:
                self._skip(e, f"not an image file (suffix {e.suffix or 'none'!r})")
            else:
                self.paths.append(e)
        if not self.paths:
            raise SourceError(f"{where}: no image file found ({len(self.skipped)} skipped)")
        self.n_frames = len(self.paths)
        self.metadata.update({"path": where, "fps": fps, "pixel_spacing_mm": pixel_spacing_mm})

    def _frames(self) -> Iterator[Frame]:
        fps = self.metadata["fps"]
        index = 0
        for path in self.paths:
            try:
                raw = read_image(path)
            except SourceError as exc:
                self._skip(path, str(exc))
                continue
            image = convert_color(raw, self.color, "BGR")
            yield Frame(image, index, index / fps if fps else None, self.metadata, str(path))
            index += 1


def _check_frame(image: Any, where: str) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputError(
            f"{where}: frames must be uint8, got {a.dtype} (convert explicitly, e.g. "
            "np.clip(x, 0, 255).astype(np.uint8); the SDK does not rescale silently)"
        )
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise InputError(f"{where}: expected (H, W) or (H, W, 3) frames, got shape {a.shape}")
    return a


class ArraySource(FrameSource):
    """Frames from a NumPy array: one frame ``(H, W)`` / ``(H, W, 3)`` or a stack ``(N, H, W)`` /
    ``(N, H, W, 3)``, uint8. Colour arrays are taken as RGB (pass ``order="BGR"`` otherwise).

    A 3-D array whose last axis is 3 or 4 is one colour frame; any other 3-D array is a stack.
    """

    kind = "array"

    def __init__(
        self,
        array: np.ndarray,
        color: str = "keep",
        fps: float | None = None,
        order: str = "RGB",
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(color)
        pixel_spacing_mm = check_pixel_spacing(pixel_spacing_mm)
        a = np.asarray(array)
        if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4)):
            a = a[None]
        if a.ndim not in (3, 4) or a.shape[0] == 0:
            raise InputError(f"array source: expected 2-D to 4-D array of frames, got {a.shape}")
        _check_frame(a[0], "array source")
        self._a = a
        self._order = order
        self.n_frames = int(a.shape[0])
        self.metadata.update(
            {"path": f"<array {a.shape}>", "fps": fps, "pixel_spacing_mm": pixel_spacing_mm}
        )

    def _frames(self) -> Iterator[Frame]:
        fps = self.metadata["fps"]
        for i in range(self._a.shape[0]):
            yield Frame(
                convert_color(self._a[i], self.color, self._order),
                i,
                i / fps if fps else None,
                self.metadata,
            )


class IteratorSource(FrameSource):
    """Frames from any iterable of uint8 arrays or :class:`Frame` objects (consumed once)."""

    kind = "iterator"

    def __init__(
        self,
        items: Iterable[Any],
        color: str = "keep",
        fps: float | None = None,
        order: str = "RGB",
    ) -> None:
        super().__init__(color)
        self._it = iter(items)
        self._order = order
        self.metadata.update({"path": "<iterator>", "fps": fps})

    def _frames(self) -> Iterator[Frame]:
        fps = self.metadata["fps"]
        for i, item in enumerate(self._it):
            if isinstance(item, Frame):
                yield item
                continue
            a = _check_frame(item, f"iterator item {i}")
            yield Frame(
                convert_color(a, self.color, self._order),
                i,
                i / fps if fps else None,
                self.metadata,
            )
