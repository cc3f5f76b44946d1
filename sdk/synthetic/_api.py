"""Public entry points: :func:`phantom`, :func:`cine`, :func:`dataset` and measurement helpers."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk.errors import InputError
from sdk.synthetic._acoustics import convolve_psf, make_psf
from sdk.synthetic._annotation import perturb_mask
from sdk.synthetic._geometry import Pose
from sdk.synthetic._io import write_bytes_atomic, write_image_atomic
from sdk.synthetic._scanner import build_scanner_scene
from sdk.synthetic._scene import (
    LABELS,
    PhantomParams,
    build_scene,
    draw_clutter,
    frame_info,
    render,
)
from sdk.synthetic._splits import Split

__all__ = [
    "CONTRAST_RANGES_DB",
    "LABELS",
    "RAYLEIGH_MEAN_TO_STD",
    "cine",
    "dataset",
    "lesion_contrast_db",
    "phantom",
    "simulate_iq",
]

RAYLEIGH_MEAN_TO_STD = math.sqrt(math.pi / (4.0 - math.pi))  # 1.913: fully developed speckle

#: Lesion-to-tissue contrast measured on the displayed image by :func:`lesion_contrast_db`
#: (dB, default knobs, 60 dB dynamic range), per lesion kind: the full range seen over 150
#: seeds x both probes x 192 px frames, rounded outwards. Means: benign solid -7.6 dB (2nd-98th
#: percentile -12.5..-2.3), cyst -31.8 dB (-35..-28), malignant (irregular) -15.5 dB
#: (-20..-11). The drawn echogenicity contrast is benign solid -14..-8 dB, cyst -40 dB
#: (anechoic), malignant -20..-12 dB, relative to the mean power of the tissue beside the
#: lesion; the displayed value differs by the local heterogeneity (a solid lesion next to a fat
#: island can look as dark as its neighbour), the malignant internal texture, electronic noise
#: filling the cyst and clipping at black.
CONTRAST_RANGES_DB: dict[str, tuple[float, float]] = {
    "solid": (-16.0, 1.0),
    "cyst": (-38.0, -20.0),
    "irregular": (-25.0, -7.0),
}

Frame = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width) in pixels, got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise InputError(f"size must be within 32..4096 pixels per side, got {(h, w)}")
    return h, w


def _check_label(label: str) -> str:
    if label not in LABELS:
        raise InputError(f"label must be one of {LABELS}, got {label!r}")
    return label


def _split_of(split: Split | dict[str, Any] | None, style: str) -> Split | None:
    if split is None:
        return None
    if style != "scanner":
        raise InputError("a split selects drawn factors: pass style='scanner' with it")
    return Split.from_dict(split)


def _scene(
    rng: np.random.Generator,
    label: str,
    hw: tuple[int, int],
    p: PhantomParams,
    split: Split | None,
    **kw: Any,
) -> Any:
    if p.style == "scanner":
        return build_scanner_scene(rng, label, hw, p, split, **kw)
    return build_scene(rng, label, hw, p, **kw)


def _annotate(mask: np.ndarray, info: dict[str, Any], p: PhantomParams, seed: Any) -> np.ndarray:
    """The training mask with ``annotation_noise`` (from its own seed stream: the image does
    not depend on it); the exact mask's area is kept in the info."""
    if p.annotation_noise <= 0.0:
        return mask
    rng = np.random.default_rng([zlib.crc32(repr(seed).encode()), 0xA770])
    noisy = perturb_mask(mask, rng, p.annotation_noise)
    exact, drawn = mask > 0, noisy > 0
    union = int((exact | drawn).sum())
    info["annotation"] = {
        "noise_px": p.annotation_noise,
        "iou_vs_exact": round(int((exact & drawn).sum()) / union, 4) if union else 1.0,
        "exact_area_px": int(exact.sum()),
    }
    return noisy


