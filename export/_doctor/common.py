"""What every part of ``sonoedge doctor`` shares: the statuses, one report line (:class:`Check`),
the seeds and fixes, and the phantom frames the checks run on."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdk.errors import SDKError

OK, MISSING, FAIL = "OK", "MISSING", "FAIL"
PRECISIONS = ("fp32", "fp16", "int8")
CLASS_LABELS = ("normal", "benign", "malignant")
# Seed streams of the phantoms (none shared with training or the export pipeline's frames).
FRAME_SEED = 5_000_011
CALIB_SEED = 6_000_007
KERNEL_SEED = 7_000_003
SELFTEST_SEED = 11

TRT_FIX = (
    'pip install ".[trt]" (= tensorrt>=10.3,<12 and cuda-python), or pip install tensorrt-cu12 '
    "cuda-python; on Jetson, JetPack >= 6.1's python3-libnvinfer (TensorRT 10.3)"
)
CUDA_PYTHON_FIX = "pip install cuda-python (the TensorRT backend's CUDA runtime bindings)"
DRIVER_FIX = (
    "a machine with an NVIDIA GPU and its driver: `nvidia-smi` must list the GPU (in a "
    "container: docker run --gpus all); check CUDA_VISIBLE_DEVICES"
)
CUDA_BUILD_FIX = "reinstall with nvcc on PATH: SONOEDGE_CUDA=ON pip install ."
EXPORT_FIX = 'pip install ".[export]" (onnx, onnxconverter-common for the FP16 cast)'
DICOM_FIX = 'pip install "sonoedge[data]" (from a checkout: pip install ".[data]")'
# DICOM pixel decoders (pydicom plugins): import name -> distribution, and what each decodes.
DICOM_DECODERS = {
    "pylibjpeg": ("pylibjpeg", "plugin host"),
    "libjpeg": ("pylibjpeg-libjpeg", "JPEG, JPEG-LS"),
    "openjpeg": ("pylibjpeg-openjpeg", "JPEG 2000"),
    "rle": ("pylibjpeg-rle", "fast RLE"),
}


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    """One line of the report.

    ``status`` is OK, MISSING (not installed / not present: the fix installs it) or FAIL
    (present but broken, or a measured difference over its tolerance). ``required`` checks fail
    the run unless OK; the others fail it only with FAIL. ``values`` holds the numbers behind the
    line (written to doctor.json).
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
    section: str = "environment"
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True when this check makes the run fail."""
        return self.status == FAIL or (self.required and self.status != OK)

    def line(self, width: int = 26, prefix: str = "") -> str:
        """``prefix STATUS   name   detail`` plus an indented ``fix:`` line when not OK."""
        text = f"{prefix}{self.status:<8} {self.name:<{width}} {self.detail}"
        if self.fix and self.status != OK:
            text += f"\n{'':<{len(prefix) + 9}}fix: {self.fix}"
        return text


def _guard(name: str, fn: Callable[[], Check], required: bool = False) -> Check:
    """Run one check; any exception becomes a FAIL line (a doctor never shows a traceback)."""
    try:
        return fn()
    except Exception as exc:
        msg = str(exc).strip()
        fix = (
            "as the message says (sonoedge errors name their fix); full text in doctor.json"
            if isinstance(exc, SDKError)
            else "see doctor.json for the traceback; report it with `sonoedge info --json`"
        )
        return Check(
            name,
            FAIL,
            f"{type(exc).__name__}: {msg.splitlines()[0] if msg else ''}",
            fix,
            required,
            values={"error": msg, "traceback": traceback.format_exc()},
        )


def _version(dist: str) -> str | None:
    import importlib.metadata  # 30 ms: not when the parser is built

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _failed(name: str, exc: BaseException, section: str, fix: str = "") -> Check:
    """A required FAIL check for a step that raised (message and traceback in ``values``)."""
    msg = str(exc).strip()
    return Check(
        name,
        FAIL,
        f"{type(exc).__name__}: {msg.splitlines()[0] if msg else ''}",
        fix or "see doctor.json (traceback) and the TensorRT log above",
        True,
        section,
        {"error": msg, "traceback": traceback.format_exc()},
    )


# --------------------------------------------------------------------------- phantoms


def phantom_frames(
    n: int, size: tuple[int, int], seed: int, progress: bool = False, desc: str = "phantoms"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic B-mode frames ``(image uint8, lesion ids uint8)``, labels cycling
    normal / benign / malignant, one seed per frame."""
    from tqdm.auto import tqdm

    from sdk import synthetic

    out = []
    for i in tqdm(range(n), desc=desc, disable=not progress, leave=False, unit="frame"):
        image, mask, _ = synthetic.phantom(CLASS_LABELS[i % 3], size=size, seed=seed + i)
        out.append((image, mask))
    return out


def _kernel_inputs(mask: np.ndarray, seed: int) -> dict[str, Any]:
    """Pooling and mask post-process inputs derived from a phantom's lesion ids: soft weights
    (area-resized, blurred lesion mask), component labels, random features and head, and mask
    logits (+-4 at the lesions, noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    fg = (mask > 0).astype(np.float32)
    w = cv2.GaussianBlur(cv2.resize(fg, (128, 128), interpolation=cv2.INTER_AREA), (5, 5), 1.0)
    w = np.clip(w + 0.05 * rng.random(w.shape, dtype=np.float32), 0.0, 1.0).astype(np.float32)
    labels = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    k = int(labels.max())
    feats = rng.standard_normal((16, 32, 32)).astype(np.float32)
    head = tuple(
        rng.standard_normal(s).astype(np.float32) for s in ((24, 16), (24,), (3, 24), (3,))
    )
    small = cv2.resize(fg, (64, 64), interpolation=cv2.INTER_AREA)
    logits = (small * 8.0 - 4.0 + 0.5 * rng.standard_normal(small.shape)).astype(np.float32)
    return {
        "weights": w,
        "labels": labels,
        "k": k,
        "features": feats,
        "head": head,
        "logits": logits,
    }
