"""Model registry: names -> factories, imported on first use.

A model file registers its variants with ``@register_model("name")`` at the bottom; the
registry maps every name to ``module:function`` so ``list_models()`` never imports torch-heavy
modules and ``create_model(name)`` imports only the one it needs.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from sdk.errors import InputError

__all__ = ["create_model", "list_models", "model_defaults", "register_model"]

# name -> "module:function". Plain data, so listing the models imports nothing.
_MODULES: dict[str, str] = {
    "mtl_oca": "export.models.mtl_oca:mtl_oca",
    "nmtnet": "export.models.nmtnet:nmtnet",
    "acsnet": "export.models.acsnet:acsnet",
    "sam_mtl": "export.models.sam_mtl:sam_mtl",
    "sam_mtl_vitb": "export.models.sam_mtl:sam_mtl_vitb",
    "samask_cltr": "export.models.samask_cltr:samask_cltr",
    "edge_s": "export.models.edge_s:edge_s",
}
_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a factory ``fn(**kw) -> nn.Module`` listed in ``_MODULES``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _FACTORIES[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Every registered architecture name, sorted."""
    return sorted(_MODULES)


def _factory(name: str) -> Callable[..., Any]:
    if name not in _MODULES:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    if name not in _FACTORIES:
        module, fn = _MODULES[name].split(":")
        importlib.import_module(module)
        if name not in _FACTORIES:  # the module must register what the table promises
            raise InputError(f"{module} did not register {name!r} (expected {fn})")
    return _FACTORIES[name]


def model_defaults(name: str) -> dict[str, Any]:
    """The keyword arguments of a model's factory with their defaults (its config)."""
    sig = inspect.signature(_factory(name))
    return {
        k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a model by name: ``create_model("edge_s", num_classes=3)``.

    Unknown keyword arguments raise :class:`sdk.errors.InputError` naming the valid ones.
    """
    fn = _factory(name)
    valid = model_defaults(name)
    unknown = set(kwargs) - set(valid)
    if unknown:
        raise InputError(f"{name} does not take {sorted(unknown)}; its options are {sorted(valid)}")
    model = fn(**kwargs)
    model.arch = name
    model.config = {**valid, **kwargs}
    return model


def with_input_normalization(
    model: Any, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Any:
    """Set a model's per-channel input normalization (``input_mean`` / ``input_std``, applied
    by ``sdk.kernels.preprocess``) from factory options; None keeps the class's own (for the
    from-scratch seeds: none, i.e. raw [0, 1] pixels). Both or neither, one value per input
    channel, finite, std > 0; an :class:`~sdk.errors.InputError` otherwise."""
    if mean is None and std is None:
        return model
    c = len(model.input_channels)
    try:
        m = tuple(float(v) for v in mean)  # type: ignore[union-attr]
        s = tuple(float(v) for v in std)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(
            f"input_mean and input_std must both be sequences of {c} numbers (one per channel "
            f"{list(model.input_channels)}), got {mean!r} / {std!r}"
        ) from None
    if len(m) != c or len(s) != c or not all(math.isfinite(v) for v in m + s) or min(s) <= 0:
        raise InputError(
            f"input_mean / input_std need {c} finite values (one per channel "
            f"{list(model.input_channels)}), std > 0; got {list(m)} / {list(s)}"
        )
    model.input_mean, model.input_std = m, s
    return model
