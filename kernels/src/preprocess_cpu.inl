// CPU driver of the fused preprocess (see sonoedge/preprocess.h for the maths).
//
// Two row-parallel stages, all scratch reused between calls:
//  1. resize: per output row, a vertical pass over the ROI rows it needs (contiguous, vectorized,
//     gray conversion folded in) then a horizontal gather with precomputed taps -> gray plane R
//     (out_h x out_w, in L2 for model-sized inputs).
//  2. per output row: vertical Gaussian / derivative passes over R (vectorized across x), edge-
//     padded rows, horizontal passes, magnitude, normalization and the store of every channel.
// Nothing is written twice and no full-size intermediate other than R exists.
//
// Body of one instruction-set variant: included by preprocess_cpu.cpp inside namespace
// sonoedge::<variant> (isa_variants.inl); no #include here.

namespace {

#include "simd.inl"

// Taps of one axis, padded to T per destination sample (padding: weight 0 on a valid index).
struct AxisTaps {
  int T = 0;
  std::vector<int> idx;  // destination-major: [d * T + k]
  std::vector<float> w;
  std::vector<int> base;  // first source sample of d: taps read base[d] + k (zero-padded row)
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
  t.base.resize(dsize);
  for (int d = 0; d < dsize; ++d) t.base[d] = spans[d].lo;
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
  void ensure(int w, int r) {
    // row: the magnitude row of stage 2.
    if (static_cast<int>(row.size()) < w) row.resize(w, 0.f);
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

// Native-width vectors (simd.inl): one zmm on AVX-512, one ymm on AVX2, one xmm / q register on
// SSE2 / NEON. Accumulators stay in registers across all taps. The taps
// are symmetric (g0) and antisymmetric (g1): each pair of rows is added / subtracted once and
// multiplied once, half the multiplies of the plain form. Measured on the 2-core Xeon
// (AVX-512) for 256x256, sigma 1: 8-wide plain 160 us, 8-wide symmetric 140 us, 16-wide
// symmetric 70 us.

// Vertical Gaussian and derivative passes over R at row y, then horizontal ones:
// gx = d/dx (vertical g0, horizontal g1), gy = d/dy (vertical g1, horizontal g0).
// Rows are padded by r on both sides ("nearest" borders) so the horizontal pass has no branch.
inline void gradient_row(const float* R, int h, int w, const GaussTaps& g, int y, RowScratch& s) {
  const int r = g.r;
  const float* c0 = g.g0 + r;  // c0[k] == c0[-k]
  const float* c1 = g.g1 + r;  // c1[k] == -c1[-k], c1[0] == 0
  float* v0 = s.v0.data() + r;
  float* v1 = s.v1.data() + r;
  const float* rows_buf[2 * kMaxRadius + 1] = {};
  for (int k = -r; k <= r; ++k)
    rows_buf[k + r] = R + static_cast<size_t>(clampi(y + k, 0, h - 1)) * w;
  const float* const* rows = rows_buf + r;  // rows[k], k in [-r, r]
  int x = 0;
  for (; x + kV <= w; x += kV) {
    vf a0 = c0[0] * loadv(rows[0] + x), a1 = {};
    for (int k = 1; k <= r; ++k) {
      const vf lo = loadv(rows[-k] + x), hi = loadv(rows[k] + x);
      a0 += c0[k] * (hi + lo);
      a1 += c1[k] * (hi - lo);
    }
    storev(v0 + x, a0);
    storev(v1 + x, a1);
  }
  for (; x < w; ++x) {
    float a0 = c0[0] * rows[0][x], a1 = 0.f;
    for (int k = 1; k <= r; ++k) {
      a0 += c0[k] * (rows[k][x] + rows[-k][x]);
      a1 += c1[k] * (rows[k][x] - rows[-k][x]);
    }
    v0[x] = a0;
    v1[x] = a1;
  }
  for (int k = 1; k <= r; ++k) {
    v0[-k] = v0[0];
    v1[-k] = v1[0];
    v0[w - 1 + k] = v0[w - 1];
    v1[w - 1 + k] = v1[w - 1];
  }
  float* gx = s.gx.data();
  float* gy = s.gy.data();
  x = 0;
  for (; x + kV <= w; x += kV) {
    vf ax = {}, ay = c0[0] * loadv(v1 + x);
    for (int k = 1; k <= r; ++k) {
      ax += c1[k] * (loadv(v0 + x + k) - loadv(v0 + x - k));
      ay += c0[k] * (loadv(v1 + x + k) + loadv(v1 + x - k));
    }
    storev(gx + x, ax);
    storev(gy + x, ay);
  }
  for (; x < w; ++x) {
    float ax = 0.f, ay = c0[0] * v1[x];
    for (int k = 1; k <= r; ++k) {
      ax += c1[k] * (v0[x + k] - v0[x - k]);
      ay += c0[k] * (v1[x + k] + v1[x - k]);
    }
    gx[x] = ax;
    gy[x] = ay;
  }
}

// Horizontal resampling as a banded matrix product, vectorized across kV outputs (16 on AVX-512,
// 8 on AVX2, 4 on SSE2 / NEON). Output tile t covers outputs [kV t, kV t + kV) and reads source
// samples [lo[t], lo[t] + len[t]); w[off[t] + kV j + i] is the weight of sample lo[t] + j for
// output kV t + i (0 outside its taps). Per sample: one vector weight load shared by up to
// kRows rows and one broadcast FMA per row.
// Most lanes multiply a zero weight (each sample feeds one or two outputs when downscaling), but
// 16 lanes per instruction still beat one tap per instruction. Measured on the 2-core Xeon
// (AVX-512), whole kernel 600x800 -> 128x128 (area, one channel), best of 5 processes: 181 us
// with the previous scalar form (one output at a time, fixed tap count; it had itself beaten
// AVX-512 gathers 111 vs 294 us), 76 us banded with 4-row groups. Summing all vertical taps in
// a register (AVX-512 intrinsics) instead of per-tap row updates measured no further gain.
struct BandTaps {
  int n = 0;                 // outputs
  std::vector<int> lo, len;  // per tile
  std::vector<size_t> off;
  std::vector<float> w;
};

BandTaps build_band(const AxisTaps& t, int n) {
  BandTaps b;
  b.n = n;
  const int tiles = (n + kV - 1) / kV;
  b.lo.resize(tiles);
  b.len.resize(tiles);
  b.off.resize(tiles);
  size_t total = 0;
  for (int ti = 0; ti < tiles; ++ti) {
    int lo = 1 << 30, hi = -1;
    for (int i = 0; i < kV && ti * kV + i < n; ++i) {
      const int d = ti * kV + i;
      for (int k = 0; k < t.T; ++k) {
        if (t.w[static_cast<size_t>(d) * t.T + k] == 0.f) continue;
        lo = std::min(lo, t.idx[static_cast<size_t>(d) * t.T + k]);
        hi = std::max(hi, t.idx[static_cast<size_t>(d) * t.T + k]);
      }
    }
    if (hi < lo) lo = hi = 0;  // every weight zero: one zero column
    b.lo[ti] = lo;
    b.len[ti] = hi - lo + 1;
    b.off[ti] = total;
    total += static_cast<size_t>(b.len[ti]) * kV;
  }
  b.w.assign(total, 0.f);
  for (int ti = 0; ti < tiles; ++ti) {
    for (int i = 0; i < kV && ti * kV + i < n; ++i) {
      const int d = ti * kV + i;
      for (int k = 0; k < t.T; ++k) {
        const float wk = t.w[static_cast<size_t>(d) * t.T + k];
        if (wk == 0.f) continue;
        const int j = t.idx[static_cast<size_t>(d) * t.T + k] - b.lo[ti];
        b.w[b.off[ti] + static_cast<size_t>(j) * kV + i] += wk;
      }
    }
  }
  return b;
}

// dst[r][d] = scale * sum_s W[s, d] * rows[r][s] for R rows (R a compile-time count so the
// accumulators stay in registers).
template <int R>
inline void hresample_band(const float* const* rows, const BandTaps& b, float scale,
                           float* const* dst) {
  const int tiles = static_cast<int>(b.lo.size());
  for (int ti = 0; ti < tiles; ++ti) {
    const float* w = b.w.data() + b.off[ti];
    const int lo = b.lo[ti], len = b.len[ti];
    vf acc[R];
    for (int r = 0; r < R; ++r) acc[r] = vf{};
    for (int j = 0; j < len; ++j) {
      const vf wv = loadv(w + static_cast<size_t>(j) * kV);
      for (int r = 0; r < R; ++r) acc[r] += rows[r][lo + j] * wv;
    }
    const int d0 = ti * kV;
    const int nd = std::min(kV, b.n - d0);
    for (int r = 0; r < R; ++r) {
      const vf v = acc[r] * scale;
      if (nd == kV) {
        storev(dst[r] + d0, v);
      } else {
        float tmp[kV];
        storev(tmp, v);
        std::memcpy(dst[r] + d0, tmp, sizeof(float) * nd);
      }
    }
  }
}

#if SE_ISA_LEVEL >= 1
// Vertical pass of one output row for gray frames with contiguous pixels (the scanner case).
// Consecutive source rows with the same weight (the fully covered rows of an area downscale)
// are summed as uint16 first -- 32 (AVX-512) or 16 (AVX2) pixels per instruction, one
// conversion per run instead of per row -- and all runs of a strip accumulate in registers, so
// the row is written once. Measured on the 2-core Xeon (best of 3 processes), whole kernel:
// 600x800 -> 128x128 area 65 -> 55 us, 1080x1920 -> 128x128 221 -> 177 us against per-row
// float taps. (The same idea with per-tap float taps in registers measured no gain: the
// integer runs are the win.)
#if SE_ISA_LEVEL >= 2
constexpr int kStrip = 32;
#else
constexpr int kStrip = 16;
#endif

// 16 uint16 lanes (AVX2) / 32 (AVX-512) widened to floats, times w, added to two accumulators.
#if SE_ISA_LEVEL >= 2
typedef __m512i u16strip;
typedef __m512 fhalf;
inline u16strip widen_u8(const uint8_t* p) {
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline u16strip add_u16(u16strip a, u16strip b) { return _mm512_add_epi16(a, b); }
inline fhalf fload(const float* p) { return _mm512_loadu_ps(p); }
inline fhalf fzero() { return _mm512_setzero_ps(); }
inline void fstore(float* p, fhalf v) { _mm512_storeu_ps(p, v); }
inline void fma_u16(u16strip sum, float w, fhalf& a0, fhalf& a1) {
  const __m512 wv = _mm512_set1_ps(w);
  a0 = _mm512_fmadd_ps(wv, _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(sum))), a0);
  a1 = _mm512_fmadd_ps(wv, _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(sum, 1))), a1);
}
#else
typedef __m256i u16strip;
typedef __m256 fhalf;
inline u16strip widen_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline u16strip add_u16(u16strip a, u16strip b) { return _mm256_add_epi16(a, b); }
inline fhalf fload(const float* p) { return _mm256_loadu_ps(p); }
inline fhalf fzero() { return _mm256_setzero_ps(); }
inline void fstore(float* p, fhalf v) { _mm256_storeu_ps(p, v); }
inline void fma_u16(u16strip sum, float w, fhalf& a0, fhalf& a1) {
  const __m256 wv = _mm256_set1_ps(w);
  a0 = _mm256_fmadd_ps(wv, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(sum))), a0);
  a1 = _mm256_fmadd_ps(wv, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(sum, 1))), a1);
}
#endif

