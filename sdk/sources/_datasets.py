"""Annotated dataset readers: the BUSI folder layout and a generic image + mask + CSV folder.

Policy on bad files: problems that concern one file (a stray non-image, an undecodable image, a
mask of the wrong size, a lesion image without a mask, a row pointing at a missing file) are
*skipped*: recorded in ``reader.skipped`` as ``(path, reason)`` and logged as a warning; with
``strict=True`` they raise instead. Problems with the dataset itself (missing or empty root, an
unknown class folder, a CSV without the needed columns) always raise.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from sdk.errors import InputError, SourceError
from sdk.sources._base import IMAGE_SUFFIXES, Sample, Skipped, log, read_image

__all__ = ["BUSI_CLASSES", "BusiReader", "CsvFolderReader"]

BUSI_CLASSES = ("benign", "malignant", "normal")
_MASK_RE = re.compile(r"^(?P<stem>.+?)_mask(?:_?\d+)?$")
_NUM_RE = re.compile(r"(\d+)")


def _natural_key(path: Path) -> list[object]:
    """``benign (2)`` before ``benign (10)``."""
    return [int(t) if t.isdigit() else t.lower() for t in _NUM_RE.split(path.name)]


class _Reader:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.skipped: list[Skipped] = []

    def _problem(self, path: Path, reason: str, exc_type: type[Exception] = InputError) -> None:
        if self.strict:
            raise exc_type(f"{path}: {reason}")
        self.skipped.append(Skipped(path, reason))
        log.warning("skipped %s: %s", path, reason)

    @staticmethod
    def _gray(path: Path) -> np.ndarray:
        image = read_image(path)
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            image = cv2.cvtColor(image, code)
        return np.ascontiguousarray(image)

    def _union(self, image_path: Path, shape: tuple[int, ...], masks: Sequence[Path]):
        """Union of binary masks -> uint8 0/1, or None after a problem.

        Two encodings are read, decided per file by its largest value: 0/255 (BUSI, anti-aliased
        edges included: > 127 is lesion) and 0/1 (many exported label maps: > 0 is lesion). A
        file whose largest value lies in 2..127 fits neither -- under the 0/255 rule it would
        read as empty -- and is a problem, never a silent empty mask."""
        out = np.zeros(shape[:2], np.uint8)
        for mp in masks:
            try:
                m = self._gray(mp)
            except SourceError as exc:
                self._problem(image_path, f"mask {mp.name} unreadable: {exc}", SourceError)
                return None
            if m.shape != out.shape:
                self._problem(
                    image_path,
                    f"mask {mp.name} is {m.shape[1]}x{m.shape[0]} but the image is "
                    f"{out.shape[1]}x{out.shape[0]} (width x height); fix or remove the mask",
                )
                return None
            top = int(m.max()) if m.size else 0
            if 1 < top <= 127:
                self._problem(
                    image_path,
                    f"mask {mp.name} has values 0..{top}: expected 0/255 (lesion > 127) or 0/1 "
                    "(lesion = 1); rescale it",
                )
                return None
            out |= (m > (0 if top <= 1 else 127)).astype(np.uint8)
        return out


class BusiReader(_Reader):
    """Reader of the BUSI layout: ``root/{benign,malignant,normal}/name (n).png`` with one or more
    ``name (n)_mask*.png`` (``_mask.png``, ``_mask_1.png``, ...) merged by union.

    Iterate to get :class:`~sdk.sources.Sample` ``(image, mask, label, path)``: image uint8
    ``(H, W)`` grey (colour PNGs are converted by BT.601 luma), mask uint8 0/1. Only class folders
    are read; files at the root (e.g. a manifest) are ignored. Hidden entries (``.name``) are
    skipped silently. A normal image without a mask gets an empty mask; a benign / malignant one
    without a mask is skipped.

    Args:
        root: the dataset folder.
        classes: accepted class folder names (default ``benign``, ``malignant``, ``normal``).
        strict: raise on the first bad file instead of skipping it.

    Raises:
        SourceError: root missing / not a folder, no class folder, or no image at all.
        InputError: a folder that is not a known class (pass ``classes=`` to accept it).
    """

    def __init__(
        self, root: str | Path, classes: Sequence[str] = BUSI_CLASSES, strict: bool = False
    ) -> None:
        super().__init__(strict)
        self.root = Path(root)
        self.classes = tuple(classes)
        if not self.root.is_dir():
            raise SourceError(f"BUSI root {self.root} does not exist or is not a folder")
        folders = [
            p for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")
        ]
        unknown = [p.name for p in folders if p.name not in self.classes]
        if unknown:
            raise InputError(
                f"{self.root}: unknown class folder(s) {unknown}; expected {list(self.classes)} "
                "(pass classes=(...) to accept other names, or move the folders out)"
            )
        if not folders:
            raise SourceError(
                f"{self.root} holds no class folder; expected subfolders {list(self.classes)}"
            )
        self._items: list[tuple[Path, str, list[Path]]] = []
        for folder in folders:
            self._scan(folder)
        if not self._items:
            raise SourceError(
                f"{self.root}: no image found in {[p.name for p in folders]} "
                f"({len(self.skipped)} file(s) skipped)"
            )

    def _scan(self, folder: Path) -> None:
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = {}
        for path in sorted(folder.iterdir(), key=_natural_key):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                self._problem(path, "unexpected subfolder inside a class folder")
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                self._problem(path, f"not an image file (suffix {path.suffix or 'none'!r})")
                continue
            m = _MASK_RE.match(path.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(path)
            else:
                images[path.stem] = path
        for stem, mlist in masks.items():
            if stem not in images:
                for mp in mlist:
                    self._problem(mp, "mask without its image")
        for stem, path in sorted(images.items(), key=lambda kv: _natural_key(kv[1])):
            self._items.append((path, folder.name, sorted(masks.get(stem, []), key=_natural_key)))

    def __len__(self) -> int:
        """Number of images found (before decoding; a later decode failure is skipped)."""
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for path, label, masks in self._items:
            try:
                image = self._gray(path)
            except SourceError as exc:
                self._problem(path, str(exc), SourceError)
                continue
            if not masks and label != "normal":
                self._problem(path, f"{label} image without a mask file ({path.stem}_mask.png)")
                continue
            mask = self._union(path, image.shape, masks)
            if mask is None:
                continue
            yield Sample(image, mask, label, path)


class CsvFolderReader(_Reader):
    """Reader of a generic folder of images + masks described by a CSV file.

    CSV columns (header row required, extra columns ignored):

    * ``image`` — image path, relative to the CSV's folder (or absolute);
    * ``label`` — class name (any string, e.g. ``benign`` / ``malignant`` / ``normal``);
    * ``mask`` — optional column; mask path(s) relative to the CSV's folder, several separated
      by ``;`` and merged by union; empty means no lesion (all-zero mask).

    Iterating yields :class:`~sdk.sources.Sample` like :class:`BusiReader`.

    Args:
        csv_path: the CSV file (or a folder holding ``labels.csv``).
        strict: raise on the first bad row / file instead of skipping it.
        classes: if given, labels outside it are an error (row skipped, or raised when strict).
    """

    def __init__(
        self, csv_path: str | Path, strict: bool = False, classes: Sequence[str] | None = None
    ) -> None:
        super().__init__(strict)
        path = Path(csv_path)
        if path.is_dir():
            path = path / "labels.csv"
        if not path.is_file():
            raise SourceError(f"label CSV {path} does not exist")
        self.csv_path = path
        self.root = path.parent
        self.classes = tuple(classes) if classes is not None else None
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
                header = rows[0].keys() if rows else []
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{path} is not a readable UTF-8 CSV: {exc}") from exc
        if not rows:
            raise SourceError(f"{path} has no data row (expected columns image, label[, mask])")
        missing = [c for c in ("image", "label") if c not in header]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {missing}; found {list(header)} "
                "(expected image, label and optionally mask)"
            )
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Sample]:
        for n, row in enumerate(self._rows, start=2):  # line 1 is the header
            where = f"{self.csv_path.name} line {n}"
            name = (row.get("image") or "").strip()
            label = (row.get("label") or "").strip()
            if not name or not label:
                self._problem(self.csv_path, f"{where}: empty image or label")
                continue
            if self.classes is not None and label not in self.classes:
                self._problem(self.csv_path, f"{where}: label {label!r} not in {self.classes}")
                continue
            path = self.root / name
            if not path.is_file():
                self._problem(path, f"{where}: image file not found", SourceError)
                continue
            try:
                image = self._gray(path)
            except SourceError as exc:
                self._problem(path, str(exc), SourceError)
                continue
            mask_paths = [
                self.root / m.strip() for m in (row.get("mask") or "").split(";") if m.strip()
            ]
            absent = [m for m in mask_paths if not m.is_file()]
            if absent:
                self._problem(
                    path,
                    f"{where}: mask file(s) not found: {[str(a) for a in absent]}",
                    SourceError,
                )
                continue
            mask = self._union(path, image.shape, mask_paths)
            if mask is None:
                continue
            yield Sample(image, mask, label, path)
