// Lesion components of a mask-logit grid: sigmoid -> threshold -> 8-connected components ->
// per-component statistics -> components too small for a lesion dropped -> labels 1..K in
// raster order of each component's first pixel.
//
// Runs on the model's grid (32x32 .. 256x256), before anything is resampled to the frame: the
// labels and probabilities feed the mask-guided pooling kernel, the statistics the lesion boxes.
#pragma once

#include <cstdint>
#include <vector>

#include "sonoedge/common.h"

namespace sonoedge {

struct ComponentStats {
  int x, y, w, h, area;  // bounding box and pixel count on the grid
};

// logits (h, w) contiguous -> prob (h, w) = sigmoid(logits), labels (h, w) int32 (0 background,
// 1..K kept components), stats of the kept components (index k - 1 for label k). A component is
// kept when area * sx * sy >= min_area (sx, sy: frame pixels per grid cell; the product in
// double, in that order, as the Python reference computes it). Throws InputError at the first
// NaN or infinite logit. Returns K.
int components_cpu(const float* logits, int h, int w, float threshold, double sx, double sy,
                   double min_area, float* prob, int32_t* labels,
                   std::vector<ComponentStats>& stats);

}  // namespace sonoedge
