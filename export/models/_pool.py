"""Mask-guided pooling, the one torch twin of :func:`sdk.kernels.pool_classify` (edge_s,
sam_mtl and every model with a mask-guided head use it).

``pooled[b] = Σ_p w(p) · up(f)(p) / (Σ_p w(p) + eps)``, ``up`` the bilinear resampling of the
features to the mask grid (``align_corners=False``: OpenCV's INTER_LINEAR). Pooling is linear
in ``up(f)``, so the upsampled features are never built: the mask is pushed onto the feature
grid by the transpose of the resampling, ``A_yᵀ W A_x`` -- two small MatMuls against constant
matrices in the exported graph, as the SDK's C++ / CUDA kernels compute it. The first edge_s
graphs built ``up(f)`` with a Resize (64 channels to the 64×64 mask): measured on the AVX2 EPYC
with ONNX Runtime's profiler, 665 µs of a ~4 ms FP32 call and 1320 µs of the INT8 one
(``benchmarks/results/pool-matmul-*.md`` has the before / after of the whole model).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["POOL_EPS", "linear_matrix", "mask_guided_pool"]

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
