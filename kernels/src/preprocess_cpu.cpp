// CPU driver of the fused preprocess (see sonoedge/preprocess.h for the maths).
//
// Two row-parallel stages, all scratch reused between calls:
//  1. resize: per output row, a vertical pass over the ROI rows it needs (contiguous, vectorized,
//     gray conversion folded in) then a horizontal gather with precomputed taps -> gray plane R
//     (out_h x out_w, in L2 for model-sized inputs).
//  2. per output row: vertical Gaussian / derivative passes over R (vectorized across x), edge-
//     padded rows, horizontal passes, magnitude, normalization and the store of every channel.
// Nothing is written twice and no full-size intermediate other than R exists.
#include <algorithm>
#include <cmath>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "sonoedge/preprocess.h"

namespace sonoedge {
namespace {

// Taps of one axis, padded to T per destination sample (padding: weight 0 on a valid index).
struct AxisTaps {
  int T = 0;
  std::vector<int> idx;
  std::vector<float> w;
};

AxisTaps build_taps(int dsize, int ssize, int mode) {
  AxisTaps t;
  std::vector<AxisSpan> spans(dsize);
  for (int d = 0; d < dsize; ++d) {
    spans[d] = axis_span(d, ssize, dsize, mode);
    t.T = std::max(t.T, spans[d].hi - spans[d].lo + 1);
  }
  t.idx.assign(static_cast<size_t>(dsize) * t.T, 0);
  t.w.assign(static_cast<size_t>(dsize) * t.T, 0.f);
  for (int d = 0; d < dsize; ++d) {
    const AxisSpan& a = spans[d];
    for (int k = 0; k < t.T; ++k) {
      const int s = a.lo + k;
      t.idx[static_cast<size_t>(d) * t.T + k] = s <= a.hi ? s : a.lo;
      t.w[static_cast<size_t>(d) * t.T + k] = s <= a.hi ? axis_weight(a, s) : 0.f;
    }
  }
  return t;
}

struct GaussTaps {
  int r = 0;
  float g0[2 * kMaxRadius + 1];
  float g1[2 * kMaxRadius + 1];
};

GaussTaps build_gauss(float sigma) {
  GaussTaps g;
  g.r = gaussian_radius(sigma);
  if (g.r > kMaxRadius) throw InputError("sigma too large for the preprocess kernel (max 8)");
  gaussian_taps(sigma, g.r, g.g0, g.g1);
  return g;
}

// Scratch of one thread: row buffers sized on first use and kept.
struct RowScratch {
  std::vector<float> row, v0, v1, gx, gy;
  void ensure(int roi_w, int w, int r) {
    // row: one resized-source row in stage 1, the magnitude row in stage 2.
    const int row_len = std::max(roi_w, w);
    if (static_cast<int>(row.size()) < row_len) row.resize(row_len);
    const int padded = w + 2 * r;
    if (static_cast<int>(v0.size()) < padded) {
      v0.resize(padded);
      v1.resize(padded);
    }
    if (static_cast<int>(gx.size()) < w) {
      gx.resize(w);
      gy.resize(w);
    }
  }
};

// Vertical Gaussian and derivative passes over R at row y, then horizontal ones:
// gx = d/dx (vertical g0, horizontal g1), gy = d/dy (vertical g1, horizontal g0).
inline void gradient_row(const float* R, int h, int w, const GaussTaps& g, int y, RowScratch& s) {
  const int r = g.r;
  float* v0 = s.v0.data() + r;
  float* v1 = s.v1.data() + r;
  const float* rows[2 * kMaxRadius + 1] = {};
  for (int k = 0; k <= 2 * r; ++k) rows[k] = R + static_cast<size_t>(clampi(y + k - r, 0, h - 1)) * w;
  {
    const float c0 = g.g0[0], c1 = g.g1[0];
    const float* src = rows[0];
    for (int x = 0; x < w; ++x) {
      v0[x] = c0 * src[x];
      v1[x] = c1 * src[x];
    }
  }
  for (int k = 1; k <= 2 * r; ++k) {
    const float c0 = g.g0[k], c1 = g.g1[k];
    const float* src = rows[k];
    for (int x = 0; x < w; ++x) {
      v0[x] += c0 * src[x];
      v1[x] += c1 * src[x];
    }
  }
  for (int k = 1; k <= r; ++k) {  // "nearest" borders
    v0[-k] = v0[0];
    v1[-k] = v1[0];
    v0[w - 1 + k] = v0[w - 1];
    v1[w - 1 + k] = v1[w - 1];
  }
  float* gx = s.gx.data();
  float* gy = s.gy.data();
  const float* p0 = v0 - r;
  const float* p1 = v1 - r;
  for (int x = 0; x < w; ++x) {
    gx[x] = g.g1[0] * p0[x];
    gy[x] = g.g0[0] * p1[x];
  }
  for (int k = 1; k <= 2 * r; ++k) {
    const float c1 = g.g1[k], c0 = g.g0[k];
    const float* a = p0 + k;
    const float* b = p1 + k;
    for (int x = 0; x < w; ++x) {
      gx[x] += c1 * a[x];
      gy[x] += c0 * b[x];
    }
  }
}

inline void store_row(const float* v, float mean, float inv_std, int w, int dtype, void* dst) {
  if (dtype == kFloat32) {
    float* o = static_cast<float*>(dst);
    for (int x = 0; x < w; ++x) o[x] = (v[x] - mean) * inv_std;
    return;
  }
  uint16_t* o = static_cast<uint16_t*>(dst);
  int x = 0;
#if defined(__F16C__)
  const __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(inv_std);
  for (; x + 8 <= w; x += 8) {
    const __m256 val = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + x), m), s);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + x),
                     _mm256_cvtps_ph(val, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; x < w; ++x) o[x] = float_to_half_bits((v[x] - mean) * inv_std);
}

