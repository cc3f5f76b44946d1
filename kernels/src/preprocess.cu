// CUDA driver of the fused preprocess: one launch per frame (see sonoedge/preprocess.h).
//
// Each block produces a 32 x 8 tile of every output channel. It resamples the gray tile plus a
// halo of r = radius(sigma) pixels straight from the uint8 frame into shared memory (clamped
// coordinates reproduce the "nearest" borders), runs the vertical Gaussian / derivative passes
// in shared memory, then the horizontal passes, and stores all channels (float32 or float16)
// directly into the caller's buffer, e.g. a TensorRT input binding.
#include <cuda_fp16.h>

#include "sonoedge/cuda_check.h"
#include "sonoedge/preprocess.h"

namespace sonoedge {
namespace {

constexpr int kTileW = 32;
constexpr int kTileH = 8;

struct GaussParams {
  int r;
  float g0[2 * kMaxRadius + 1];
  float g1[2 * kMaxRadius + 1];
};

__device__ __forceinline__ float resample_gray(const FrameView& f, const Roi& roi, int y, int x,
                                               int out_h, int out_w, int interp, float c0,
                                               float c1, float c2) {
  const AxisSpan ys = axis_span(y, roi.h, out_h, interp);
  const AxisSpan xs = axis_span(x, roi.w, out_w, interp);
  float acc = 0.f;
  for (int sy = ys.lo; sy <= ys.hi; ++sy) {
    const uint8_t* row = f.data + static_cast<int64_t>(roi.y + sy) * f.row_stride +
                         static_cast<int64_t>(roi.x) * f.channels;
    float racc = 0.f;
    for (int sx = xs.lo; sx <= xs.hi; ++sx) {
      const uint8_t* px = row + sx * f.channels;
      const float v = f.channels < 3 ? static_cast<float>(px[0])
                                     : c0 * px[0] + c1 * px[1] + c2 * px[2];
      racc += axis_weight(xs, sx) * v;
    }
    acc += axis_weight(ys, sy) * racc;
  }
  return acc * (1.0f / 255.0f);
}

__device__ __forceinline__ void store(void* out, int dtype, size_t i, float v) {
  if (dtype == kFloat32)
    static_cast<float*>(out)[i] = v;
  else
    static_cast<__half*>(out)[i] = __float2half_rn(v);
}

__global__ void preprocess_kernel(FrameView f, Roi roi, PreprocessParams p, GaussParams g,
                                  float c0, float c1, float c2, void* out) {
  extern __shared__ float smem[];
  const int r = g.r;
  const int sw = kTileW + 2 * r;  // shared row length
  const int sh = kTileH + 2 * r;
  float* Rs = smem;               // sh x sw
  float* V0 = Rs + sh * sw;       // kTileH x sw
  float* V1 = V0 + kTileH * sw;   // kTileH x sw
  const int x0 = blockIdx.x * kTileW, y0 = blockIdx.y * kTileH;
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  const int nthreads = kTileW * kTileH;

  for (int i = tid; i < sh * sw; i += nthreads) {
    const int ly = i / sw, lx = i - ly * sw;
    const int y = clampi(y0 + ly - r, 0, p.out_h - 1);
    const int x = clampi(x0 + lx - r, 0, p.out_w - 1);
    Rs[i] = resample_gray(f, roi, y, x, p.out_h, p.out_w, p.interp, c0, c1, c2);
  }
  __syncthreads();
  for (int i = tid; i < kTileH * sw; i += nthreads) {
    const int ly = i / sw, lx = i - ly * sw;
    float a0 = 0.f, a1 = 0.f;
    for (int k = 0; k <= 2 * r; ++k) {
      const float v = Rs[(ly + k) * sw + lx];
      a0 += g.g0[k] * v;
      a1 += g.g1[k] * v;
    }
    V0[i] = a0;
    V1[i] = a1;
  }
  __syncthreads();
  const int x = x0 + threadIdx.x, y = y0 + threadIdx.y;
  if (x >= p.out_w || y >= p.out_h) return;
  float gx = 0.f, gy = 0.f;
  const float* v0 = V0 + threadIdx.y * sw + threadIdx.x;
  const float* v1 = V1 + threadIdx.y * sw + threadIdx.x;
  for (int k = 0; k <= 2 * r; ++k) {
    gx += g.g1[k] * v0[k];
    gy += g.g0[k] * v1[k];
  }
  const float img = Rs[(threadIdx.y + r) * sw + threadIdx.x + r];
  const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
  const size_t pix = static_cast<size_t>(y) * p.out_w + x;
  for (int c = 0; c < p.num_channels; ++c) {
    float v;
    switch (p.kinds[c]) {
      case kImage: v = img; break;
      case kGdx: v = gx; break;
      case kGdy: v = gy; break;
      default: v = sqrtf(gx * gx + gy * gy);
    }
    store(out, p.out_dtype, c * plane + pix, (v - p.mean[c]) * p.inv_std[c]);
  }
}

// No gradient channel: no halo, no shared memory, one output pixel per thread.
__global__ void preprocess_image_kernel(FrameView f, Roi roi, PreprocessParams p, float c0,
                                        float c1, float c2, void* out) {
  const int x = blockIdx.x * kTileW + threadIdx.x, y = blockIdx.y * kTileH + threadIdx.y;
  if (x >= p.out_w || y >= p.out_h) return;
  const float img = resample_gray(f, roi, y, x, p.out_h, p.out_w, p.interp, c0, c1, c2);
  const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
  const size_t pix = static_cast<size_t>(y) * p.out_w + x;
  for (int c = 0; c < p.num_channels; ++c)
    store(out, p.out_dtype, c * plane + pix, (img - p.mean[c]) * p.inv_std[c]);
}

}  // namespace

void preprocess_cuda(const FrameView& f, const Roi& roi, const PreprocessParams& p, void* out,
                     uintptr_t stream_handle) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  float c0 = 1.f, c1 = 0.f, c2 = 0.f;
  if (f.channels >= 3) {
    c1 = kLumaG;
    c0 = f.color_order == kRGB ? kLumaR : kLumaB;
    c2 = f.color_order == kRGB ? kLumaB : kLumaR;
  }
  bool grad = false;
  for (int c = 0; c < p.num_channels; ++c) grad |= p.kinds[c] != kImage;
  const dim3 block(kTileW, kTileH);
  const dim3 grid((p.out_w + kTileW - 1) / kTileW, (p.out_h + kTileH - 1) / kTileH);
  if (!grad) {
    preprocess_image_kernel<<<grid, block, 0, stream>>>(f, roi, p, c0, c1, c2, out);
    SE_CHECK_LAUNCH("preprocess_image_kernel");
    return;
  }
  GaussParams g{};
  g.r = gaussian_radius(p.sigma);
  if (g.r > kMaxRadius) throw InputError("sigma too large for the preprocess kernel (max 8)");
  gaussian_taps(p.sigma, g.r, g.g0, g.g1);
  const int sw = kTileW + 2 * g.r, sh = kTileH + 2 * g.r;
  const size_t smem = sizeof(float) * static_cast<size_t>(sh * sw + 2 * kTileH * sw);
  if (smem > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(preprocess_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)),
               "cudaFuncSetAttribute(preprocess_kernel)");
  }
  preprocess_kernel<<<grid, block, smem, stream>>>(f, roi, p, g, c0, c1, c2, out);
  SE_CHECK_LAUNCH("preprocess_kernel");
}

}  // namespace sonoedge
