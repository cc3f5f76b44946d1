"""Train and export the lesion refiner (``sdk/refiner.py``) behind a frame model.

The refiner learns what the frame model's lesions look like at frame resolution, so its
training crops are that model's own: every lesion the frame model (``--model``, run alone)
finds on a scanner-style phantom is cropped as the runtime crops it and labelled by the true
lesion it overlaps (its class and mask; ``normal`` and an empty mask when it overlaps none --
the false blobs the refiner must learn to drop), plus ``jitter_true`` jittered crops around each
true lesion (the lesions the frame model outlines in other places, and every lesion it missed)
and, on a normal frame where it found nothing, one crop of random tissue.

The network is edge_s (EfficientNet-Lite0 encoder from its ImageNet weights, FPN-lite decoder,
mask at half the input, mask-guided class head) at 96×96: BCE + Dice on the mask, class-balanced
cross-entropy, AdamW with a one-cycle schedule; flips and gain / gamma. The last epoch is the
one exported (the 10 % of crops held out are for the log only: crops of one lesion share
frames, so they are not an independent score -- ``benchmarks/refiner_eval.py`` scores the
exported file on fresh frames through ``sdk.Analyzer``).

``python -m export.refiner --out runs/refiner`` (``--help``): the shipped
``sdk/models/default-refiner.onnx`` is ``--frames 3000 --epochs 18 --threads 2 --augment`` behind
the embedded FP32 default (~3 min of crops, ~27-37 min of training on the 2-core EPYC), with
``flip`` set afterwards (its provenance says how). ``--size 128`` was tried (2026-12-03, 56 min):
not better (``benchmarks/results/refiner-tuning-avx512-vnni.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdk.refiner import METADATA_KEY, ROLE, CropGeometry, crop, square

__all__ = ["build_crops", "echo_weights", "export_onnx", "main", "train"]

LABELS = ("normal", "benign", "malignant")
INPUT = 96
TRAIN_SEED = 90_000_000  # phantom seeds TRAIN_SEED + i: disjoint from every report stream
SIZES = ((600, 800), (480, 640))


def _jittered(box: tuple[int, int, int, int], geom: CropGeometry, rng: np.random.Generator):
    """A training crop around ``box``: the runtime's geometry, side ×0.85-1.2, centre moved by up
    to 12 % of the side (a frame model's boxes are not where the truth's are)."""
    cx, cy, s = square(box, geom)
    s *= rng.uniform(0.85, 1.2)
    cx += rng.uniform(-0.12, 0.12) * s
    cy += rng.uniform(-0.12, 0.12) * s
    return round(cx - s / 2), round(cy - s / 2), round(s)


def _sample(img: np.ndarray, m: np.ndarray, x0: int, y0: int, s: int, size: int = INPUT):
    """The image crop at ``size``² (uint8: the runtime's crop, rounded) and its mask's area
    fraction at half that."""
    import cv2

    from sdk.refiner import _source

    c = np.rint(crop(img, x0, y0, s, size) * 255).clip(0, 255).astype(np.uint8)
    src, (rx, ry, rw, rh) = _source(m.astype(np.uint8) * 255, x0, y0, s)
    mm = cv2.resize(
        src[ry : ry + rh, rx : rx + rw].astype(np.float32) / 255,
        (size // 2, size // 2),
        interpolation=cv2.INTER_AREA,
    )
    return c, np.clip(mm, 0.0, 1.0)


def _match(region: np.ndarray, truth: np.ndarray) -> int:
    """The true lesion id a found region overlaps most (0: none, or under 20 % of the region)."""
    ids, counts = np.unique(truth[region > 0], return_counts=True)
    best, bc = 0, 0
    for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
        if i and c > bc:
            best, bc = i, c
    return best if best and bc / max(1, int((region > 0).sum())) >= 0.2 else 0


def build_crops(
    model: str | Path,
    n: int,
    seed: int = TRAIN_SEED,
    sizes: tuple[tuple[int, int], ...] = SIZES,
    threads: int | None = None,
    jitter_true: int = 2,
    progress: bool = True,
    split: Any = None,
    size: int = INPUT,
    echo: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X uint8 (N, size, size), M float32 (N, size/2, size/2) mask fractions, Y int64 (N,))``
    from ``n`` scanner-style phantoms (labels cycling normal / benign / malignant, seeds
    ``seed + i``; ``split``: a ``sdk.synthetic.Split`` the factors are drawn in, e.g.
    ``OOD_TRAIN`` for the OOD suite's twin; ``size``: the refiner's input side; ``echo``: a list
    that receives each crop's lesion echo pattern, ``""`` for a crop of no lesion)."""
    if size < 32 or size % 32:
        raise ValueError(f"refiner input size {size}: must be a multiple of 32 (edge_s's stride)")
    from tqdm import tqdm

    from sdk import Analyzer, synthetic

    geom = CropGeometry()
    a = Analyzer(model, threads=threads, refiner=False)
    X, M, Y, E = [], [], [], []
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc="refiner crops", unit="frame", disable=not progress):
        lab = LABELS[i % 3]
        img, truth, info = synthetic.phantom(
            lab, size=sizes[i % len(sizes)], seed=seed + i, style="scanner", split=split
        )
        H, W = img.shape
        les_lab = {le["id"]: le["label"] for le in info["lesions"]}
        les_echo = {le["id"]: le.get("echo_pattern", "") for le in info["lesions"]}
        r = a.run(img)
        for le in r.lesions:
            x, y, w, h = le.bbox
            reg = np.zeros_like(truth)
            reg[y : y + h, x : x + w] = r.mask[y : y + h, x : x + w]
            tid = _match(reg, truth)
            x0, y0, s = _jittered(le.bbox, geom, rng)
            tm = (truth == tid) if tid else np.zeros_like(truth, bool)
            c, mm = _sample(img, tm, x0, y0, s, size)
            X.append(c), M.append(mm), Y.append(LABELS.index(les_lab[tid]) if tid else 0)
            E.append(les_echo[tid] if tid else "")
        for tid, tl in les_lab.items():
            ys, xs = np.nonzero(truth == tid)
            if len(xs) == 0:
                continue
            box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            for _ in range(jitter_true):
                x0, y0, s = _jittered(box, geom, rng)
                c, mm = _sample(img, truth == tid, x0, y0, s, size)
                X.append(c), M.append(mm), Y.append(LABELS.index(tl))
                E.append(les_echo[tid])
        if lab == "normal" and not r.lesions:  # a random piece of tissue
            w = h = int(rng.uniform(40, 200))
            x, y = int(rng.uniform(0, W - w)), int(rng.uniform(H * 0.1, H - h))
            x0, y0, s = _jittered((x, y, w, h), geom, rng)
            c, mm = _sample(img, np.zeros_like(truth, bool), x0, y0, s, size)
            X.append(c), M.append(mm), Y.append(0)
            E.append("")
    a.close()
    if echo is not None:
        echo[:] = E
    return np.array(X), np.array(M, np.float32), np.array(Y, np.int64)


