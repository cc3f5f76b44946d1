// Test driver of the aarch64 cross-check (.ci/arm-check): the C++ CPU kernels, cross-built for
// aarch64 (NEON) and run under qemu-user, against cases the NumPy reference computed on the host
// (kernels/tests/make_arm_cases.py). No Python and no pybind11 on this side: the kernels are
// called through their C++ API (kernels/include/sonoedge/*.h) the way kernels/src/bindings.cpp
// calls them, with the arguments the Python wrapper would pass.
//
//   arm_driver CASE_DIR      run every case of CASE_DIR/manifest.txt, then the error-path cases
//
// One line per case ("ok" / "FAIL" + the worst element); exit status 1 on any failure, 2 when
// the cases cannot be read.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif

#include "sonoedge/components.h"
#include "sonoedge/mask_pool.h"
#include "sonoedge/mask_post.h"
#include "sonoedge/preprocess.h"
#if __has_include("sonoedge/cpu_isa.h")  // run-time ISA dispatch (one `native` variant on aarch64)
#include "sonoedge/cpu_isa.h"
#define SE_HAVE_CPU_ISA 1
#endif

namespace {

using namespace sonoedge;

// A problem with the case files themselves (not a kernel result): aborts the run.
struct BadCase : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Case {
  std::string kind, name, dir;
  std::map<std::string, std::string> kv;

  bool has(const std::string& k) const { return kv.count(k) != 0; }
  const std::string& at(const std::string& k) const {
    auto it = kv.find(k);
    if (it == kv.end()) throw BadCase(name + ": no field '" + k + "'");
    return it->second;
  }
  static std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
  }
  static long to_long(const std::string& s) {
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (end == s.c_str() || *end) throw BadCase("not an integer: '" + s + "'");
    return v;
  }
  static double to_double(const std::string& s) {  // hex float literals: exact
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str() || *end) throw BadCase("not a number: '" + s + "'");
    return v;
  }
  long i(const std::string& k) const { return to_long(at(k)); }
  double d(const std::string& k) const { return to_double(at(k)); }
  std::vector<long> il(const std::string& k) const {
    std::vector<long> v;
    for (const auto& s : split(at(k))) v.push_back(to_long(s));
    return v;
  }
  std::vector<double> dl(const std::string& k) const {
    std::vector<double> v;
    for (const auto& s : split(at(k))) v.push_back(to_double(s));
    return v;
  }
  // The array stored under field k; n elements of T when n >= 0.
  template <class T>
  std::vector<T> arr(const std::string& k, long n = -1) const {
    const std::string path = dir + "/" + at(k);
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw BadCase(name + ": cannot open " + path);
    const std::streamsize bytes = in.tellg();
    if (bytes % static_cast<std::streamsize>(sizeof(T)) != 0 ||
        (n >= 0 && bytes != n * static_cast<std::streamsize>(sizeof(T))))
      throw BadCase(name + ": " + path + " has " + std::to_string(bytes) + " bytes, expected " +
                    std::to_string(n) + " x " + std::to_string(sizeof(T)));
    std::vector<T> v(static_cast<size_t>(bytes) / sizeof(T));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(v.data()), bytes);
    return v;
  }
};

std::vector<Case> read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.txt");
  if (!in) throw BadCase("cannot open " + dir + "/manifest.txt");
  std::string magic;
  int version = 0;
  long count = -1;
  in >> magic >> version >> count;
  if (magic != "sonoedge-arm-cases" || version != 1 || count < 0)
    throw BadCase("manifest.txt: not a version-1 case list");
  std::string line;
  std::getline(in, line);
  std::vector<Case> cases;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::stringstream ss(line);
    Case c;
    c.dir = dir;
    ss >> c.kind >> c.name;
    std::string tok;
    while (ss >> tok) {
      const size_t eq = tok.find('=');
      if (eq == std::string::npos) throw BadCase(c.name + ": bad field '" + tok + "'");
      c.kv[tok.substr(0, eq)] = tok.substr(eq + 1);
    }
    cases.push_back(std::move(c));
  }
  if (static_cast<long>(cases.size()) != count)
    throw BadCase("manifest.txt: " + std::to_string(cases.size()) + " cases, header says " +
                  std::to_string(count));
  return cases;
}

