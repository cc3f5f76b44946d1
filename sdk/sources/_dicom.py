"""DICOM ultrasound (single- and multi-frame) through pydicom, imported lazily.

Pixel conversion to uint8 (documented, deterministic, no per-frame contrast stretch):

* ``YBR_FULL``, ``YBR_FULL_422``, ``YBR_ICT``, ``YBR_RCT``: pydicom's decoders convert to RGB;
* ``PALETTE COLOR``: the palette LUT gives RGB; 16-bit LUT entries are scaled by ``>> 8``;
* ``MONOCHROME1`` is inverted so that bright is echo, as in ``MONOCHROME2``;
* more than 8 bits stored: a VOI window in the file (Window Center / Width) maps the window to
  0..255, otherwise the stored range is shifted to 8 bits (``>> (BitsStored - 8)``; signed data
  offset first);
* the colour mode of the source (``gray``: BT.601 luma, ``rgb``, ``keep``) is applied last.

Compressed transfer syntaxes are decoded by the pydicom plugins that are installed: JPEG baseline
/ lossless and JPEG-LS by ``pylibjpeg-libjpeg`` (or Pillow / GDCM), JPEG 2000 by
``pylibjpeg-openjpeg``, RLE by pydicom itself (``pylibjpeg-rle`` is faster).

Patient identifiers never reach metadata, reprs or logs unless ``include_phi=True``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, MutableSequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import InputError, SourceError
from sdk.sources._base import Frame, FrameSource, check_pixel_spacing, convert_color

log = logging.getLogger(__name__)

__all__ = ["PHI_KEYWORDS", "DicomSource", "is_dicom"]

# Identifying attributes reported only with include_phi=True.
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "StudyID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
)
_UNITS_MM = {3: 10.0}  # Physical Units code 3 = cm (PS3.3 C.8.5.5.1.15); other units: no spacing
# Bounds on what a header may claim before a frame is decoded: the decoders allocate the claimed
# frame first, so a damaged Rows / Columns (30000 x 30000) costs gigabytes before failing.
# Ultrasound frames are at most ~2k x 2k; these leave room for any secondary capture.
MAX_SIDE = 16384
MAX_FRAME_PIXELS = 1 << 26  # 8192 x 8192
MAX_FRAME_BYTES = 256 << 20


def is_dicom(path: Path) -> bool:
    """True when ``path`` has the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _text(value: Any, limit: int = 64) -> str:
    """An element's text for metadata and messages, or "" when it is not plausible text (a
    damaged length makes an element swallow the elements after it, identifiers included; the
    swallowed tags are never printable)."""
    s = "" if value is None else str(value)
    return s if len(s) <= limit and s.isprintable() else ""


def _uid_text(uid: Any) -> str:
    """A UID's registered name, or the UID itself; "(damaged UID)" if it is not a UID."""
    if uid is None:
        return "unknown"
    s = str(uid)
    if not (0 < len(s) <= 64 and all(c.isdigit() or c == "." for c in s)):
        return "(damaged UID)"
    return _text(getattr(uid, "name", s)) or s


def _redact(text: str, ds: Any) -> str:
    """``text`` with every identifying value of ``ds`` (:data:`PHI_KEYWORDS`) replaced by
    ``<PHI>``: pydicom's messages about a damaged element may quote element values."""
    for kw in PHI_KEYWORDS:
        try:
            value = ds.get(kw)
            multi = isinstance(value, MutableSequence)  # pydicom's MultiValue
            values = list(value) if multi else [value]
            parts = {p.strip() for v in values if v is not None for p in str(v).split("^")}
            parts |= {str(v) for v in values if v is not None}
        except Exception:  # the element itself is damaged: nothing readable to redact
            continue
        for part in sorted(parts, key=len, reverse=True):
            if len(part) >= 3:
                text = text.replace(part, "<PHI>")
    return text


def _one_line(text: str, limit: int = 400) -> str:
    """pydicom's multi-line messages (one line per plugin) as one line for a console."""
    line = " / ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is in the data/test extras
        raise SourceError(
            "reading DICOM needs pydicom: pip install 'sonoedge[data]' (or pip install pydicom)"
        ) from exc
    return pydicom


