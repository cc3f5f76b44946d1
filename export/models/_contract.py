"""The model contract (docs/ARCHITECTURE.md, "The model contract"), for every registered model.

Every model is an ``nn.Module`` subclassing :class:`MultiTaskModel`:

* ``forward(x)`` takes ``x`` float32 ``(B, C, h, w)`` -- C and the channel names are
  ``input_channels`` (names of :data:`sdk.kernels.CHANNELS`, produced by ``sdk.kernels.preprocess``)
  -- and returns a ``dict`` with, always,

  - ``"mask_logits"``: ``(B, 1, h', w')`` lesion logits (h', w' may be below h, w),
  - ``"class_logits"``: ``(B, num_classes)`` image-level class logits,

  and, for models with a mask-guided pooling head (``has_features = True``),

  - ``"features"``: ``(B, F, hf, wf)`` -- the SDK's pooling kernel computes per-lesion labels
    from them with the head weights returned by ``head_weights()``.

  The keys are fixed per architecture: ``output_names`` lists them in ONNX output order.
* ``class_names`` are :data:`CLASS_NAMES` unless a model says otherwise.
* ``input_size`` is the default (h, w); models accept any size divisible by ``size_divisor``.

The single-input architectures are built as :class:`EncoderDecoderModel`: encoder → decoder →
heads, the shape of segmentation_models_pytorch's ``SegmentationModel``, so every seed reads the
same way and ``forward`` / ``forward_train`` are written once.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from sdk.errors import InputError

__all__ = [
    "CLASS_NAMES",
    "LESION_PRIOR",
    "EncoderDecoderModel",
    "MultiTaskModel",
    "init_mask_logits",
    "with_mask_prior",
]

CLASS_NAMES: tuple[str, ...] = ("normal", "benign", "malignant")

#: Fraction of lesion pixels in the training frames: 0.040 over 150 scanner-style phantoms at
#: 256x256 (seeds 9000-9149, a third of them normal; 0.060 over the frames with a lesion).
LESION_PRIOR = 0.04


def init_mask_logits(conv: nn.Conv2d, prior: float = LESION_PRIOR, channel: int = 0) -> None:
    """Start a lesion-logit convolution at the lesion prior: weights N(0, 0.01), the bias of
    output ``channel`` at ``log(prior / (1 - prior))``, the other biases 0.

    Why (issue #15, ``benchmarks/results/seed-ablation-mtl_oca.md``): with the bias at 0 every
    pixel starts at p = 0.5 while ~96 % of the pixels are background; the BCE's first steps then
    drive all logits far negative, where the sigmoid saturates and the Dice term's gradient on
    the lesion pixels vanishes -- the from-scratch seeds ended their first epochs with all-empty
    masks. Started at the prior, the BCE has no bulk push to make and the lesion signal acts from
    step 0 (the "prior probability" initialization of Lin et al., "Focal Loss for Dense Object
    Detection", ICCV 2017, sec. 4.1).
    """
    if not (isinstance(prior, int | float) and 0.0 < prior < 1.0):
        raise InputError(f"the lesion prior must be a probability in (0, 1), got {prior!r}")
    if conv.bias is None:
        raise InputError("init_mask_logits needs a convolution with a bias")
    nn.init.normal_(conv.weight, std=0.01)
    with torch.no_grad():
        conv.bias.zero_()
        conv.bias[channel] = math.log(prior / (1.0 - prior))


class MultiTaskModel(nn.Module):
    """Base of every registered model (see the module docstring for the contract)."""

    input_channels: tuple[str, ...] = ("image",)
    input_size: tuple[int, int] = (256, 256)
    #: Per-channel normalization applied by sdk.kernels.preprocess: (v - mean) / std.
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    size_divisor: int = 32
    class_names: tuple[str, ...] = CLASS_NAMES
    has_features: ClassVar[bool] = False
    #: ``forward_train`` also returns ``aux_mask_logits`` (deep supervision of intermediate
    #: lesion maps: :class:`export.losses.TrainingLoss`'s ``aux_weight``).
    has_aux_masks: ClassVar[bool] = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return (
            ("mask_logits", "class_logits", "features")
            if self.has_features
            else (
                "mask_logits",
                "class_logits",
            )
        )

    #: Input size used by the contract tests (small, so the suite runs in minutes on 2 cores).
    test_input_size: tuple[int, int] = (64, 64)

    def example_input(
        self, batch: int = 1, size: tuple[int, int] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A random input (a tensor, or a tuple for multi-input models such as samask_cltr)."""
        return torch.rand(batch, len(self.input_channels), *(size or self.input_size))

    def head_weights(self) -> dict[str, torch.Tensor]:
        """w1 (H, F), b1 (H,), w2 (C, H), b2 (C,) of the mask-guided head (features models)."""
        raise NotImplementedError(f"{type(self).__name__} has no mask-guided pooling head")

    def mask_logit_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """``(conv, channel)`` for every convolution whose output channel is a lesion logit (the
        mask head's last conv, deep-supervision side heads): what :func:`with_mask_prior`
        starts at the lesion prior. None by default (e.g. a pretrained head)."""
        return []


class EncoderDecoderModel(MultiTaskModel):
    """A multi-task model as encoder → decoder → heads.

    Subclasses say what each stage is; the composition is written here once:

    * :meth:`encode` ``(x)`` → what the encoder hands on (default ``self.encoder(x)``: a list of
      stage outputs for the CNNs);
    * :meth:`decode` ``(encoded)`` → what the heads read (default ``self.decoder(encoded)``);
    * :meth:`heads` ``(encoded, decoded)`` → the dict of :meth:`forward_train`: the contract's
      outputs plus training-only ones (``aux_mask_logits`` and the like).

    :meth:`forward` returns only the contract's outputs, in :attr:`output_names` order -- the
    graph ONNX export traces; the trainer calls :meth:`forward_train` when it needs the extras.
    Parameter names are the subclasses' own (the stages are methods, not wrapper modules), so
    checkpoints keep their keys.
    """

    def encode(self, x: torch.Tensor) -> Any:
        return self.encoder(x)

    def decode(self, encoded: Any) -> Any:
        return self.decoder(encoded)

    def heads(self, encoded: Any, decoded: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define heads()")

    def forward_train(self, x: torch.Tensor) -> dict[str, Any]:
        encoded = self.encode(x)
        return self.heads(encoded, self.decode(encoded))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.forward_train(x)
        return {k: out[k] for k in self.output_names}


def with_mask_prior(model: MultiTaskModel, prior: float | None) -> MultiTaskModel:
    """Start every lesion-logit convolution of a freshly built ``model`` at ``prior``
    (:func:`init_mask_logits`); None leaves them as built. Returns ``model``."""
    if prior is not None:
        convs = model.mask_logit_convs()
        if not convs:
            raise InputError(f"{type(model).__name__} declares no lesion-logit convolution")
        for conv, channel in convs:
            init_mask_logits(conv, prior, channel)
    return model
