"""Mask-guided pooling, the one torch twin of :func:`sdk.kernels.pool_classify` (edge_s,
sam_mtl and every model with a mask-guided head use it).

``pooled[b] = Σ_p w(p) · up(f)(p) / (Σ_p w(p) + eps)``, ``up`` the bilinear resampling of the
features to the mask grid (``align_corners=False``: OpenCV's INTER_LINEAR). Pooling is linear
in ``up(f)``, so the upsampled features are never built: the mask is pushed onto the feature
grid by the transpose of the resampling, ``A_yᵀ W A_x`` -- two small MatMuls against constant
matrices in the exported graph, as the SDK's C++ / CUDA kernels compute it. The first edge_s
graphs built ``up(f)`` with a Resize (64 channels to the 64×64 mask): measured on the AVX2 EPYC
with ONNX Runtime's profiler, 665 µs of a ~4 ms FP32 call and 1320 µs of the INT8 one
(``benchmarks/results/default-latency-avx2.md`` has the before / after of the whole model).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POOL_EPS", "MaskGuidedHead", "linear_matrix", "mask_guided_pool", "masked_mean"]

#: ``eps`` of :func:`sdk.kernels.pool_classify` (its default): the two must agree.
POOL_EPS = 1e-6


@functools.lru_cache(maxsize=64)
def _linear_array(dst: int, src: int) -> np.ndarray:
    m = np.zeros((dst, src), np.float64)
    scale = src / dst
    for d in range(dst):
        s = max((d + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(s), src - 1)
        i1 = min(i0 + 1, src - 1)
        frac = s - i0
        m[d, i0] += 1.0 - frac
        m[d, i1] += frac
    m = m.astype(np.float32)
    m.flags.writeable = False
    return m


def linear_matrix(dst: int, src: int) -> torch.Tensor:
    """(dst, src) float32 matrix of 1-D bilinear resampling, half-pixel centres clamped at the
    borders (``F.interpolate(..., align_corners=False)`` and OpenCV's INTER_LINEAR).

    Built in NumPy, not torch: under ``torch.onnx.export`` the matrix is then one constant
    initializer of the graph (built with torch ops inside the trace, its loop became ~11,000
    ONNX nodes).
    """
    return torch.from_numpy(_linear_array(int(dst), int(src)).copy())


def masked_mean(feats: torch.Tensor, weight: torch.Tensor, eps: float = POOL_EPS) -> torch.Tensor:
    """``Σ w·f / (Σ w + eps)`` over pixels of the same grid: ``(B, C, H, W), (B, 1, H, W) →
    (B, C)`` (nmtnet's and acsnet's lesion pooling; no lesion gives 0, not NaN)."""
    return (feats * weight).sum(dim=(2, 3)) / (weight.sum(dim=(2, 3)) + eps)


def mask_guided_pool(
    features: torch.Tensor, weights: torch.Tensor, eps: float = POOL_EPS
) -> torch.Tensor:
    """``pooled = Σ_p w(p) up(f)(p) / (Σ_p w(p) + eps)`` -- the SDK's mask-guided pooling.

    Args:
        features: ``(B, F, hf, wf)``.
        weights: ``(B, 1, hm, wm)`` mask probabilities in [0, 1] (any grid; ``up`` resamples the
            features to it bilinearly).

    Returns ``(B, F)``. The upsampled features are never built: pooling is linear, so the mask is
    pushed onto the feature grid by the transpose of the resampling (``A_yᵀ W A_x``) instead.
    """
    hm, wm = int(weights.shape[-2]), int(weights.shape[-1])
    hf, wf = int(features.shape[-2]), int(features.shape[-1])
    w = weights[:, 0]
    ay = linear_matrix(hm, hf).to(w.dtype)
    ax = linear_matrix(wm, wf).to(w.dtype)
    w_feat = ay.t() @ w @ ax  # (B, hf, wf): each mask pixel's weight spread over its 4 cells
    num = (features * w_feat[:, None]).sum(dim=(2, 3))
    return num / (w.sum(dim=(1, 2))[:, None] + eps)


class MaskGuidedHead(nn.Module):
    """The mask-guided classification head of edge_s and sam_mtl (seed 001's MGC-A), the torch
    side of what :func:`sdk.kernels.pool_classify` computes:
    ``features = proj(x)``; ``pooled = mask_guided_pool(features, weights)``;
    ``class_logits = fc2(ReLU(fc1(pooled)))``.

    ``proj`` is the caller's projection onto the F feature channels (edge_s: 1x1 conv-BN-ReLU6,
    sam_mtl: 1x1 conv-BN-ReLU); ``fc1`` / ``fc2`` are what :meth:`head_weights` hands the SDK.
    """

    def __init__(self, proj: nn.Module, feature_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.proj = proj
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` the deepest map, ``weights`` ``(B, 1, hm, wm)`` mask probabilities →
        ``(class_logits (B, K), features (B, F, hf, wf))``."""
        features = self.proj(x)
        pooled = mask_guided_pool(features, weights)
        return self.fc2(F.relu(self.fc1(pooled))), features

    def head_weights(self) -> dict[str, torch.Tensor]:
        """``w1`` (H, F), ``b1`` (H,), ``w2`` (K, H), ``b2`` (K,): float32 copies, for
        :class:`sdk.kernels.MLPHead`."""
        return {
            "w1": self.fc1.weight.detach().float().clone(),
            "b1": self.fc1.bias.detach().float().clone(),
            "w2": self.fc2.weight.detach().float().clone(),
            "b2": self.fc2.bias.detach().float().clone(),
        }
