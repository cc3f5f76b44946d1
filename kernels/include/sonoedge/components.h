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
#include "sonoedge/preprocess.h"  // Roi

namespace sonoedge {

struct ComponentStats {
  int x, y, w, h, area;  // bounding box and pixel count on the grid
  int first_x, first_y;  // the component's first pixel in raster order
};

// logits (h, w) contiguous -> prob (h, w) = sigmoid(logits), labels (h, w) int32 (0 background,
// 1..K kept components), stats of the kept components (index k - 1 for label k). A component is
// kept when area * sx * sy >= min_area (sx, sy: frame pixels per grid cell; the product in
// double, in that order, as the Python reference computes it). Throws InputError at the first
// NaN or infinite logit. Returns K. When `kept_logits` is not null it receives (h, w) the logits
// with every cell of a dropped component (above the threshold, too small) set to -inf: the mask
// post-process of those logits has foreground only where a kept lesion reaches.
int components_cpu(const float* logits, int h, int w, float threshold, double sx, double sy,
                   double min_area, float* prob, int32_t* labels,
                   std::vector<ComponentStats>& stats, float* kept_logits = nullptr);

// Outer border of component `label` (whose first raster pixel is (first_x, first_y)) of a
// label map (h, w), traced as cv::findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE) traces it
// (Suzuki & Abe's border following, 8-connected; straight runs reduced to their end points),
// as grid (x, y) pairs appended to `xy`.
void trace_outer_border(const int32_t* labels, int h, int w, int32_t label, int first_x,
                        int first_y, std::vector<int>& xy);

// ---- lesion outlines at frame resolution ----------------------------------------------------
// The frame-resolution mask (mask_post_cpu of the same logit grid through the same ROI) split
// into the lesions of a grid label map, and each lesion's outline traced on that mask.
//
// Ownership rule: ROI pixel (x, y) belongs to lesion k when the mask is set there and one of the
// INTER_LINEAR taps it was blended from (<= 2 x 2 grid cells, those of non-zero weight; the
// taps of mask_post, sonoedge::axis_span) is a cell of label k. The taps of one pixel form a
// 2 x 2 block and 8-connected components never share one, so no pixel belongs to two lesions;
// a mask pixel belongs to no lesion only when none of its taps is a labelled cell (a dropped
// component: see components_cpu's kept_logits, or taps at the threshold within float rounding).
//
// A lesion's region may split into several 8-connected pieces at frame resolution (a diagonal
// grid link the blend does not carry) or vanish (a single cell barely above the threshold).
// Every piece gets its outer border (holes are not traced), largest piece first, equal areas in
// raster order of their first pixels; each border is traced as trace_outer_border traces one
// (cv::findContours, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE), in frame pixels.
struct OutlineArgs {
  const uint8_t* mask;  // (H, W) frame mask, rows `stride` bytes apart
  int H, W;
  int64_t stride;
  const int32_t* labels;  // (h, w) grid labels 0..num_labels, contiguous
  int h, w;
  int num_labels;
  Roi roi;  // where the grid was resampled onto the frame (inside (H, W))
};

struct LesionOutline {
  int x = 0, y = 0, w = 0, h = 0;  // frame bounding box of the region (all 0 when empty)
  int64_t area = 0;                // pixels of the region
  std::vector<std::vector<int>> contours;  // (x, y) pairs per piece, largest piece first
};

// out[k - 1] for lesion k. Throws InputError for a label outside [0, num_labels].
void lesion_outlines_cpu(const OutlineArgs& a, std::vector<LesionOutline>& out);

}  // namespace sonoedge
