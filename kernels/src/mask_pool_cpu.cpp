// CPU driver of the mask-guided pool + classifier head (see sonoedge/mask_pool.h; the kernel is
// mask_pool_cpu.inl): one variant per instruction set, chosen at run time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif

#include "sonoedge/cpu_isa.h"
#include "sonoedge/mask_pool.h"

namespace sonoedge {

#define SE_KERNEL_BODY "mask_pool_cpu.inl"
#include "isa_variants.inl"

void pool_classify_cpu(const PoolArgs& a, float* pooled, float* logits, float* probs) {
  SE_DISPATCH(pool_classify_cpu, (a, pooled, logits, probs))
}

}  // namespace sonoedge
