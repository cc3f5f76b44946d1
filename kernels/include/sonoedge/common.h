// Shared host/device math for the sonoedge kernels.
//
// Everything here is __host__ __device__ so the C++ CPU drivers and the CUDA kernels compute
// the same numbers from the same code: resampling taps (OpenCV INTER_LINEAR and INTER_AREA
// conventions), Gaussian / Gaussian-derivative taps (SciPy's conventions), gray conversion and
// float -> half rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define SE_HD __host__ __device__ __forceinline__
#else
#define SE_HD inline
#endif

namespace sonoedge {

// ---- errors ------------------------------------------------------------------------------------
// Thrown by the C++ drivers; the bindings translate it into sdk.errors.KernelError.
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A caller-side mistake detected inside a kernel (NaN weights, labels out of range...):
// translated into sdk.errors.InputError.
struct InputError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// ---- enums shared with the Python wrapper ------------------------------------------------------
// Python passes them as their position in sdk._constants' tuples; the bindings export the names
// below (sdk._kernels.INTERPOLATIONS / COLORS / CHANNELS) and tests/kernels holds the two equal.
enum Interp : int { kLinear = 0, kArea = 1 };
enum ColorOrder : int { kGray = 0, kBGR = 1, kRGB = 2 };
enum Channel : int { kImage = 0, kGdm = 1, kGdx = 2, kGdy = 3 };
enum OutDType : int { kFloat32 = 0, kFloat16 = 1 };
// Their names, indexed by value.
inline constexpr const char* kInterpNames[] = {"linear", "area"};
inline constexpr const char* kColorOrderNames[] = {"gray", "bgr", "rgb"};
inline constexpr const char* kChannelNames[] = {"image", "gdm", "gdx", "gdy"};
static_assert(sizeof(kInterpNames) / sizeof(kInterpNames[0]) == kArea + 1);
static_assert(sizeof(kColorOrderNames) / sizeof(kColorOrderNames[0]) == kRGB + 1);
static_assert(sizeof(kChannelNames) / sizeof(kChannelNames[0]) == kGdy + 1);

constexpr int kMaxChannels = 4;
constexpr int kMaxRadius = 32;  // sigma <= 8 with truncate = 4

// BT.601 luma, the weights of cv::cvtColor(COLOR_BGR2GRAY).
constexpr float kLumaR = 0.299f, kLumaG = 0.587f, kLumaB = 0.114f;

// ---- resampling along one axis ------------------------------------------------------------------
// Destination index d of an axis of dsize samples reads source samples lo..hi (inclusive) of an
// axis of ssize samples, with weights given by axis_weight(). Two conventions:
//  * kLinear: OpenCV INTER_LINEAR (half-pixel centres, src = (d + 0.5) * scale - 0.5, clamped at
//    the borders exactly as cv::resize does) == torch interpolate(bilinear, align_corners=False).
//  * kArea: OpenCV INTER_AREA for downscaling (scale >= 1): each destination sample averages the
//    source samples its footprint covers, fractional overlaps weighted by their length (a
//    transcription of computeResizeAreaTab, thresholds included).
struct AxisSpan {
  int lo, hi;      // inclusive source range
  int mode;        // Interp
  float fx;        // linear: weight of lo + 1
  int s1, s2;      // area: full-coverage samples are s1 .. s2 - 1
  float w_first;   // area: weight of s1 - 1 when lo == s1 - 1
  float w_mid;     // area: weight of s1 .. s2 - 1
  float w_last;    // area: weight of s2 when hi == s2
};

SE_HD AxisSpan axis_span(int d, int ssize, int dsize, int mode) {
  AxisSpan a;
  a.mode = mode;
  const double scale = static_cast<double>(ssize) / static_cast<double>(dsize);
  if (mode == kArea) {
    const double f1 = d * scale;
    const double f2 = f1 + scale;
    const double cell = fmin(scale, ssize - f1);
    int s1 = static_cast<int>(ceil(f1));
    int s2 = static_cast<int>(floor(f2));
    s2 = s2 < ssize - 1 ? s2 : ssize - 1;
    s1 = s1 < s2 ? s1 : s2;
    a.s1 = s1;
    a.s2 = s2;
    a.lo = (s1 - f1 > 1e-3) ? s1 - 1 : s1;
    a.hi = (f2 - s2 > 1e-3) ? s2 : s2 - 1;
    a.w_first = static_cast<float>((s1 - f1) / cell);
    a.w_mid = static_cast<float>(1.0 / cell);
    a.w_last = static_cast<float>(fmin(fmin(f2 - s2, 1.0), cell) / cell);
    a.fx = 0.f;
    if (a.hi < a.lo) a.hi = a.lo;  // degenerate footprint: keep one sample (weight below)
  } else {
    float fx = static_cast<float>((d + 0.5) * scale - 0.5);
    int sx = static_cast<int>(floorf(fx));
    fx -= sx;
    if (sx < 0) {
      fx = 0.f;
      sx = 0;
    }
    if (sx >= ssize - 1) {
      fx = 0.f;
      sx = ssize - 1;
    }
    a.lo = sx;
    // A zero fraction reads one sample (exact integer positions: scale 1, grid-aligned taps).
    a.hi = (sx + 1 < ssize && fx > 0.f) ? sx + 1 : sx;
    a.fx = fx;
    a.s1 = a.s2 = 0;
    a.w_first = a.w_mid = a.w_last = 0.f;
  }
  return a;
}

// Weight of source sample s (lo <= s <= hi) in destination sample described by a.
SE_HD float axis_weight(const AxisSpan& a, int s) {
  if (a.mode == kArea) {
    if (s == a.s1 - 1) return a.w_first;
    if (s >= a.s1 && s < a.s2) return a.w_mid;
    if (s == a.s2) return a.w_last;
    return 0.f;
  }
  if (a.hi == a.lo) return 1.f;  // clamped at the border: one sample, weight 1 (fx is 0)
  return s == a.lo ? 1.f - a.fx : a.fx;
}

// ---- Gaussian taps (scipy.ndimage conventions) ----------------------------------------------------
// radius = int(truncate * sigma + 0.5) with truncate = 4 (scipy's default).
SE_HD int gaussian_radius(float sigma) { return static_cast<int>(4.0f * sigma + 0.5f); }

// g0[k], g1[k] for k = 0..2r (offset t = k - r): g0 = normalized Gaussian, g1 = its derivative
// applied as a correlation, i.e. d/dx of the smoothed signal: out[i] = sum_t g1[t] * in[i + t]
// with g1[t] = t / sigma^2 * g0[t]. This equals scipy.ndimage.gaussian_filter1d(order=1).
SE_HD void gaussian_taps(float sigma, int radius, float* g0, float* g1) {
  double sum = 0.0;
  const double inv2s2 = 0.5 / (static_cast<double>(sigma) * sigma);
  for (int k = 0; k <= 2 * radius; ++k) {
    const double t = k - radius;
    sum += exp(-t * t * inv2s2);
  }
  for (int k = 0; k <= 2 * radius; ++k) {
    const double t = k - radius;
    const double g = exp(-t * t * inv2s2) / sum;
    g0[k] = static_cast<float>(g);
    g1[k] = static_cast<float>(g * t / (static_cast<double>(sigma) * sigma));
  }
}

SE_HD int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---- float -> IEEE half, round to nearest even (portable; the CUDA path uses __float2half_rn) ----
SE_HD uint16_t float_to_half_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mant = x & 0x007fffffu;
  const int exp = static_cast<int>((x >> 23) & 0xffu);
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));  // inf/nan
  int e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {                                                  // subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x00800000u;
    const int shift = 14 - e;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into exponent: ok
  return static_cast<uint16_t>(sign | half);
}

SE_HD float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace sonoedge
