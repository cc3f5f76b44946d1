"""Multi-task training of any registered architecture (teachers and the edge student).

``train(arch, data, out_dir, ...)`` writes into ``out_dir``:

* ``last.{safetensors,json}`` after every epoch (weights + optimizer, see :mod:`export.checkpoint`)
  and ``best.{safetensors,json}`` at the best validation score (mean of Dice and accuracy);
* ``metrics.json``: the run settings, the data summary and one record per epoch (train losses,
  validation losses, Dice, IoU, accuracy, macro AUC, per-class sensitivity / specificity,
  confusion matrix, learning rate, seconds), all through :mod:`sdk.metrics`;
* ``curves.png``: losses and validation metrics per epoch.

Loss: ``λ (BCE + Dice) + (1 - λ) CE`` with balanced class weights (:mod:`export.losses`).
AdamW, cosine learning-rate decay per epoch. Validation: a stratified held-out split of a folder,
or phantoms with other seeds for ``"synthetic"``; masks compared at the model's mask resolution
(prediction = ``sigmoid > 0.5``, target = lesion fraction > 0.5 per cell).

Determinism: the shuffling of epoch ``e`` uses a generator seeded by ``(seed, e)``, augmentation by
``(seed, e, index)``, torch's global RNG is reseeded per epoch; so a run stopped and resumed
(``resume=True``) ends with the same weights as an uninterrupted one on the same device.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from export.checkpoint import checkpoint_paths, load_checkpoint, normalization, save_checkpoint
from export.data import (
    Augment,
    FrameProvider,
    FrameSubset,
    MultiTaskDataset,
    SyntheticFrames,
    describe,
    open_frames,
    resolve_split,
    stratified_split,
)
from export.data import frame_sizes as data_frame_sizes
from export.losses import MultiTaskLoss, balanced_class_weights
from export.models import create_model, list_models
from sdk import metrics
from sdk.errors import BackendUnavailableError, InputError

__all__ = ["evaluate", "resolve_device", "train"]

# Settings that must be equal when resuming (epochs may grow).
_RESUME_KEYS = (
    "arch",
    "data",
    "size",
    "frame_sizes",
    "seed",
    "n_train",
    "n_val",
    "val_fraction",
    "batch_size",
    "lr",
    "lam",
    "weight_decay",
    "class_weighting",
    "augment",
    "model_kwargs",
    "split",
)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        BackendUnavailableError: CUDA asked for but not usable here.
        InputError: an unknown device string.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or a "
                "CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{dev} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type != "cpu":
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _size(
    size: int | Sequence[int] | None, default: tuple[int, int], divisor: int
) -> tuple[int, int]:
    if size is None:
        hw = default
    elif isinstance(size, int | np.integer) and not isinstance(size, bool):
        hw = (int(size), int(size))
    else:
        try:
            h, w = (int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InputError(f"size must be an int or (h, w), got {size!r}") from None
        hw = (h, w)
    if min(hw) < divisor or hw[0] % divisor or hw[1] % divisor:
        raise InputError(f"size {hw} must be positive multiples of {divisor} for this model")
    return hw


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    prev = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _loader(
    ds: MultiTaskDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int,
    pin: bool,
) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=num_workers,
        drop_last=shuffle and len(ds) > batch_size,
        pin_memory=pin,
        persistent_workers=False,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    criterion: MultiTaskLoss | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Validation metrics of ``model`` over ``loader`` (items ``(x, mask, label)``).

    Returns a JSON-safe dict: ``dice``, ``iou`` (means over frames, masks at the model's mask
    resolution, both-empty frames count 1), ``dice_lesion`` (mean over frames with a lesion;
    None without any), ``accuracy``, ``macro_auc`` (None when undefined),
    ``sensitivity`` / ``specificity`` (per class, None where undefined), ``confusion``, and the
    validation losses when a criterion is given.
    """
    model.eval()
    dev = torch.device(device)
    dices: list[float] = []
    ious: list[float] = []
    lesion: list[bool] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    sums: dict[str, float] = {}
    n = 0
    for x, m, y in loader:
        x, m, y = x.to(dev), m.to(dev), y.to(dev)
        out = model(x)
        if criterion is not None:
            _, parts = criterion(out, m, y)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(y)
        n += len(y)
        pred = (torch.sigmoid(out["mask_logits"]) > 0.5).cpu().numpy()
        true = (m > 0.5).cpu().numpy()
        for p, t in zip(pred, true, strict=True):
            dices.append(metrics.dice(p[0], t[0]))
            ious.append(metrics.iou(p[0], t[0]))
            lesion.append(bool(t.any()))
        probs.append(torch.softmax(out["class_logits"].float(), 1).cpu().numpy())
        labels.append(y.cpu().numpy())
    if n == 0:
        raise InputError("the validation split is empty; add data or lower val_fraction")
    y_true = np.concatenate(labels)
    p = np.concatenate(probs)
    k = p.shape[1]
    y_pred = p.argmax(1)
    pc = metrics.per_class(y_true, y_pred, k)
    auc = metrics.macro_auc(y_true, p)

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in a]

    res: dict[str, Any] = {
        "dice": float(np.mean(dices)),
        "iou": float(np.mean(ious)),
        # Lesion frames only: the mean above counts every correctly empty normal frame as 1.
        "dice_lesion": float(np.mean(np.asarray(dices)[lesion])) if any(lesion) else None,
        "accuracy": metrics.accuracy(y_true, y_pred),
        "macro_auc": None if not np.isfinite(auc) else auc,
        "sensitivity": clean(pc["sensitivity"]),
        "specificity": clean(pc["specificity"]),
        "confusion": metrics.confusion_matrix(y_true, y_pred, k).tolist(),
    }
    res.update({f"loss_{k}": v / n for k, v in sums.items()})
    return res


