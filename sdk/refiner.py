"""``sdk.refiner.LesionRefiner``: the second stage -- each lesion the frame model found, looked at
again at frame resolution.

The frame model (stage 1) sees the whole frame at its input size (128×128 for the default: a
600×800 frame shrunk 4.7×, so margins, spiculations and small masses are a few pixels), and its
mask grid is 64×64 (one cell ~10×12 frame pixels). The refiner takes a square crop around each
lesion box from the *frame* (1.6× the box's longer side + 24 px, shifted down by 0.12 of the crop
so the posterior shadow / enhancement is in view; zero outside the frame), area-resized to its
input (96×96: a 5 mm lesion at 0.07 mm/px is seen at full resolution) and answers three things:

* is it a lesion at all (``normal`` probability ≥ :attr:`LesionRefiner.reject_above`: dropped,
  as a false blob on a fat lobule or a rib shadow);
* its class (``benign`` / ``malignant``), which replaces the frame model's pooled one;
* its mask at half the crop's input (48×48 over the crop), up-sampled to the crop's frame box:
  the lesion's region of ``Result.mask`` and its outline.

With ``flip`` in its metadata (the shipped one) each crop goes in with its left-right mirror, in
the same call: the class logits and the mirror's flipped-back mask logits are averaged.

Measured on 300 fresh 600×800 scanner-style phantoms (``benchmarks/refiner_eval.py``; the
README's models section has the table): the default model alone Dice 0.763 / accuracy 0.663 /
HD95 median 17.0 px; with the shipped refiner (test-time flip on) 0.841 / 0.740 / 8.5 px
(0.846 / 0.747 / 9.2 px with flip off; on the 1200 tuning phantoms flip gained 1.5 points of
accuracy -- ``benchmarks/results/refiner-tuning-avx512-vnni.md``). On the independent pymust
check (never trained or tuned on) Dice 0.743 → 0.736, accuracy 0.783 → 0.800 (flip off: 0.767 /
0.850; 60 frames, one frame = 1.7 points).

The refiner is its own ONNX file (``default-refiner.onnx`` beside the default model), run
through ONNX Runtime on the CPU with every lesion of a frame in one call. Its metadata lives in
``metadata_props["sonoedge.refiner"]`` (JSON: role, input size, normalization, class names, crop
geometry, thresholds, provenance) and the file carries the artifact digest
(:func:`sdk.artifact.verify_onnx_digest`). It is never found through another artifact's
metadata (no path in metadata is opened): pass it, ``sdk.Analyzer(path, refiner=...)``;
``sdk.Analyzer()`` takes the embedded pair. Made by ``export.refiner``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import InputError, ModelError

__all__ = [
    "METADATA_KEY",
    "CropGeometry",
    "LesionRefiner",
    "RefinedLesion",
    "crop",
    "crop_box",
    "merge_overlapping",
    "square",
]

#: ``metadata_props`` key of the refiner's JSON metadata.
METADATA_KEY = "sonoedge.refiner"
ROLE = "lesion_refiner"


@dataclass(frozen=True)
class CropGeometry:
    """How a lesion box becomes a square crop: side ``scale × max(w, h) + pad_px``, centred on the
    box shifted down by ``shift × side`` (the posterior acoustic features are below a mass)."""

    scale: float = 1.6
    pad_px: float = 24.0
    shift: float = 0.12


def square(
    box: tuple[int, int, int, int], geom: CropGeometry = CropGeometry()
) -> tuple[float, float, float]:
    """``(cx, cy, side)`` of the square crop around the lesion box ``(x, y, w, h)``, unrounded
    (training jitters it: ``export.refiner``)."""
    x, y, w, h = box
    s = max(w, h) * geom.scale + geom.pad_px
    return x + w / 2, y + h / 2 + geom.shift * s, s


def crop_box(
    box: tuple[int, int, int, int], geom: CropGeometry = CropGeometry()
) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the square crop around the lesion box ``(x, y, w, h)`` (frame pixels;
    the crop may reach past the frame's edges: :func:`crop` pads with zeros)."""
    cx, cy, s = square(box, geom)
    return round(cx - s / 2), round(cy - s / 2), round(s)