// ---- comparison ---------------------------------------------------------------------------------
// Outcome of one case: the first failed check (empty when all passed) and a short summary.
struct Outcome {
  std::string failure;
  std::string summary;
  void fail(const std::string& what) {
    if (failure.empty()) failure = what;
  }
};

std::string fmt(double v, int digits = 3) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  return buf;
}

// max |got - want| <= atol + rscale * max |want|; NaN anywhere fails. `where` names an index.
template <class G, class W>
double compare(const char* what, const G* got, const W* want, size_t n, double atol,
               double rscale, Outcome& o,
               const std::function<std::string(size_t)>& where = nullptr) {
  // Not std::fmax: aarch64-linux-gnu-g++ 12.2 -O3 ICEs vectorizing an fmax reduction of
  // float -> double (internal compiler error in vect_transform_reduction).
  double scale = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(want[i]));
    if (a > scale) scale = a;
  }
  const double tol = atol + rscale * scale;
  double worst = 0.0;
  size_t wi = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(e <= worst)) {  // also catches NaN
      worst = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
      wi = i;
      if (std::isnan(e)) break;
    }
  }
  if (!(worst <= tol)) {
    o.fail(std::string(what) + ": max|diff| " + fmt(worst) + " > tol " + fmt(tol) + " at " +
           (where ? where(wi) : "[" + std::to_string(wi) + "]") + ": got " +
           fmt(static_cast<double>(got[wi]), 9) + ", want " +
           fmt(static_cast<double>(want[wi]), 9));
  }
  return worst;
}

template <class T>
bool bit_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
void exact(const char* what, const std::vector<T>& got, const std::vector<T>& want, Outcome& o) {
  if (got.size() != want.size()) {
    o.fail(std::string(what) + ": " + std::to_string(got.size()) + " values, want " +
           std::to_string(want.size()));
    return;
  }
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      o.fail(std::string(what) + " differs at [" + std::to_string(i) + "]: got " +
             std::to_string(got[i]) + ", want " + std::to_string(want[i]));
      return;
    }
}

