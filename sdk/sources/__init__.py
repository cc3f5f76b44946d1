"""Frame sources and annotated-dataset readers.

Streams (consumed by ``Analyzer.stream``): :func:`open_source` turns a path, folder, camera
index, GStreamer pipeline, array or iterator into a :class:`FrameSource`, an iterable of
:class:`Frame` (``image`` uint8, ``index``, ``timestamp`` s, ``metadata`` with
``pixel_spacing_mm``).

Datasets (training, evaluation): :class:`BusiReader` (BUSI folder layout) and
:class:`CsvFolderReader` (images + masks + a label CSV) yield :class:`Sample`
``(image, mask, label, path)`` and record every skipped file in ``skipped``.
"""

from __future__ import annotations

from sdk.sources._base import COLOR_MODES, Frame, FrameSource, Sample, Skipped, convert_color
from sdk.sources._datasets import BUSI_CLASSES, BusiReader, CsvFolderReader
from sdk.sources._dicom import PHI_KEYWORDS, DicomSource
from sdk.sources._open import open_source
from sdk.sources._streams import ArraySource, ImageSequenceSource, IteratorSource, VideoSource

__all__ = [
    "BUSI_CLASSES",
    "COLOR_MODES",
    "PHI_KEYWORDS",
    "ArraySource",
    "BusiReader",
    "CsvFolderReader",
    "DicomSource",
    "Frame",
    "FrameSource",
    "ImageSequenceSource",
    "IteratorSource",
    "Sample",
    "Skipped",
    "VideoSource",
    "convert_color",
    "open_source",
]
