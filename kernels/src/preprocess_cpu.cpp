// CPU driver of the fused preprocess (see sonoedge/preprocess.h for the maths and
// preprocess_cpu.inl for the kernel): one variant per instruction set, chosen at run time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "sonoedge/cpu_isa.h"
#include "sonoedge/preprocess.h"

namespace sonoedge {

#define SE_KERNEL_BODY "preprocess_cpu.inl"
#include "isa_variants.inl"

void preprocess_cpu(const FrameView& f, const Roi& roi, const PreprocessParams& p, void* out,
                    int num_threads) {
  SE_DISPATCH(preprocess_cpu, (f, roi, p, out, num_threads))
}

void gradient_magnitude_cpu(const float* img, int h, int w, float sigma, float* out,
                            int num_threads) {
  SE_DISPATCH(gradient_magnitude_cpu, (img, h, w, sigma, out, num_threads))
}

}  // namespace sonoedge