def train(
    X: np.ndarray,
    M: np.ndarray,
    Y: np.ndarray,
    epochs: int = 18,
    batch: int = 32,
    lr: float = 2e-3,
    threads: int | None = None,
    seed: int = 0,
    log: Any = print,
    augment: bool = False,
    weights: np.ndarray | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train edge_s on the crops (module docstring); returns the model after the last epoch and
    the per-epoch history (loss, held-out accuracy and Dice, seconds). ``augment``: also the
    export's ultrasound augmentation (``export.us_augment``: depth attenuation, shadow, haze,
    blur, multiplicative speckle) on every training crop, masks unchanged. ``weights``: a
    sampling weight per crop (e.g. rare lesion looks oversampled, :func:`echo_weights`); each
    epoch then draws as many training crops, with replacement, in proportion to them."""
    import torch
    import torch.nn.functional as F

    from export.losses import seg_loss
    from export.models.edge_s import EdgeS

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    n = len(X)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    nv = n // 10
    va, tr = idx[:nv], idx[nv:]
    if len(tr) < batch:
        raise ValueError(f"{len(tr)} training crops for a batch of {batch}: make more frames")
    model = EdgeS(mask_stride=2)
    mean, std = model.input_mean[0], model.input_std[0]

    def prep(xb: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(xb).float()[:, None] / 255 - mean) / std

    counts = np.bincount(Y[tr], minlength=3).clip(1)
    cw = torch.tensor(len(tr) / (3 * counts), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = len(tr) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps * epochs, pct_start=0.1)
    us, blank = None, np.zeros(X.shape[1:], np.uint8)
    if augment:
        from export.us_augment import UltrasoundAugment

        us = UltrasoundAugment(p_annotation=0.0)
    history, t0 = [], time.time()
    for ep in range(epochs):
        model.train()
        if weights is None:
            perm = rng.permutation(tr)
        else:
            w = np.asarray(weights, np.float64)[tr]
            perm = rng.choice(tr, size=len(tr), replace=True, p=w / w.sum())
        total = 0.0
        for k in range(steps):
            b = perm[k * batch : (k + 1) * batch]
            xb, mb = X[b].astype(np.float32), M[b].copy()
            if us is not None:
                for j in range(len(b)):
                    xb[j] = us(X[b[j]], blank, rng)[0]
            flip = rng.random(len(b)) < 0.5
            xb[flip], mb[flip] = xb[flip, :, ::-1], mb[flip, :, ::-1]
            g = rng.uniform(0.7, 1.4, (len(b), 1, 1))
            gm = rng.uniform(0.7, 1.4, (len(b), 1, 1))
            xb = np.clip(255 * (np.clip(xb * g, 0, 255) / 255) ** gm, 0, 255)
            out = model(prep(xb))
            loss = seg_loss(out["mask_logits"], torch.from_numpy(mb)[:, None]) + F.cross_entropy(
                out["class_logits"], torch.from_numpy(Y[b]), weight=cw
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        model.eval()
        pred, dice = [], []
        with torch.no_grad():
            for k in range(0, nv, 128):
                b = va[k : k + 128]
                out = model(prep(X[b].astype(np.float32)))
                pred.append(out["class_logits"].argmax(1).numpy())
                pm = (torch.sigmoid(out["mask_logits"])[:, 0] > 0.5).numpy()
                for p_, t_ in zip(pm, M[b] > 0.5, strict=True):
                    if t_.any() or p_.any():
                        dice.append(2 * (p_ & t_).sum() / (p_.sum() + t_.sum()))
        acc = float((np.concatenate(pred) == Y[va]).mean()) if nv else float("nan")
        row = {
            "epoch": ep + 1,
            "loss": total / steps,
            "heldout_accuracy": acc,
            "heldout_dice": float(np.mean(dice)) if dice else float("nan"),
            "seconds": round(time.time() - t0, 1),
        }
        history.append(row)
        log(json.dumps(row))
    return model, history


def echo_weights(echo: list[str] | np.ndarray, spec: str) -> np.ndarray:
    """Sampling weights from ``"hyperechoic=4,isoechoic=2"``: crops of lesions with those echo
    patterns weigh that much, every other crop 1."""
    table: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, val = part.partition("=")
        try:
            w = float(val)
        except ValueError:
            w = float("nan")
        if not sep or not name.strip() or not (np.isfinite(w) and w > 0):
            raise ValueError(f"oversample {part!r}: expected PATTERN=WEIGHT with a weight > 0")
        table[name.strip()] = w
    return np.array([table.get(str(e), 1.0) for e in echo], np.float64)


def export_onnx(
    model: Any,
    path: str | Path,
    provenance: dict[str, Any],
    reject_above: float = 0.5,
    mask_threshold: float = 0.5,
    temperature: float = 1.0,
    size: int = INPUT,
    flip: bool = False,
) -> Path:
    """The trained refiner as ONNX (``input`` (B, 1, size, size) → ``mask_logits``,
    ``class_logits``; dynamic batch) with its metadata (``sdk/refiner.py``) and the artifact
    digest, written atomically. ``flip``: the runtime averages each crop with its mirror
    (``sdk.refiner.LesionRefiner.flip``)."""
    import torch

    from export.onnx_export import embed_props

    class _Two(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            o = self.m(x)
            return o["mask_logits"], o["class_logits"]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    md = {
        "role": ROLE,
        "input_size": size,
        "class_names": list(LABELS),
        "mean": float(model.input_mean[0]),
        "std": float(model.input_std[0]),
        "crop": {
            "scale": CropGeometry.scale,
            "pad_px": CropGeometry.pad_px,
            "shift": CropGeometry.shift,
        },
        "mask_threshold": mask_threshold,
        "reject_above": reject_above,
        "temperature": temperature,
        "flip": bool(flip),
        "provenance": provenance,
    }
    try:
        model.eval()
        torch.onnx.export(
            _Two(model),
            torch.zeros(1, 1, size, size),
            str(tmp),
            input_names=["input"],
            output_names=["mask_logits", "class_logits"],
            dynamic_axes={
                "input": {0: "batch"},
                "mask_logits": {0: "batch"},
                "class_logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        embed_props(tmp, {METADATA_KEY: json.dumps(md)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m export.refiner",
        description="Train the lesion refiner (sdk/refiner.py) behind a frame model on "
        "scanner-style phantoms and export it as ONNX.",
    )
    ap.add_argument("--model", default=None, help="frame model .onnx (default: the embedded one)")
    ap.add_argument("--out", required=True, help="run folder: crops.npz, history, refiner.onnx")
    ap.add_argument("--frames", type=int, default=3000, help="phantoms to crop (default 3000)")
    ap.add_argument("--epochs", type=int, default=18, help="training epochs (default 18)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--seed", type=int, default=TRAIN_SEED, help="first phantom seed")
    ap.add_argument(
        "--size",
        type=int,
        default=INPUT,
        help=f"the refiner's input side in pixels, a multiple of 32 (default {INPUT})",
    )
    ap.add_argument(
        "--augment", action="store_true", help="ultrasound augmentation on the training crops"
    )
    ap.add_argument(
        "--oversample",
        default=None,
        metavar="PATTERN=W,...",
        help="sample crops of lesions with these echo patterns W times as often, e.g. "
        "hyperechoic=4,isoechoic=2 (needs crops built by this version: they record it)",
    )
    ap.add_argument(
        "--flip",
        action="store_true",
        help="the runtime averages each crop with its left-right mirror (one call, twice the "
        "batch)",
    )
    ap.add_argument(
        "--ood-train",
        action="store_true",
        help="draw the phantoms in sdk.synthetic.OOD_TRAIN only (the OOD suite's twin)",
    )
    args = ap.parse_args(argv)
    if args.frames < 3 or args.epochs < 1:
        ap.error("--frames must be >= 3 and --epochs >= 1")
    if args.oversample:
        try:
            echo_weights([], args.oversample)
        except ValueError as e:
            ap.error(f"--{e}")
    if args.size < 32 or args.size % 32:
        ap.error(f"--size {args.size}: must be a multiple of 32 (edge_s's stride), e.g. 96 or 128")
    from sdk import default_model

    model_path = Path(args.model) if args.model else default_model()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    crops = out / "crops.npz"
    if crops.is_file():
        d = np.load(crops)
        X, M, Y = d["X"], d["M"], d["Y"]
        E = d["E"] if "E" in d.files else None
        if X.shape[1] != args.size:
            raise SystemExit(
                f"{crops} holds {X.shape[1]}x{X.shape[2]} crops, not --size {args.size}: "
                "use another --out folder or delete it"
            )
    else:
        from sdk import synthetic

        split = synthetic.OOD_TRAIN if args.ood_train else None
        echo: list[str] = []
        X, M, Y = build_crops(
            model_path,
            args.frames,
            args.seed,
            threads=args.threads,
            split=split,
            size=args.size,
            echo=echo,
        )
        E = np.array(echo)
        tmp = out / "crops.tmp.npz"
        np.savez_compressed(tmp, X=X, M=M, Y=Y, E=E)
        os.replace(tmp, crops)
    weights = None
    if args.oversample:
        if E is None:
            raise SystemExit(
                f"{crops} records no echo patterns (built by an older version): "
                "use another --out folder for --oversample"
            )
        try:
            weights = echo_weights(E, args.oversample)
        except ValueError as e:
            raise SystemExit(str(e)) from e
    print(f"{len(X)} crops: {np.bincount(Y, minlength=3).tolist()} normal / benign / malignant")
    with open(out / "history.jsonl", "w") as log:
        net, hist = train(
            X,
            M,
            Y,
            args.epochs,
            threads=args.threads,
            augment=args.augment,
            weights=weights,
            log=lambda s: (print(s, flush=True), log.write(s + "\n"), log.flush()),
        )
    prov = {
        "frame_model": model_path.name,
        "frames": args.frames,
        "seed": args.seed,
        "epochs": args.epochs,
        "augment": args.augment,
        "size": args.size,
        "oversample": args.oversample,
        "crops": len(X),
        "history": hist[-1],
    }
    print(export_onnx(net, out / "refiner.onnx", prov, size=args.size, flip=args.flip))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
