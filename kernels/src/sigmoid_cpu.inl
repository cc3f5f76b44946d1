// Body of one instruction-set variant of the vectorized sigmoid (see sonoedge/sigmoid_cpu.h):
// included by sigmoid_cpu.cpp inside namespace sonoedge::<variant> (isa_variants.inl); no
// #include here.
//
// Written for the auto-vectorizer: no branches, no calls, the clamp as std::max / std::min and
// the bad-input test as an OR-reduction. GCC if-converts the float selects only under
// -fno-trapping-math (CMakeLists.txt): without it the loop stays scalar ("control flow in loop").

int64_t sigmoid_cpu(const float* x, float* y, size_t n, bool inf_ok) {
  const float lim = inf_ok ? std::numeric_limits<float>::infinity()
                           : std::numeric_limits<float>::max();
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v0 = x[i];
    bad |= !(std::fabs(v0) <= lim);  // NaN fails every comparison
    float v = std::max(v0, -87.0f);
    v = std::min(v, 87.0f);
    const float a = -v;
    const float t = a * 1.44269504088896341f + 12582912.0f;  // + 1.5 * 2^23: round to nearest
    const float k = t - 12582912.0f;
    float r = a - k * 0.693359375f;  // ln 2 in two parts (Cephes' C1, C2)
    r = r - k * -2.12194440e-4f;
    const float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    const int32_t e = (static_cast<int32_t>(k) + 127) << 23;  // 2^k, k in [-126, 126]
    float s;
    std::memcpy(&s, &e, sizeof s);
    y[i] = 1.0f / (1.0f + p * s);
  }
  if (!bad) return -1;
  for (size_t i = 0; i < n; ++i)
    if (!(std::fabs(x[i]) <= lim)) return static_cast<int64_t>(i);
  return -1;  // unreachable: x changed under us
}
