// CPU driver of the mask post-process (see sonoedge/mask_post.h).
//
// The sigmoid runs once on the small logit grid; each output row then blends two probability
// rows (vectorized; weights (1 - f, f) as in every implementation) and gathers two columns per pixel with precomputed taps, thresholds and
// stores. Rows outside the ROI are cleared with memset.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "sonoedge/mask_post.h"

namespace sonoedge {

namespace {
thread_local std::vector<float> t_prob;
}

void mask_post_cpu(const MaskPostArgs& a, int num_threads) {
  const size_t n = static_cast<size_t>(a.h) * a.w;
  std::vector<float>& prob = t_prob;
  if (prob.size() < n) prob.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = a.logits[i];
    if (std::isnan(v))
      throw InputError("mask logits contain NaN at flat index " + std::to_string(i) +
                       ": the model produced invalid output");
    prob[i] = sigmoidf_(v);
  }
  const Roi& roi = a.roi;
  std::vector<int> x0(roi.w), x1(roi.w);
  std::vector<float> fx(roi.w);
  for (int x = 0; x < roi.w; ++x) {
    const AxisSpan s = axis_span(x, a.w, roi.w, kLinear);
    x0[x] = s.lo;
    x1[x] = s.hi;
    fx[x] = s.hi == s.lo ? 0.f : s.fx;
  }
  const float* P = prob.data();
  int nt = num_threads < 1 ? 1 : num_threads;
  (void)nt;
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    std::vector<float> row(a.w);
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int y = 0; y < a.H; ++y) {
      uint8_t* o = a.out + static_cast<int64_t>(y) * a.out_stride;
      if (y < roi.y || y >= roi.y + roi.h) {
        std::memset(o, 0, a.W);
        continue;
      }
      const AxisSpan ys = axis_span(y - roi.y, a.h, roi.h, kLinear);
      const float fy = ys.hi == ys.lo ? 0.f : ys.fx;
      const float* r0 = P + static_cast<size_t>(ys.lo) * a.w;
      const float* r1 = P + static_cast<size_t>(ys.hi) * a.w;
      const float gy = 1.f - fy;
      for (int i = 0; i < a.w; ++i) row[i] = gy * r0[i] + fy * r1[i];
      if (roi.x > 0) std::memset(o, 0, roi.x);
      uint8_t* oo = o + roi.x;
      const float t = a.threshold;
      const uint8_t val = a.value;
      for (int x = 0; x < roi.w; ++x) {
        const float pv = (1.f - fx[x]) * row[x0[x]] + fx[x] * row[x1[x]];
        oo[x] = pv > t ? val : 0;
      }
      const int tail = a.W - roi.x - roi.w;
      if (tail > 0) std::memset(oo + roi.w, 0, tail);
    }
  }
}

}  // namespace sonoedge
