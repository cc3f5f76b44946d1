"""The frame-source interface and shared helpers (image decoding, colour handling, skip log)."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from sdk.errors import InputError, SourceError

__all__ = [
    "COLOR_MODES",
    "IMAGE_SUFFIXES",
    "Frame",
    "FrameSource",
    "Sample",
    "Skipped",
    "check_pixel_spacing",
    "convert_color",
    "read_image",
]

log = logging.getLogger("sdk.sources")

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
COLOR_MODES = ("gray", "rgb", "keep")

#: Accepted pixel spacing, mm per pixel. Outside it the value is a unit or parsing error
#: (ultrasound is 0.01 - 1 mm; 1 m per pixel already means the value is not in mm), and the
#: upper end keeps every lesion area finite (no ``Infinity`` in JSON records).
SPACING_RANGE_MM = (1e-6, 1e3)


def check_pixel_spacing(value: Any, name: str = "pixel_spacing_mm") -> tuple[float, float] | None:
    """None, or the ``(row, column)`` spacing in mm as two floats, each finite and inside
    :data:`SPACING_RANGE_MM`. Anything else -- a string, one number, a 1- or 3-tuple, NaN, inf,
    0, a negative value, a bool -- raises :class:`InputError` naming ``name`` and the fix."""
    if value is None:
        return None
    lo, hi = SPACING_RANGE_MM
    fix = (
        f"{name} must be None or (row_mm, col_mm): two real numbers in [{lo:g}, {hi:g}] mm "
        "per pixel, e.g. (0.1, 0.1)"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise InputError(f"{fix}; got {value!r}")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise InputError(f"{fix}; got an array of shape {value.shape}")
    if len(value) != 2:
        raise InputError(f"{fix}; got {len(value)} value(s): {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
            raise InputError(f"{fix}; got {value!r} (a {type(v).__name__})")
        f = float(v)
        if not (math.isfinite(f) and lo <= f <= hi):
            raise InputError(f"{fix}; got {value!r}")
        out.append(f)
    return out[0], out[1]


@dataclass(frozen=True)
class Frame:
    """One frame from a source.

    Attributes:
        image: uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB (never BGR), C-contiguous.
        index: 0-based position in the source.
        timestamp: seconds since the first frame (``None`` when the source has no clock).
        metadata: source-level facts shared by all its frames: ``source`` (kind), ``path``,
            ``pixel_spacing_mm`` ``(dy, dx)`` or ``None``, ``fps``... Never patient identifiers.
        path: the file this one frame was read from, when it has its own (an image of a
            folder); ``None`` otherwise (the source's file is ``metadata["path"]``).
    """

    image: np.ndarray
    index: int
    timestamp: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """Physical ``(row, column)`` spacing in mm, when the source knows it; a value in the
        metadata that is not a valid spacing raises :class:`InputError` (in a stream: that
        frame's error record) instead of reaching lesion areas (see :func:`check_pixel_spacing`).
        """
        return check_pixel_spacing(
            self.metadata.get("pixel_spacing_mm"), f"frame {self.index}: pixel_spacing_mm"
        )


class Sample(NamedTuple):
    """One annotated image of a dataset: unpack as ``image, mask, label, path``.

    ``image`` uint8 ``(H, W)``; ``mask`` uint8 ``(H, W)``, 0 background / 1 lesion (union of
    every mask file of the image); ``label`` the class name; ``path`` the image file.
    """

    image: np.ndarray
    mask: np.ndarray
    label: str
    path: Path


class Skipped(NamedTuple):
    """A file a reader did not use, and why."""

    path: Path
    reason: str


class FrameSource:
    """Base of every frame source: an iterable of :class:`Frame`, usable as a context manager.

    Subclasses implement :meth:`_frames`. ``metadata`` holds source-level facts, ``n_frames``
    the count when known (else ``None``), ``skipped`` every input that was not used and why.
    """

    kind = "source"

    def __init__(self, color: str = "gray") -> None:
        if color not in COLOR_MODES:
            raise InputError(f"color must be one of {COLOR_MODES}, got {color!r}")
        self.color = color
        self.metadata: dict[str, Any] = {"source": self.kind, "pixel_spacing_mm": None}
        self.n_frames: int | None = None
        self.skipped: list[Skipped] = []
        self._closed = False

    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"{self!r} is closed")
        return self._frames()

    def __len__(self) -> int:
        if self.n_frames is None:
            raise TypeError(f"{type(self).__name__} has no known length (live or streamed)")
        return self.n_frames

    def close(self) -> None:
        """Release files / devices. Idempotent."""
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append(Skipped(Path(path), reason))
        log.warning("skipped %s: %s", path, reason)

    def __repr__(self) -> str:
        where = self.metadata.get("path", "")
        n = "?" if self.n_frames is None else self.n_frames
        return f"{type(self).__name__}({str(where)!r}, frames={n})"


def convert_color(image: np.ndarray, mode: str, order: str = "RGB") -> np.ndarray:
    """uint8 ``(H, W)``, ``(H, W, 1|3|4)`` -> the ``mode`` of a source.

    ``order`` tells how a 3/4-channel input is laid out (``"RGB"`` or OpenCV's ``"BGR"``).
    ``gray``: ITU-R BT.601 luma (``cv2.COLOR_RGB2GRAY``: 0.299 R + 0.587 G + 0.114 B);
    ``rgb``: 3 channels RGB (grey is replicated); ``keep``: grey stays grey, colour becomes RGB.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if order == "BGR" else cv2.COLOR_RGBA2RGB)
    if image.ndim == 2:
        out = image if mode != "rgb" else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        if mode == "gray":
            out = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if order == "BGR" else cv2.COLOR_RGB2GRAY)
        else:
            out = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if order == "BGR" else image
    else:
        raise InputError(f"expected an (H, W) or (H, W, 1|3|4) image, got shape {image.shape}")
    return np.ascontiguousarray(out)


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode an image file (any path, unicode included) or raise :class:`SourceError`.

    16-bit images are scaled to uint8 by ``>> 8`` (full-range mapping, no per-image stretch).
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise SourceError(f"{path} is not a readable image (OpenCV could not decode it)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"{path}: unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
    return image
