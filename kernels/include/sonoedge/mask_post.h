// Mask post-processing: mask logits (h, w) float32 -> sigmoid -> resampled (INTER_LINEAR
// convention) onto the ROI of a (H, W) frame -> uint8 mask by threshold (prob > threshold gives
// `value`, else 0); pixels outside the ROI are 0. One pass over the output.
#pragma once

#include <cstdint>

#include "sonoedge/common.h"
#include "sonoedge/preprocess.h"

namespace sonoedge {

struct MaskPostArgs {
  const float* logits;  // (h, w) contiguous
  int h, w;
  uint8_t* out;  // (H, W) with row pitch out_stride bytes
  int H, W;
  int64_t out_stride;
  Roi roi;
  float threshold;  // on probabilities, in [0, 1]
  uint8_t value;
};

// Throws InputError when the logits hold NaN.
void mask_post_cpu(const MaskPostArgs& a, int num_threads);

#if defined(SONOEDGE_WITH_CUDA)
void mask_post_cuda(const MaskPostArgs& a, uintptr_t stream);
#endif

}  // namespace sonoedge