def _train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    criterion: MultiTaskLoss,
    opt: torch.optim.Optimizer,
    dev: torch.device,
    desc: str,
    progress: bool,
) -> dict[str, float]:
    """One pass over ``loader``; returns the sample-weighted mean of each loss part."""
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    pin = dev.type == "cuda"
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch")
    for x, m, y in bar:
        x, m, y = x.to(dev, non_blocking=pin), m.to(dev, non_blocking=pin), y.to(dev)
        total, parts = criterion(model(x), m, y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{parts['total']:.3f}")
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _summary_line(desc: str, record: dict[str, Any]) -> str:
    val = record["val"]
    auc = "n/a" if val["macro_auc"] is None else f"{val['macro_auc']:.3f}"
    return (
        f"{desc}: loss {record['train'].get('total', float('nan')):.4f} "
        f"val dice {val['dice']:.3f} iou {val['iou']:.3f} acc {val['accuracy']:.3f} "
        f"auc {auc} ({record['seconds']:.1f} s)"
    )


def _score(val: dict[str, Any]) -> float:
    """Model selection: mean of Dice and accuracy (both in [0, 1], both always defined)."""
    return 0.5 * (val["dice"] + val["accuracy"])


def _plot(history: list[dict[str, Any]], path: Path, title: str) -> None:
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] + 1 for h in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train"]["total"] for h in history], "o-", label="train")
    ax1.plot(ep, [h["val"]["loss_total"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="λ(BCE + Dice) + (1 - λ)CE", title="loss")
    ax1.legend()
    for key in ("dice", "iou", "accuracy", "macro_auc"):
        vals = [np.nan if h["val"][key] is None else h["val"][key] for h in history]
        ax2.plot(ep, vals, "o-", label=key)
    ax2.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _frame_sizes_json(frame_sizes: Sequence[tuple[int, int]] | None) -> list[list[int]] | None:
    """``frame_sizes`` validated, as JSON (None stays None: frames at the model's size)."""
    return None if frame_sizes is None else [list(s) for s in data_frame_sizes(frame_sizes)]


def _data(
    data: str | Path,
    class_names: Sequence[str],
    size: tuple[int, int] | Sequence[tuple[int, int]],
    n_train: int,
    n_val: int | None,
    val_fraction: float,
    seed: int,
    split: Any = None,
) -> tuple[FrameProvider, FrameProvider]:
    """(train, validation) frames; ``size`` is the phantoms' size or size mix."""
    if str(data) == "synthetic":
        nv = n_val if n_val is not None else max(len(class_names), round(n_train * val_fraction))
        # Validation phantoms come from another seed stream: no frame is shared with training.
        return (
            SyntheticFrames(n_train, size, seed, class_names, split=split),
            SyntheticFrames(
                _positive_int(nv, "n_val"), size, seed + 7_919_003, class_names, split=split
            ),
        )
    frames = open_frames(data, class_names, seed=seed)
    tr, va = stratified_split(frames.labels, val_fraction, seed)
    return FrameSubset(frames, tr), FrameSubset(frames, va)


def _split_json(split: Any, data: str | os.PathLike[str]) -> Any:
    """``split`` as the run records it (None, a name, or the split's dict); refused for
    folder data, whose frames have no generator factors to select."""
    if split is None:
        return None
    if str(data) != "synthetic":
        raise InputError(f"split selects synthetic phantoms; {data} is a dataset folder")
    if isinstance(split, str):
        resolve_split(split)  # an unknown name fails here, before anything is written
        return split
    return json.loads(json.dumps(resolve_split(split).to_dict()))


def _resume_point(
    resumed: Any, run: dict[str, Any], out: Path, keys: tuple[str, ...] = ()
) -> tuple[int, list[dict[str, Any]], float]:
    """(first epoch to run, metrics history before it, best score so far) of a resumed run;
    refuses to resume with settings that differ from the saved run's."""
    if resumed is None:
        return 0, [], -math.inf
    saved = resumed.train.get("run", {})
    diff = {k: (saved.get(k), run[k]) for k in keys or _RESUME_KEYS if saved.get(k) != run[k]}
    if diff:
        raise InputError(
            f"cannot resume {out}: settings differ from the saved run "
            f"(saved, given): {diff}; resume with the saved settings"
        )
    start = resumed.epoch + 1
    history: list[dict[str, Any]] = []
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        history = [h for h in json.loads(metrics_path.read_text())["epochs"] if h["epoch"] < start]
    return start, history, max((_score(h["val"]) for h in history), default=-math.inf)


def train(
    arch: str,
    data: str | os.PathLike[str] = "synthetic",
    out_dir: str | os.PathLike[str] = "runs/train",
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "auto",
    *,
    size: int | tuple[int, int] | None = None,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
    n_train: int = 600,
    n_val: int | None = None,
    val_fraction: float = 0.2,
    lam: float = 0.6,
    weight_decay: float = 1e-4,
    class_weighting: bool = True,
    augment: bool | str = True,
    model_kwargs: dict[str, Any] | None = None,
    num_workers: int = 0,
    threads: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    split: Any = None,
) -> Path:
    """Train ``arch`` on ``data`` and return the JSON of its best checkpoint.

    Args:
        arch: a registered architecture (:func:`export.models.list_models`).
        data: ``"synthetic"``, a BUSI folder, a folder with ``labels.csv`` or a CSV file.
        out_dir: run folder (created). Refused if it already holds a run, unless ``resume``.
        epochs: total epochs of the run (a resumed run continues up to it).
        batch_size, lr, weight_decay: AdamW settings; the learning rate decays on a cosine.
        seed: model init, data order, augmentation, synthetic frames and the split.
        resume: continue from ``out_dir/last`` with the same settings (``epochs`` may grow);
            starts afresh when ``out_dir`` holds no checkpoint yet.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``.
        size: input side or ``(h, w)`` (default: the model's ``input_size``); synthetic frames
            are drawn at this size unless ``frame_sizes`` says otherwise.
        frame_sizes: phantom sizes ``[(H, W), ...]`` to draw synthetic frames at (each frame
            one of them, by its seed), e.g. scanner sizes, so the model learns from what the
            serving path makes of such frames (default: ``size``).
        n_train, n_val: synthetic frame counts (n_val default ``val_fraction * n_train``).
        val_fraction: held-out fraction of a folder dataset (stratified by class).
        lam: λ of ``λ L_seg + (1 - λ) L_cls``.
        class_weighting: balanced class weights in the CE (from the training split's counts).
        augment: random flips / rotation / crop / gain / speckle on the training frames;
            ``"ultrasound"`` adds :class:`export.us_augment.UltrasoundAugment`
            (:meth:`export.data.Augment.from_option`).
        model_kwargs: factory options (e.g. ``{"pretrained": False}``).
        num_workers: DataLoader worker processes (0 = in the main process).
        threads: torch CPU threads for this call (restored after); None keeps torch's setting.
            On a CPU shared with other jobs, 1 is often fastest: OpenMP threads that wait on
            each other stall badly when cores are oversubscribed.
        progress: tqdm progress bars.
        stop_after: train at most this many epochs in this call, then return (a time-sliced
            job continues with ``resume=True``).
        split: synthetic data only: draw training and validation phantoms inside this region
            of the generator's factors (a :class:`sdk.synthetic.Split`, its dict, or a name
            such as ``"ood-train"``: every factor the OOD suite tests held out, so
            ``benchmarks/ood_suite.py`` scores the run on regions it never saw).

    Returns:
        Path of ``out_dir/best.json`` (load it with :func:`export.checkpoint.load_checkpoint`).

    Raises:
        InputError: unknown arch, bad settings, empty data, an occupied ``out_dir``, settings
            that differ from the run being resumed.
        sdk.errors.SourceError: dataset folder problems.
        BackendUnavailableError: CUDA asked for and absent.
    """
    if arch not in list_models():
        raise InputError(f"unknown model {arch!r}; choose from {', '.join(list_models())}")
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    n_train = _positive_int(n_train, "n_train")
    num_workers = int(num_workers)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if stop_after is not None:
        stop_after = _positive_int(stop_after, "stop_after")
    if threads is not None:
        threads = _positive_int(threads, "threads")
    with _torch_threads(threads):
        dev = resolve_device(device)
        out = Path(out_dir)
        _, last_js = checkpoint_paths(out / "last")
        model_kwargs = dict(model_kwargs or {})

        resumed = None
        if last_js.exists():
            if not resume:
                raise InputError(
                    f"{out} already holds a training run ({last_js.name}); pass resume=True "
                    "(--resume) to continue it, or choose another output folder"
                )
            resumed = load_checkpoint(last_js, device="cpu")
            model = resumed.model
        else:
            torch.manual_seed(seed)
            model = create_model(arch, **model_kwargs)
        hw = _size(size, tuple(model.input_size), int(getattr(model, "size_divisor", 32)))
        model.input_size = hw
        run = {
            "arch": arch,
            "data": str(data),
            "size": list(hw),
            "frame_sizes": _frame_sizes_json(frame_sizes),
            "seed": int(seed),
            "n_train": n_train,
            "n_val": n_val,
            "val_fraction": float(val_fraction),
            "batch_size": batch_size,
            "lr": float(lr),
            "lam": float(lam),
            "weight_decay": float(weight_decay),
            "class_weighting": bool(class_weighting),
            "augment": augment if isinstance(augment, str) else bool(augment),
            "model_kwargs": json.loads(json.dumps(model_kwargs)),
            "epochs": epochs,
            "split": _split_json(split, data),
        }
        start, history, best = _resume_point(resumed, run, out)
        out.mkdir(parents=True, exist_ok=True)

        train_frames, val_frames = _data(
            data, model.class_names, frame_sizes or hw, n_train, n_val, val_fraction, seed, split
        )
        if len(train_frames) == 0 or len(val_frames) == 0:
            raise InputError(f"{data}: no frame to train or validate on; add data")
        x0 = model.example_input(1, hw)
        if isinstance(x0, tuple):
            raise InputError(
                f"{arch} takes {len(x0)} inputs; train() feeds single-input models only"
            )
        model.to(dev)
        model.eval()
        with torch.no_grad():
            mask_hw = tuple(model(x0.to(dev))["mask_logits"].shape[-2:])
        norm = normalization(model)
        ds_args = dict(
            input_size=hw,
            input_channels=model.input_channels,
            mean=norm["mean"],
            std=norm["std"],
            mask_size=mask_hw,
            seed=seed,
        )
        train_ds = MultiTaskDataset(train_frames, augment=Augment.from_option(augment), **ds_args)
        val_ds = MultiTaskDataset(val_frames, augment=None, **ds_args)

        counts = np.bincount(np.asarray(train_frames.labels), minlength=len(model.class_names))
        weights = balanced_class_weights(counts.tolist()) if class_weighting else None
        criterion = MultiTaskLoss(lam, weights).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        if resumed is not None and resumed.optimizer_state is not None:
            opt.load_state_dict(resumed.optimizer_state)
        if dev.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        pin = dev.type == "cuda"
        summary = {
            "train": describe(train_frames),
            "val": describe(val_frames),
            "class_weights": None if weights is None else weights.tolist(),
            "mask_size": list(mask_hw),
            "device": str(dev),
        }

        end = epochs if stop_after is None else min(epochs, start + stop_after)
        for epoch in range(start, end):
            t0 = time.perf_counter()
            # Cosine decay, a pure function of the epoch: nothing to restore on resume.
            lr_e = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
            for g in opt.param_groups:
                g["lr"] = lr_e
            torch.manual_seed(seed * 1_000_003 + epoch)
            train_ds.set_epoch(epoch)
            loader = _loader(train_ds, batch_size, True, seed, epoch, num_workers, pin)
            desc = f"{arch} epoch {epoch + 1}/{epochs}"
            train_loss = _train_epoch(model, loader, criterion, opt, dev, desc, progress)
            val = evaluate(
                model, _loader(val_ds, batch_size, False, seed, 0, num_workers, pin), criterion, dev
            )
            record = {
                "epoch": epoch,
                "lr": lr_e,
                "seconds": time.perf_counter() - t0,
                "train": train_loss,
                "val": val,
            }
            history.append(record)
            info = {"run": run, "val": val}
            save_checkpoint(out / "last", model, epoch=epoch, optimizer=opt, train=info)
            if _score(val) > best:
                best = _score(val)
                save_checkpoint(out / "best", model, epoch=epoch, train=info)
            best_epoch = max(history, key=lambda h: _score(h["val"]))["epoch"]
            _write_json(
                out / "metrics.json",
                {"run": run, "data": summary, "best_epoch": best_epoch, "epochs": history},
            )
            _plot(history, out / "curves.png", f"{arch} on {data}")
            if progress:
                tqdm.write(_summary_line(desc, record))
        if not (out / "best.json").exists():
            raise InputError(f"{out}: no epoch was trained (epochs={epochs} already reached?)")
        return out / "best.json"
