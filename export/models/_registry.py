"""Model registry: names -> factories, imported on first use.

A model file registers its variants with ``@register_model("name")`` at the bottom; the
registry maps every name to ``module:function`` so ``list_models()`` never imports torch-heavy
modules and ``create_model(name)`` imports only the one it needs.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
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
