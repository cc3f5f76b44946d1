"""Segmentation and classification metrics, NumPy only (shared by training, export and benchmarks).

Segmentation (one binary mask pair at a time, any number of dimensions):

* :func:`dice`, :func:`iou` -- overlap. **Both masks empty → 1.0** (a correct "no lesion"),
  exactly one empty → 0.0.
* :func:`hd95` -- 95th percentile Hausdorff distance between the two mask surfaces, in pixels or,
  with ``spacing``, in its unit (mm). **Both empty → 0.0; exactly one empty → inf.**
* :func:`nsd` -- normalized surface Dice at a tolerance. **Both empty → 1.0; exactly one empty
  → 0.0.**

Surfaces are the foreground pixels with at least one face-connected (4-connected in 2-D) neighbour
in the background or outside the array; distances are Euclidean between pixel centres, scaled by
``spacing`` per axis. This is the ``medpy.metric.hd95`` definition: the 95th percentile (NumPy's
linear interpolation) of the *pooled* directed surface distances of both directions.

Masks: ``bool`` or integer arrays (non-zero = lesion), or float arrays holding only 0 and 1 --
threshold probabilities first (``prob > 0.5``). Shapes must match.

Classification (``y_true`` / ``y_pred`` int class ids in ``0..K-1``, ``scores`` ``(N, K)``):

* :func:`accuracy`, :func:`confusion_matrix` (rows = truth, columns = prediction),
* :func:`per_class` -- sensitivity (recall), specificity, precision, F1 per class,
* :func:`auc_ovr` / :func:`macro_auc` -- one-vs-rest ROC AUC by ranks (Mann-Whitney U, ties get
  the average rank, so a tie between a positive and a negative counts 1/2).

Undefined values (a 0/0: a class absent from ``y_true`` has no sensitivity, a class without
negatives has no AUC) are ``nan``, never a silent 0; :func:`macro_auc` averages the defined
classes and is ``nan`` when none is. Invalid inputs raise :class:`sdk.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.errors import InputError

__all__ = [
    "accuracy",
    "auc_ovr",
    "confusion_matrix",
    "dice",
    "hd95",
    "iou",
    "macro_auc",
    "nsd",
    "per_class",
    "surface_distances",
]

# Pairwise distances are computed in blocks of at most this many pairs (float64: 32 MiB).
_BLOCK_PAIRS = 1 << 22


# --------------------------------------------------------------------------- validation


def _mask(a: Any, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise InputError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.ndim == 0 or a.size == 0:
        raise InputError(f"{name} must be a non-empty array with >= 1 dimension, got {a.shape}")
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a != 0
    if np.issubdtype(a.dtype, np.floating):
        if not np.isin(a, (0.0, 1.0)).all():
            raise InputError(
                f"{name} is a float array with values other than 0 and 1; threshold the "
                "probabilities first, e.g. mask = prob > 0.5"
            )
        return a != 0
    raise InputError(f"{name} must be a bool, integer or 0/1 float array, got dtype {a.dtype}")


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _mask(pred, "pred"), _mask(target, "target")
    if p.shape != t.shape:
        raise InputError(f"pred {p.shape} and target {t.shape} must have the same shape")
    return p, t


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    s = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.shape != (ndim,) or not np.isfinite(s).all() or (s <= 0).any():
        raise InputError(
            f"spacing must be one positive number or {ndim} (one per axis, e.g. (dy, dx) mm), "
            f"got {spacing!r}"
        )
    return s


def _labels(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or a.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D array of class ids, got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    if a.min() < 0 or (num_classes is not None and a.max() >= num_classes):
        hi = "" if num_classes is None else f"..{num_classes - 1}"
        raise InputError(f"{name} holds class ids outside 0{hi}: {np.unique(a).tolist()}")
    return a.astype(np.int64)


def _num_classes(num_classes: int | None, *ys: np.ndarray) -> int:
    if num_classes is None:
        return int(max(int(y.max()) for y in ys)) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise InputError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InputError(f"{na} has {a.shape[0]} samples but {nb} has {b.shape[0]}")


# --------------------------------------------------------------------------- overlap


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice ``2 |P ∩ T| / (|P| + |T|)`` of two binary masks; both empty → 1.0."""
    p, t = _pair(pred, target)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P ∩ T| / |P ∪ T|``; both empty → 1.0."""
    p, t = _pair(pred, target)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


# --------------------------------------------------------------------------- surfaces


def _surface(m: np.ndarray) -> np.ndarray:
    """Coordinates ``(n, ndim)`` of the surface pixels of a boolean mask (see module docstring)."""
    padded = np.pad(m, 1, constant_values=False)
    interior = m.copy()
    core = tuple(slice(1, -1) for _ in range(m.ndim))
    for ax in range(m.ndim):
        for step in (-1, 1):
            shifted = list(core)
            shifted[ax] = slice(1 + step, padded.shape[ax] - 1 + step)
            interior &= padded[tuple(shifted)]
    return np.argwhere(m & ~interior)


def _nearest(src: np.ndarray, dst: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """For each point of ``src`` the distance to the nearest point of ``dst`` (both non-empty)."""
    a = src * spacing
    b = dst * spacing
    out = np.empty(len(a))
    step = max(1, _BLOCK_PAIRS // len(b))
    for i in range(0, len(a), step):
        d2 = ((a[i : i + step, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
        out[i : i + step] = np.sqrt(d2.min(axis=1))
    return out


def surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: float | Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(pred → target, target → pred)``, float64, one per surface
    pixel of the first mask, in pixels or the unit of ``spacing`` (one value per axis, e.g.
    ``(dy, dx)`` mm). Both masks must be non-empty."""
    p, t = _pair(pred, target)
    s = _spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        raise InputError("surface distances need two non-empty masks")
    sp, st = _surface(p), _surface(t)
    return _nearest(sp, st, s), _nearest(st, sp, s)


