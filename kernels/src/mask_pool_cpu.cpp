// CPU driver of mask-guided pooling + classifier head (see sonoedge/mask_pool.h).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sonoedge/mask_pool.h"

namespace sonoedge {

void pool_classify_cpu(const PoolArgs& a, float* pooled, float* logits, float* probs) {
  const int rows = a.num_labels + 1;
  const int cells = a.hf * a.wf;
  std::vector<float> cw(static_cast<size_t>(rows) * cells, 0.f);  // per-row cell weights
  std::vector<double> wsum(rows, 0.0);
  std::vector<AxisSpan> xs(a.wm);
  for (int px = 0; px < a.wm; ++px) xs[px] = axis_span(px, a.wf, a.wm, kLinear);

  for (int py = 0; py < a.hm; ++py) {
    const AxisSpan ys = axis_span(py, a.hf, a.hm, kLinear);
    const float* wrow = a.weights + static_cast<size_t>(py) * a.wm;
    const int32_t* lrow = a.labels ? a.labels + static_cast<size_t>(py) * a.wm : nullptr;
    for (int px = 0; px < a.wm; ++px) {
      const float w = wrow[px];
      if (!(w >= 0.f && w <= 1.f))  // also catches NaN
        throw InputError("weights must be finite and in [0, 1]; found " + std::to_string(w) +
                         " at (" + std::to_string(py) + ", " + std::to_string(px) + ")");
      const int lab = lrow ? lrow[px] : 0;
      if (lab < 0 || lab > a.num_labels)
        throw InputError("labels must be in [0, num_labels=" + std::to_string(a.num_labels) +
                         "]; found " + std::to_string(lab) + " at (" + std::to_string(py) + ", " +
                         std::to_string(px) + ")");
      if (w == 0.f) continue;
      wsum[0] += w;
      if (lab > 0) wsum[lab] += w;
      const AxisSpan& xa = xs[px];
      for (int sy = ys.lo; sy <= ys.hi; ++sy) {
        const float wy = w * axis_weight(ys, sy);
        for (int sx = xa.lo; sx <= xa.hi; ++sx) {
          const float v = wy * axis_weight(xa, sx);
          const int c = sy * a.wf + sx;
          cw[c] += v;
          if (lab > 0) cw[static_cast<size_t>(lab) * cells + c] += v;
        }
      }
    }
  }

  std::vector<float> local_pooled;
  if (!pooled) {
    local_pooled.resize(static_cast<size_t>(rows) * a.F);
    pooled = local_pooled.data();
  }
  for (int k = 0; k < rows; ++k) {
    const float* wk = cw.data() + static_cast<size_t>(k) * cells;
    const float inv = static_cast<float>(1.0 / (wsum[k] + a.eps));
    for (int f = 0; f < a.F; ++f) {
      const float* feat = a.features + static_cast<size_t>(f) * cells;
      float acc = 0.f;
      for (int c = 0; c < cells; ++c) acc += wk[c] * feat[c];
      pooled[static_cast<size_t>(k) * a.F + f] = acc * inv;
    }
  }
  if (!a.w1) return;

  std::vector<float> hidden(a.hidden), local_logits;
  if (!logits) {
    local_logits.resize(static_cast<size_t>(rows) * a.classes);
    logits = local_logits.data();
  }
  for (int k = 0; k < rows; ++k) {
    const float* x = pooled + static_cast<size_t>(k) * a.F;
    for (int j = 0; j < a.hidden; ++j) {
      const float* wj = a.w1 + static_cast<size_t>(j) * a.F;
      float acc = a.b1[j];
      for (int f = 0; f < a.F; ++f) acc += wj[f] * x[f];
      hidden[j] = acc > 0.f ? acc : 0.f;
    }
    float* lg = logits + static_cast<size_t>(k) * a.classes;
    float mx = -INFINITY;
    for (int c = 0; c < a.classes; ++c) {
      const float* wc = a.w2 + static_cast<size_t>(c) * a.hidden;
      float acc = a.b2[c];
      for (int j = 0; j < a.hidden; ++j) acc += wc[j] * hidden[j];
      lg[c] = acc;
      mx = std::max(mx, acc);
    }
    float* pr = probs + static_cast<size_t>(k) * a.classes;
    float z = 0.f;
    for (int c = 0; c < a.classes; ++c) z += (pr[c] = std::exp(lg[c] - mx));
    for (int c = 0; c < a.classes; ++c) pr[c] /= z;
  }
}

}  // namespace sonoedge
