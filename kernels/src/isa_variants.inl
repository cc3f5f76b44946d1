// Compiles a kernel body once per instruction-set variant (see sonoedge/cpu_isa.h).
//
// Usage, at namespace sonoedge scope, after every #include of the translation unit:
//   #define SE_KERNEL_BODY "preprocess_cpu.inl"
//   #include "isa_variants.inl"
// The body is included inside namespace sonoedge::<variant> with
//   SE_ISA_LEVEL   0 baseline / 1 AVX2+FMA+F16C / 2 AVX-512 (F, BW, VL, DQ, CD)
//   SE_VEC_BYTES   the native vector width of the variant: 16 (SSE2, NEON), 32 (AVX2), 64
// and must not include headers itself (they were included before, outside the pragma, so their
// inline functions and templates stay baseline code). Use SE_ISA_LEVEL, never __AVX2__ etc.:
// GCC does not redefine the ISA macros under `#pragma GCC target`.
// SE_DISPATCH(fn, (args)) then calls <variant>::fn for the active level.

#if SONOEDGE_X86_DISPATCH

#define SE_ISA_LEVEL 0
#define SE_VEC_BYTES 16
namespace baseline {
#include SE_KERNEL_BODY
}  // namespace baseline
#undef SE_ISA_LEVEL
#undef SE_VEC_BYTES

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt")
#define SE_ISA_LEVEL 1
#define SE_VEC_BYTES 32
namespace avx2 {
#include SE_KERNEL_BODY
}  // namespace avx2
#undef SE_ISA_LEVEL
#undef SE_VEC_BYTES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt")
// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on its own _mm512_undefined_* temporaries
// (GCC PR 105593, fixed in 13): a false positive inside the compiler's header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define SE_ISA_LEVEL 2
#define SE_VEC_BYTES 64
namespace avx512 {
#include SE_KERNEL_BODY
}  // namespace avx512
#undef SE_ISA_LEVEL
#undef SE_VEC_BYTES
#pragma GCC diagnostic pop
#pragma GCC pop_options

#define SE_DISPATCH(fn, args)                                \
  switch (cpu_isa_active()) {                                \
    case kIsaAvx512: return avx512::fn args;                 \
    case kIsaAvx2: return avx2::fn args;                     \
    default: return baseline::fn args;                       \
  }

#else  // one variant: aarch64, another compiler, or SONOEDGE_NATIVE=ON

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__)
#define SE_ISA_LEVEL 2
#define SE_VEC_BYTES 64
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SE_ISA_LEVEL 1
#define SE_VEC_BYTES 32
#else
#define SE_ISA_LEVEL 0
#define SE_VEC_BYTES 16  // SSE2 on x86-64, NEON (q registers) on aarch64
#endif
namespace native {
#include SE_KERNEL_BODY
}  // namespace native
#undef SE_ISA_LEVEL
#undef SE_VEC_BYTES

#define SE_DISPATCH(fn, args) return native::fn args;

#endif
