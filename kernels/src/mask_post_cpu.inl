// CPU driver of the mask post-process (see sonoedge/mask_post.h).
//
// Separable and ordered for the upsampling case (a 32x32 or 256x256 logit grid onto a 600x800
// frame): the sigmoid and the horizontal interpolation run once per *logit* row into a
// (h, span) buffer; each output row is then one vectorized blend of two buffer rows, a compare
// and a store, over the columns that can be foreground (see below). Rows outside the ROI and
// rows / columns no probability above the threshold reaches are cleared with memset. Weights
// (1 - f, f) as everywhere.
//
// Body of one instruction-set variant: included by mask_post_cpu.cpp inside namespace
// sonoedge::<variant> (isa_variants.inl); no #include here.


namespace {
thread_local std::vector<float> t_hp;
}

void mask_post_cpu(const MaskPostArgs& a, int num_threads) {
  const Roi& roi = a.roi;
  const size_t n = static_cast<size_t>(a.h) * a.w;
  // The probabilities of the whole grid at once (sonoedge/sigmoid_cpu.h, vectorized); -inf
  // logits (cells the caller dropped) are allowed, NaN is refused.
  std::vector<float> prob(n);
  const int64_t bad = sigmoid_cpu(a.logits, prob.data(), n, /*inf_ok=*/true);
  if (bad >= 0)
    throw InputError("mask logits contain NaN at flat index " + std::to_string(bad) +
                     ": the model produced invalid output");

  // Where the mask can be 1: a blend of probabilities that are all <= threshold is <= threshold,
  // so only output columns interpolating a logit column above the threshold somewhere (cols
  // [c_lo, c_hi]), and only output rows blending a logit row that has such a column, can be 1.
  // Everything else is cleared with memset: a small lesion on a large frame costs a fraction of
  // the full blend, an empty frame almost nothing.
  std::vector<uint8_t> row_hot(a.h, 0);
  int c_lo = a.w, c_hi = -1;
  for (int y = 0; y < a.h; ++y) {
    const float* pr = prob.data() + static_cast<size_t>(y) * a.w;
    for (int i = 0; i < a.w; ++i) {
      if (pr[i] > a.threshold) {
        row_hot[y] = 1;
        c_lo = std::min(c_lo, i);
        c_hi = std::max(c_hi, i);
      }
    }
  }
  const int rw = roi.w;  // a local bound: uint8_t stores could alias roi.w otherwise
  int x_lo = rw, x_hi = -1;  // output columns [x_lo, x_hi] of the ROI that may be 1
  std::vector<int> x0(rw), x1(rw);
  std::vector<float> fx(rw);
  for (int x = 0; x < rw; ++x) {
    const AxisSpan s = axis_span(x, a.w, rw, kLinear);
    x0[x] = s.lo;
    x1[x] = s.hi;
    fx[x] = s.hi == s.lo ? 0.f : s.fx;
    if (c_hi >= 0 && s.hi >= c_lo && s.lo <= c_hi) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
    }
  }
  const int span = x_hi - x_lo + 1;  // <= 0 when nothing is above the threshold
  std::vector<float>& hp = t_hp;
  if (span > 0 && hp.size() < static_cast<size_t>(a.h) * span)
    hp.resize(static_cast<size_t>(a.h) * span);
  for (int y = 0; span > 0 && y < a.h; ++y) {
    const float* pr = prob.data() + static_cast<size_t>(y) * a.w;
    float* dst = hp.data() + static_cast<size_t>(y) * span;
    for (int x = x_lo; x <= x_hi; ++x)
      dst[x - x_lo] = (1.f - fx[x]) * pr[x0[x]] + fx[x] * pr[x1[x]];
  }

  const float* HP = hp.data();
  int nt = num_threads < 1 ? 1 : num_threads;
  (void)nt;
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (int y = 0; y < a.H; ++y) {
    uint8_t* o = a.out + static_cast<int64_t>(y) * a.out_stride;
    if (span <= 0 || y < roi.y || y >= roi.y + roi.h) {
      std::memset(o, 0, a.W);
      continue;
    }
    const AxisSpan ys = axis_span(y - roi.y, a.h, roi.h, kLinear);
    const float fy = ys.hi == ys.lo ? 0.f : ys.fx;
    const float gy = 1.f - fy;
    if (!row_hot[ys.lo] && !row_hot[ys.hi]) {
      std::memset(o, 0, a.W);
      continue;
    }
    // __restrict__: uint8_t stores may alias anything, which would block vectorization.
    const float* __restrict__ r0 = HP + static_cast<size_t>(ys.lo) * span;
    const float* __restrict__ r1 = HP + static_cast<size_t>(ys.hi) * span;
    if (roi.x + x_lo > 0) std::memset(o, 0, roi.x + x_lo);
    uint8_t* __restrict__ oo = o + roi.x + x_lo;
    const float t = a.threshold;
    const uint8_t val = a.value;
    for (int x = 0; x < span; ++x) oo[x] = (gy * r0[x] + fy * r1[x]) > t ? val : 0;
    const int tail = a.W - roi.x - x_hi - 1;
    if (tail > 0) std::memset(oo + span, 0, tail);
  }
}