// ---- preprocess ---------------------------------------------------------------------------------
Outcome run_preprocess(const Case& c) {
  Outcome o;
  const std::vector<uint8_t> raw = c.arr<uint8_t>("frame");
  FrameView f{};
  f.data = raw.data();
  f.height = static_cast<int>(c.i("fh"));
  f.width = static_cast<int>(c.i("fw"));
  f.channels = static_cast<int>(c.i("fc"));
  f.row_stride = c.i("rs");
  f.col_stride = c.i("cs");
  f.ch_stride = c.i("chs");
  f.color_order = static_cast<int>(c.i("color"));
  const int64_t last = (f.height - 1) * f.row_stride + (f.width - 1) * f.col_stride +
                       (f.channels - 1) * f.ch_stride;
  if (last < 0 || static_cast<size_t>(last) >= raw.size()) throw BadCase(c.name + ": frame bytes");
  const std::vector<long> roi = c.il("roi"), out = c.il("out"), kinds = c.il("kinds");
  const std::vector<double> mean = c.dl("mean"), inv_std = c.dl("inv_std");
  const Roi r{static_cast<int>(roi[0]), static_cast<int>(roi[1]), static_cast<int>(roi[2]),
              static_cast<int>(roi[3])};
  PreprocessParams p{};
  p.out_h = static_cast<int>(out[0]);
  p.out_w = static_cast<int>(out[1]);
  p.interp = static_cast<int>(c.i("interp"));
  p.sigma = static_cast<float>(c.d("sigma"));  // the bindings take sigma as a C float
  p.num_channels = static_cast<int>(kinds.size());
  for (int ch = 0; ch < p.num_channels; ++ch) {
    p.kinds[ch] = static_cast<int>(kinds[ch]);
    p.mean[ch] = static_cast<float>(mean[ch]);
    p.inv_std[ch] = static_cast<float>(inv_std[ch]);
  }
  const int dtype = static_cast<int>(c.i("dtype"));
  const int C = p.num_channels, h = p.out_h, w = p.out_w;
  const size_t n = static_cast<size_t>(C) * h * w;
  const std::vector<float> want = c.arr<float>("expect", static_cast<long>(n));
  const std::vector<long> threads = c.il("threads");
  auto where = [&](size_t i) {
    return "[c=" + std::to_string(i / (static_cast<size_t>(h) * w)) +
           ", y=" + std::to_string(i / w % h) + ", x=" + std::to_string(i % w) + "]";
  };

  // float32: against the reference; every thread count bit-identical to the first
  // (test_threads_give_identical_results). Outputs pre-filled with NaN: a skipped store fails.
  p.out_dtype = kFloat32;
  std::vector<float> f32;
  for (size_t t = 0; t < threads.size(); ++t) {
    std::vector<float> got(n, std::numeric_limits<float>::quiet_NaN());
    preprocess_cpu(f, r, p, got.data(), static_cast<int>(threads[t]));
    if (t == 0) {
      const double e = compare("float32 vs reference", got.data(), want.data(), n, c.d("atol"),
                               0.0, o, where);
      o.summary = "max|diff| " + fmt(e) + " (tol " + fmt(c.d("atol")) + ")";
      f32 = std::move(got);
    } else if (!bit_equal(got, f32)) {
      o.fail(std::to_string(threads[t]) + " threads differ from " + std::to_string(threads[0]));
    }
  }
  if (dtype == kFloat16) {
    // float16: bit for bit the float32 result rounded to nearest even -- by the hardware
    // conversion (FCVT through the ACLE __fp16 type), not by the kernels' own float_to_half_bits
    // (test_float16_output).
    p.out_dtype = kFloat16;
    std::vector<uint16_t> first;
    for (size_t t = 0; t < threads.size(); ++t) {
      std::vector<uint16_t> got(n, 0xffffu);
      preprocess_cpu(f, r, p, got.data(), static_cast<int>(threads[t]));
      if (t == 0) {
        for (size_t i = 0; i < n; ++i) {
          const __fp16 hv = static_cast<__fp16>(f32[i]);  // ARM storage type: FCVT, RNE
          uint16_t bits;
          std::memcpy(&bits, &hv, sizeof(bits));
          if (got[i] != bits) {
            char buf[96];
            std::snprintf(buf, sizeof(buf), "float16 0x%04x != float32 %.9g rounded (0x%04x) at ",
                          got[i], static_cast<double>(f32[i]), bits);
            o.fail(buf + where(i));
            break;
          }
        }
        first = std::move(got);
      } else if (!bit_equal(got, first)) {
        o.fail("float16: " + std::to_string(threads[t]) + " threads differ");
      }
    }
    o.summary += ", float16 == rounded float32";
  }
  if (threads.size() > 1) o.summary += ", threads " + c.at("threads") + " identical";
  return o;
}

// ---- gradient magnitude -------------------------------------------------------------------------
Outcome run_gradmag(const Case& c) {
  Outcome o;
  const int h = static_cast<int>(c.i("h")), w = static_cast<int>(c.i("w"));
  const size_t n = static_cast<size_t>(h) * w;
  const std::vector<float> img = c.arr<float>("img", static_cast<long>(n));
  const std::vector<float> want = c.arr<float>("expect", static_cast<long>(n));
  const float sigma = static_cast<float>(c.d("sigma"));
  std::vector<float> first;
  for (long t : c.il("threads")) {
    std::vector<float> got(n, std::numeric_limits<float>::quiet_NaN());
    gradient_magnitude_cpu(img.data(), h, w, sigma, got.data(), static_cast<int>(t));
    if (first.empty()) {
      const double e = compare("vs reference", got.data(), want.data(), n, c.d("atol"),
                               c.d("rscale"), o, [&](size_t i) {
                                 return "[y=" + std::to_string(i / w) + ", x=" +
                                        std::to_string(i % w) + "]";
                               });
      o.summary = "max|diff| " + fmt(e);
      first = std::move(got);
    } else if (!bit_equal(got, first)) {
      o.fail(std::to_string(t) + " threads differ");
    }
  }
  return o;
}

