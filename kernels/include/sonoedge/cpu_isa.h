// Which instruction set the C++ CPU kernels run with, chosen at run time.
//
// One build runs on every x86-64: the hot kernels (preprocess, gradient magnitude, mask-guided
// pool, mask post-process) are compiled three times in the same translation unit -- x86-64
// baseline (SSE2), AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, DQ, CD) -- each in its own
// namespace (sonoedge::baseline / avx2 / avx512) under `#pragma GCC target`, and a dispatcher
// calls the best one the CPU and OS support (cpuid + xgetbv through __builtin_cpu_supports).
//
// Why a pragma region and not per-ISA compile flags: a translation unit compiled with -mavx512f
// emits its std:: template and header inline functions (std::vector<float>::resize, axis_span)
// as weak COMDAT symbols, and the linker may keep that copy for the baseline callers too -- a
// SIGILL on an AVX2 machine. Functions defined before the pragma (all headers) stay baseline
// and inline into the ISA code; only what is defined inside the region gets the ISA, and all of
// that lives in the ISA namespace. tests/kernels/test_cpu_isa.py checks the built module:
// no function outside an ISA namespace contains a VEX / EVEX instruction.
//
// Other builds compile one variant, `native`: aarch64 (NEON is part of the base ISA), compilers
// other than GCC (Clang does not apply `#pragma GCC target`), and the opt-in SONOEDGE_NATIVE=ON
// (-march=native: tuned for the building machine, may die with SIGILL elsewhere).
#pragma once

namespace sonoedge {

enum IsaLevel : int { kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SONOEDGE_NATIVE_ISA)
#define SONOEDGE_X86_DISPATCH 1
#else
#define SONOEDGE_X86_DISPATCH 0
#endif

// Highest level this CPU (and OS) can run among the compiled variants.
int cpu_isa_supported();
// The level the kernels use now: the supported one, or lower when capped by cpu_isa_set() or
// the SONOEDGE_CPU_ISA environment variable (read once, at the first kernel call).
int cpu_isa_active();
// Use `level` from now on (all threads). Throws InputError when the CPU cannot run it or the
// build did not compile it.
void cpu_isa_set(int level);
// Name of a level in this build: "baseline", "avx2", "avx512"; "native" for single-variant builds.
const char* cpu_isa_name(int level);
// A one-line description of the build: the dispatch variants or the single native target.
const char* cpu_isa_build();

}  // namespace sonoedge
