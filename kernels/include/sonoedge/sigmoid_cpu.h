// Vectorized sigmoid of the CPU post-process kernels (lesion components, frame mask).
//
// y = 1 / (1 + exp(-x)) with exp computed as Cephes' expf does it -- round x*log2(e) to n, reduce
// r = x - n*ln2 in two parts, a degree-6 polynomial, scale by 2^n through the exponent bits --
// but branch-free, so that the loop vectorizes at the width of each instruction-set variant
// (sigmoid_cpu.inl, compiled like the other hot kernels). libm's expf is a call per element and
// never vectorizes: on the default model's 64x64 mask grid the two scalar sigmoids (components,
// then the frame mask) took ~35 us of a ~150 us post-process on the AVX-512 EPYC; this takes ~2
// per grid there (~3 with AVX2, ~9 at the SSE2 baseline).
//
// Accuracy: within 2.5 ulp of the exact sigmoid for |x| <= 87 (2.37 measured over 3 million
// points, absolute error < 1e-7; tests/kernels/test_components.py compares every variant with
// NumPy's float64 sigmoid). Inputs are clamped to [-87, 87] first: below -87 the result is sigmoid(-87) = 1.6e-38
// where libm gives values down to 0 (expf overflows from 88.7 on); above 87 it is 1, as libm's.
// So -inf gives 1.6e-38 and +inf gives 1.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sonoedge {

// y[i] = sigmoid(x[i]) for i < n (x and y may be the same array). Returns the index of the first
// NaN -- or, when `inf_ok` is false, of the first NaN or +-inf -- else -1; y is written for every
// element either way (the caller refuses the input with its own message).
int64_t sigmoid_cpu(const float* x, float* y, size_t n, bool inf_ok);

}  // namespace sonoedge
