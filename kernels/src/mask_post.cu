// CUDA driver of the mask post-process: one launch over the output frame
// (see sonoedge/mask_post.h). Each thread blends the sigmoid of <= 4 logits.
#include "sonoedge/cuda_check.h"
#include "sonoedge/mask_post.h"

namespace sonoedge {
namespace {

__global__ void mask_post_kernel(MaskPostArgs a) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= a.W || y >= a.H) return;
  uint8_t v = 0;
  const Roi& roi = a.roi;
  if (x >= roi.x && x < roi.x + roi.w && y >= roi.y && y < roi.y + roi.h) {
    const AxisSpan ys = axis_span(y - roi.y, a.h, roi.h, kLinear);
    const AxisSpan xs = axis_span(x - roi.x, a.w, roi.w, kLinear);
    float p = 0.f;
    for (int sy = ys.lo; sy <= ys.hi; ++sy) {
      float rp = 0.f;
      for (int sx = xs.lo; sx <= xs.hi; ++sx)
        rp += axis_weight(xs, sx) * sigmoidf_(a.logits[static_cast<size_t>(sy) * a.w + sx]);
      p += axis_weight(ys, sy) * rp;
    }
    v = p > a.threshold ? a.value : 0;
  }
  a.out[static_cast<int64_t>(y) * a.out_stride + x] = v;
}

}  // namespace

void mask_post_cuda(const MaskPostArgs& a, uintptr_t stream_handle) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const dim3 block(32, 8);
  const dim3 grid((a.W + 31) / 32, (a.H + 7) / 8);
  mask_post_kernel<<<grid, block, 0, stream>>>(a);
  SE_CHECK_LAUNCH("mask_post_kernel");
}

}  // namespace sonoedge
