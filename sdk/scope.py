"""Is this frame breast B-mode at all? The out-of-scope score, and the temperature of the class
probabilities, both fitted at export and carried in the artifact's metadata.

**Scope score** (``Result.in_scope`` / ``Result.scope_score``). From the outputs the model
already computes for every frame, a summary vector ``z`` (:data:`SUMMARIES`):

* ``"gap"``: the per-channel mean of the ``features`` map (global average pooling, F values),
* ``"std"``: the per-channel standard deviation over its cells (F values: texture),
* ``"class_logits"``: the image-level class logits (K values),

and its squared Mahalanobis distance to the training distribution,
``d2 = || W (z - mean) ||^2``, where ``mean`` and the whitening ``W`` (the inverse Cholesky
factor of a shrunk covariance) were fitted on training-distribution phantoms at export
(:func:`fit_scope`; ``export.pipeline.fit_scope_and_temperature`` for an artifact). A second,
held-out set of phantoms gives the reference distances: their sorted ``d2`` values are stored, and

* ``scope_score`` = the fraction of those held-out phantoms whose distance is at least this
  frame's (a conformal p-value in [0, 1]: ~uniform on breast B-mode like the phantoms, near 0
  far from them; 1.0 at the centre of the distribution),
* ``in_scope`` = ``d2 <= threshold``, the threshold being the held-out distances' ``quantile``
  (0.99 by default, i.e. ``scope_score`` >= ~0.01), so ~1 % of in-distribution frames are
  flagged by design.

Cost: two reductions over the (F, hf, wf) feature map and one (D, D) mat-vec: one call of the
compiled ``scope_distance_cpu`` (a few us a frame), NumPy where the module lacks it.

**Temperature** (``calibration.temperature``): the image-level class logits (and the per-lesion
head logits) are divided by ``T`` before the softmax; ``T`` minimizes the negative log-likelihood
on held-out phantoms (:func:`fit_temperature`). ``T = 1`` (artifacts without the block) leaves
the model's probabilities as they were.

Metadata blocks (``Metadata.scope`` / ``Metadata.calibration``, both optional, versioned by
their own ``version``; artifacts without them load with ``in_scope=True``, ``scope_score=None``
and ``T = 1``)::

    "scope": {"version": 1, "method": "mahalanobis", "summaries": ["gap", "std", "class_logits"],
              "mean": <array (D,)>, "whiten": <array (D, D)>, "threshold": d2, "quantile": 0.99,
              "heldout_d2": <sorted array (N,)>, "fitted_on": {...}}
    "calibration": {"version": 1, "temperature": T, "fitted_on": {...}, ...}

Only NumPy and the SDK's compiled kernels here: the runtime path imports nothing else.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_VERSION",
    "OUT_OF_SCOPE",
    "SCOPE_VERSION",
    "SUMMARIES",
    "Scope",
    "check_temperature",
    "ece",
    "fit_scope",
    "fit_temperature",
    "softmax",
    "summary",
]

#: ``Result.label`` of a frame outside what the model knows (no diagnosis is claimed).
OUT_OF_SCOPE = "out_of_scope"
SCOPE_VERSION = 1
CALIBRATION_VERSION = 1
SUMMARIES = ("gap", "std", "class_logits")
#: Covariance shrinkage towards its mean eigenvalue (a few hundred phantoms for ~130 dims).
DEFAULT_SHRINK = 0.01


def summary(
    features: np.ndarray | None, class_logits: np.ndarray | None, summaries: tuple[str, ...]
) -> np.ndarray:
    """The summary vector ``z`` (float64) of one frame: ``features`` (F, hf, wf), ``class_logits``
    (K,), in the order of ``summaries``."""
    parts = []
    mu = sd = None
    for s in summaries:
        if s in ("gap", "std"):
            if features is None:
                raise ValueError(f"scope summary {s!r} needs the model's features output")
            if mu is None:
                # Two C reductions (not NumPy's mean / std wrappers: several times cheaper on
                # the hot path): mean and population std over the cells, per channel.
                f2 = np.asarray(features).reshape(features.shape[0], -1)
                n = f2.shape[1]
                mu = f2.sum(1, dtype=np.float64) / n
                sq = np.einsum("ij,ij->i", f2, f2, dtype=np.float64) / n
                sd = np.sqrt(np.maximum(sq - mu * mu, 0.0))
            parts.append(mu if s == "gap" else sd)
        elif s == "class_logits":
            if class_logits is None:
                raise ValueError("scope summary 'class_logits' needs the model's class_logits")
            parts.append(np.asarray(class_logits, np.float64).reshape(-1))
        else:
            raise ValueError(f"unknown scope summary {s!r} (known: {SUMMARIES})")
    return np.concatenate(parts)


@dataclass
class Scope:
    """A fitted scope model (see the module docstring). ``score(features, class_logits)`` →
    ``(in_scope, scope_score, d2)``."""

    mean: np.ndarray
    whiten: np.ndarray
    threshold: float
    heldout_d2: np.ndarray
    summaries: tuple[str, ...] = SUMMARIES
    quantile: float = 0.99
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64).reshape(-1)
        self.whiten = np.asarray(self.whiten, np.float64)
        self.heldout_d2 = np.sort(np.asarray(self.heldout_d2, np.float64).reshape(-1))
        self._ref = self.heldout_d2.tolist()  # bisect on a list: no NumPy call per frame
        self._uses_features = any(s in ("gap", "std") for s in self.summaries)
        # The hot path (distance): W z - W mean with W mean precomputed, the summaries written
        # in place into one buffer -- a dozen small NumPy calls, not the reference's ~30.
        self._fast = self.summaries[:2] == ("gap", "std") and self.summaries[2:] in (
            (),
            ("class_logits",),
        )
        self._wm = self.whiten @ self.mean
        self._native = None
        if self._fast:
            # The compiled kernel (sonoedge/scope.h): one call, a few us, instead of the NumPy
            # path below (~50 us, mostly per-call overhead). Absent in an old build: NumPy.
            try:
                from sdk.kernels import _native

                self._native = getattr(_native(), "scope_distance_cpu", None)
            except Exception:  # the module is optional here: the NumPy path is exact too
                self._native = None
            self._whiten_c = np.ascontiguousarray(self.whiten)
            self._wm_c = np.ascontiguousarray(self._wm)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, features: np.ndarray | None, class_logits: np.ndarray | None) -> float:
        """Squared Mahalanobis distance ``d2`` of one frame."""
        if self._native is not None and features is not None and features.ndim == 3:
            c = None
            if len(self.summaries) == 3:
                if class_logits is None:
                    raise ValueError("scope summary 'class_logits' needs the model's class_logits")
                c = np.ascontiguousarray(class_logits, np.float32).reshape(-1)
            f = np.ascontiguousarray(features, np.float32)
            return float(self._native(f, c, self._whiten_c, self._wm_c))
        if self._fast and features is not None:
            f2 = features.reshape(features.shape[0], -1)
            nf, n = f2.shape
            z = np.empty(self.mean.shape[0])
            add = np.add.reduce
            s1 = add(f2, 1, np.float64)
            s2 = add(f2 * f2, 1, np.float64)
            s1 *= 1.0 / n
            s2 *= 1.0 / n
            z[:nf] = s1
            s2 -= s1 * s1
            np.maximum(s2, 0.0, out=s2)
            np.sqrt(s2, out=z[nf : 2 * nf])
            if len(self.summaries) == 3:
                if class_logits is None:
                    raise ValueError("scope summary 'class_logits' needs the model's class_logits")
                z[2 * nf :] = class_logits
            v = np.dot(self.whiten, z)
            v -= self._wm
            return float(np.dot(v, v))
        v = self.whiten @ (summary(features, class_logits, self.summaries) - self.mean)
        return float(v @ v)

    def p_value(self, d2: float) -> float:
        """Fraction of the held-out reference distances >= ``d2`` (in [0, 1])."""
        n = len(self._ref)
        return (n - bisect_left(self._ref, d2)) / n if n else (1.0 if d2 <= self.threshold else 0.0)

    def score(
        self, features: np.ndarray | None, class_logits: np.ndarray | None
    ) -> tuple[bool, float, float]:
        """``(in_scope, scope_score, d2)``; a non-finite distance (NaN / inf outputs) is out of
        scope with score 0."""
        d2 = self.distance(features, class_logits)
        if not math.isfinite(d2):
            return False, 0.0, d2
        return d2 <= self.threshold, self.p_value(d2), d2

    # ---- metadata --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from sdk.artifact import encode_array

        return {
            "version": SCOPE_VERSION,
            "method": "mahalanobis",
            "summaries": list(self.summaries),
            "mean": encode_array(self.mean),
            "whiten": encode_array(self.whiten),
            "threshold": float(self.threshold),
            "quantile": float(self.quantile),
            "heldout_d2": encode_array(self.heldout_d2),
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "artifact") -> Scope:
        """Validate a ``scope`` metadata block; :class:`sdk.errors.ModelError` naming the field
        otherwise."""
        from sdk.artifact import decode_array
        from sdk.errors import ModelError

        def fail(msg: str) -> ModelError:
            return ModelError(f"{source}: metadata scope.{msg}; re-export the model")

        if not isinstance(d, dict):
            raise fail(f"block must be a JSON object, got {type(d).__name__}")
        v = d.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise fail(f"version must be an integer >= 1, got {v!r}")
        if v > SCOPE_VERSION:
            raise ModelError(
                f"{source}: metadata scope version {v} is newer than this sonoedge understands "
                f"({SCOPE_VERSION}); upgrade sonoedge"
            )
        if d.get("method", "mahalanobis") != "mahalanobis":
            raise fail(f"method {d.get('method')!r} is unknown (known: 'mahalanobis')")
        summ = d.get("summaries")
        if (
            not isinstance(summ, list)
            or not summ
            or any(s not in SUMMARIES for s in summ)
            or len(set(summ)) != len(summ)
        ):
            raise fail(f"summaries must be distinct names out of {SUMMARIES}, got {summ!r}")
        mean = decode_array(d.get("mean"), "scope.mean").reshape(-1)
        whiten = decode_array(d.get("whiten"), "scope.whiten")
        ref = decode_array(d.get("heldout_d2"), "scope.heldout_d2").reshape(-1)
        if whiten.ndim != 2 or whiten.shape[1] != mean.shape[0] or mean.shape[0] == 0:
            raise fail(f"whiten {whiten.shape} must be (k, {mean.shape[0]}) for mean {mean.shape}")
        for name, a in (("mean", mean), ("whiten", whiten), ("heldout_d2", ref)):
            if not np.isfinite(a).all():
                raise fail(f"{name} contains NaN or inf")
        thr, q = d.get("threshold"), d.get("quantile", 0.99)
        for name, x in (("threshold", thr), ("quantile", q)):
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise fail(f"{name} must be a finite number, got {x!r}")
        if thr < 0 or not 0 < q <= 1:
            raise fail(f"threshold {thr} must be >= 0 and quantile {q} in (0, 1]")
        fitted = d.get("fitted_on") or {}
        return cls(
            mean=mean,
            whiten=whiten,
            threshold=float(thr),
            heldout_d2=ref,
            summaries=tuple(summ),
            quantile=float(q),
            fitted_on=dict(fitted) if isinstance(fitted, dict) else {},
        )

    def check_outputs(self, has_features: bool, has_class_logits: bool, source: str) -> None:
        """Refuse (at load) a block that reads an output the model does not have."""
        from sdk.errors import ModelError

        need = {"features": self._uses_features, "class_logits": "class_logits" in self.summaries}
        have = {"features": has_features, "class_logits": has_class_logits}
        for k, n in need.items():
            if n and not have[k]:
                raise ModelError(
                    f"{source}: metadata scope reads the '{k}' output, which the model's "
                    "outputs do not have; re-export the model"
                )


def fit_scope(
    fit_z: np.ndarray,
    heldout_z: np.ndarray,
    *,
    summaries: tuple[str, ...] = SUMMARIES,
    quantile: float = 0.99,
    shrink: float = DEFAULT_SHRINK,
    fitted_on: dict[str, Any] | None = None,
) -> Scope:
    """Fit a :class:`Scope`: mean and shrunk covariance on ``fit_z`` (N, D) summaries, the
    reference distances and the threshold (their ``quantile``) on ``heldout_z`` (M, D), frames
    the fit never saw."""
    x = np.asarray(fit_z, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise ValueError(f"fit_z must be a finite (N >= 2, D) array, got {x.shape}")
    mean = x.mean(0)
    c = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    d = c.shape[0]
    c = (1.0 - shrink) * c + shrink * (np.trace(c) / d) * np.eye(d)
    c += 1e-9 * max(np.trace(c) / d, 1e-12) * np.eye(d)
    # c = L L^T; W = L^-1 gives ||W v||^2 = v^T c^-1 v.
    w = np.linalg.inv(np.linalg.cholesky(c))
    h = np.asarray(heldout_z, np.float64)
    ref = np.sort(np.einsum("ij,ij->i", (h - mean) @ w.T, (h - mean) @ w.T))
    return Scope(
        mean=mean,
        whiten=w,
        threshold=float(np.quantile(ref, quantile)),
        heldout_d2=ref,
        summaries=tuple(summaries),
        quantile=float(quantile),
        fitted_on=dict(fitted_on or {}),
    )


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``z / temperature`` (float64)."""
    a = np.asarray(z, np.float64) / temperature
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` in [0.05, 20] minimizing the mean negative log-likelihood of
    ``softmax(logits / T)`` (a golden-section search on log T; the NLL is unimodal in T)."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)

    def nll(log_t: float) -> float:
        p = softmax(z, math.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())

    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence: equal-width bins on (0, 1],
    ``sum_b |B|/N * |accuracy(B) - mean confidence(B)|``."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    if len(y) == 0:
        return float("nan")
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return float(total)


def check_temperature(t: Any, source: str = "artifact") -> float:
    """A finite temperature in [0.01, 100], else :class:`sdk.errors.ModelError`."""
    from sdk.errors import ModelError

    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ModelError(
            f"{source}: metadata calibration.temperature must be a finite number, got {t!r}; "
            "re-export the model"
        )
    if not 0.01 <= float(t) <= 100.0:
        raise ModelError(
            f"{source}: metadata calibration.temperature {t} must be in [0.01, 100]; re-export"
        )
    return float(t)