// ---- mask-guided pooling + head -----------------------------------------------------------------
Outcome run_pool(const Case& c) {
  Outcome o;
  PoolArgs a{};
  a.F = static_cast<int>(c.i("F"));
  a.hf = static_cast<int>(c.i("hf"));
  a.wf = static_cast<int>(c.i("wf"));
  a.hm = static_cast<int>(c.i("hm"));
  a.wm = static_cast<int>(c.i("wm"));
  const std::vector<float> feat = c.arr<float>("feat", static_cast<long>(a.F) * a.hf * a.wf);
  const std::vector<float> weights = c.arr<float>("weights", static_cast<long>(a.hm) * a.wm);
  std::vector<int32_t> labels;
  a.features = feat.data();
  a.weights = weights.data();
  a.eps = static_cast<float>(c.d("eps"));
  if (c.has("labels")) {
    labels = c.arr<int32_t>("labels", static_cast<long>(a.hm) * a.wm);
    a.labels = labels.data();
    a.num_labels = static_cast<int>(c.i("num_labels"));
  }
  const int rows = a.num_labels + 1;
  std::vector<float> w1, b1, w2, b2;
  const bool head = c.has("w1");
  if (head) {
    a.hidden = static_cast<int>(c.i("hidden"));
    a.classes = static_cast<int>(c.i("classes"));
    w1 = c.arr<float>("w1", static_cast<long>(a.hidden) * a.F);
    b1 = c.arr<float>("b1", a.hidden);
    w2 = c.arr<float>("w2", static_cast<long>(a.classes) * a.hidden);
    b2 = c.arr<float>("b2", a.classes);
    a.w1 = w1.data();
    a.b1 = b1.data();
    a.w2 = w2.data();
    a.b2 = b2.data();
  }
  const size_t np_ = static_cast<size_t>(rows) * a.F, nc = static_cast<size_t>(rows) * a.classes;
  std::vector<float> pooled(np_, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> logits(nc, std::numeric_limits<float>::quiet_NaN()), probs = logits;
  pool_classify_cpu(a, pooled.data(), head ? logits.data() : nullptr,
                    head ? probs.data() : nullptr);
  const std::vector<float> wp = c.arr<float>("expect_pooled", static_cast<long>(np_));
  const double e = compare("pooled", pooled.data(), wp.data(), np_, c.d("atol_pooled"), 0.0, o,
                           [&](size_t i) {
                             return "[row=" + std::to_string(i / a.F) + ", f=" +
                                    std::to_string(i % a.F) + "]";
                           });
  o.summary = "pooled max|diff| " + fmt(e);
  if (head) {
    const std::vector<float> wl = c.arr<float>("expect_logits", static_cast<long>(nc));
    const std::vector<float> wpr = c.arr<float>("expect_probs", static_cast<long>(nc));
    const double el = compare("logits", logits.data(), wl.data(), nc, c.d("atol_logits"), 0.0, o);
    const double ep = compare("probs", probs.data(), wpr.data(), nc, c.d("atol_probs"), 0.0, o);
    for (int k = 0; k < rows; ++k) {  // test_cpp_equals_reference: rows sum to 1 within 1e-6
      double s = 0.0;
      for (int j = 0; j < a.classes; ++j) s += probs[static_cast<size_t>(k) * a.classes + j];
      if (!(std::fabs(s - 1.0) <= 1e-6))
        o.fail("probs of row " + std::to_string(k) + " sum to " + fmt(s, 9));
    }
    o.summary += ", logits " + fmt(el) + ", probs " + fmt(ep);
  }
  return o;
}

// ---- mask post-process --------------------------------------------------------------------------
Outcome run_maskpost(const Case& c) {
  Outcome o;
  MaskPostArgs a{};
  a.h = static_cast<int>(c.i("h"));
  a.w = static_cast<int>(c.i("w"));
  a.H = static_cast<int>(c.i("H"));
  a.W = static_cast<int>(c.i("W"));
  a.out_stride = c.i("stride");
  const std::vector<float> logits = c.arr<float>("logits", static_cast<long>(a.h) * a.w);
  a.logits = logits.data();
  const std::vector<long> roi = c.il("roi");
  a.roi = Roi{static_cast<int>(roi[0]), static_cast<int>(roi[1]), static_cast<int>(roi[2]),
              static_cast<int>(roi[3])};
  a.threshold = static_cast<float>(c.d("threshold"));
  a.value = static_cast<uint8_t>(c.i("value"));
  const size_t n = static_cast<size_t>(a.H) * a.W;
  const std::vector<uint8_t> want = c.arr<uint8_t>("expect", static_cast<long>(n));
  const std::vector<uint8_t> near = c.arr<uint8_t>("near", static_cast<long>(n));
  std::vector<uint8_t> first;
  for (long t : c.il("threads")) {
    // Pre-filled with 9: every pixel of the frame must be written (0 or value), and the
    // padding past W of each row (a strided out) never touched.
    std::vector<uint8_t> buf(static_cast<size_t>(a.H) * a.out_stride, 9);
    a.out = buf.data();
    mask_post_cpu(a, static_cast<int>(t));
    size_t differ = 0;
    for (int y = 0; y < a.H && o.failure.empty(); ++y)
      for (int x = 0; x < a.out_stride; ++x) {
        const uint8_t g = buf[static_cast<size_t>(y) * a.out_stride + x];
        if (x >= a.W) {
          if (g != 9) {
            o.fail("wrote past the row at y=" + std::to_string(y) + ", x=" + std::to_string(x));
            break;
          }
          continue;
        }
        const size_t i = static_cast<size_t>(y) * a.W + x;
        if (g == want[i]) continue;
        if (near[i] && (g == 0 || g == a.value)) {  // within 1e-5 of the threshold
          ++differ;
          continue;
        }
        o.fail("mask at y=" + std::to_string(y) + ", x=" + std::to_string(x) + ": got " +
               std::to_string(g) + ", want " + std::to_string(want[i]));
        break;
      }
    if (first.empty()) {
      o.summary = std::to_string(differ) + " px differ, all within 1e-5 of the threshold";
      first = std::move(buf);
    } else if (!bit_equal(buf, first)) {
      o.fail(std::to_string(t) + " threads differ");
    }
  }
  o.summary += ", threads " + c.at("threads") + " identical";
  return o;
}

// ---- lesion components --------------------------------------------------------------------------
Outcome run_components(const Case& c) {
  Outcome o;
  const int h = static_cast<int>(c.i("h")), w = static_cast<int>(c.i("w"));
  const size_t n = static_cast<size_t>(h) * w;
  const std::vector<float> logits = c.arr<float>("logits", static_cast<long>(n));
  std::vector<float> prob(n, std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> labels(n, -7);
  std::vector<ComponentStats> stats;
  std::vector<float> kept(n, std::numeric_limits<float>::quiet_NaN());
  const int k = components_cpu(logits.data(), h, w, static_cast<float>(c.d("threshold")),
                               c.d("sx"), c.d("sy"), c.d("min_area"), prob.data(), labels.data(),
                               stats, kept.data());
  if (!bit_equal(kept, c.arr<float>("expect_kept", static_cast<long>(n))))
    o.fail("kept_logits differ (dropped components' cells at -inf, the rest as given)");
  const std::vector<float> wp = c.arr<float>("expect_prob", static_cast<long>(n));
  const double e = compare("prob", prob.data(), wp.data(), n, c.d("atol_prob"), 0.0, o);
  const long want_k = c.i("k");
  if (k != want_k) {
    o.fail("K = " + std::to_string(k) + ", want " + std::to_string(want_k));
    return o;
  }
  exact("labels", labels, c.arr<int32_t>("expect_labels", static_cast<long>(n)), o);
  std::vector<int32_t> st;
  for (const ComponentStats& s : stats) st.insert(st.end(), {s.x, s.y, s.w, s.h, s.area});
  exact("stats (x, y, w, h, area)", st, c.arr<int32_t>("expect_stats", 5L * k), o);
  // Borders as the bindings trace them (grid cells), point for point as cv2.findContours.
  const std::vector<int32_t> npts = c.arr<int32_t>("expect_npts", k);
  const std::vector<int32_t> pts = c.arr<int32_t>("expect_pts");
  size_t off = 0;
  for (int i = 0; i < k && o.failure.empty(); ++i) {
    std::vector<int> xy;
    trace_outer_border(labels.data(), h, w, i + 1, stats[i].first_x, stats[i].first_y, xy);
    if (off + 2 * static_cast<size_t>(npts[i]) > pts.size()) throw BadCase(c.name + ": contours");
    const std::vector<int> want(pts.begin() + off, pts.begin() + off + 2 * npts[i]);
    off += 2 * npts[i];
    exact(("contour of label " + std::to_string(i + 1)).c_str(), xy, want, o);
  }
  o.summary = std::to_string(k) + " components, prob max|diff| " + fmt(e) +
              ", labels / stats / contours equal";
  return o;
}

// ---- lesion outlines at frame resolution --------------------------------------------------------
Outcome run_outlines(const Case& c) {
  Outcome o;
  OutlineArgs a{};
  a.H = static_cast<int>(c.i("H"));
  a.W = static_cast<int>(c.i("W"));
  a.stride = a.W;
  a.h = static_cast<int>(c.i("h"));
  a.w = static_cast<int>(c.i("w"));
  a.num_labels = static_cast<int>(c.i("k"));
  const std::vector<uint8_t> mask = c.arr<uint8_t>("mask", static_cast<long>(a.H) * a.W);
  const std::vector<int32_t> labels = c.arr<int32_t>("labels", static_cast<long>(a.h) * a.w);
  a.mask = mask.data();
  a.labels = labels.data();
  const std::vector<long> roi = c.il("roi");
  a.roi = Roi{static_cast<int>(roi[0]), static_cast<int>(roi[1]), static_cast<int>(roi[2]),
              static_cast<int>(roi[3])};
  std::vector<LesionOutline> out;
  lesion_outlines_cpu(a, out);
  const int k = a.num_labels;
  if (static_cast<int>(out.size()) != k) {
    o.fail(std::to_string(out.size()) + " outlines, want " + std::to_string(k));
    return o;
  }
  std::vector<int32_t> boxes;
  std::vector<int64_t> areas;
  std::vector<int32_t> npieces, npts;
  std::vector<int> pts;
  for (const LesionOutline& l : out) {
    boxes.insert(boxes.end(), {l.x, l.y, l.w, l.h});
    areas.push_back(l.area);
    npieces.push_back(static_cast<int32_t>(l.contours.size()));
    for (const std::vector<int>& xy : l.contours) {
      npts.push_back(static_cast<int32_t>(xy.size() / 2));
      pts.insert(pts.end(), xy.begin(), xy.end());
    }
  }
  exact("boxes (x, y, w, h)", boxes, c.arr<int32_t>("expect_boxes", 4L * k), o);
  exact("areas", areas, c.arr<int64_t>("expect_areas", k), o);
  exact("pieces per lesion", npieces, c.arr<int32_t>("expect_npieces", k), o);
  exact("points per piece", npts, c.arr<int32_t>("expect_npts"), o);
  exact("contour points", pts, c.arr<int>("expect_pts"), o);
  o.summary = std::to_string(k) + " lesions, " + std::to_string(npts.size()) +
              " pieces: boxes / areas / contours equal";
  return o;
}

// ---- error paths: what the C++ layer itself refuses ---------------------------------------------
// The bindings and the Python wrapper check arguments before the kernels; these are the checks
// the kernels make on the data themselves (sonoedge::InputError). No CPU kernel throws
// KernelError (only the CUDA drivers do).
struct ErrorCase {
  const char* name;
  const char* expect;  // substring of what()
  std::function<void()> call;
};

std::vector<ErrorCase> error_cases() {
  static std::vector<float> img(16 * 16, 0.5f);
  static std::vector<uint8_t> frame(20 * 30, 100);
  auto pre = [](int kind, float sigma) {
    FrameView f{frame.data(), 20, 30, 1, 30, 1, 1, kBGR};
    PreprocessParams p{};
    p.out_h = p.out_w = 16;
    p.interp = kArea;
    p.sigma = sigma;
    p.num_channels = 1;
    p.kinds[0] = kind;
    p.inv_std[0] = 1.f;
    std::vector<float> out(16 * 16);
    preprocess_cpu(f, Roi{0, 0, 30, 20}, p, out.data(), 2);
  };
  auto pool = [](float bad_w, int bad_label, int num_labels) {
    std::vector<float> feat(2 * 4 * 4, 1.f), w(8 * 8, 0.5f);
    std::vector<int32_t> lab(8 * 8, 1);
    w[2 * 8 + 3] = bad_w;
    lab[5 * 8 + 6] = bad_label;
    PoolArgs a{};
    a.features = feat.data();
    a.F = 2;
    a.hf = a.wf = 4;
    a.weights = w.data();
    a.hm = a.wm = 8;
    a.labels = lab.data();
    a.num_labels = num_labels;
    a.eps = 1e-6f;
    std::vector<float> pooled((num_labels + 1) * 2);
    pool_classify_cpu(a, pooled.data(), nullptr, nullptr);
  };
  auto post = [](float bad) {
    std::vector<float> lg(4 * 4, 0.f);
    lg[11] = bad;
    std::vector<uint8_t> out(20 * 30);
    MaskPostArgs a{lg.data(), 4, 4, out.data(), 20, 30, 30, Roi{0, 0, 30, 20}, 0.5f, 1};
    mask_post_cpu(a, 2);
  };
  auto comp = [](float bad) {
    std::vector<float> lg(5 * 5, 0.f), prob(25);
    std::vector<int32_t> lab(25);
    std::vector<ComponentStats> st;
    lg[2 * 5 + 3] = bad;
    components_cpu(lg.data(), 5, 5, 0.5f, 1.0, 1.0, 0.0, prob.data(), lab.data(), st);
  };
  auto outl = [](int32_t bad) {
    std::vector<uint8_t> mask(8 * 8, 1);
    std::vector<int32_t> lab(4 * 4, 0);
    lab[2 * 4 + 1] = bad;
    OutlineArgs a{mask.data(), 8, 8, 8, lab.data(), 4, 4, 2, Roi{0, 0, 8, 8}};
    std::vector<LesionOutline> out;
    lesion_outlines_cpu(a, out);
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  return {
      {"outlines-label-above-k", "labels must be in [0, num_labels=2]; found 3 at (2, 1)",
       [=] { outl(3); }},
      {"outlines-label-negative", "found -1 at (2, 1)", [=] { outl(-1); }},
      // sigma 8.2: radius int(4 * 8.2 + 0.5) = 33 > kMaxRadius
      {"preprocess-gdm-sigma-8.2", "sigma too large", [=] { pre(kGdm, 8.2f); }},
      {"preprocess-gdx-sigma-20", "sigma too large", [=] { pre(kGdx, 20.f); }},
      {"gradmag-sigma-9", "sigma too large",
       [] {
         std::vector<float> out(img.size());
         gradient_magnitude_cpu(img.data(), 16, 16, 9.f, out.data(), 2);
       }},
      {"pool-weight-nan", "weights must be finite and in [0, 1]; found nan at (2, 3)",
       [=] { pool(nan, 1, 1); }},
      {"pool-weight-1.5", "found 1.500000 at (2, 3)", [=] { pool(1.5f, 1, 1); }},
      {"pool-weight-negative", "found -0.100000 at (2, 3)", [=] { pool(-0.1f, 1, 1); }},
      {"pool-label-above-k", "labels must be in [0, num_labels=2]; found 5 at (5, 6)",
       [=] { pool(0.5f, 5, 2); }},
      {"pool-label-negative", "found -1 at (5, 6)", [=] { pool(0.5f, -1, 2); }},
      {"maskpost-nan", "mask logits contain NaN at flat index 11", [=] { post(nan); }},
      {"components-nan", "NaN or inf at flat index 13", [=] { comp(nan); }},
      {"components-inf", "NaN or inf at flat index 13", [=] { comp(inf); }},
      {"components-neg-inf", "NaN or inf at flat index 13", [=] { comp(-inf); }},
#if defined(SE_HAVE_CPU_ISA)
      // aarch64 builds compile one variant: asking for an x86 level is refused.
      {"cpu-isa-set-avx2", "is not available here", [] { cpu_isa_set(kIsaAvx2); }},
#endif
  };
}

Outcome run_error(const ErrorCase& ec) {
  Outcome o;
  try {
    ec.call();
    o.fail("no exception; want InputError containing \"" + std::string(ec.expect) + "\"");
  } catch (const InputError& e) {
    if (std::strstr(e.what(), ec.expect) == nullptr)
      o.fail("InputError \"" + std::string(e.what()) + "\" lacks \"" + ec.expect + "\"");
    o.summary = "InputError: " + std::string(e.what());
  } catch (const std::exception& e) {
    o.fail("wrong exception type (not sonoedge::InputError): " + std::string(e.what()));
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "--help") == 0) {
    std::fprintf(stderr, "usage: %s CASE_DIR  (cases from kernels/tests/make_arm_cases.py)\n",
                 argv[0]);
    return 2;
  }
  std::vector<Case> cases;
  try {
    cases = read_manifest(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "arm_driver: %s\n", e.what());
    return 2;
  }
  const std::map<std::string, Outcome (*)(const Case&)> runners = {
      {"preprocess", run_preprocess}, {"gradmag", run_gradmag},       {"pool", run_pool},
      {"maskpost", run_maskpost},     {"components", run_components},
      {"outlines", run_outlines},
  };
  int passed = 0, failed = 0;
  auto report = [&](const std::string& kind, const std::string& name, const Outcome& o) {
    if (o.failure.empty()) {
      ++passed;
      std::printf("ok    %-10s %-40s %s\n", kind.c_str(), name.c_str(), o.summary.c_str());
    } else {
      ++failed;
      std::printf("FAIL  %-10s %-40s %s\n", kind.c_str(), name.c_str(), o.failure.c_str());
    }
    std::fflush(stdout);
  };
  for (const Case& c : cases) {
    Outcome o;
    try {
      auto it = runners.find(c.kind);
      if (it == runners.end()) throw BadCase("unknown case kind '" + c.kind + "'");
      o = it->second(c);
    } catch (const BadCase& e) {
      std::fprintf(stderr, "arm_driver: bad case file: %s\n", e.what());
      return 2;
    } catch (const std::exception& e) {
      o.fail(std::string("unexpected exception: ") + e.what());
    }
    report(c.kind, c.name, o);
  }
  for (const ErrorCase& ec : error_cases()) report("error", ec.name, run_error(ec));
#if defined(SE_HAVE_CPU_ISA)
  std::printf("arm_driver: kernels ran as '%s' (%s)\n", cpu_isa_name(cpu_isa_active()),
              cpu_isa_build());
#endif
  std::printf("arm_driver: %d passed, %d failed (aarch64", passed, failed);
#if defined(__ARM_NEON)
  std::printf(", NEON");
#endif
#if defined(SONOEDGE_WITH_OPENMP)
  std::printf(", OpenMP");
#endif
  std::printf(")\n");
  return failed ? 1 : 0;
}
