// Out-of-scope distance of one frame (sdk/scope.py): the squared Mahalanobis distance of the
// summary vector z = [per-channel mean of the features (F), per-channel population std (F),
// class logits (K)] to the training distribution, d2 = || W z - W mean ||^2.
//
// One call instead of a dozen NumPy calls on the hot path (measured ~50 us on the 2-core EPYC,
// most of it per-call overhead and a BLAS mat-vec with thread hand-offs; this is a few us).
#pragma once

#include <cstdint>

namespace sonoedge {

// features (F, cells) contiguous float32; logits (K) float32 or null (K = 0); whiten (D, D)
// row-major float64 with D = 2F + K; wm (D) float64 = whiten @ mean. Sums in double, in the
// order of sdk.scope.summary (mean, then E[x^2] - mean^2 clipped at 0, then sqrt).
double scope_distance_cpu(const float* features, int F, int64_t cells, const float* logits, int K,
                          const double* whiten, const double* wm);

}  // namespace sonoedge