def phantom(
    label: str = "benign",
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    *,
    split: Split | dict[str, Any] | None = None,
    **params: Any,
) -> Frame:
    """Simulate one B-mode breast-ultrasound frame with exact ground truth.

    Args:
        label: ``"normal"`` (no lesion), ``"benign"`` or ``"malignant"``.
        size: frame ``(height, width)`` in pixels.
        seed: everything (anatomy, lesions, speckle) is a function of it.
        **params: knobs of :class:`~sdk.synthetic._scene.PhantomParams`:
            ``geometry`` (``"linear"`` | ``"curvilinear"``), ``depth_mm``, ``frequency_mhz``,
            ``radius_mm`` and ``sector_deg`` (curvilinear), ``n_lesions``, ``lesion_labels``
            (per-lesion classes, e.g. ``["benign", "malignant"]``), ``lesion_size_mm`` (largest
            diameter), ``lesion_depth_mm`` (centre depth), ``contrast_db`` (lesion vs
            surrounding echogenicity: 20 log10 of the RMS envelope ratio), ``posterior_db``
            (enhancement > 0, shadowing < 0), ``cyst``, ``calcifications``, ``gain_db``,
            ``dynamic_range_db``, ``noise_db`` (electronic noise RMS vs tissue echo at the face),
            ``attenuation_db_cm_mhz``, ``tgc_db_cm``, ``clutter`` (scanner text, depth scale,
            calipers), ``tissue`` (``"breast"`` | ``"homogeneous"`` calibration phantom),
            ``style`` (``"classic"``: the original stylized phantom; ``"scanner"``: every
            factor of :mod:`sdk.synthetic._factors` that is not passed is drawn per frame --
            probe, bandwidth, focus, speckle density, specular echoes, TGC, compounding,
            speckle reduction, harmonics, haze, breast composition, BI-RADS descriptors --
            and recorded in ``info["factors"]`` / ``info["lesions"]``), the scanner-style
            knobs of :class:`~sdk.synthetic._scene.PhantomParams` (e.g. ``compounding=3``,
            ``lesion_descriptors={"margin": "spiculated"}``), ``annotation_noise`` (pixels:
            the returned mask is perturbed as a human outline would be; the image does not
            change, and the same call with 0 gives the exact mask).
        split: ``style="scanner"`` only: a :class:`~sdk.synthetic._splits.Split` (or its dict
            form); the factors are redrawn until the split accepts them.

    Returns:
        ``(image, mask, info)``: image uint8 ``(h, w)`` (black outside the scan region), mask
        uint8 ``(h, w)`` with one id per lesion (0 background, 1..K, inside the field of view
        only), info a JSON-safe dict: ``label``, ``lesions`` (per lesion: ``id``, ``label``,
        ``kind``, ``center_mm``, ``center_px``, ``axes_mm``, ``angle_deg``, ``bbox`` ``[x0, y0,
        x1, y1)`` px, ``depth_mm``, ``width_mm``, ``height_mm``, ``orientation``, ``margin``,
        ``contrast_db``, ``posterior_db``, ``calcifications``, ``area_px``...),
        ``pixel_spacing_mm`` ``[dy, dx]``, ``scan_box``, ``layers_mm``, ``params`` (all knobs
        after defaults) and ``seed``. The image label is ``"malignant"`` when any visible lesion
        is malignant, ``"benign"`` when any lesion is visible, else ``"normal"``.

    Raises:
        InputError: unknown label or parameter, value out of range, lesions that cannot fit.
    """
    label = _check_label(label)
    hw = _check_size(size)
    p = PhantomParams.from_kwargs(params)
    sp = _split_of(split, p.style)
    rng = np.random.default_rng(seed)
    scene = _scene(rng, label, hw, p, sp)
    image, mask, present, _, _ = render(scene, Pose(), rng)
    info = frame_info(scene, mask, present, Pose(), seed)
    if sp is not None:
        info["split"] = sp.name
    if p.clutter:
        draw_clutter(image, mask, scene, info)
    return image, _annotate(mask, info, p, seed), info