def _regions(ds: Any) -> list[dict[str, Any]]:
    out = []
    for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
        ux, uy = r.get("PhysicalUnitsXDirection"), r.get("PhysicalUnitsYDirection")
        dx, dy = r.get("PhysicalDeltaX"), r.get("PhysicalDeltaY")
        spacing = None
        if ux in _UNITS_MM and uy in _UNITS_MM and dx and dy:
            spacing = (abs(float(dy)) * _UNITS_MM[uy], abs(float(dx)) * _UNITS_MM[ux])
        bbox = [
            r.get(k)
            for k in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        out.append(
            {
                "bbox": [int(v) for v in bbox] if None not in bbox else None,
                "pixel_spacing_mm": spacing,
                "spatial_format": int(r.get("RegionSpatialFormat", 0) or 0),  # 1 = 2D (B-mode)
                "data_type": int(r.get("RegionDataType", 0) or 0),  # 1 = tissue
            }
        )
    return out


def _spacing(ds: Any, regions: list[dict[str, Any]]) -> tuple[tuple[float, float] | None, str]:
    """Pixel spacing (dy, dx) mm: the largest 2-D tissue region, else Pixel Spacing. A value
    the header holds but no frame could use (0, NaN, out of range: see
    :func:`~sdk.sources.check_pixel_spacing`) gives no spacing, with one warning and the source
    ``"<attribute> (invalid: ...)"`` -- areas in mm² are then absent, the frames still analyzed."""
    value, source = _spacing_raw(ds, regions)
    if value is None:
        return None, source
    try:
        return check_pixel_spacing(value), source
    except (InputError, TypeError, ValueError):
        log.warning(
            "DICOM %s spacing %r is not usable: lesion areas in mm² left out", source, value
        )
        return None, f"{source} (invalid: {value!r})"


def _spacing_raw(ds: Any, regions: list[dict[str, Any]]) -> tuple[Any, str]:
    best = None
    for r in regions:
        if r["pixel_spacing_mm"] is None or r["bbox"] is None:
            continue
        x0, y0, x1, y1 = r["bbox"]
        area = (x1 - x0) * (y1 - y0)
        rank = (r["spatial_format"] == 1 and r["data_type"] == 1, area)
        if best is None or rank > best[0]:
            best = (rank, r["pixel_spacing_mm"])
    if best is not None:
        return best[1], "SequenceOfUltrasoundRegions"
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(kw)
        if v is not None and len(v) == 2:
            return (float(v[0]), float(v[1])), kw
    return None, "unknown"


def _timestamps(ds: Any, n: int) -> tuple[list[float] | None, float | None]:
    """Per-frame times (s) and the frame period (ms) from Frame Time (Vector) / Cine Rate."""
    ftv = ds.get("FrameTimeVector")
    if ftv is not None and len(ftv) == n:
        t = np.cumsum([0.0, *[float(v) for v in list(ftv)[1:]]]) / 1000.0
        return [float(v) for v in t], float(np.mean([float(v) for v in list(ftv)[1:]] or [0]))
    ft = ds.get("FrameTime")
    if ft is not None and float(ft) > 0:
        return [i * float(ft) / 1000.0 for i in range(n)], float(ft)
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = ds.get(kw)
        if rate is not None and float(rate) > 0:
            return [i / float(rate) for i in range(n)], 1000.0 / float(rate)
    return None, None


class DicomSource(FrameSource):
    """Frames of a DICOM file (single- or multi-frame), decoded lazily one frame at a time.

    Args:
        path: the ``.dcm`` file.
        color: ``"gray"`` (default), ``"rgb"`` or ``"keep"`` (see :func:`convert_color`).
        include_phi: also put identifying attributes (:data:`PHI_KEYWORDS`) in
            ``metadata["phi"]``. Off by default: nothing identifying is returned or logged.

    Metadata: ``pixel_spacing_mm`` ``(dy, dx)`` (from the Sequence of Ultrasound Regions when
    present), ``spacing_source``, ``ultrasound_regions`` (bbox, spacing, type per region),
    ``frame_time_ms``, ``fps``, ``n_frames``, ``rows``, ``columns``, ``photometric``,
    ``bits_stored``, ``transfer_syntax``, ``modality``, ``manufacturer``, ``model``.

    Raises:
        SourceError: not a DICOM file, truncated, no pixel data, no decoder for its transfer
            syntax (the message says which package to install) - always naming the file.
    """

    kind = "dicom"

    def __init__(self, path: str | Path, color: str = "gray", include_phi: bool = False) -> None:
        super().__init__(color)
        pydicom = _pydicom()
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"DICOM file {self.path} does not exist")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # VR mismatches in vendor files: tolerated
                ds = pydicom.dcmread(str(self.path))
        except pydicom.errors.InvalidDicomError as exc:
            raise SourceError(f"{self.path} is not a DICOM file ({exc})") from exc
        except Exception as exc:  # pydicom raises many types on damaged files
            raise SourceError(
                f"{self.path} cannot be parsed as DICOM (truncated or damaged): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            self._read_header(ds, include_phi)
        except SourceError:
            raise
        except Exception as exc:  # pydicom decodes elements lazily: a damaged one raises here
            raise SourceError(
                f"{self.path}: damaged DICOM header ({type(exc).__name__}: "
                f"{_redact(str(exc), ds)}); re-export the file from the scanner"
            ) from exc

    def _read_header(self, ds: Any, include_phi: bool) -> None:
        if "PixelData" not in ds:
            sop = ds.get("SOPClassUID")
            name = _uid_text(sop) if sop is not None else ""
            if not name or "Image" in name:
                why = "the file is truncated before its image, or is not an image DICOM"
            else:
                why = f"not an image DICOM: {name}"
            raise SourceError(f"{self.path} holds no pixel data ({why})")
        self._ds = ds
        tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        n = self._check_size(ds, tsyntax)
        self._check_length(ds, n, tsyntax)
        regions = _regions(ds)
        spacing, spacing_src = _spacing(ds, regions)
        times, period = _timestamps(ds, n)
        self._times = times
        self.n_frames = n
        self.metadata.update(
            {
                "path": str(self.path),
                "pixel_spacing_mm": spacing,
                "spacing_source": spacing_src,
                "ultrasound_regions": regions,
                "n_frames": n,
                "frame_time_ms": period,
                "fps": (1000.0 / period) if period else None,
                "rows": int(ds.get("Rows", 0)),
                "columns": int(ds.get("Columns", 0)),
                "photometric": _text(ds.get("PhotometricInterpretation", "")),
                "bits_stored": int(ds.get("BitsStored", 8) or 8),
                "transfer_syntax": _uid_text(tsyntax),
                "modality": _text(ds.get("Modality", "")),
                "manufacturer": _text(ds.get("Manufacturer", "")),
                "model": _text(ds.get("ManufacturerModelName", "")),
            }
        )
        if include_phi:
            self.metadata["phi"] = {k: str(ds.get(k, "")) for k in PHI_KEYWORDS if k in ds}

    def _check_size(self, ds: Any, tsyntax: Any) -> int:
        """The frame count, after checking that what the header claims (frame count, size,
        samples, bits) is an image that can exist, before any decoder allocates it."""
        damaged = "the header is damaged; re-export the file from the scanner"
        raw = ds.get("NumberOfFrames", 1)
        n = int(raw) if raw not in (None, "") else 1
        if n < 0:
            raise SourceError(f"{self.path}: NumberOfFrames is {n}, not a frame count; {damaged}")
        n = n or 1  # 0 in some single-frame files: one frame
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        spp, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
        if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
            raise SourceError(
                f"{self.path}: the header claims {cols}x{rows} pixel frames (each side must be "
                f"1..{MAX_SIDE}); {damaged}"
            )
        if spp not in (1, 3, 4) or bits not in (1, 8, 16, 32):
            raise SourceError(
                f"{self.path}: the header claims {spp} samples of {bits} bits per pixel (an image "
                f"has 1, 3 or 4 samples of 1, 8, 16 or 32 bits); {damaged}"
            )
        frame_bytes = rows * cols * spp * max(bits, 8) // 8
        if rows * cols > MAX_FRAME_PIXELS or frame_bytes > MAX_FRAME_BYTES:
            raise SourceError(
                f"{self.path}: the header claims {cols}x{rows}x{spp} frames of "
                f"{frame_bytes / 2**20:.0f} MiB, more than an ultrasound frame can be (at most "
                f"{MAX_FRAME_PIXELS} pixels, {MAX_FRAME_BYTES >> 20} MiB); {damaged}"
            )
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            have = len(ds.PixelData)
            if n > have // 8:  # every compressed frame is at least one 8-byte item
                raise SourceError(
                    f"{self.path}: NumberOfFrames {n} cannot fit in {have} bytes of compressed "
                    f"pixel data; {damaged}"
                )
        return n

    def _check_length(self, ds: Any, n: int, tsyntax: Any) -> None:
        if tsyntax is None or getattr(tsyntax, "is_compressed", False):
            return
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        spp, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 8))
        expected = rows * cols * spp * n * bits // 8
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            expected = expected * 2 // 3
        have = len(ds.PixelData)
        if have < expected:
            raise SourceError(
                f"{self.path} is truncated: pixel data has {have} bytes, {n} frame(s) of "
                f"{cols}x{rows}x{spp} at {bits} bits need {expected}"
            )

    def _to_uint8(self, arr: np.ndarray) -> np.ndarray:
        from pydicom.pixels import apply_color_lut, apply_voi_lut

        ds = self._ds
        pi = str(ds.get("PhotometricInterpretation", ""))
        if pi == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            if arr.dtype != np.uint8:
                arr = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
            return arr
        stored = int(ds.get("BitsStored", 8) or 8)
        if arr.dtype == np.uint8:
            out = arr
        elif arr.ndim == 2 and "WindowCenter" in ds and "WindowWidth" in ds:
            win = apply_voi_lut(arr, ds).astype(np.float64)
            center = float(np.atleast_1d(ds.WindowCenter)[0])
            width = float(np.atleast_1d(ds.WindowWidth)[0])
            lo = center - width / 2.0
            out = np.clip((win - lo) / max(width, 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            a = arr.astype(np.int64)
            if int(ds.get("PixelRepresentation", 0)) == 1:
                a = a + (1 << (stored - 1))
            out = np.clip(a >> max(stored - 8, 0), 0, 255).astype(np.uint8)
        if pi == "MONOCHROME1":
            out = 255 - out
        return out

    def _decodable(self) -> bool:
        """Whether a decoder for this file's transfer syntax is installed (so a decode failure
        is damaged data, not a missing package)."""
        try:
            from pydicom.pixels import get_decoder

            return bool(get_decoder(self._ds.file_meta.TransferSyntaxUID).is_available)
        except Exception:
            return False

    def _frames(self) -> Iterator[Frame]:
        from pydicom.pixels import iter_pixels

        meta = self.metadata
        it = iter_pixels(self._ds)
        for i in range(int(self.n_frames or 0)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    arr = next(it)
            except StopIteration:
                raise SourceError(f"{self.path}: frame {i} missing (file truncated?)") from None
            except Exception as exc:
                why = _one_line(_redact(str(exc), self._ds))
                if isinstance(exc, NotImplementedError | RuntimeError) and not self._decodable():
                    raise SourceError(
                        f"{self.path}: no decoder for {meta['transfer_syntax']} here "
                        f"(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg): {why}"
                    ) from exc
                raise SourceError(
                    f"{self.path}: frame {i} cannot be decoded (damaged pixel data; the "
                    f"installed {meta['transfer_syntax']} decoders all refuse it): {why}"
                ) from exc
            try:  # colour / VOI conversion reads header elements that may be damaged
                image = convert_color(self._to_uint8(arr), self.color, "RGB")
            except Exception as exc:
                raise SourceError(
                    f"{self.path}: frame {i} cannot be converted to 8 bits "
                    f"({type(exc).__name__}: {_redact(str(exc), self._ds)}); the header's "
                    "pixel description (palette, bits, photometric) is damaged"
                ) from exc
            ts = self._times[i] if self._times is not None else None
            yield Frame(image, i, ts, meta)