// Per-thread scratch kept between calls: no allocation on the hot path after the first frame.
thread_local std::vector<float> t_plane;

}  // namespace

void preprocess_cpu(const FrameView& f, const Roi& roi, const PreprocessParams& p, void* out,
                    int num_threads) {
  const int h = p.out_h, w = p.out_w;
  const AxisTaps ty = build_taps(h, roi.h, p.interp);
  const AxisTaps tx = build_taps(w, roi.w, p.interp);
  bool need_grad = false;
  for (int c = 0; c < p.num_channels; ++c) need_grad |= p.kinds[c] != kImage;
  const GaussTaps g = need_grad ? build_gauss(p.sigma) : GaussTaps{};

  std::vector<float>& plane = t_plane;
  if (need_grad && plane.size() < static_cast<size_t>(h) * w) plane.resize(static_cast<size_t>(h) * w);
  float* R = plane.data();

  // Luma weights at channel offsets 0, 1, 2 of a pixel.
  float cw[3] = {1.f, 0.f, 0.f};
  if (f.channels >= 3) {
    if (f.color_order == kRGB) {
      cw[0] = kLumaR; cw[1] = kLumaG; cw[2] = kLumaB;
    } else {
      cw[0] = kLumaB; cw[1] = kLumaG; cw[2] = kLumaR;
    }
  }
  const size_t plane_elems = static_cast<size_t>(h) * w;
  const size_t esize = p.out_dtype == kFloat32 ? 4 : 2;
  char* out_bytes = static_cast<char*>(out);
  const float inv255 = 1.0f / 255.0f;
  int nt = num_threads < 1 ? 1 : num_threads;
  (void)nt;

#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    RowScratch s;
    s.ensure(roi.w, w, g.r);
    float* row = s.row.data();
    // ---- stage 1: resize (+ gray) -> R, or straight to the image channels -------------------
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int y = 0; y < h; ++y) {
      std::fill(row, row + roi.w, 0.f);
      for (int k = 0; k < ty.T; ++k) {
        const float wy = ty.w[static_cast<size_t>(y) * ty.T + k];
        if (wy == 0.f) continue;
        const uint8_t* src = f.data + static_cast<int64_t>(roi.y + ty.idx[static_cast<size_t>(y) * ty.T + k]) * f.row_stride +
                             static_cast<int64_t>(roi.x) * f.col_stride;
        if (f.channels < 3) {
          if (f.col_stride == 1) {
            for (int i = 0; i < roi.w; ++i) row[i] += wy * static_cast<float>(src[i]);
          } else {
            const int64_t cs = f.col_stride;
            for (int i = 0; i < roi.w; ++i) row[i] += wy * static_cast<float>(src[i * cs]);
          }
        } else {
          const int64_t cs = f.col_stride, ch = f.ch_stride;
          const float a = wy * cw[0], b = wy * cw[1], c = wy * cw[2];
          for (int i = 0; i < roi.w; ++i) {
            const uint8_t* px = src + i * cs;
            row[i] += a * px[0] + b * px[ch] + c * px[2 * ch];
          }
        }
      }
      float* dst = need_grad ? R + static_cast<size_t>(y) * w : s.gx.data();
      for (int x = 0; x < w; ++x) {
        const int* ix = &tx.idx[static_cast<size_t>(x) * tx.T];
        const float* wx = &tx.w[static_cast<size_t>(x) * tx.T];
        float acc = 0.f;
        for (int k = 0; k < tx.T; ++k) acc += wx[k] * row[ix[k]];
        dst[x] = acc * inv255;
      }
      if (!need_grad) {
        for (int c = 0; c < p.num_channels; ++c)
          store_row(dst, p.mean[c], p.inv_std[c], w, p.out_dtype,
                    out_bytes + (c * plane_elems + static_cast<size_t>(y) * w) * esize);
      }
    }
    // ---- stage 2: gradients + every channel's store ------------------------------------------
    if (need_grad) {
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
      for (int y = 0; y < h; ++y) {
        gradient_row(R, h, w, g, y, s);
        const float* gx = s.gx.data();
        const float* gy = s.gy.data();
        float* mag = s.row.data();  // free again once stage 1 is done
        bool mag_done = false;
        for (int c = 0; c < p.num_channels; ++c) {
          const float* v;
          switch (p.kinds[c]) {
            case kImage: v = R + static_cast<size_t>(y) * w; break;
            case kGdx: v = gx; break;
            case kGdy: v = gy; break;
            default:
              if (!mag_done) {
                for (int x = 0; x < w; ++x) mag[x] = std::sqrt(gx[x] * gx[x] + gy[x] * gy[x]);
                mag_done = true;
              }
              v = mag;
          }
          store_row(v, p.mean[c], p.inv_std[c], w, p.out_dtype,
                    out_bytes + (c * plane_elems + static_cast<size_t>(y) * w) * esize);
        }
      }
    }
  }
}

void gradient_magnitude_cpu(const float* img, int h, int w, float sigma, float* out,
                            int num_threads) {
  const GaussTaps g = build_gauss(sigma);
  int nt = num_threads < 1 ? 1 : num_threads;
  (void)nt;
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
  {
    RowScratch s;
    s.ensure(1, w, g.r);
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int y = 0; y < h; ++y) {
      gradient_row(img, h, w, g, y, s);
      float* o = out + static_cast<size_t>(y) * w;
      for (int x = 0; x < w; ++x) o[x] = std::sqrt(s.gx[x] * s.gx[x] + s.gy[x] * s.gy[x]);
    }
  }
}

}  // namespace sonoedge