inline void vertical_gray_u16(const FrameView& f, const Roi& roi, const AxisTaps& ty, int y,
                              float* __restrict__ row) {
  constexpr int kMaxRuns = 64;
  constexpr int kMaxRun = 256;  // 256 * 255 fits uint16
  constexpr int kHalf = kStrip / 2;
  const uint8_t* first[kMaxRuns];
  int count[kMaxRuns];
  float wt[kMaxRuns];
  int nr = 0, prev_idx = -2;
  const uint8_t* base = f.data + static_cast<int64_t>(roi.x);
  auto flush = [&](bool accumulate) {
    int x = 0;
    for (; x + kStrip <= roi.w; x += kStrip) {
      fhalf a0 = accumulate ? fload(row + x) : fzero();
      fhalf a1 = accumulate ? fload(row + x + kHalf) : fzero();
      for (int r = 0; r < nr; ++r) {
        const uint8_t* p = first[r] + x;
        u16strip sum = widen_u8(p);
        for (int j = 1; j < count[r]; ++j) {
          p += f.row_stride;
          sum = add_u16(sum, widen_u8(p));
        }
        fma_u16(sum, wt[r], a0, a1);
      }
      fstore(row + x, a0);
      fstore(row + x + kHalf, a1);
    }
    for (; x < roi.w; ++x) {
      float acc = accumulate ? row[x] : 0.f;
      for (int r = 0; r < nr; ++r) {
        const uint8_t* p = first[r] + x;
        int sum = 0;
        for (int j = 0; j < count[r]; ++j, p += f.row_stride) sum += *p;
        acc += wt[r] * static_cast<float>(sum);
      }
      row[x] = acc;
    }
  };
  bool accumulate = false;
  for (int k = 0; k < ty.T; ++k) {
    const float wy = ty.w[static_cast<size_t>(y) * ty.T + k];
    if (wy == 0.f) continue;
    const int idx = ty.idx[static_cast<size_t>(y) * ty.T + k];
    if (nr > 0 && wt[nr - 1] == wy && idx == prev_idx + 1 && count[nr - 1] < kMaxRun) {
      ++count[nr - 1];
    } else {
      if (nr == kMaxRuns) {
        flush(accumulate);
        accumulate = true;
        nr = 0;
      }
      first[nr] = base + static_cast<int64_t>(roi.y + idx) * f.row_stride;
      count[nr] = 1;
      wt[nr] = wy;
      ++nr;
    }
    prev_idx = idx;
  }
  if (nr > 0 || !accumulate) flush(accumulate);
}
#endif

