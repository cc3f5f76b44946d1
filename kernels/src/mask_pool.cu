// CUDA driver of mask-guided pooling + head: one launch, one block per row (image-level row 0,
// lesions 1..K), pooling and the MLP head fused (see sonoedge/mask_pool.h for the maths).
//
// Inputs are not scanned for NaN here (that would need a device-to-host round trip per frame);
// the CPU driver and the Python wrapper of the host path do check.
#include "sonoedge/cuda_check.h"
#include "sonoedge/mask_pool.h"

namespace sonoedge {
namespace {

constexpr int kThreads = 256;

__global__ void pool_classify_kernel(PoolArgs a, float* pooled_out, float* logits_out,
                                     float* probs_out) {
  extern __shared__ float smem[];
  const int cells = a.hf * a.wf;
  float* wk = smem;                  // cells
  float* pooled = wk + cells;        // F
  float* hidden = pooled + a.F;      // hidden
  float* logits = hidden + a.hidden; // classes
  __shared__ float wsum;
  const int row = blockIdx.x;
  const int tid = threadIdx.x;
  for (int c = tid; c < cells; c += kThreads) wk[c] = 0.f;
  if (tid == 0) wsum = 0.f;
  __syncthreads();

  float local_sum = 0.f;
  const int npix = a.hm * a.wm;
  for (int p = tid; p < npix; p += kThreads) {
    const float w = a.weights[p];
    if (w == 0.f) continue;
    if (row > 0 && (a.labels == nullptr || a.labels[p] != row)) continue;
    const int py = p / a.wm, px = p - py * a.wm;
    const AxisSpan ys = axis_span(py, a.hf, a.hm, kLinear);
    const AxisSpan xs = axis_span(px, a.wf, a.wm, kLinear);
    local_sum += w;
    for (int sy = ys.lo; sy <= ys.hi; ++sy) {
      const float wy = w * axis_weight(ys, sy);
      for (int sx = xs.lo; sx <= xs.hi; ++sx) atomicAdd(&wk[sy * a.wf + sx], wy * axis_weight(xs, sx));
    }
  }
  for (int off = 16; off > 0; off >>= 1) local_sum += __shfl_down_sync(0xffffffffu, local_sum, off);
  if ((tid & 31) == 0) atomicAdd(&wsum, local_sum);
  __syncthreads();

  const float inv = 1.0f / (wsum + a.eps);
  for (int f = tid; f < a.F; f += kThreads) {
    const float* feat = a.features + static_cast<size_t>(f) * cells;
    float acc = 0.f;
    for (int c = 0; c < cells; ++c) acc += wk[c] * feat[c];
    pooled[f] = acc * inv;
    if (pooled_out) pooled_out[static_cast<size_t>(row) * a.F + f] = acc * inv;
  }
  if (a.w1 == nullptr) return;
  __syncthreads();
  for (int j = tid; j < a.hidden; j += kThreads) {
    const float* wj = a.w1 + static_cast<size_t>(j) * a.F;
    float acc = a.b1[j];
    for (int f = 0; f < a.F; ++f) acc += wj[f] * pooled[f];
    hidden[j] = acc > 0.f ? acc : 0.f;
  }
  __syncthreads();
  for (int c = tid; c < a.classes; c += kThreads) {
    const float* wc = a.w2 + static_cast<size_t>(c) * a.hidden;
    float acc = a.b2[c];
    for (int j = 0; j < a.hidden; ++j) acc += wc[j] * hidden[j];
    logits[c] = acc;
    if (logits_out) logits_out[static_cast<size_t>(row) * a.classes + c] = acc;
  }
  __syncthreads();
  if (tid == 0) {
    float mx = logits[0];
    for (int c = 1; c < a.classes; ++c) mx = fmaxf(mx, logits[c]);
    float z = 0.f;
    for (int c = 0; c < a.classes; ++c) z += expf(logits[c] - mx);
    for (int c = 0; c < a.classes; ++c)
      probs_out[static_cast<size_t>(row) * a.classes + c] = expf(logits[c] - mx) / z;
  }
}

}  // namespace

void pool_classify_cuda(const PoolArgs& a, float* pooled, float* logits, float* probs,
                        uintptr_t stream_handle) {
  const size_t smem = sizeof(float) * (static_cast<size_t>(a.hf) * a.wf + a.F +
                                       (a.w1 ? a.hidden + a.classes : 0));
  if (smem > 48 * 1024)
    throw KernelError("feature grid " + std::to_string(a.hf) + "x" + std::to_string(a.wf) +
                      " with F=" + std::to_string(a.F) +
                      " needs more than 48 KiB of shared memory in the fused CUDA pooling kernel;"
                      " pool on a coarser feature map or use the CPU kernel");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  pool_classify_kernel<<<a.num_labels + 1, kThreads, smem, stream>>>(a, pooled, logits, probs);
  SE_CHECK_LAUNCH("pool_classify_kernel");
}

}  // namespace sonoedge
