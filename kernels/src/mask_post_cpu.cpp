// CPU driver of the mask post-process (see sonoedge/mask_post.h).
//
// Separable and ordered for the upsampling case (a 64x64 or 256x256 logit grid onto a 600x800
// frame): the sigmoid and the horizontal interpolation run once per *logit* row into a
// (h, roi.w) buffer; each output row is then one vectorized blend of two buffer rows, a compare
// and a store. Rows outside the ROI are cleared with memset. Weights (1 - f, f) as everywhere.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "sonoedge/mask_post.h"

namespace sonoedge {

namespace {
thread_local std::vector<float> t_hp;
}

void mask_post_cpu(const MaskPostArgs& a, int num_threads) {
  const Roi& roi = a.roi;
  const size_t n = static_cast<size_t>(a.h) * a.w;
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(a.logits[i]))
      throw InputError("mask logits contain NaN at flat index " + std::to_string(i) +
                       ": the model produced invalid output");

  std::vector<int> x0(roi.w), x1(roi.w);
  std::vector<float> fx(roi.w);
  for (int x = 0; x < roi.w; ++x) {
    const AxisSpan s = axis_span(x, a.w, roi.w, kLinear);
    x0[x] = s.lo;
    x1[x] = s.hi;
    fx[x] = s.hi == s.lo ? 0.f : s.fx;
  }
  std::vector<float>& hp = t_hp;
  if (hp.size() < static_cast<size_t>(a.h) * roi.w) hp.resize(static_cast<size_t>(a.h) * roi.w);
  std::vector<float> prob_row(a.w);
  for (int y = 0; y < a.h; ++y) {
    const float* lg = a.logits + static_cast<size_t>(y) * a.w;
    for (int i = 0; i < a.w; ++i) prob_row[i] = sigmoidf_(lg[i]);
    float* dst = hp.data() + static_cast<size_t>(y) * roi.w;
    for (int x = 0; x < roi.w; ++x)
      dst[x] = (1.f - fx[x]) * prob_row[x0[x]] + fx[x] * prob_row[x1[x]];
  }

  const float* HP = hp.data();
  int nt = num_threads < 1 ? 1 : num_threads;
  (void)nt;
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (int y = 0; y < a.H; ++y) {
    uint8_t* o = a.out + static_cast<int64_t>(y) * a.out_stride;
    if (y < roi.y || y >= roi.y + roi.h) {
      std::memset(o, 0, a.W);
      continue;
    }
    const AxisSpan ys = axis_span(y - roi.y, a.h, roi.h, kLinear);
    const float fy = ys.hi == ys.lo ? 0.f : ys.fx;
    const float gy = 1.f - fy;
    // __restrict__: uint8_t stores may alias anything, which would block vectorization.
    const float* __restrict__ r0 = HP + static_cast<size_t>(ys.lo) * roi.w;
    const float* __restrict__ r1 = HP + static_cast<size_t>(ys.hi) * roi.w;
    if (roi.x > 0) std::memset(o, 0, roi.x);
    uint8_t* __restrict__ oo = o + roi.x;
    const float t = a.threshold;
    const uint8_t val = a.value;
    const int rw = roi.w;  // a local bound: uint8_t stores could alias roi.w otherwise
    for (int x = 0; x < rw; ++x) oo[x] = (gy * r0[x] + fy * r1[x]) > t ? val : 0;
    const int tail = a.W - roi.x - roi.w;
    if (tail > 0) std::memset(oo + roi.w, 0, tail);
  }
}

}  // namespace sonoedge