// The taps of the last geometry this thread resized (a stream repeats one frame size): built
// once instead of per call (measured ~7 % of a 600x800 -> 128x128 call).
struct FrameTaps {
  int h = -1, w = -1, roi_h = -1, roi_w = -1, interp = -1;
  AxisTaps ty;
  BandTaps bx;
};

const FrameTaps& frame_taps(int h, int w, int roi_h, int roi_w, int interp) {
  thread_local FrameTaps c;
  if (c.h != h || c.w != w || c.roi_h != roi_h || c.roi_w != roi_w || c.interp != interp) {
    c.h = -1;  // invalid until rebuilt (an exception below leaves no half-built cache)
    c.ty = build_taps(h, roi_h, interp);
    c.bx = build_band(build_taps(w, roi_w, interp), w);
    c.h = h;
    c.w = w;
    c.roi_h = roi_h;
    c.roi_w = roi_w;
    c.interp = interp;
  }
  return c;
}

// Row groups of the resize stage: kRows output rows share each weight load.
constexpr int kRows = 4;

inline void store_row(const float* v, float mean, float inv_std, int w, int dtype, void* dst) {
  if (dtype == kFloat32) {
    float* o = static_cast<float*>(dst);
    for (int x = 0; x < w; ++x) o[x] = (v[x] - mean) * inv_std;
    return;
  }
  uint16_t* o = static_cast<uint16_t*>(dst);
  int x = 0;
#if SE_ISA_LEVEL >= 1
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
  const FrameTaps& taps = frame_taps(h, w, roi.h, roi.w, p.interp);
  const AxisTaps& ty = taps.ty;
  const BandTaps& bx = taps.bx;
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
    s.ensure(w, g.r);
    // ---- stage 1: resize (+ gray) -> R, or straight to the image channels -------------------
    // Vertical pass of one output row into `row` (roi.w floats).
    auto vertical = [&](int y, float* __restrict__ row) {
#if SE_ISA_LEVEL >= 1
      if (f.channels < 3 && f.col_stride == 1) {
        vertical_gray_u16(f, roi, ty, y, row);
        return;
      }
#endif
      std::fill(row, row + roi.w, 0.f);
      for (int k = 0; k < ty.T; ++k) {
        const float wy = ty.w[static_cast<size_t>(y) * ty.T + k];
        if (wy == 0.f) continue;
        const uint8_t* __restrict__ src = f.data + static_cast<int64_t>(roi.y + ty.idx[static_cast<size_t>(y) * ty.T + k]) * f.row_stride +
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
          const int rw = roi.w;
          // Packed BGR / BGRA: compile-time strides let the compiler de-interleave in vector
          // registers (the runtime-stride loop below stays scalar).
          if (ch == 1 && cs == 3) {
            for (int i = 0; i < rw; ++i)
              row[i] += a * src[3 * i] + b * src[3 * i + 1] + c * src[3 * i + 2];
          } else if (ch == 1 && cs == 4) {
            for (int i = 0; i < rw; ++i)
              row[i] += a * src[4 * i] + b * src[4 * i + 1] + c * src[4 * i + 2];
          } else {
            for (int i = 0; i < rw; ++i) {
              const uint8_t* px = src + i * cs;
              row[i] += a * px[0] + b * px[ch] + c * px[2 * ch];
            }
          }
        }
      }
    };
    thread_local std::vector<float> vbuf, obuf;  // kept between calls, per thread
    if (vbuf.size() < static_cast<size_t>(kRows) * roi.w) vbuf.resize(static_cast<size_t>(kRows) * roi.w);
    if (!need_grad && obuf.size() < static_cast<size_t>(kRows) * w) obuf.resize(static_cast<size_t>(kRows) * w);
    const int groups = (h + kRows - 1) / kRows;
#if defined(SONOEDGE_WITH_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int gi = 0; gi < groups; ++gi) {
      const int y0 = gi * kRows, nr = std::min(kRows, h - y0);
      const float* rows[kRows];
      float* dsts[kRows];
      for (int r = 0; r < nr; ++r) {
        float* row = vbuf.data() + static_cast<size_t>(r) * roi.w;
        vertical(y0 + r, row);
        rows[r] = row;
        dsts[r] = need_grad ? R + static_cast<size_t>(y0 + r) * w : obuf.data() + static_cast<size_t>(r) * w;
      }
      if (nr == kRows) {
        hresample_band<kRows>(rows, bx, inv255, dsts);
      } else {
        for (int r = 0; r < nr; ++r) hresample_band<1>(rows + r, bx, inv255, dsts + r);
      }
      if (!need_grad) {
        for (int r = 0; r < nr; ++r)
          for (int c = 0; c < p.num_channels; ++c)
            store_row(dsts[r], p.mean[c], p.inv_std[c], w, p.out_dtype,
                      out_bytes + (c * plane_elems + static_cast<size_t>(y0 + r) * w) * esize);
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
    s.ensure(w, g.r);
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

