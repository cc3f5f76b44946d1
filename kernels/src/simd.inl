// Native-width float vectors of the variant being compiled (GCC / Clang vector extensions):
// one xmm (SSE2) or q register (NEON), one ymm (AVX2), one zmm (AVX-512). Included by kernel
// bodies inside their ISA namespace (see isa_variants.inl).
//
// The width must be the variant's own: a vector_size wider than the target's registers has no
// machine mode, and GCC lowers every operation on it through the stack. Measured on a 2-core
// AMD EPYC (AVX2) with the 64-byte vectors that served AVX-512: gradient magnitude 256x256
// 712 us, fused preprocess 600x800 -> 2x256x256 1987 us; 8-10x the AVX-512 Xeon's times.
typedef float vf __attribute__((vector_size(SE_VEC_BYTES)));
constexpr int kV = SE_VEC_BYTES / static_cast<int>(sizeof(float));

inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < kV; ++i) s += v[i];
  return s;
}
