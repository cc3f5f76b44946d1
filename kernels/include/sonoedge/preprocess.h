// Fused frame preprocessing: uint8 gray/BGR/RGB frame -> ROI crop -> resize -> normalize ->
// channels {image, gdm, gdx, gdy} -> planar float32 / float16 (C, out_h, out_w).
//
//   gray  = luma(frame[roi]) resized to (out_h, out_w) (common.h conventions), in [0, 1]
//   image = (gray - mean[c]) / std[c]
//   gdx   = d/dx of gray smoothed by a Gaussian of sigma (scipy gaussian_filter order=(0, 1),
//           mode="nearest", truncate=4), likewise gdy; gdm = sqrt(gdx^2 + gdy^2)
//           (== scipy.ndimage.gaussian_gradient_magnitude); each then (v - mean[c]) / std[c].
#pragma once

#include <cstdint>

#include "sonoedge/common.h"

namespace sonoedge {

struct FrameView {
  const uint8_t* data;    // first pixel of the frame (not of the ROI)
  int height, width;      // full frame
  int channels;           // 1, 3 or 4 (4: alpha ignored)
  int64_t row_stride;     // bytes between rows
  int64_t col_stride;     // bytes between pixels
  int64_t ch_stride;      // bytes between channels of one pixel
  int color_order;        // ColorOrder (ignored for 1 channel)
};

struct Roi {
  int x, y, w, h;  // inside the frame, w, h >= 1
};

struct PreprocessParams {
  int out_h, out_w;
  int interp;                 // Interp (kArea requires out <= roi on both axes)
  float sigma;                // > 0, radius <= kMaxRadius
  int num_channels;           // 1..4
  int kinds[kMaxChannels];    // Channel per output plane
  float mean[kMaxChannels];
  float inv_std[kMaxChannels];
  int out_dtype;              // OutDType
};

// CPU driver. out: C * out_h * out_w elements of float32 or float16 (uint16 bits), contiguous.
// num_threads <= 1 runs on the calling thread.
void preprocess_cpu(const FrameView& frame, const Roi& roi, const PreprocessParams& p, void* out,
                    int num_threads);

// Gaussian gradient magnitude of a float32 (h, w) contiguous image into out (h, w).
void gradient_magnitude_cpu(const float* img, int h, int w, float sigma, float* out,
                            int num_threads);

#if defined(SONOEDGE_WITH_CUDA)
// CUDA driver: frame and out are device pointers; one kernel launch on `stream`
// (a cudaStream_t passed as an integer). The frame must be pixel-interleaved
// (col_stride == channels, ch_stride == 1) with any row pitch.
void preprocess_cuda(const FrameView& frame, const Roi& roi, const PreprocessParams& p, void* out,
                     uintptr_t stream);
#endif

}  // namespace sonoedge
