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
  int first_x, first_y;  // the component's first pixel in raster order
};

// logits (h, w) contiguous -> prob (h, w) = sigmoid(logits), labels (h, w) int32 (0 background,
// 1..K kept components), stats of the kept components (index k - 1 for label k). A component is
// kept when area * sx * sy >= min_area (sx, sy: frame pixels per grid cell; the product in
// double, in that order, as the Python reference computes it). Throws InputError at the first
// NaN or infinite logit. Returns K.
int components_cpu(const float* logits, int h, int w, float threshold, double sx, double sy,
                   double min_area, float* prob, int32_t* labels,
                   std::vector<ComponentStats>& stats);

// Outer border of component `label` (whose first raster pixel is (first_x, first_y)) of a
// label map (h, w), traced as cv::findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE) traces it
// (Suzuki & Abe's border following, 8-connected; straight runs reduced to their end points),
// as grid (x, y) pairs appended to `xy`.
void trace_outer_border(const int32_t* labels, int h, int w, int32_t label, int first_x,
                        int first_y, std::vector<int>& xy);

}  // namespace sonoedge