def cine(
    n_frames: int = 48,
    label: str = "benign",
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    *,
    fps: float = 20.0,
    sweep_mm: float | None = None,
    tilt_deg: float = 3.0,
    elevation_mm: float = 0.0,
    speckle_correlation: float = 0.85,
    **params: Any,
) -> Iterator[Frame]:
    """Simulate a cine loop: a probe sweeping over one breast, one frame per step.

    The probe translates laterally by ``sweep_mm`` over the loop (default: far enough that the
    lesions start outside the field of view, cross it and leave it), with a slow in-plane rocking
    of ``tilt_deg`` amplitude and an optional elevational drift of ``elevation_mm`` (the imaging
    plane slides through the lesions, which shrink as it leaves them). Scatterers move with the
    tissue and decorrelate from frame to frame with correlation coefficient
    ``speckle_correlation`` (elevational motion, 0 = independent speckle, 1 = frozen).

    Args:
        n_frames: number of frames (>= 1).
        label: class of the scene's lesions (``"normal"`` gives a lesion-free sweep).
        size: frame ``(height, width)`` in pixels.
        seed: scene and speckle seed.
        fps: frame rate; ``info["time_s"] = index / fps``.
        sweep_mm, tilt_deg, elevation_mm, speckle_correlation: motion, see above.
        **params: the knobs of :func:`phantom`.

    Yields:
        ``(image, mask, info)`` per frame, as :func:`phantom`, plus ``info["frame"]``,
        ``info["time_s"]``. Mask ids are stable across the loop (lesion ``k`` of the scene is
        always id ``k``); a frame where no lesion is in view is ``"normal"`` with an empty mask.
    """
    if int(n_frames) < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if not 0.0 <= speckle_correlation <= 1.0:
        raise InputError(f"speckle_correlation must be in [0, 1], got {speckle_correlation}")
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    label = _check_label(label)
    hw = _check_size(size)
    p = PhantomParams.from_kwargs(params)
    return _cine(
        int(n_frames),
        label,
        hw,
        seed,
        fps,
        sweep_mm,
        tilt_deg,
        elevation_mm,
        speckle_correlation,
        p,
    )


def _cine(
    n: int,
    label: str,
    hw: tuple[int, int],
    seed: int,
    fps: float,
    sweep_mm: float | None,
    tilt_deg: float,
    elevation_mm: float,
    rho: float,
    p: PhantomParams,
) -> Iterator[Frame]:
    seq = np.random.SeedSequence(seed)
    scene_rng = np.random.default_rng(seq.spawn(1)[0])
    if sweep_mm is None:
        if p.geometry == "linear":
            half = p.depth_mm * hw[1] / hw[0] / 2.0
        else:
            half = (p.radius_mm + p.depth_mm) * math.sin(math.radians(p.sector_deg) / 2.0)
        size_max = p.lesion_size_mm or 20.0
        sweep_mm = 2.0 * (half + 0.9 * size_max + 3.0)
    sweep = float(sweep_mm)
    scene = _scene(
        scene_rng, label, hw, p, None, x_extent=(-sweep / 2.0, sweep / 2.0), lesion_x=(-2.0, 2.0)
    )
    speckle = None
    frame_rng = np.random.default_rng(seq.spawn(1)[0])
    jitter = frame_rng.uniform(0.0, 2 * math.pi, 2)
    for k in range(n):
        t = k / max(n - 1, 1)
        tx = -sweep / 2.0 + sweep * t + 0.3 * math.sin(2 * math.pi * 3 * t + jitter[0])
        tilt = math.radians(tilt_deg) * math.sin(2 * math.pi * t + jitter[1])
        elev = elevation_mm * (t - 0.5) * 2.0
        pose = Pose(tx, tilt)
        image, mask, present, speckle, _ = render(
            scene, pose, frame_rng, elev, speckle, rho if k else 0.0
        )
        info = frame_info(
            scene,
            mask,
            present,
            pose,
            seed,
            {
                "frame": k,
                "time_s": round(k / fps, 6),
                "elevation_mm": round(elev, 4),
                "n_lesions_scene": len(scene.lesions),
            },
        )
        if p.clutter:
            draw_clutter(image, mask, scene, info)
        yield image, mask, info


