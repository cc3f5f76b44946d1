// CUDA error checking for the drivers: every runtime call and every launch is checked and a
// failure throws sonoedge::KernelError (-> sdk.errors.KernelError) naming the call.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "sonoedge/common.h"

namespace sonoedge {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw KernelError(std::string(what) + " failed: " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")");
}

// After a launch: configuration errors surface here, asynchronous faults at the next sync.
#define SE_CHECK_LAUNCH(name) ::sonoedge::check_cuda(cudaGetLastError(), name " launch")

}  // namespace sonoedge
