# The C++ CPU kernels, without the Python bindings: one list for the extension module
# (CMakeLists.txt) and for the aarch64 cross-check (.ci/arm-check), so both build the same code.
set(SONOEDGE_CPU_KERNEL_SOURCES
  kernels/src/preprocess_cpu.cpp
  kernels/src/mask_pool_cpu.cpp
  kernels/src/mask_post_cpu.cpp
  kernels/src/components_cpu.cpp
  kernels/src/scope_cpu.cpp
  kernels/src/sigmoid_cpu.cpp
  kernels/src/cpu_isa.cpp)
