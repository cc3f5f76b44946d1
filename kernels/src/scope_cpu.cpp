// Out-of-scope distance (see sonoedge/scope.h). Plain scalar C++: ~17 k multiply-adds for the
// default model (D = 131), no instruction-set variants needed.
#include "sonoedge/scope.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sonoedge {

double scope_distance_cpu(const float* features, int F, int64_t cells, const float* logits, int K,
                          const double* whiten, const double* wm) {
  const int D = 2 * F + K;
  std::vector<double> z(static_cast<size_t>(D));
  const double inv_n = 1.0 / static_cast<double>(cells);
  for (int f = 0; f < F; ++f) {
    const float* p = features + static_cast<int64_t>(f) * cells;
    // Four partial sums: a serial double sum costs one add latency per element.
    double s[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= cells; i += 4)
      for (int j = 0; j < 4; ++j) {
        const double v = p[i + j];
        s[j] += v;
        q[j] += v * v;
      }
    for (; i < cells; ++i) {
      const double v = p[i];
      s[0] += v;
      q[0] += v * v;
    }
    const double mu = (s[0] + s[1] + s[2] + s[3]) * inv_n;
    const double sq = (q[0] + q[1] + q[2] + q[3]) * inv_n;
    z[f] = mu;
    z[F + f] = std::sqrt(std::max(sq - mu * mu, 0.0));
  }
  for (int k = 0; k < K; ++k) z[2 * F + k] = logits[k];
  double d2 = 0.0;
  for (int r = 0; r < D; ++r) {
    const double* w = whiten + static_cast<int64_t>(r) * D;
    double a[4] = {0, 0, 0, 0};
    int c = 0;
    for (; c + 4 <= D; c += 4)
      for (int j = 0; j < 4; ++j) a[j] += w[c + j] * z[c + j];
    for (; c < D; ++c) a[0] += w[c] * z[c];
    const double v = (a[0] + a[1]) + (a[2] + a[3]) - wm[r];
    d2 += v * v;
  }
  return d2;
}

}  // namespace sonoedge
