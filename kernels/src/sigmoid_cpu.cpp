// The vectorized sigmoid (see sonoedge/sigmoid_cpu.h; the loop is sigmoid_cpu.inl): one variant
// per instruction set, chosen at run time.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "sonoedge/cpu_isa.h"
#include "sonoedge/sigmoid_cpu.h"

namespace sonoedge {

#define SE_KERNEL_BODY "sigmoid_cpu.inl"
#include "isa_variants.inl"

int64_t sigmoid_cpu(const float* x, float* y, size_t n, bool inf_ok) {
  SE_DISPATCH(sigmoid_cpu, (x, y, n, inf_ok))
}

}  // namespace sonoedge
