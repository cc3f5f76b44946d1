"""Training data: frame providers (synthetic phantoms, BUSI folder, CSV folder), augmentation,
and the torch ``Dataset`` that feeds a model through the SDK's own preprocessing.

* A *provider* holds annotated frames: ``len(p)``, ``p.labels`` (class ids, for class weights and
  stratified splits) and ``p.get(i) -> (image uint8 (H, W), mask uint8 (H, W) 0/1, label id)``.
  :class:`SyntheticFrames` draws :func:`sdk.synthetic.phantom` on the fly, one seed per index;
  :class:`ReaderFrames` holds the samples of a :class:`sdk.sources.BusiReader` or
  :class:`sdk.sources.CsvFolderReader`.
* :class:`Augment`: flips, rotation, crop, gain / contrast, speckle -- NumPy / OpenCV on the uint8
  frame *before* preprocessing, so the model sees what the serving path would produce from such a
  frame.
* :class:`MultiTaskDataset`: frame → :func:`sdk.kernels.preprocess` with the model's
  ``input_size``, ``input_channels``, ``input_mean`` / ``input_std`` (the code that serves) →
  ``x`` float32 ``(C, h, w)``; mask → area-resized to the model's mask grid → float32
  ``(1, hm, wm)`` lesion fraction per cell in [0, 1]; label → int64. Augmentation randomness is a
  function of ``(seed, epoch, index)`` only, so runs, resumes and DataLoader workers agree.

Ultrasound-specific augmentation (depth attenuation, shadows, haze, blur, correlated speckle,
annotation noise) is :class:`export.us_augment.UltrasoundAugment`, switched on by
``Augment(ultrasound=UltrasoundAugment())`` / ``Augment.from_option("ultrasound")`` (the ``demo``
preset). ``usaugment`` (PyPI) was measured and not taken: see :mod:`export.us_augment`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from export.models._contract import CLASS_NAMES
from export.us_augment import UltrasoundAugment
from sdk import kernels, synthetic
from sdk.errors import InputError
from sdk.sources import BusiReader, CsvFolderReader

__all__ = [
    "Augment",
    "ConcatFrames",
    "FrameProvider",
    "FrameSubset",
    "MultiTaskDataset",
    "ReaderFrames",
    "SyntheticFrames",
    "describe",
    "frame_sizes",
    "open_frames",
    "phantom_classes",
    "resolve_split",
    "stratified_split",
]

Frame = tuple[np.ndarray, np.ndarray, int]


class FrameProvider(Protocol):
    """Annotated frames: ``get(i)`` → ``(image uint8 (H, W), mask uint8 (H, W) 0/1, label id)``."""

    class_names: tuple[str, ...]

    @property
    def labels(self) -> list[int]: ...

    def __len__(self) -> int: ...

    def get(self, index: int) -> Frame: ...


def _label_ids(labels: Sequence[str], class_names: Sequence[str], where: str) -> list[int]:
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise InputError(
            f"{where}: labels {unknown} are not among the model's classes {list(class_names)}; "
            "rename the folders / CSV labels or pass matching class_names"
        )
    return [index[lab] for lab in labels]


def frame_sizes(size: Any) -> tuple[tuple[int, int], ...]:
    """``(H, W)`` or a sequence of ``(H, W)`` → a non-empty tuple of integer ``(H, W)`` pairs.

    Raises:
        InputError: anything else (the message shows what was given).
    """

    def pair(v: Any) -> tuple[int, int] | None:
        if isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2:
            if all(isinstance(e, int | np.integer) and not isinstance(e, bool) for e in v):
                return int(v[0]), int(v[1])
        return None

    one = pair(size)
    if one is not None:
        return (one,)
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) > 0:
        many = [pair(v) for v in size]
        if all(m is not None for m in many):
            return tuple(m for m in many if m is not None)
    raise InputError(f"frame size must be (H, W) or a list of (H, W), got {size!r}")


class SyntheticFrames:
    """``n`` synthetic B-mode phantoms, frame ``i`` drawn with its own seed (a function of
    ``seed`` and ``i``), classes cycling through ``class_names`` (balanced; through the split's
    labels when it names some), probe geometry linear or curvilinear at random (``style=
    "classic"``) or drawn with every other factor (``style="scanner"``, the default). Frames
    are cached after their first use (``cache``). Masks are exact (:meth:`get`); annotation
    noise belongs to the training augmentation (:class:`export.us_augment.UltrasoundAugment`).

    Args:
        n: number of frames (>= 1).
        size: frame ``(H, W)`` in pixels (32..4096), or a sequence of sizes: frame ``i`` is then
            drawn at one of them, chosen by its seed (an acquisition-size mix, so a model learns
            what the serving path's area-resampling makes of small and large scanner frames).
        seed: dataset seed; a validation set uses another seed.
        class_names: must be the phantom classes (any order, e.g. ``CLASS_NAMES``).
        style: ``"scanner"`` (randomized realistic B-mode) or ``"classic"`` (the stylized
            phantoms the first default model was trained on).
        split: a :class:`sdk.synthetic.Split` / its dict / the name of one of
            :data:`sdk.synthetic.OOD_SPLITS` (``"<factor>-train"`` / ``"<factor>-test"``) or
            ``"ood-train"``: frames are drawn inside it (``style="scanner"`` only).
    """

    def __init__(
        self,
        n: int,
        size: tuple[int, int] | Sequence[tuple[int, int]] = (256, 256),
        seed: int = 0,
        class_names: Sequence[str] = CLASS_NAMES,
        cache: bool = True,
        style: str = "scanner",
        split: Any = None,
    ) -> None:
        if int(n) < 1:
            raise InputError(f"a synthetic dataset needs n >= 1 frames, got {n}")
        self.class_names = phantom_classes(class_names, " (train on a folder for other classes)")
        self.sizes = frame_sizes(size)
        self.n, self.size, self.seed = int(n), self.sizes[0], int(seed)
        if style not in ("scanner", "classic"):
            raise InputError(f"style must be 'scanner' or 'classic', got {style!r}")
        self.style = style
        self.split = resolve_split(split)
        if self.split is not None and style != "scanner":
            raise InputError("a split selects drawn factors: use style='scanner' with it")
        labels = self.split.labels if self.split is not None else None
        self._cycle = [self.class_names.index(x) for x in labels] if labels else None
        self._cache: dict[int, Frame] | None = {} if cache else None

    @property
    def labels(self) -> list[int]:
        if self._cycle:
            return [self._cycle[i % len(self._cycle)] for i in range(self.n)]
        return [i % len(self.class_names) for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def get(self, index: int) -> Frame:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        label = self.labels[index] if self._cycle else index % len(self.class_names)
        ss = np.random.SeedSequence([self.seed, index])
        frame_seed = int(ss.generate_state(1)[0])
        size = self.sizes[(frame_seed >> 1) % len(self.sizes)]
        if self.style == "classic":
            image, ids, _ = synthetic.phantom(
                self.class_names[label],
                size=size,
                seed=frame_seed,
                geometry=("linear", "curvilinear")[frame_seed % 2],
            )
        else:
            image, ids, _ = synthetic.phantom(
                self.class_names[label],
                size=size,
                seed=frame_seed,
                style="scanner",
                split=self.split,
            )
        frame = (image, (ids > 0).astype(np.uint8), label)
        if self._cache is not None:
            self._cache[index] = frame
        return frame


def phantom_classes(class_names: Sequence[str], hint: str = "") -> tuple[str, ...]:
    """``class_names`` as a tuple when they are the phantom generator's classes (any order),
    else :class:`InputError` (``hint`` appended to its message)."""
    names = tuple(class_names)
    if sorted(names) != sorted(synthetic.LABELS):
        raise InputError(
            f"synthetic phantoms have classes {list(synthetic.LABELS)}; the model has "
            f"{list(names)}{hint}"
        )
    return names


def resolve_split(split: Any) -> synthetic.Split | None:
    """``None``, a :class:`sdk.synthetic.Split`, its dict form, or a name: ``"ood-train"`` or
    ``"<factor>-train"`` / ``"<factor>-test"`` of :data:`sdk.synthetic.OOD_SPLITS`."""
    if split is None or isinstance(split, synthetic.Split):
        return split
    if isinstance(split, str):
        if split == synthetic.OOD_TRAIN.name:
            return synthetic.OOD_TRAIN
        for tr, te in synthetic.OOD_SPLITS.values():
            if split in (tr.name, te.name):
                return tr if split == tr.name else te
        names = [synthetic.OOD_TRAIN.name] + [
            s.name for pair in synthetic.OOD_SPLITS.values() for s in pair
        ]
        raise InputError(f"unknown split {split!r}; choose from {names} or pass a Split")
    return synthetic.Split.from_dict(split)


class ReaderFrames:
    """All samples of a dataset reader, decoded once and held in memory (uint8 frames + masks:
    BUSI's 780 images take ~0.5 GB). Skipped files are in ``skipped``.

    Raises:
        InputError: no usable sample, or a label outside ``class_names``.
    """

    def __init__(self, reader: BusiReader | CsvFolderReader, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        samples = list(reader)
        self.skipped = list(reader.skipped)
        where = str(getattr(reader, "root", "dataset"))
        if not samples:
            raise InputError(
                f"{where}: no usable annotated image ({len(self.skipped)} skipped: "
                f"{[str(s.path) for s in self.skipped[:3]]}...); check the folder layout"
            )
        self._labels = _label_ids([s.label for s in samples], self.class_names, where)
        self._images = [s.image for s in samples]
        self._masks = [s.mask for s in samples]
        self.paths = [s.path for s in samples]

    @property
    def labels(self) -> list[int]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def get(self, index: int) -> Frame:
        return self._images[index], self._masks[index], self._labels[index]


class FrameSubset:
    """The frames ``indices`` of another provider."""

    def __init__(self, base: FrameProvider, indices: Sequence[int]) -> None:
        self.base, self.indices = base, [int(i) for i in indices]
        self.class_names = base.class_names

    @property
    def labels(self) -> list[int]:
        lab = self.base.labels
        return [lab[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, index: int) -> Frame:
        return self.base.get(self.indices[index])


class ConcatFrames:
    """The frames of several providers one after the other (``train(supplement=...)``: the
    training phantoms followed by the supplement's). Every part must have the same classes."""

    def __init__(self, parts: Sequence[FrameProvider]) -> None:
        self.parts = list(parts)
        if not self.parts:
            raise InputError("ConcatFrames needs at least one provider")
        self.class_names = tuple(self.parts[0].class_names)
        for p in self.parts[1:]:
            if tuple(p.class_names) != self.class_names:
                raise InputError(
                    f"frames to concatenate have classes {list(self.class_names)} and "
                    f"{list(p.class_names)}; give every part the same classes in one order"
                )
        self._starts = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    @property
    def labels(self) -> list[int]:
        return [lab for p in self.parts for lab in p.labels]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get(self, index: int) -> Frame:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} of {len(self)}")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.parts[k].get(index - int(self._starts[k]))


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: per class, ``round(val_fraction * n_k)`` frames (at least one
    when the class has two or more) go to validation, chosen by ``seed``."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    train: list[int] = []
    val: list[int] = []
    for k in np.unique(lab):
        idx = rng.permutation(np.flatnonzero(lab == k))
        n_val = max(1, round(val_fraction * idx.size)) if idx.size >= 2 else 0
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    if not train or not val:
        raise InputError(
            f"{len(labels)} frames are too few to hold out a validation split; add data"
        )
    return sorted(train), sorted(val)


def open_frames(
    data: str | Path,
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    n: int = 600,
    size: tuple[int, int] | Sequence[tuple[int, int]] = (256, 256),
    seed: int = 0,
    split: Any = None,
) -> FrameProvider:
    """A provider for ``data``: ``"synthetic"`` (``n`` phantoms of ``size``, one size or a mix:
    :class:`SyntheticFrames`), a CSV file, a
    folder holding ``labels.csv`` (:class:`sdk.sources.CsvFolderReader`), or a BUSI folder.

    Raises:
        sdk.errors.SourceError: missing folder / CSV, no image.
        InputError: no usable sample, labels outside ``class_names``.
    """
    if str(data) == "synthetic":
        return SyntheticFrames(n, size, seed, class_names, split=split)
    path = Path(data)
    if path.suffix.lower() == ".csv" or (path / "labels.csv").is_file():
        return ReaderFrames(CsvFolderReader(path, classes=class_names), class_names)
    return ReaderFrames(BusiReader(path, classes=class_names), class_names)


@dataclass(frozen=True)
class Augment:
    """Random frame + mask augmentation (uint8 ``(H, W)`` in, same out; masks stay 0/1).

    Each transform fires with its probability ``p_*``:
    horizontal flip; vertical flip (off by default: the skin line is always on top);
    rotation by U(-``rotate_deg``, ``rotate_deg``) about the centre (bilinear frame, nearest
    mask, black fill); crop of U(``crop_area``) of the area at aspect U(3/4, 4/3), retried until
    it keeps at least half of the lesion; gain U(±``gain_db``) dB and contrast as a gamma
    U(``gamma``) on [0, 1] (both keep black black, like the scanner's gain and
    dynamic-range knobs); multiplicative speckle noise, Gamma distributed with mean 1 and
    std ``speckle``.
    """

    p_hflip: float = 0.5
    p_vflip: float = 0.0
    p_rotate: float = 0.5
    rotate_deg: float = 45.0
    p_crop: float = 0.5
    crop_area: tuple[float, float] = (0.6, 1.0)
    p_intensity: float = 0.8
    gain_db: float = 4.0
    gamma: tuple[float, float] = (0.7, 1.4)
    p_speckle: float = 0.3
    speckle: float = 0.15
    ultrasound: UltrasoundAugment | None = None

    @classmethod
    def from_option(cls, option: bool | str | None) -> Augment | None:
        """``False`` / ``None`` → no augmentation; ``True`` / ``"standard"`` → the default
        transforms; ``"ultrasound"`` → those plus :class:`UltrasoundAugment`."""
        if option is None or option is False:
            return None
        if option is True or option == "standard":
            return cls()
        if option == "ultrasound":
            return cls(ultrasound=UltrasoundAugment())
        raise InputError(f"augment must be true/false, 'standard' or 'ultrasound', got {option!r}")

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.p_hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < self.p_vflip:
            image, mask = image[::-1], mask[::-1]
        if rng.random() < self.p_rotate:
            image, mask = self._rotate(image, mask, rng.uniform(-self.rotate_deg, self.rotate_deg))
        if rng.random() < self.p_crop:
            image, mask = self._crop(image, mask, rng)
        if rng.random() < self.p_intensity:
            image = self.gain_gamma(image, rng)
        if rng.random() < self.p_speckle and self.speckle > 0:
            k = 1.0 / self.speckle**2  # Gamma(k, 1/k): mean 1, std 1/sqrt(k)
            noise = rng.gamma(k, 1.0 / k, image.shape).astype(np.float32)
            image = np.clip(image.astype(np.float32) * noise + 0.5, 0, 255).astype(np.uint8)
        if self.ultrasound is not None:
            image, mask = self.ultrasound(
                np.ascontiguousarray(image), np.ascontiguousarray(mask), rng
            )
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def gain_gamma(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gain U(±``gain_db``) dB and a gamma U(``gamma``) on [0, 1]: uint8 of any shape in
        (one frame, or a whole slab that shares the draw), uint8 out."""
        gain = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)
        v = (image.astype(np.float32) / 255.0) ** rng.uniform(*self.gamma) * gain
        return np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)

    @staticmethod
    def _rotate(image: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        img = cv2.warpAffine(
            np.ascontiguousarray(image),
            m,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        msk = cv2.warpAffine(
            np.ascontiguousarray(mask),
            m,
            (w, h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return img, msk

    def _crop(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape
        lesion = int(mask.sum())
        for _ in range(10):
            area = rng.uniform(*self.crop_area) * h * w
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            ch = min(h, max(8, round(math.sqrt(area / aspect))))
            cw = min(w, max(8, round(math.sqrt(area * aspect))))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            sub = mask[y0 : y0 + ch, x0 : x0 + cw]
            # A crop that cuts the lesion away would contradict the image label.
            if lesion == 0 or 2 * int(sub.sum()) >= lesion:
                return image[y0 : y0 + ch, x0 : x0 + cw], sub
        return image, mask


class MultiTaskDataset(Dataset):
    """Model-ready samples ``(x, mask, label)`` from a provider (see the module docstring).

    Args:
        frames: a :class:`FrameProvider`.
        input_size: model input ``(h, w)``.
        input_channels: channel names for :func:`sdk.kernels.preprocess`.
        mean, std: per-channel normalization (the model's ``input_mean`` / ``input_std``).
        mask_size: ``(hm, wm)`` of the model's ``mask_logits``.
        augment: an :class:`Augment`, or None (validation).
        seed: augmentation seed; call :meth:`set_epoch` at each epoch.
        sigma: Gaussian scale of the ``gd*`` channels (pixels of the resized image).

    Items: ``x`` float32 ``(C, h, w)``, ``mask`` float32 ``(1, hm, wm)`` in [0, 1], ``label``
    int64 scalar.
    """

    def __init__(
        self,
        frames: FrameProvider,
        input_size: tuple[int, int],
        input_channels: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        mask_size: tuple[int, int],
        augment: Augment | None = None,
        seed: int = 0,
        sigma: float = 1.0,
    ) -> None:
        self.frames = frames
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.input_channels = tuple(input_channels)
        self.mean, self.std = tuple(mean), tuple(std)
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))
        self.augment, self.seed, self.sigma = augment, int(seed), float(sigma)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (each epoch sees new augmentations)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask, label = self.frames.get(int(index))
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, mask = self.augment(image, mask, rng)
        x = kernels.preprocess(
            image,
            self.input_size,
            self.input_channels,
            self.sigma,
            mean=self.mean,
            std=self.std,
        )
        hm, wm = self.mask_size
        mh, mw = mask.shape
        interp = cv2.INTER_AREA if (hm <= mh and wm <= mw) else cv2.INTER_LINEAR
        m = cv2.resize(np.ascontiguousarray(mask, dtype=np.float32), (wm, hm), interpolation=interp)
        return (
            torch.from_numpy(x),
            torch.from_numpy(np.clip(m, 0.0, 1.0)[None]),
            torch.tensor(label, dtype=torch.int64),
        )


def describe(frames: FrameProvider) -> dict[str, Any]:
    """Frame count per class, for logs and the metrics JSON."""
    k = len(frames.class_names)
    counts = np.bincount(np.asarray(frames.labels, dtype=np.int64), minlength=k).tolist()
    return {"n": len(frames), "per_class": dict(zip(frames.class_names, counts, strict=True))}
