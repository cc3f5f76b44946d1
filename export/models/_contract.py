"""The model contract of DESIGN.md, for every architecture in the registry.

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
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["CLASS_NAMES", "MultiTaskModel"]

CLASS_NAMES: tuple[str, ...] = ("normal", "benign", "malignant")


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
