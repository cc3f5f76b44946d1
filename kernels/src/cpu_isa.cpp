// Run-time choice of the kernels' instruction set (see sonoedge/cpu_isa.h).
#include "sonoedge/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sonoedge/common.h"

namespace sonoedge {
namespace {

int detect() {
#if SONOEDGE_X86_DISPATCH
  __builtin_cpu_init();
  // __builtin_cpu_supports reports AVX / AVX-512 only when the OS saves their registers (xgetbv).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd");
  return avx512 ? kIsaAvx512 : (avx2 ? kIsaAvx2 : kIsaBaseline);
#else
  return kIsaBaseline;  // one variant: the one this build was compiled for
#endif
}

int parse_level(const char* s) {
  if (!s || !*s) return -1;
  for (int l = kIsaBaseline; l <= kIsaAvx512; ++l)
    if (std::strcmp(s, cpu_isa_name(l)) == 0) return l;
  return -2;
}

std::atomic<int> g_active{-1};

int initial_level() {
  const int sup = cpu_isa_supported();
  const char* env = std::getenv("SONOEDGE_CPU_ISA");
  const int req = parse_level(env);
  // An unknown or unsupported request falls back to the best level: the Python layer reports
  // the environment variable's problem (sdk.kernels.cpu_isa); a kernel call must not throw here.
  return (req >= 0 && req <= sup) ? req : sup;
}

}  // namespace

int cpu_isa_supported() {
  static const int level = detect();
  return level;
}

int cpu_isa_active() {
  int l = g_active.load(std::memory_order_relaxed);
  if (l < 0) {
    l = initial_level();
    int expected = -1;
    if (!g_active.compare_exchange_strong(expected, l)) l = expected;
  }
  return l;
}

void cpu_isa_set(int level) {
  const int sup = cpu_isa_supported();
  if (level < kIsaBaseline || level > sup)
    throw InputError("instruction set level " + std::to_string(level) +
                     " is not available here: this CPU / build runs levels 0.." +
                     std::to_string(sup) + " (" + cpu_isa_name(sup) + ")");
  g_active.store(level, std::memory_order_relaxed);
}

const char* cpu_isa_name(int level) {
#if SONOEDGE_X86_DISPATCH
  switch (level) {
    case kIsaBaseline: return "baseline";
    case kIsaAvx2: return "avx2";
    case kIsaAvx512: return "avx512";
    default: return "unknown";
  }
#else
  return level == kIsaBaseline ? "native" : "unknown";
#endif
}

const char* cpu_isa_build() {
#if SONOEDGE_X86_DISPATCH
  return "x86-64 run-time dispatch: baseline (SSE2), avx2 (AVX2+FMA+F16C), "
         "avx512 (AVX-512 F/BW/VL/DQ/CD)";
#elif defined(SONOEDGE_NATIVE_ISA)
  return "single variant for the building CPU (SONOEDGE_NATIVE=ON, -march=native / -mcpu=native)";
#elif defined(__aarch64__)
  return "single variant: aarch64 (NEON)";
#else
  return "single variant: the compiler's default target";
#endif
}

}  // namespace sonoedge
