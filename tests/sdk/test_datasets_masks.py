"""Mask encodings of the dataset readers: 0/255 and 0/1 both read, anything else is reported."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk.errors import InputError
from sdk.sources import BusiReader, CsvFolderReader


def _busi(tmp_path: Path, mask: np.ndarray) -> Path:
    d = tmp_path / "benign"
    d.mkdir(parents=True)
    image = np.full(mask.shape, 90, np.uint8)
    assert cv2.imwrite(str(d / "benign (1).png"), image)
    assert cv2.imwrite(str(d / "benign (1)_mask.png"), mask)
    return tmp_path


def _lesion(value: int) -> np.ndarray:
    m = np.zeros((40, 50), np.uint8)
    m[10:20, 15:30] = value
    return m


@pytest.mark.parametrize("value", [255, 200, 1])
def test_zero_one_and_zero_255_masks_read_the_same_lesion(tmp_path: Path, value: int) -> None:
    reader = BusiReader(_busi(tmp_path, _lesion(value)))
    (s,) = list(reader)
    assert reader.skipped == []
    assert np.array_equal(s.mask, (_lesion(value) > 0).astype(np.uint8))
    assert int(s.mask.sum()) == 150


def test_csv_folder_reads_a_zero_one_mask(tmp_path: Path) -> None:
    image = np.full((40, 50), 90, np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), image)
    assert cv2.imwrite(str(tmp_path / "a_mask.png"), _lesion(1))
    (tmp_path / "labels.csv").write_text("image,label,mask\na.png,benign,a_mask.png\n")
    (s,) = list(CsvFolderReader(tmp_path / "labels.csv"))
    assert int(s.mask.sum()) == 150


def test_a_mask_of_neither_encoding_is_reported_not_read_as_empty(tmp_path: Path, caplog) -> None:
    root = _busi(tmp_path, _lesion(100))
    reader = BusiReader(root)
    assert list(reader) == []
    assert len(reader.skipped) == 1
    assert "values 0..100" in reader.skipped[0].reason
    with pytest.raises(InputError, match=r"values 0\.\.100"):
        list(BusiReader(root, strict=True))


def test_an_all_zero_mask_stays_empty(tmp_path: Path) -> None:
    (s,) = list(BusiReader(_busi(tmp_path, np.zeros((40, 50), np.uint8))))
    assert int(s.mask.sum()) == 0
