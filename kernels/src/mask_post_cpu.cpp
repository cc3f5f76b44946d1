// CPU driver of the mask post-process (see sonoedge/mask_post.h; the kernel is
// mask_post_cpu.inl): one variant per instruction set, chosen at run time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif

#include "sonoedge/cpu_isa.h"
#include "sonoedge/mask_post.h"
#include "sonoedge/sigmoid_cpu.h"

namespace sonoedge {

#define SE_KERNEL_BODY "mask_post_cpu.inl"
#include "isa_variants.inl"

void mask_post_cpu(const MaskPostArgs& a, int num_threads) {
  SE_DISPATCH(mask_post_cpu, (a, num_threads))
}

}  // namespace sonoedge
