"""Synthetic B-mode breast-ultrasound phantoms with exact ground truth.

A convolution model on complex baseband data: circular complex Gaussian scatterers weighted by an
echogenicity map, attenuated along the beam, convolved with a separable complex PSF (axial
Gaussian-modulated carrier x lateral Gaussian), plus electronic noise; envelope detection
(``abs``), TGC, log compression, scan conversion for curvilinear probes. Anatomy: skin, fat
lobules, Cooper's ligaments, fibroglandular tissue, pectoral muscle, ribs with their shadows.
Lesions follow the BI-RADS descriptors of their class (see :mod:`sdk.synthetic._lesions`).

>>> from sdk import synthetic
>>> image, mask, info = synthetic.phantom("malignant", size=(256, 256), seed=3)
>>> image.dtype, mask.dtype, info["label"]
(dtype('uint8'), dtype('uint8'), 'malignant')
"""

from __future__ import annotations

from sdk.synthetic._api import (
    CONTRAST_RANGES_DB,
    LABELS,
    RAYLEIGH_MEAN_TO_STD,
    cine,
    dataset,
    lesion_contrast_db,
    phantom,
    simulate_iq,
)
from sdk.synthetic._scene import PhantomParams

__all__ = [
    "CONTRAST_RANGES_DB",
    "LABELS",
    "RAYLEIGH_MEAN_TO_STD",
    "PhantomParams",
    "cine",
    "dataset",
    "lesion_contrast_db",
    "phantom",
    "simulate_iq",
]
