// CPU driver of mask-guided pooling + classifier head (see sonoedge/mask_pool.h).
//
// Body of one instruction-set variant: included by mask_pool_cpu.cpp inside namespace
// sonoedge::<variant> (isa_variants.inl); no #include here.


namespace {

#include "simd.inl"

// Float reductions do not vectorize without -ffast-math (they would reorder the sum); dot keeps
// 2 x kV partial sums explicitly. A serial sum costs one FMA latency per element.
inline float dot(const float* a, const float* b, int n) {
  vf s0 = {}, s1 = {};
  int i = 0;
  for (; i + 2 * kV <= n; i += 2 * kV) {
    s0 += loadv(a + i) * loadv(b + i);
    s1 += loadv(a + i + kV) * loadv(b + i + kV);
  }
  for (; i + kV <= n; i += kV) s0 += loadv(a + i) * loadv(b + i);
  float s = hsum(s0 + s1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// First offending pixel, searched only once a pass has flagged bad input.
[[noreturn]] void report_bad_input(const PoolArgs& a) {
  for (int py = 0; py < a.hm; ++py)
    for (int px = 0; px < a.wm; ++px) {
      const size_t i = static_cast<size_t>(py) * a.wm + px;
      const float w = a.weights[i];
      if (!(w >= 0.f && w <= 1.f))
        throw InputError("weights must be finite and in [0, 1]; found " + std::to_string(w) +
                         " at (" + std::to_string(py) + ", " + std::to_string(px) + ")");
      const int lab = a.labels ? a.labels[i] : 0;
      if (lab < 0 || lab > a.num_labels)
        throw InputError("labels must be in [0, num_labels=" + std::to_string(a.num_labels) +
                         "]; found " + std::to_string(lab) + " at (" + std::to_string(py) +
                         ", " + std::to_string(px) + ")");
    }
  throw InputError("invalid weights or labels");
}

}  // namespace

void pool_classify_cpu(const PoolArgs& a, float* pooled, float* logits, float* probs) {
  const int rows = a.num_labels + 1;
  const int cells = a.hf * a.wf;
  std::vector<float> cw(static_cast<size_t>(rows) * cells, 0.f);  // per-row cell weights
  std::vector<double> wsum(rows, 0.0);

  // The spreading is separable and done rows first: every mask row is added (vectorized across
  // the mask columns) onto the <= 2 feature rows it interpolates from, per row class; only then
  // is each of those hf rows reduced onto the feature columns, as a gather over the contiguous
  // pixel range that interpolates from each column (alpha below). Measured on the 2-core Xeon
  // for F=32 @ 64x64, mask 256x256, 1 lesion: per-pixel scatter 775 us, columns-first 570 us,
  // rows-first with this layout 140 us.
  std::vector<int> cstart(a.wf, a.wm), cend(a.wf, -1);
  std::vector<AxisSpan> xs(a.wm);
  for (int px = 0; px < a.wm; ++px) {
    xs[px] = axis_span(px, a.wf, a.wm, kLinear);
    for (int c = xs[px].lo; c <= xs[px].hi; ++c) {
      cstart[c] = std::min(cstart[c], px);
      cend[c] = std::max(cend[c], px);
    }
  }
  std::vector<int> off(a.wf + 1, 0);
  for (int c = 0; c < a.wf; ++c) off[c + 1] = off[c] + std::max(0, cend[c] - cstart[c] + 1);
  std::vector<float> alpha(off[a.wf], 0.f);
  for (int px = 0; px < a.wm; ++px)
    for (int c = xs[px].lo; c <= xs[px].hi; ++c)
      alpha[off[c] + px - cstart[c]] += axis_weight(xs[px], c);

  std::vector<float> acc(static_cast<size_t>(rows) * a.hf * a.wm, 0.f);  // (k, cy, px)
  std::vector<float> wk(a.wm), ones(a.wm, 1.f);
  for (int py = 0; py < a.hm; ++py) {
    const float* __restrict__ wrow = a.weights + static_cast<size_t>(py) * a.wm;
    const int32_t* __restrict__ lrow = a.labels ? a.labels + static_cast<size_t>(py) * a.wm : nullptr;
    int bad = 0;  // & and | (not && / ||) keep these loops branch-free and vectorized
    for (int px = 0; px < a.wm; ++px) bad |= !((wrow[px] >= 0.f) & (wrow[px] <= 1.f));
    if (lrow)
      for (int px = 0; px < a.wm; ++px)
        bad |= static_cast<unsigned>(lrow[px]) > static_cast<unsigned>(a.num_labels);
    if (bad) report_bad_input(a);
    const AxisSpan ys = axis_span(py, a.hf, a.hm, kLinear);
    for (int k = 0; k < rows; ++k) {
      const float* src = wrow;
      if (k > 0) {
        for (int px = 0; px < a.wm; ++px) wk[px] = lrow[px] == k ? wrow[px] : 0.f;
        src = wk.data();
      }
      const float rsum = dot(src, ones.data(), a.wm);
      if (rsum == 0.f) continue;
      wsum[k] += rsum;
      for (int sy = ys.lo; sy <= ys.hi; ++sy) {
        const float wy = axis_weight(ys, sy);
        float* __restrict__ dst = acc.data() + (static_cast<size_t>(k) * a.hf + sy) * a.wm;
        for (int px = 0; px < a.wm; ++px) dst[px] += wy * src[px];
      }
    }
  }
  for (int k = 0; k < rows; ++k) {
    if (wsum[k] == 0.0) continue;
    for (int cy = 0; cy < a.hf; ++cy) {
      const float* row = acc.data() + (static_cast<size_t>(k) * a.hf + cy) * a.wm;
      float* dst = cw.data() + static_cast<size_t>(k) * cells + static_cast<size_t>(cy) * a.wf;
      for (int c = 0; c < a.wf; ++c) {
        const float* al = alpha.data() + off[c];
        const float* sp = row + cstart[c];
        float v = 0.f;
        for (int i = 0, n = off[c + 1] - off[c]; i < n; ++i) v += al[i] * sp[i];
        dst[c] = v;
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
      pooled[static_cast<size_t>(k) * a.F + f] = dot(wk, feat, cells) * inv;
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

