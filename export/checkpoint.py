"""Training checkpoints: safetensors tensors + a JSON config, never a pickle.

A checkpoint ``STEM`` is two files written side by side:

* ``STEM.safetensors`` -- the model's ``state_dict`` as ``model.<name>`` and the optimizer's
  tensor state as ``optim.<param index>.<key>`` (e.g. Adam's ``exp_avg``);
* ``STEM.json`` -- what is needed to rebuild and check the model: ``arch``, model ``config``
  (the factory's keyword arguments), ``class_names``, ``input_channels``, ``input_size``,
  ``normalization`` (per-channel mean / std for :func:`sdk.kernels.preprocess`), ``epoch``,
  the optimizer's type, ``param_groups`` and non-tensor state, free-form ``train`` info, and the
  SHA-256 of the tensor file (a JSON paired with another run's weights is refused).

The JSON is written last, each file atomically, so a crash mid-save leaves the previous
checkpoint intact. Loading builds the model with ``create_model(arch, **config)`` (ImageNet
weights off: the checkpoint has them) and loads strictly; any disagreement between the config
and the architecture or its weights raises :class:`sdk.errors.ModelError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from export.models import list_models, model_defaults
from export.models._registry import create_model
from sdk.errors import InputError, ModelError

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "checkpoint_paths",
    "load_checkpoint",
    "normalization",
    "save_checkpoint",
]

FORMAT = "sonoedge-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on the requested device) and its state.

    ``optimizer_state`` is a ``torch.optim.Optimizer.state_dict()`` ready for
    ``load_state_dict`` (None when none was saved); ``meta`` is the JSON as written.
    """

    model: nn.Module
    epoch: int
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(STEM.safetensors, STEM.json)`` from the stem or either file's path."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def normalization(model: nn.Module) -> dict[str, list[float]]:
    """Per-channel ``mean`` / ``std`` the model expects from :func:`sdk.kernels.preprocess`
    (``input_mean`` / ``input_std`` when the model declares them, else 0 / 1)."""
    c = len(model.input_channels)
    # ``MultiTaskModel`` declares None for "no normalization": treat it like an absent value.
    mean = tuple(getattr(model, "input_mean", None) or (0.0,) * c)
    std = tuple(getattr(model, "input_std", None) or (1.0,) * c)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _json_safe(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    train: dict[str, Any] | None = None,
) -> Path:
    """Write ``STEM.safetensors`` + ``STEM.json`` (see the module docstring); returns the JSON.

    ``model`` must come from :func:`export.models.create_model` (it carries ``arch`` and
    ``config``). ``train``: JSON-safe run information stored as is.
    """
    arch = getattr(model, "arch", None)
    if arch is None:
        raise InputError("save_checkpoint needs a model built by export.models.create_model")
    st_path, js_path = checkpoint_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
    }
    opt_meta: dict[str, Any] | None = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu().clone().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        opt_meta = {
            "type": type(optimizer).__name__,
            "param_groups": _json_safe(sd["param_groups"]),
            "tuple_keys": sorted(
                {k for g in sd["param_groups"] for k, v in g.items() if isinstance(v, tuple)}
            ),
            "scalars": _json_safe(scalars),
        }
    tmp = st_path.with_name(st_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "arch": str(arch)})
    os.replace(tmp, st_path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": _json_safe(getattr(model, "config", {})),
        "class_names": list(model.class_names),
        "input_channels": list(model.input_channels),
        "input_size": list(model.input_size),
        "normalization": normalization(model),
        "epoch": int(epoch),
        "weights": st_path.name,
        "weights_sha256": _sha256(st_path),
        "optimizer": opt_meta,
        "train": _json_safe(train or {}),
    }
    tmp = js_path.with_name(js_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, js_path)
    return js_path


def _read_meta(js_path: Path) -> dict[str, Any]:
    if not js_path.is_file():
        raise ModelError(
            f"checkpoint config {js_path} does not exist; pass a checkpoint written "
            "by export.checkpoint.save_checkpoint (STEM, STEM.json or "
            "STEM.safetensors)"
        )
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{js_path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{js_path} is not a {FORMAT} config")
    if meta.get("version") != VERSION:
        raise ModelError(
            f"{js_path} has checkpoint version {meta.get('version')}; this "
            f"sonoedge reads version {VERSION}: upgrade sonoedge or re-save it"
        )
    return meta


def _config(meta: dict[str, Any], where: Path) -> tuple[str, dict[str, Any]]:
    arch = meta.get("arch")
    if arch not in list_models():
        raise ModelError(f"{where}: architecture {arch!r} is unknown; known: {list_models()}")
    defaults = model_defaults(arch)
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ModelError(f"{where}: 'config' must be an object of {arch} options")
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ModelError(
            f"{where}: config keys {unknown} are not options of {arch} (its options: "
            f"{sorted(defaults)}); the config does not match the architecture"
        )
    # JSON has no tuples: give back the factory's types.
    config = {
        k: tuple(v) if isinstance(defaults[k], tuple) and isinstance(v, list) else v
        for k, v in config.items()
    }
    if "pretrained" in defaults:
        config["pretrained"] = False  # the checkpoint holds the weights
    return arch, config


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint and load its weights (strict), in eval mode.

    Raises:
        ModelError: missing / corrupt files, unknown architecture, a config that the architecture
            does not accept or whose weights do not fit, mismatched class names / channels.
    """
    st_path, js_path = checkpoint_paths(path)
    meta = _read_meta(js_path)
    arch, config = _config(meta, js_path)
    if not st_path.is_file():
        raise ModelError(f"checkpoint weights {st_path} are missing (config {js_path} exists)")
    if meta.get("weights_sha256") != _sha256(st_path):
        raise ModelError(
            f"{st_path} is not the tensor file {js_path.name} was written with "
            "(SHA-256 differs); restore the matching pair"
        )
    try:
        model = create_model(arch, **config)
    except InputError as exc:
        raise ModelError(f"{js_path}: the config does not build {arch}: {exc}") from exc
    for key in ("class_names", "input_channels"):
        if list(getattr(model, key)) != list(meta.get(key, [])):
            raise ModelError(
                f"{js_path}: {key} {meta.get(key)} do not match the {arch} built "
                f"from its config ({list(getattr(model, key))})"
            )
    try:
        tensors = load_file(str(st_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{st_path} is not a readable safetensors file: {exc}") from exc
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{st_path}: the weights do not fit {arch} with config {config}: {exc}"
        ) from exc
    size = meta.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ModelError(f"{js_path}: input_size must be [h, w], got {size!r}")
    model.input_size = (size[0], size[1])
    model.to(device).eval()
    return Checkpoint(
        model,
        int(meta.get("epoch", 0)),
        meta,
        _optimizer_state(meta.get("optimizer"), tensors),
        meta.get("train", {}),
    )


def _optimizer_state(
    opt_meta: dict[str, Any] | None, tensors: dict[str, torch.Tensor]
) -> dict[str, Any] | None:
    if opt_meta is None:
        return None
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in opt_meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    tuple_keys = set(opt_meta.get("tuple_keys", []))
    groups = [
        {k: tuple(v) if k in tuple_keys else v for k, v in g.items()}
        for g in opt_meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
