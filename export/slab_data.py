"""Training data for slab models (3-D input + mask prompt: ``samask_cltr``).

A slab model reads ``D`` consecutive frames of a sweep and, for each, the lesion mask the frame
model produced for it (the *prompt*), and returns one class for the slab
(:mod:`export.models.samask_cltr`, "Frame streaming").

* :class:`CineSlabs`: ``n`` slabs of :func:`sdk.synthetic.cine` (a probe sweeping over one
  scanner-style breast, speckle decorrelating frame to frame), one seed per index, classes
  cycling through ``class_names``. A benign / malignant slab always shows its lesion in at least
  one frame (a sweep that misses it is redrawn with the next seed of its own stream), so the
  slab's label is its scene's.
* :class:`SlabDataset`: each frame through :func:`sdk.kernels.preprocess` (the code that serves)
  into ``volume (1, D, h, w)``; the masks area-resized into ``prompt (1, D, h, w)`` in [0, 1].
  Training perturbs the prompt the way a frame model's masks differ from the truth: the outline
  grown or shrunk by a few pixels, blurred into soft probabilities, lesion frames dropped (a
  missed detection) -- and the whole slab gets the same flip / gain / gamma (a sweep is one
  acquisition). Items ``((volume, prompt), prompt, label)``: the trainer's ``(x, mask, label)``
  with a two-input ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from export.data import Augment, frame_sizes, phantom_classes
from export.models._contract import CLASS_NAMES
from sdk import kernels, synthetic
from sdk.errors import InputError

__all__ = ["CineSlabs", "SlabDataset"]

Slab = tuple[np.ndarray, np.ndarray, int]

#: The frame augmentation's intensity settings (gain ±4 dB, gamma 0.7-1.4, p 0.8), applied to
#: the whole slab with one draw.
_FRAME_AUG = Augment()

#: Redraws allowed for a lesion sweep that never shows its lesion (rare: the default sweep
#: carries the lesion across the field of view).
_REDRAWS = 16


class CineSlabs:
    """``n`` synthetic cine slabs of ``depth`` frames (see the module docstring).

    ``get(i) -> (frames uint8 (D, H, W), masks uint8 (D, H, W) 0/1, label id)``; ``size`` a frame
    size or a mix (slab ``i`` drawn at one of them, chosen by its seed); slabs are cached after
    their first use.
    """

    def __init__(
        self,
        n: int,
        depth: int = 16,
        size: tuple[int, int] | Sequence[tuple[int, int]] = (256, 256),
        seed: int = 0,
        class_names: Sequence[str] = CLASS_NAMES,
        cache: bool = True,
    ) -> None:
        if int(n) < 1:
            raise InputError(f"a slab dataset needs n >= 1 slabs, got {n}")
        if int(depth) < 1:
            raise InputError(f"depth must be >= 1 frames, got {depth}")
        self.class_names = phantom_classes(class_names)
        self.n, self.depth, self.seed = int(n), int(depth), int(seed)
        self.sizes = frame_sizes(size)
        self._cache: dict[int, Slab] | None = {} if cache else None

    @property
    def labels(self) -> list[int]:
        return [i % len(self.class_names) for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def get(self, index: int) -> Slab:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        label = index % len(self.class_names)
        name = self.class_names[label]
        for attempt in range(_REDRAWS):
            s = int(np.random.SeedSequence([self.seed, index, attempt]).generate_state(1)[0])
            size = self.sizes[(s >> 1) % len(self.sizes)]
            frames = list(synthetic.cine(self.depth, name, size=size, seed=s, style="scanner"))
            masks = np.stack([(m > 0) for _, m, _ in frames]).astype(np.uint8)
            if name == "normal" or masks.any():
                break
        else:  # pragma: no cover - the sweep crosses the lesion by construction
            raise InputError(f"slab {index}: no sweep of {_REDRAWS} showed its {name} lesion")
        slab = (np.stack([f for f, _, _ in frames]), masks, label)
        if self._cache is not None:
            self._cache[index] = slab
        return slab


class SlabDataset(Dataset):
    """Model-ready slab samples from a :class:`CineSlabs` (see the module docstring).

    Args:
        slabs: the provider.
        input_size: model input ``(h, w)``.
        mean, std: the ``image`` channel's normalization (the model's ``input_mean`` /
            ``input_std``).
        augment: perturb prompts and intensities (training); False for validation.
        seed: augmentation seed; :meth:`set_epoch` selects the epoch's draw.
    """

    def __init__(
        self,
        slabs: CineSlabs,
        input_size: tuple[int, int],
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.slabs = slabs
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.slabs)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Any]:
        frames, masks, label = self.slabs.get(int(index))
        rng = np.random.default_rng([self.seed, self.epoch, int(index)]) if self.augment else None
        if rng is not None and rng.random() < 0.5:
            frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
        if rng is not None and rng.random() < _FRAME_AUG.p_intensity:  # one draw, whole sweep
            frames = _FRAME_AUG.gain_gamma(frames, rng)
        h, w = self.input_size
        vol = np.stack(
            [
                kernels.preprocess(
                    np.ascontiguousarray(f), (h, w), ("image",), mean=self.mean, std=self.std
                )[0]
                for f in frames
            ]
        )
        area = cv2.INTER_AREA
        truth = np.stack(
            [cv2.resize(m.astype(np.float32), (w, h), interpolation=area) for m in masks]
        )
        prompt = truth if rng is None else _perturb(truth, rng)
        return (
            (torch.from_numpy(vol[None]), torch.from_numpy(prompt[None])),
            torch.from_numpy(truth[None]),
            torch.tensor(label, dtype=torch.int64),
        )


def _perturb(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame model's masks from the true ones: grown or shrunk by up to 3 px, blurred into
    soft probabilities (σ up to 2 px), 15 % of lesion frames dropped, peak probability 0.6-1."""
    r = int(rng.integers(-3, 4))
    sigma = float(rng.uniform(0.0, 2.0))
    peak = float(rng.uniform(0.6, 1.0))
    out = np.empty_like(truth)
    for i, m in enumerate(truth):
        b = (m > 0.5).astype(np.uint8)
        if r:
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
            b = cv2.dilate(b, k) if r > 0 else cv2.erode(b, k)
        p = b.astype(np.float32)
        if sigma > 0.3:
            p = cv2.GaussianBlur(p, (0, 0), sigma)
        if b.any() and rng.random() < 0.15:
            p[:] = 0.0
        out[i] = np.clip(p * peak, 0.0, 1.0)
    return out
