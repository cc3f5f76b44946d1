"""The pipeline's scope and temperature fit: the out-of-scope model and the probability
temperature of an artifact, fitted on its own outputs and embedded in its metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export._pipeline.common import (
    SCOPE_FIT_SEED,
    SCOPE_HOLDOUT_SEED,
    SCOPE_SIZES,
    _session,
    check_contract,
)
from sdk.artifact import Metadata, read_onnx_file_metadata
from sdk.errors import ModelError

# --------------------------------------------------------------------------- scope + calibration


def _scope_outputs(
    path: Path, md: Metadata, frames: Any, threads: int | None, batch: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scope summaries (N, D), image-level class logits (N, K) and labels (N,) of ``frames``
    (``(image, mask, label)`` providers) through ONNX Runtime, preprocessed as the runtime does."""
    from sdk import kernels
    from sdk.scope import summary

    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    f_name, c_name = md.outputs.get("features"), md.outputs.get("class_logits")
    summaries = _scope_summaries(md)
    head = kernels.MLPHead(**md.head) if md.head is not None else None  # type: ignore[arg-type]
    zs, logits, labels = [], [], []
    for s in range(0, len(frames), batch):
        xs, ys = [], []
        for i in range(s, min(s + batch, len(frames))):
            image, _, label = frames.get(i)
            xs.append(
                kernels.preprocess(
                    image, md.input_size, md.channels, md.sigma, mean=md.mean, std=md.std
                )
            )
            ys.append(int(label))
        out = dict(zip(names, sess.run(names, {name: np.stack(xs)}), strict=True))
        for b in range(len(xs)):
            f = out[f_name][b] if f_name else None
            c = out[c_name][b] if c_name else None
            zs.append(summary(f, c, summaries))
            if c is None:  # a features-only model: the pooled image row's head logits
                w = 1.0 / (1.0 + np.exp(-out[md.outputs["mask_logits"]][b, 0]))
                c = kernels.pool_classify(f, w.astype(np.float32), head=head).logits[0]
            logits.append(np.asarray(c, np.float64))
        labels += ys
    return np.stack(zs), np.stack(logits), np.asarray(labels, np.int64)


def _scope_summaries(md: Metadata) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    if md.outputs.get("features"):
        out += ("gap", "std")
    if md.outputs.get("class_logits"):
        out += ("class_logits",)
    return out


def fit_scope_and_temperature(
    model_path: str | os.PathLike[str],
    n_fit: int = 800,
    n_heldout: int = 300,
    seed: int = 0,
    *,
    styles: Sequence[str] = ("classic", "scanner"),
    frame_sizes: Sequence[Sequence[int]] = SCOPE_SIZES,
    quantile: float = 0.99,
    threads: int | None = 1,
    write: bool = True,
    frames_cache: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Fit the out-of-scope model and the probability temperature of an ``.onnx`` artifact on
    its own outputs, and (``write``) embed both in its metadata through
    :func:`export.onnx_export.embed_metadata` (which also re-stamps the integrity digest).

    Frames: synthetic phantoms of each of ``styles`` (``sdk.synthetic``, ``"classic"`` and
    ``"scanner"``: the training distribution), drawn at ``frame_sizes``, on seed streams of their
    own (``seed + SCOPE_FIT_SEED`` / ``seed + SCOPE_HOLDOUT_SEED`` + the style's index; none
    shared with training, calibration, held-out checks or the report). ``n_fit`` per style fit
    the summaries' mean and covariance (:func:`sdk.scope.fit_scope`); ``n_heldout`` per style,
    never seen by that fit, give the reference distances, the threshold (their ``quantile``)
    and the temperature (:func:`sdk.scope.fit_temperature`: NLL of the image-level logits).
    No MUST / SIMUS-family frame is used. Nothing about the model's graph or weights changes.
    ``frames_cache``: a dict shared by several calls (e.g. the FP32 and INT8 files of one
    export): the phantoms are drawn once, kept there, and reused by the next call.

    Returns: a summary (threshold, temperature, held-out flag rate and ECE before / after).
    """
    from export.data import SyntheticFrames
    from export.onnx_export import embed_metadata
    from sdk.scope import CALIBRATION_VERSION, ece, fit_scope, fit_temperature, softmax

    path = Path(model_path)
    md = read_onnx_file_metadata(path)
    check_contract(path)
    if not _scope_summaries(md):
        raise ModelError(f"{path}: neither features nor class_logits: nothing to fit a scope on")
    sets: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"fit": [], "heldout": []}
    for role, n, offset in (
        ("fit", n_fit, SCOPE_FIT_SEED),
        ("heldout", n_heldout, SCOPE_HOLDOUT_SEED),
    ):
        for k, style in enumerate(styles):
            sizes = [tuple(s) for s in frame_sizes]
            key = (int(n), tuple(sizes), seed + offset + k, tuple(md.class_names), style)
            frames = None if frames_cache is None else frames_cache.get(key)
            if frames is None:
                cache = frames_cache is not None  # keep the drawn frames only to share them
                frames = SyntheticFrames(
                    int(n), sizes, seed + offset + k, md.class_names, cache=cache, style=style
                )
                if frames_cache is not None:
                    frames_cache[key] = frames
            sets[role].append(_scope_outputs(path, md, frames, threads))
    fz = np.concatenate([z for z, _, _ in sets["fit"]])
    hz = np.concatenate([z for z, _, _ in sets["heldout"]])
    hl = np.concatenate([c for _, c, _ in sets["heldout"]])
    hy = np.concatenate([y for _, _, y in sets["heldout"]])
    fitted_on = {
        "frames": "sdk.synthetic phantoms",
        "styles": list(styles),
        "frame_sizes": [list(s) for s in frame_sizes],
        "fit_per_style": int(n_fit),
        "heldout_per_style": int(n_heldout),
        "seed": int(seed),
        "fit_seed_offset": SCOPE_FIT_SEED,
        "heldout_seed_offset": SCOPE_HOLDOUT_SEED,
    }
    scope = fit_scope(
        fz, hz, summaries=_scope_summaries(md), quantile=quantile, fitted_on=fitted_on
    )
    t = fit_temperature(hl, hy)
    before = ece(softmax(hl), hy)
    after = ece(softmax(hl, t), hy)
    calibration = {
        "version": CALIBRATION_VERSION,
        "method": "temperature",
        "temperature": round(t, 6),
        "fitted_on": {**fitted_on, "set": "heldout", "objective": "nll"},
        "heldout_ece_before": round(before, 5),
        "heldout_ece_after": round(after, 5),
    }
    md.scope = scope.to_dict()
    md.calibration = calibration
    if write:
        embed_metadata(path, md)
    return {
        "model": str(path),
        "threshold": scope.threshold,
        "quantile": quantile,
        "dim": scope.dim,
        "temperature": t,
        "heldout_flagged": float(np.mean(scope.heldout_d2 > scope.threshold)),
        "heldout_ece_before": before,
        "heldout_ece_after": after,
        "written": bool(write),
    }