def _source(gray: np.ndarray, x0: int, y0: int, side: int):
    """``(image, roi)`` to resize for the crop: the frame itself with the crop as ROI when the
    crop is inside it, else a zero canvas holding the part of the frame the crop covers."""
    H, W = gray.shape
    if x0 >= 0 and y0 >= 0 and x0 + side <= W and y0 + side <= H:
        return gray, (x0, y0, side, side)
    canvas = np.zeros((side, side), np.uint8)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
    if xb > xa and yb > ya:
        canvas[ya - y0 : yb - y0, xa - x0 : xb - x0] = gray[ya:yb, xa:xb]
    return canvas, (0, 0, side, side)


def crop(
    gray: np.ndarray,
    x0: int,
    y0: int,
    side: int,
    size: int,
    mean: float = 0.0,
    std: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The ``side``² crop of the 2-D uint8 frame at ``(x0, y0)`` (zero outside the frame),
    resized to ``size``² by the preprocess kernel (area when shrinking, bilinear when growing)
    as float32 ``(v / 255 - mean) / std``: what the refiner sees, at training and at run time.
    ``out``: a ``(1, size, size)`` float32 array written in place."""
    from sdk import kernels as K

    src, roi = _source(gray, x0, y0, side)
    return K.preprocess(src, (size, size), ("image",), roi=roi, mean=mean, std=std, out=out)[0]


@dataclass
class RefinedLesion:
    """The refiner's answer for one lesion box: ``probs`` (its classes, softmax), ``keep``
    (``probs["normal"]`` below the reject threshold), and the lesion's mask at frame resolution
    as ``mask`` (uint8 0/1) over the frame box ``(x, y, w, h)`` = ``box`` (the crop clipped to the
    frame; ``mask`` may be empty)."""

    probs: dict[str, float]
    keep: bool
    box: tuple[int, int, int, int]
    mask: np.ndarray


def merge_overlapping(lesions: list[RefinedLesion]) -> list[RefinedLesion]:
    """Lesions whose masks share a pixel as one (two grid components of one mass come back from
    the refiner as the same mass): the union of their masks over the union of their boxes, the
    probabilities of the one with the most pixels. Order: by first member."""
    parent = list(range(len(lesions)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(lesions):
        ax, ay, aw, ah = a.box
        for j in range(i):
            bx, by, bw, bh = lesions[j].box
            x0, y0 = max(ax, bx), max(ay, by)
            x1, y1 = min(ax + aw, bx + bw), min(ay + ah, by + bh)
            if (
                x1 > x0
                and y1 > y0
                and (
                    a.mask[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
                    & lesions[j].mask[y0 - by : y1 - by, x0 - bx : x1 - bx]
                ).any()
            ):
                parent[root(i)] = root(j)
    groups: dict[int, list[RefinedLesion]] = {}
    for i, le in enumerate(lesions):
        groups.setdefault(root(i), []).append(le)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        gx0 = min(le.box[0] for le in members)
        gy0 = min(le.box[1] for le in members)
        gx1 = max(le.box[0] + le.box[2] for le in members)
        gy1 = max(le.box[1] + le.box[3] for le in members)
        m = np.zeros((gy1 - gy0, gx1 - gx0), np.uint8)
        for le in members:
            x, y, w, h = le.box
            sub = m[y - gy0 : y - gy0 + h, x - gx0 : x - gx0 + w]
            np.maximum(sub, le.mask, out=sub)
        top = max(members, key=lambda le: int(le.mask.sum()))
        out.append(RefinedLesion(top.probs, True, (gx0, gy0, gx1 - gx0, gy1 - gy0), m))
    return out


def _check(md: Any, source: str) -> dict[str, Any]:
    """The refiner metadata, checked (ModelError naming the field and the fix)."""

    def fail(msg: str) -> ModelError:
        return ModelError(
            f"{source}: {msg}; re-export the refiner with export.refiner (or pass refiner=False)"
        )

    if not isinstance(md, dict) or md.get("role") != ROLE:
        raise fail(f"metadata role is not {ROLE!r}")
    out: dict[str, Any] = {}
    size = md.get("input_size")
    if not (isinstance(size, int) and 16 <= size <= 512 and size % 16 == 0):
        raise fail(f"input_size must be an int in [16, 512], a multiple of 16; got {size!r}")
    out["input_size"] = size
    names = md.get("class_names")
    if not (isinstance(names, list) and names[:1] == ["normal"] and len(set(names)) == len(names)):
        raise fail(
            f"class_names must be a list of distinct names starting with 'normal'; got {names!r}"
        )
    out["class_names"] = tuple(str(n) for n in names)
    for key, lo, hi in (
        ("mean", -10.0, 10.0),
        ("std", 1e-6, 10.0),
        ("mask_threshold", 0.0, 1.0),
        ("reject_above", 0.0, 1.0),
        ("temperature", 1e-3, 100.0),
    ):
        v = md.get(key)
        if not (isinstance(v, int | float) and math.isfinite(v) and lo <= v <= hi):
            raise fail(f"{key} must be a number in [{lo:g}, {hi:g}]; got {v!r}")
        out[key] = float(v)
    g = md.get("crop")
    try:
        out["crop"] = CropGeometry(**{k: float(v) for k, v in g.items()})
    except (AttributeError, TypeError, ValueError) as e:
        raise fail(f"crop must be {{scale, pad_px, shift}}; got {g!r} ({e})") from e
    flip = md.get("flip", False)
    if not isinstance(flip, bool):
        raise fail(f"flip must be true or false; got {flip!r}")
    out["flip"] = flip
    bias = md.get("class_bias", [0.0] * len(names))
    if not (
        isinstance(bias, list)
        and len(bias) == len(names)
        and all(
            isinstance(b, int | float)
            and not isinstance(b, bool)
            and math.isfinite(b)
            and abs(b) <= 10.0
            for b in bias
        )
    ):
        raise fail(
            f"class_bias must be a list of {len(names)} finite numbers in [-10, 10] (one per "
            f"class, added to the class logits); got {bias!r}"
        )
    out["class_bias"] = [float(b) for b in bias]
    out["provenance"] = md.get("provenance", {})
    return out


class LesionRefiner:
    """A loaded refiner (module docstring). ``path``: the refiner's ``.onnx``; ``threads``:
    ONNX Runtime's intra-op threads (None: its default); ``spin`` as :class:`sdk.Analyzer`'s.

    Raises :class:`~sdk.errors.ModelError` for a missing file, a file that is not a refiner
    (e.g. a frame model passed by mistake) or a changed byte (the digest)."""

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        from sdk.artifact import verify_onnx_digest
        from sdk.backends.onnxruntime import session_options

        if not isinstance(path, str | Path):
            raise InputError(
                f"refiner must be the path of a refiner .onnx, True / None (the embedded one "
                f"with the default model) or False (none); got {type(path).__name__}"
            )
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(
                f"refiner {self.path}: no such file; pass the path of a refiner .onnx made by "
                "export.refiner, or run the frame model alone (refiner=False; no --refiner)"
            )
        #: The artifact digest, verified (None: the file carries none, a warning was logged).
        self.digest: str | None = verify_onnx_digest(self.path)
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                session_options(ort, threads, spin),
                providers=["CPUExecutionProvider"],
            )
        except Exception as e:  # ORT raises its own classes for unreadable graphs
            raise ModelError(f"refiner {self.path}: ONNX Runtime cannot load it ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelError(
                f"refiner {self.path}: no {METADATA_KEY!r} metadata -- this is not a lesion "
                "refiner (a frame model goes in Analyzer's first argument); pass a refiner "
                "made by export.refiner, or refiner=False"
            )
        try:
            raw = json.loads(meta[METADATA_KEY])
        except ValueError as e:
            raise ModelError(f"refiner {self.path}: its metadata is not JSON ({e})") from e
        md = _check(raw, f"refiner {self.path.name}")
        self.metadata = md
        self.class_names: tuple[str, ...] = md["class_names"]
        self.size: int = md["input_size"]
        self.geometry: CropGeometry = md["crop"]
        self.reject_above: float = md["reject_above"]
        self.mask_threshold: float = md["mask_threshold"]
        self._mean, self._std = md["mean"], md["std"]
        self._temperature = md["temperature"]
        #: Metadata ``class_bias`` (optional, default zeros): added to the class logits before
        #: the temperature -- a decision prior fitted on tuning frames after training (a run
        #: whose benign / malignant split came out shifted; ``benchmarks/refiner_bias.py``).
        self.class_bias: tuple[float, ...] = tuple(md["class_bias"])
        self._bias = self.class_bias if any(self.class_bias) else None
        #: Test-time flip (metadata ``flip``): each crop and its left-right mirror in the same
        #: call, the class logits averaged and the mirror's mask logits flipped back and
        #: averaged -- one model call of twice the batch.
        self.flip: bool = md["flip"]
        names = {o.name for o in self.session.get_outputs()}
        if not {"mask_logits", "class_logits"} <= names:
            raise ModelError(
                f"refiner {self.path}: outputs {sorted(names)} lack mask_logits / class_logits"
            )

    def refine(
        self, gray: np.ndarray, boxes: list[tuple[int, int, int, int]]
    ) -> list[RefinedLesion]:
        """One model call for every lesion box ``(x, y, w, h)`` of the 2-D uint8 frame ``gray``."""
        if not boxes:
            return []
        import cv2

        from sdk.pipeline import _softmax

        H, W = gray.shape
        geoms = [crop_box(b, self.geometry) for b in boxes]
        x = np.empty((len(boxes), 1, self.size, self.size), np.float32)
        for i, (x0, y0, s) in enumerate(geoms):
            crop(gray, x0, y0, s, self.size, self._mean, self._std, out=x[i])
        if self.flip:
            n = len(boxes)
            x2 = np.concatenate([x, x[..., ::-1]])
            lg2, cl2 = self.session.run(["mask_logits", "class_logits"], {"input": x2})
            lg = (lg2[:n] + lg2[n:, ..., ::-1]) * np.float32(0.5)
            cl = (cl2[:n] + cl2[n:]) * np.float32(0.5)
        else:
            lg, cl = self.session.run(["mask_logits", "class_logits"], {"input": x})
        if not (np.isfinite(lg).all() and np.isfinite(cl).all()):
            raise ModelError(f"refiner {self.path}: it produced NaN / inf outputs")
        # The frame path's softmax (Python floats, math.exp): bit-identical wherever it runs
        # (NumPy's vectorized exp differs in the last bits between versions and CPUs --
        # `sonoedge serve`'s environment has NumPy 1.x).
        rows = cl.tolist()
        if self._bias is not None:
            rows = [[z + b for z, b in zip(row, self._bias, strict=True)] for row in rows]
        p = [_softmax(row, self._temperature) for row in rows]
        # probability > t  <=>  logit > log(t / (1 - t)): threshold the logits, no sigmoid.
        t = self.mask_threshold
        cut = math.log(t / (1 - t)) if 0 < t < 1 else (-math.inf if t <= 0 else math.inf)
        out = []
        for i, (x0, y0, s) in enumerate(geoms):
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
            # The crop's mask logits, bilinear over the crop, only where it covers the frame.
            big = cv2.resize(lg[i, 0], (s, s), interpolation=cv2.INTER_LINEAR)
            m = (big[ya - y0 : yb - y0, xa - x0 : xb - x0] > cut).astype(np.uint8)
            pr = dict(zip(self.class_names, p[i], strict=True))
            out.append(
                RefinedLesion(pr, pr["normal"] < self.reject_above, (xa, ya, xb - xa, yb - ya), m)
            )
        return out
