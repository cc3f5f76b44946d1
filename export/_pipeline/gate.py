"""The lesion gate of an artifact (``Metadata.max_lesion_normal_prob``), fitted on tuning
phantoms of its own seed stream and embedded in its metadata.

The mask head outlines lesion-like normal tissue (fat lobules, rib and lesion-free shadows) on a
share of normal frames; every such region still goes through the mask-guided classifier, which
pools the region's own features. The gate drops a region whose pooled probability of "normal"
exceeds a threshold: its pixels leave the mask, so mask, outlines and lesions agree
(``sdk/pipeline.py``). A model with image-level class probabilities only (no features / head:
nmtnet, most imported models) gives every region the image's probabilities, so there the gate
clears the mask of a frame its own classifier calls normal -- the frame-level form of the same
rule. The threshold is chosen here by mean frame Dice (both empty = 1) on
``n`` fresh phantoms -- never the report's, the scope fit's or any evaluation's frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from export._pipeline.common import SCOPE_SIZES
from sdk.artifact import read_onnx_file_metadata
from sdk.errors import InputError
from sdk.metrics import dice as frame_dice

GATE_SEED = 7_000_003  # fit_lesion_gate's tuning phantoms: used nowhere else
#: The most mean Dice the gate may cost the frames that hold a lesion (a lesion the gate drops is
#: a missed lesion: the budget keeps the gate from trading sensitivity for clean normal frames).
LESION_DICE_BUDGET = 0.01
#: Thresholds tried, most permissive last (1.0: the gate off).
GATE_GRID = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)


def fit_lesion_gate(
    model_path: str | os.PathLike[str],
    n: int = 300,
    seed: int = 0,
    *,
    frame_sizes: Sequence[Sequence[int]] = SCOPE_SIZES,
    grid: Sequence[float] = GATE_GRID,
    threads: int = 1,
    write: bool = True,
    split: Any = None,
    lesion_budget: float = LESION_DICE_BUDGET,
) -> dict[str, Any]:
    """Choose ``thresholds.max_lesion_normal_prob`` for an ``.onnx`` artifact and (``write``)
    embed it (:func:`export.onnx_export.embed_metadata`, digest re-stamped).

    ``n`` scanner-style phantoms (``sdk.synthetic``, the training size mix, seed stream
    ``seed + GATE_SEED``; inside ``split``, a generator region, when given) run once through
    :class:`sdk.Analyzer` with the gate off (its scope, temperature and lesion floor as served;
    no smoothing); for every threshold of ``grid`` the lesions it would drop are taken out of
    each frame's mask and the mean Dice against the true mask is computed. The best threshold
    by mean Dice over all frames wins (ties: the more permissive) among those that cost the
    lesion frames at most ``lesion_budget`` of their mean Dice against the gate off (1.0 always
    qualifies). A model without a "normal" class keeps 1.0; one with image-level probabilities
    only is gated on those (module docstring).

    Returns ``{"threshold", "dice": {threshold: mean Dice}, "dice_off", "frames", ...}``.
    """
    from export.data import SyntheticFrames
    from export.onnx_export import embed_metadata
    from sdk import Analyzer
    from sdk.pipeline import NORMAL

    if int(n) < 3:
        raise InputError(f"fit_lesion_gate needs n >= 3 frames, got {n}")
    grid = sorted({float(g) for g in grid})
    if not grid or grid[0] <= 0.0 or grid[-1] > 1.0:
        raise InputError(f"gate thresholds must lie in (0, 1], got {grid}")
    path = Path(model_path)
    md = read_onnx_file_metadata(path)
    summary: dict[str, Any] = {"model": str(path), "frames": int(n), "seed": seed + GATE_SEED}
    summary["split"] = split if split is None or isinstance(split, str) else "custom"
    if NORMAL not in md.class_names:
        summary.update(threshold=1.0, reason="no normal class")
        return summary
    summary["per_lesion"] = bool(md.outputs.get("features") and md.head is not None)
    frames = SyntheticFrames(
        int(n),
        [tuple(s) for s in frame_sizes],
        seed + GATE_SEED,
        md.class_names,
        cache=False,
        split=split,
    )
    an = Analyzer(path, threads=threads, smoothing=0.0).load()
    an.pipeline.max_lesion_normal_prob = 1.0
    per_frame = []
    try:
        for i in range(len(frames)):
            image, truth, _ = frames.get(i)
            r = an.run(image)
            lesions = []
            for les in r.lesions:
                region = np.zeros(r.mask.shape, np.uint8)
                contours = (les.contour, *les.other_contours)
                polys = [np.asarray(c, np.int32).reshape(-1, 1, 2) for c in contours]
                cv2.fillPoly(region, polys, 1)
                lesions.append((float(les.raw_probs[NORMAL]), region > 0))
            per_frame.append((truth > 0, r.mask > 0, lesions))
    finally:
        an.close()
    has_lesion = np.array([bool(t.any()) for t, _, _ in per_frame])
    dice, lesion_dice, normal_dice = {}, {}, {}
    for g in [*grid, 1.0] if grid[-1] != 1.0 else grid:
        scores = []
        for t, m, lesions in per_frame:
            mm = m.copy()
            for pn, region in lesions:
                if pn > g:
                    mm &= ~region
            scores.append(frame_dice(mm, t))
        sc = np.asarray(scores)
        dice[g] = float(sc.mean())
        lesion_dice[g] = float(sc[has_lesion].mean()) if has_lesion.any() else 1.0
        normal_dice[g] = float(sc[~has_lesion].mean()) if (~has_lesion).any() else 1.0
    allowed = [g for g in dice if lesion_dice[1.0] - lesion_dice[g] <= lesion_budget + 1e-9]
    best = max(allowed, key=lambda g: (round(dice[g], 6), g))

    def table(d: dict[float, float]) -> dict[str, float]:
        return {str(g): round(v, 5) for g, v in sorted(d.items())}

    summary.update(
        threshold=best,
        lesion_budget=lesion_budget,
        dice=table(dice),
        lesion_frames_dice=table(lesion_dice),
        normal_frames_dice=table(normal_dice),
        dice_off=round(dice[1.0], 5),
        sizes=[list(s) for s in frame_sizes],
    )
    if write:
        md.max_lesion_normal_prob = float(best)
        embed_metadata(path, md)
    return summary
