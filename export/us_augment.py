"""Ultrasound-specific training augmentation on uint8 B-mode frames (training-only code).

What a scanner or a sonographer changes between two looks at the same breast, applied to the
*log-compressed* frame (so a dB change is an additive grey-level change):

* depth attenuation: a grey-level ramp with depth (under-compensated TGC / higher attenuation);
* acoustic shadow: a dark column below a random point with soft lateral edges (an unseen
  calcification, rib edge or refraction), optionally steered;
* haze: smooth additive clutter near the face (reverberation);
* blur: an anisotropic Gaussian, wider laterally (a wider beam / lower frequency);
* speckle noise: multiplicative, spatially correlated (a blurred Rayleigh field), not per-pixel;
* annotation noise: the mask outlined as a reader would (:func:`sdk.synthetic.perturb_mask`).

Gain and gamma (the dynamic-range knob) are in :class:`export.data.Augment` already.

Why not ``usaugment`` (PyPI 1.0.1, MIT; DepthAttenuation, GaussianShadow, HazeArtifact,
SpeckleReduction): measured on this machine with one thread, 3.6 / 3.7 / 4.5 / 17.5 ms per
256 x 256 frame (17.9 ms for the four at p = 0.5; 2.6 ms at 128 x 128), it draws from the
global ``random`` / ``np.random`` state (no per-sample seed, so runs, resumes and DataLoader
workers would not agree), works on float images in [0, 1] treating them as linear (a depth
"attenuation" multiplies log-compressed grey levels), needs a scan mask, and pulls
albumentations, albucore, scikit-image, scipy, pydantic and a second OpenCV wheel
(opencv-python-headless) into the export extra. These six transforms, all forced on, cost
3.5 ms at 128 x 128 and 10 ms at 256 x 256 on the same (shared, loaded) machine, about a third
of that at their default probabilities (``python -m export.us_augment`` prints the figures);
they draw only from the generator they are given and need NumPy and OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sdk.synthetic import perturb_mask

__all__ = ["UltrasoundAugment"]


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class UltrasoundAugment:
    """Random ultrasound-specific changes (each with its probability ``p_*``), uint8 frame and
    0/1 mask in, the same out. Levels are in grey levels of the 0..255 display."""

    p_depth: float = 0.4
    depth_levels: tuple[float, float] = (-30.0, 40.0)  # loss (+) or gain (-) at the bottom
    p_shadow: float = 0.25
    shadow_levels: tuple[float, float] = (30.0, 110.0)
    p_haze: float = 0.25
    haze_levels: tuple[float, float] = (10.0, 50.0)
    p_blur: float = 0.3
    blur_px: tuple[float, float] = (0.5, 2.0)  # lateral sigma at 256 px width
    p_speckle: float = 0.3
    speckle: tuple[float, float] = (0.1, 0.35)  # std of the multiplicative field
    p_annotation: float = 0.5
    annotation_px: tuple[float, float] = (0.5, 2.5)  # at 256 px, scaled with the frame

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape
        scale = min(h, w) / 256.0
        img = image.astype(np.float32)
        inside = image > 0  # black outside a curvilinear fan stays black
        if rng.random() < self.p_depth:
            ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] ** rng.uniform(0.7, 1.5)
            img -= ramp * np.float32(rng.uniform(*self.depth_levels))
        if rng.random() < self.p_shadow:
            x0, y0 = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.7) * h
            half = rng.uniform(0.02, 0.12) * w
            steer = math.tan(math.radians(rng.uniform(-12.0, 12.0)))
            ys = np.arange(h, dtype=np.float32)[:, None]
            xs = np.arange(w, dtype=np.float32)[None, :]
            lateral = np.exp(-0.5 * ((xs - x0 - (ys - y0) * steer) / half) ** 2)
            onset = np.clip((ys - y0) / (0.05 * h), 0.0, 1.0)
            img -= lateral * onset * np.float32(rng.uniform(*self.shadow_levels))
        if rng.random() < self.p_haze:
            depth = rng.uniform(0.1, 0.4) * h
            tex = 0.6 + 0.4 * np.abs(_smooth_field(rng, h, w, max(int(12 * scale), 3)))
            prof = np.exp(-np.arange(h, dtype=np.float32) / np.float32(depth))[:, None]
            img += prof * tex * np.float32(rng.uniform(*self.haze_levels))
        if rng.random() < self.p_blur:
            sx = rng.uniform(*self.blur_px) * scale
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=sx, sigmaY=sx * rng.uniform(0.3, 0.8))
        if rng.random() < self.p_speckle:
            k = max(0.7 * scale, 0.5)
            # Exponential intensity (fully developed speckle) from one uniform draw, blurred to
            # a speckle grain of about a pixel.
            field = cv2.log(rng.random((h, w), dtype=np.float32) + np.float32(1e-6))
            field = cv2.GaussianBlur(-field, (0, 0), sigmaX=k * 1.5, sigmaY=k)
            field /= np.float32(field.mean())
            std = float(field.std())
            if std > 0:
                field = 1.0 + (field - 1.0) * np.float32(rng.uniform(*self.speckle) / std)
            img *= field
        out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        out[~inside] = 0
        if rng.random() < self.p_annotation and mask.any():
            mask = (perturb_mask(mask, rng, rng.uniform(*self.annotation_px) * scale) > 0).astype(
                mask.dtype
            )
        return out, mask


def _measure() -> None:  # pragma: no cover - a figure for the module docstring
    import time

    from sdk import synthetic

    cv2.setNumThreads(1)
    always = UltrasoundAugment(1.0, p_shadow=1.0, p_haze=1.0, p_blur=1.0, p_speckle=1.0)
    for n in (128, 256):
        img, m, _ = synthetic.phantom("malignant", (n, n), seed=1, style="scanner")
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for _ in range(50):
            always(img, (m > 0).astype(np.uint8), rng)
        print(f"{n}x{n}: all transforms {(time.perf_counter() - t) / 50 * 1e3:.2f} ms")


if __name__ == "__main__":  # pragma: no cover
    _measure()
