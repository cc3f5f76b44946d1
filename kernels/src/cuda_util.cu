// Device discovery that never throws: with no driver or no GPU the answer is 0.
#include "sonoedge/cuda_check.h"

namespace sonoedge {

int cuda_device_count_impl() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error left by a missing driver
    return 0;
  }
  return n;
}

}  // namespace sonoedge
