"""ResNet18 encoder for the multi-task teachers (NMTNet, ACSNet), in pure PyTorch.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385): the 18-layer variant -- a 7×7/2 stem and 3×3/2 max-pool, then four
stages of two ``BasicBlock`` each at widths 64 / 128 / 256 / 512 and strides 4 / 8 / 16 / 32.

Differences from torchvision's ``resnet18``:

* no classifier (``avgpool`` / ``fc``): :meth:`ResNet18Encoder.forward` returns the feature
  pyramid a U-shaped decoder needs;
* ``in_chans`` is free (the SDK feeds 1 to 4 planar channels, not RGB);
* ``norm="group"`` swaps every BatchNorm for GroupNorm (batch-size-independent training, which
  matters for the small batches of ultrasound data sets);
* **no pretrained weights.** The seeds start from ImageNet, but no ImageNet ResNet18 weights
  exist offline in this project, so these encoders train from scratch (He-normal init). Expect
  to need more epochs / stronger augmentation than the papers report.

Also home of :func:`norm_layer` and :class:`ConvNormAct`, shared by the CNN teachers' decoders.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "ConvNormAct",
    "Norm",
    "ResNet18Encoder",
    "gn_groups",
    "norm_layer",
    "up2",
]

Norm = Literal["batch", "group"]


def gn_groups(channels: int) -> int:
    """GroupNorm group count: up to 32 groups, but at least 4 channels per group (so narrow
    layers do not degenerate into InstanceNorm, which erases the global contrast of a frame)."""
    return math.gcd(channels, max(1, min(32, channels // 4)))


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """A 2-d normalization layer over ``channels`` feature maps.

    Raises:
        ValueError: ``norm`` is neither ``"batch"`` nor ``"group"``.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(gn_groups(channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")


class ConvNormAct(nn.Sequential):
    """``k×k`` conv (no bias: the norm has one) → norm → ReLU; ``(B, cin, H, W) → (B, cout,
    H/stride, W/stride)``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: Norm = "batch",
        act: bool = True,
    ) -> None:
        pad = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, pad, dilation=dilation, bias=False),
            norm_layer(norm, cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 convs with an identity (or 1×1 projection) shortcut; ``(B, cin, H, W) →
    (B, cout, H/stride, W/stride)``."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: Norm = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.downsample(x))


class ResNet18Encoder(nn.Module):
    """ResNet18 feature pyramid.

    ``forward(x)`` with ``x`` float32 ``(B, in_chans, H, W)``, H and W divisible by 32, returns
    five maps, finest first (``out_channels`` / ``reductions`` describe them)::

        stem   (B,  64, H/2,  W/2)    conv1 + norm + ReLU, before the max-pool
        layer1 (B,  64, H/4,  W/4)
        layer2 (B, 128, H/8,  W/8)
        layer3 (B, 256, H/16, W/16)
        layer4 (B, 512, H/32, W/32)

    (widths scale with ``width / 64``.)
    """

    reductions: tuple[int, ...] = (2, 4, 8, 16, 32)

    def __init__(self, in_chans: int = 1, norm: Norm = "batch", width: int = 64) -> None:
        super().__init__()
        widths = (width, width, 2 * width, 4 * width, 8 * width)
        self.out_channels: tuple[int, ...] = widths
        self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(widths[0], widths[1], 1, norm)
        self.layer2 = self._stage(widths[1], widths[2], 2, norm)
        self.layer3 = self._stage(widths[2], widths[3], 2, norm)
        self.layer4 = self._stage(widths[3], widths[4], 2, norm)
        self.reset_parameters()

    @staticmethod
    def _stage(cin: int, cout: int, stride: int, norm: Norm) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride, norm), BasicBlock(cout, cout, 1, norm))

    def reset_parameters(self) -> None:
        """He-normal convs, unit-scale norms. No zero-init of the last norm in each block (the
        "Bag of Tricks" variant): it would leave conv2 of every block without a gradient at
        step 0, and from-scratch training on small data gains nothing from it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.act(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [stem, c1, c2, c3, c4]


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (half-pixel centres): the U-Net decoders' step (acsnet, nmtnet)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
