// Mask-guided pooling + classifier head.
//
// features (F, hf, wf) float32, weights (hm, wm) float32 in [0, 1] (mask probabilities),
// labels (hm, wm) int32 in [0, K] or null. Row 0 is the image-level row (every pixel, weight w),
// rows 1..K are the lesions (pixels whose label == k).
//
//   pooled[k, f] = sum_p w(p) [label(p) == k] up(f)(p) / (sum_p w(p) [label(p) == k] + eps)
//
// where up(f) is feature channel f resampled to the mask grid with the INTER_LINEAR convention
// (torch interpolate bilinear, align_corners=False). up(f) is never materialized: each mask pixel
// scatters its weight onto the <= 4 feature cells it interpolates from, then one dot product per
// (row, channel). When the grids are equal this is plain weighted average pooling.
//
// Head (optional): probs = softmax(W2 relu(W1 pooled + b1) + b2), W1 (H, F), W2 (C, H).
#pragma once

#include <cstdint>

#include "sonoedge/common.h"

namespace sonoedge {

struct PoolArgs {
  const float* features;  // (F, hf, wf) contiguous
  int F, hf, wf;
  const float* weights;  // (hm, wm) contiguous
  int hm, wm;
  const int32_t* labels;  // (hm, wm) contiguous or null
  int num_labels;         // K (0 when labels is null)
  float eps;
  // head, all null for no head
  const float* w1;
  const float* b1;
  const float* w2;
  const float* b2;
  int hidden, classes;
};

// Writes pooled ((K + 1) * F) and, with a head, probs ((K + 1) * classes) and logits.
// Throws InputError on NaN / out-of-range weights or labels.
void pool_classify_cpu(const PoolArgs& a, float* pooled, float* logits, float* probs);

#if defined(SONOEDGE_WITH_CUDA)
// One launch: one block per row (image + K lesions); pooling and head fused.
// All pointers are device pointers; pooled / logits may be null.
void pool_classify_cuda(const PoolArgs& a, float* pooled, float* logits, float* probs,
                        uintptr_t stream);
#endif

}  // namespace sonoedge