def hd95(
    pred: np.ndarray, target: np.ndarray, spacing: float | Sequence[float] | None = None
) -> float:
    """95th percentile Hausdorff distance (pooled directed surface distances, medpy's ``hd95``).

    Pixels, or the unit of ``spacing``. Both masks empty → 0.0; exactly one empty → ``inf``.
    """
    p, t = _pair(pred, target)
    _spacing(spacing, p.ndim)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("inf")
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(np.percentile(np.concatenate([d_pt, d_tp]), 95))


def nsd(
    pred: np.ndarray,
    target: np.ndarray,
    tolerance: float = 2.0,
    spacing: float | Sequence[float] | None = None,
) -> float:
    """Normalized surface Dice (Nikolov et al. 2021) at ``tolerance`` (pixels, or the unit of
    ``spacing``): the fraction of both surfaces lying within ``tolerance`` of the other,
    ``(|{p: d(p, T) <= τ}| + |{t: d(t, P) <= τ}|) / (|∂P| + |∂T|)``, counting surface pixels.

    Both masks empty → 1.0; exactly one empty → 0.0.
    """
    p, t = _pair(pred, target)
    tol = float(tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise InputError(f"tolerance must be a finite distance >= 0, got {tolerance!r}")
    _spacing(spacing, p.ndim)
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    d_pt, d_tp = surface_distances(p, t, spacing)
    return float(((d_pt <= tol).sum() + (d_tp <= tol).sum()) / (d_pt.size + d_tp.size))


# --------------------------------------------------------------------------- classification


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples with ``y_pred == y_true``."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    return float((t == p).mean())


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """int64 ``(K, K)``: entry ``[i, j]`` counts samples of true class i predicted as j.

    ``num_classes`` defaults to the largest id seen + 1.
    """
    t0, p0 = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    k = _num_classes(num_classes, t0, p0)
    t, p = _labels(t0, "y_true", k), _labels(p0, "y_pred", k)
    _same_length(t, p, "y_true", "y_pred")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def per_class(y_true: Any, y_pred: Any, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest rates, float64 ``(K,)`` each (nan where 0/0):

    ``sensitivity = TP / (TP + FN)``, ``specificity = TN / (TN + FP)``,
    ``precision = TP / (TP + FP)``, ``f1 = 2 TP / (2 TP + FP + FN)``; plus ``support``
    (samples per true class, int64).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "support": cm.sum(axis=1),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of every run of equal values, and the average rank of that run.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc_ovr(y_true: Any, scores: Any) -> np.ndarray:
    """One-vs-rest ROC AUC per class, float64 ``(K,)``; nan for a class with no positive or no
    negative sample.

    ``AUC_k = (R_k - n_k (n_k + 1) / 2) / (n_k (N - n_k))`` with ``R_k`` the sum of the ranks of
    class k's samples among all ``scores[:, k]`` (ties averaged).

    Args:
        y_true: int ``(N,)`` class ids in ``0..K-1``.
        scores: float ``(N, K)`` per-class scores (probabilities or logits).
    """
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] < 2 or not np.issubdtype(s.dtype, np.number):
        raise InputError(f"scores must be a numeric (N, K >= 2) array, got shape {s.shape}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or inf")
    t = _labels(y_true, "y_true", s.shape[1])
    _same_length(t, s, "y_true", "scores")
    n = t.size
    out = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        pos = t == k
        n_pos = int(pos.sum())
        if 0 < n_pos < n:
            r = _ranks(s[:, k])[pos].sum()
            out[k] = (r - n_pos * (n_pos + 1) / 2.0) / (n_pos * (n - n_pos))
    return out


def macro_auc(y_true: Any, scores: Any) -> float:
    """Mean of :func:`auc_ovr` over the classes where it is defined; nan when none is."""
    a = auc_ovr(y_true, scores)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
