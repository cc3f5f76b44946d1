"""Synthetic B-mode breast-ultrasound phantoms with exact ground truth.

A convolution model on complex baseband data: circular complex Gaussian scatterers weighted by an
echogenicity map, attenuated along the beam, convolved with a separable complex PSF (axial
Gaussian-modulated carrier x lateral Gaussian), plus electronic noise; envelope detection
(``abs``), TGC, log compression, scan conversion for curvilinear probes. Anatomy: skin, fat
lobules, Cooper's ligaments, fibroglandular tissue, pectoral muscle, ribs with their shadows.
Lesions follow the BI-RADS descriptors of their class (see :mod:`sdk.synthetic._lesions`).

``style="scanner"`` widens all of it (:mod:`sdk.synthetic._scanner`): probe frequency and
bandwidth, a depth-dependent beam around the focus, sparse (K-like) to fully developed speckle,
specular echoes, TGC / gain / dynamic range / grey map, spatial compounding, speckle reduction,
harmonic imaging, haze, random-field anatomy from fatty to dense breasts, and BI-RADS descriptors
drawn independently per class -- every factor drawn per frame and recorded in
``info["factors"]`` so a :class:`Split` can hold it out (:data:`OOD_SPLITS`).

>>> from sdk import synthetic
>>> image, mask, info = synthetic.phantom("malignant", size=(256, 256), seed=3)
>>> image.dtype, mask.dtype, info["label"]
(dtype('uint8'), dtype('uint8'), 'malignant')
"""

from __future__ import annotations

from sdk.synthetic._annotation import perturb_mask
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
from sdk.synthetic._factors import DESCRIPTOR_PROBS, FRAME_FACTORS, LESION_FACTORS
from sdk.synthetic._scene import PhantomParams
from sdk.synthetic._splits import OOD_SPLITS, OOD_TRAIN, Split

__all__ = [
    "CONTRAST_RANGES_DB",
    "DESCRIPTOR_PROBS",
    "FRAME_FACTORS",
    "LABELS",
    "LESION_FACTORS",
    "OOD_SPLITS",
    "OOD_TRAIN",
    "RAYLEIGH_MEAN_TO_STD",
    "PhantomParams",
    "Split",
    "cine",
    "dataset",
    "lesion_contrast_db",
    "perturb_mask",
    "phantom",
    "simulate_iq",
]