def _counts(n: int, balance: Sequence[float]) -> list[int]:
    """Split ``n`` by the fractions ``balance`` (largest remainder: exact total)."""
    if len(balance) != 3:
        raise InputError(f"balance must be 3 fractions (benign, malignant, normal), got {balance}")
    w = np.asarray(balance, dtype=np.float64)
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"balance fractions must be >= 0 and not all 0, got {balance}")
    raw = n * w / w.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def _sample_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _generate(
    n: int, balance: Sequence[float], hw: tuple[int, int], seed: int, params: dict[str, Any]
) -> Iterator[Frame]:
    counts = _counts(n, balance)
    labels = np.repeat(np.array(LABELS), counts)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 2**31])).permutation(n)
    geometry = params.get("geometry", "linear")
    for i, li in enumerate(order):
        s = _sample_seed(seed, i)
        kw = dict(params)
        if geometry == "mixed":
            kw["geometry"] = "curvilinear" if s % 2 else "linear"
        image, mask, info = phantom(str(labels[li]), hw, s, **kw)
        info["index"] = i
        yield image, mask, info


def dataset(
    out_dir: str | Path | None = None,
    n: int = 30,
    balance: Sequence[float] = (0.4, 0.3, 0.3),
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    **params: Any,
) -> Iterator[Frame] | list[Path]:
    """A deterministic set of ``n`` phantoms, in memory or written in the BUSI layout.

    Sample ``i`` is ``phantom(label_i, size, seed_i, **params)`` with ``seed_i`` derived from
    ``(seed, i)`` (recorded in ``info["seed"]``), labels split by ``balance`` (fractions of
    benign, malignant, normal; the counts add up to ``n`` exactly) and shuffled by ``seed``.
    ``geometry="mixed"`` alternates linear and curvilinear frames.

    Args:
        out_dir: ``None`` to yield ``(image, mask, info)`` tuples; else a folder that receives
            ``benign/benign (1).png`` + ``benign/benign (1)_mask.png`` (0/255, the first lesion),
            ``..._mask_1.png`` for a second lesion, ... (BUSI convention), the same for
            ``malignant/`` and ``normal/`` (an all-black mask), and ``phantoms.jsonl``, one
            ``info`` per line with its ``file``. Each file is written to a temporary name and
            renamed, masks before their image, so an interrupted run leaves no partial file.
        n: number of frames.
        balance: ``(benign, malignant, normal)`` fractions (normalised).
        size: frame ``(height, width)``.
        seed: master seed.
        **params: the knobs of :func:`phantom` (plus ``geometry="mixed"``).

    Returns:
        The in-memory iterator, or the list of image paths written (in sample order).
    """
    if int(n) < 0:
        raise InputError(f"n must be >= 0, got {n}")
    hw = _check_size(size)
    _counts(int(n), balance)  # validate now, not on first next()
    probe = dict(params)
    if probe.get("geometry") == "mixed":
        probe["geometry"] = "linear"
    PhantomParams.from_kwargs(probe)
    gen = _generate(int(n), balance, hw, seed, params)
    if out_dir is None:
        return gen
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    numbers = dict.fromkeys(LABELS, 0)
    written: list[Path] = []
    lines: list[str] = []
    for image, mask, info in gen:
        label = info["label"]
        numbers[label] += 1
        folder = root / label
        folder.mkdir(exist_ok=True)
        stem = f"{label} ({numbers[label]})"
        ids = [d["id"] for d in info["lesions"]] or [0]
        for k, lid in enumerate(ids):
            suffix = "_mask" if k == 0 else f"_mask_{k}"
            binary = ((mask == lid) & (mask > 0)).astype(np.uint8) * 255
            write_image_atomic(folder / f"{stem}{suffix}.png", binary)
        path = folder / f"{stem}.png"
        write_image_atomic(path, image)
        written.append(path)
        lines.append(json.dumps({"file": f"{label}/{stem}.png", **info}, sort_keys=True))
    write_bytes_atomic(root / "phantoms.jsonl", ("\n".join(lines) + "\n").encode())
    return written


def simulate_iq(
    echogenicity: np.ndarray,
    *,
    seed: int = 0,
    frequency_mhz: float = 10.0,
    pixel_mm: float = 0.15,
) -> np.ndarray:
    """Complex baseband (IQ) echo of a scatterer field, by the same convolution model as
    :func:`phantom` (without attenuation, noise or TGC).

    Args:
        echogenicity: float array ``(rows = depth, cols = lateral)``, mean backscattered power
            per sample (linear, >= 0; 1 = reference tissue).
        seed: scatterer seed.
        frequency_mhz: probe centre frequency (sets the PSF size).
        pixel_mm: sample spacing (mm), both axes.

    Returns:
        complex64 array of the same shape; ``abs()`` is the envelope, Rayleigh distributed with
        ``E|IQ|^2 = echogenicity`` where the echogenicity is uniform.
    """
    e = np.asarray(echogenicity, dtype=np.float32)
    if e.ndim != 2 or min(e.shape) < 8:
        raise InputError(f"echogenicity must be a 2-D array of at least 8x8, got {e.shape}")
    if not np.isfinite(e).all() or (e < 0).any():
        raise InputError("echogenicity must be finite and >= 0")
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((2, *e.shape), dtype=np.float32) * np.float32(math.sqrt(0.5))
    amp = np.sqrt(e)
    psf = make_psf(float(frequency_mhz), float(pixel_mm), float(pixel_mm))
    re, im = convolve_psf(s[0] * amp, s[1] * amp, psf)
    return (re + 1j * im).astype(np.complex64)


def lesion_contrast_db(
    image: np.ndarray,
    mask: np.ndarray,
    lesion_id: int = 1,
    dynamic_range_db: float = 60.0,
    fov: np.ndarray | None = None,
) -> float:
    """Lesion-to-tissue contrast (dB) of a log-compressed frame.

    Mean display level of the lesion's core (2 px in from the margin) minus that of the tissue
    beside it (a band 3 px to ``max(5, 0.5 r)`` px outside the margin, ``r`` the lesion's
    equivalent radius, restricted to the lesion's own rows so depth effects and the posterior
    shadow / enhancement are excluded), converted to dB by ``dynamic_range_db / 255`` per grey
    level.

    Args:
        image: uint8 ``(h, w)`` frame.
        mask: instance mask ``(h, w)``.
        lesion_id: which lesion.
        dynamic_range_db: display dynamic range of ``image``.
        fov: optional bool ``(h, w)`` scan region (the band is limited to it).
    """
    img = np.asarray(image)
    m = np.asarray(mask) == lesion_id
    if img.shape != m.shape or img.ndim != 2:
        raise InputError(f"image {img.shape} and mask {np.shape(mask)} must be the same 2-D shape")
    if not m.any():
        raise InputError(f"lesion id {lesion_id} is not in the mask")
    radius = math.sqrt(m.sum() / math.pi)
    outer = max(5, round(0.5 * radius))
    m8 = m.astype(np.uint8)
    disk5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    # The lesion's core: 2 px in from the margin, where the PSF no longer mixes in the capsule.
    core = cv2.erode(m8, disk5).astype(bool)
    if core.sum() < 20:
        core = m
    near = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))).astype(bool)
    far = cv2.dilate(
        m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outer + 1, 2 * outer + 1))
    ).astype(bool)
    rows = np.zeros_like(m)
    ys = np.nonzero(m)[0]
    rows[ys.min() : ys.max() + 1] = True
    band = far & ~near & rows & (np.asarray(mask) == 0)
    if fov is not None:
        band &= np.asarray(fov, dtype=bool)
    if band.sum() < 10:
        raise InputError(f"lesion {lesion_id} has no surrounding tissue inside the frame")
    diff = float(img[core].mean()) - float(img[band].mean())
    return diff * dynamic_range_db / 255.0
