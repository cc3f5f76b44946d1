// pybind11 bindings of sdk._kernels. Private: the typed, validating API is sdk/kernels.
//
// Host functions take NumPy arrays; the Python wrapper has validated them already, the checks
// here are a second line (a wrong call never reaches raw memory): every size is checked before a
// pointer is taken (>= 1, shapes that must agree, products that must fit the kernels' int
// arithmetic, strides that must not be zero, negative or overlapping) and every scalar for range
// and finiteness. The checks live here, once, not in the per-instruction-set kernel variants.
// Every kernel releases the GIL.
// CUDA functions take device pointers and a stream as integers, so they compose with TensorRT
// buffers, CuPy, torch and cuda-python alike.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

#if defined(SONOEDGE_WITH_OPENMP)
#include <omp.h>
#endif

#include "sonoedge/components.h"
#include "sonoedge/cpu_isa.h"
#include "sonoedge/mask_pool.h"
#include "sonoedge/mask_post.h"
#include "sonoedge/preprocess.h"
#include "sonoedge/scope.h"

namespace py = pybind11;
using namespace sonoedge;

#if defined(SONOEDGE_WITH_CUDA)
namespace sonoedge {
int cuda_device_count_impl();
}
#endif

namespace {

void require(bool ok, const std::string& msg) {
  if (!ok) throw InputError(msg);
}

bool is_c_contiguous(const py::array& a) {
  return (a.flags() & py::array::c_style) != 0;
}

// Every array a kernel takes has at most this many elements (and so does every product of its
// dims): the kernels index with int and multiply two dims of one array in int.
constexpr int64_t kMaxElements = 0x7fffffff;
// Scratch the pooling kernel allocates, in floats ((K + 1) * (hf * wf + hf * wm)): 1 GiB. A real
// mask has far fewer lesions than that allows; a hostile num_labels must not allocate gigabytes.
constexpr int64_t kMaxPoolScratch = int64_t{1} << 28;
// Normalization: 1 / std and mean within this bound (std in [1e-6, 1e6]); past it the float32
// output is inf or all precision is gone.
constexpr float kMaxInvStd = 1e6f, kMinInvStd = 1e-6f, kMaxMean = 1e6f;
constexpr int kMaxThreads = 1024;

std::string str(int64_t v) { return std::to_string(v); }

// Every dim of `a` >= 1 and the element count within kMaxElements.
void require_sizes(const py::array& a, const std::string& name) {
  int64_t n = 1;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const int64_t d = a.shape(i);
    require(d >= 1, name + " must not be empty: axis " + str(i) + " has size " + str(d));
    require(d <= kMaxElements && n <= kMaxElements / d,
            name + " is too large (more than " + str(kMaxElements) + " elements)");
    n *= d;
  }
}

void require_threads(int num_threads) {
  require(num_threads >= 1 && num_threads <= kMaxThreads,
          "num_threads must be in [1, " + str(kMaxThreads) + "], got " + str(num_threads));
}

void require_sigma(float sigma) {  // before gaussian_radius: int(4 * inf) is undefined
  require(sigma > 0.f && sigma <= 8.f && gaussian_radius(sigma) <= kMaxRadius,
          "sigma must be in (0, 8]");
}

// The (x, y, w, h) a binding takes, as a Roi checked to lie inside a width x height frame.
Roi frame_roi(const std::array<int, 4>& roi, int64_t width, int64_t height) {
  const Roi r{roi[0], roi[1], roi[2], roi[3]};
  require(r.w >= 1 && r.h >= 1 && r.x >= 0 && r.y >= 0 && int64_t{r.x} + r.w <= width &&
              int64_t{r.y} + r.h <= height,
          "roi outside the frame");
  return r;
}

// A table of enum names (indexed by value) as a Python tuple.
template <size_t N>
py::tuple name_tuple(const char* const (&names)[N]) {
  py::tuple t(N);
  for (size_t i = 0; i < N; ++i) t[i] = py::str(names[i]);
  return t;
}

// Area interpolation only shrinks: the output within the ROI on both axes.
void require_area_downscale(const PreprocessParams& p, const Roi& r) {
  require(p.interp != kArea || (p.out_h <= r.h && p.out_w <= r.w),
          "area interpolation needs a downscale on both axes");
}

bool all_finite(const float* p, size_t n) {
  int bad = 0;  // branch-free, vectorizes: x - x is 0 for finite x, NaN otherwise
  for (size_t i = 0; i < n; ++i) bad |= !(p[i] - p[i] == 0.f);
  return !bad;
}

const float* f32_ptr(const py::array& a, const char* name) {
  require(a.dtype().kind() == 'f' && a.itemsize() == 4, std::string(name) + " must be float32");
  require(is_c_contiguous(a), std::string(name) + " must be C-contiguous");
  return static_cast<const float*>(a.data());
}

PreprocessParams make_params(int out_h, int out_w, const std::vector<int>& kinds,
                             const std::vector<float>& mean, const std::vector<float>& inv_std,
                             float sigma, int interp, int out_dtype) {
  require(!kinds.empty() && kinds.size() <= kMaxChannels, "1 to 4 channels");
  require(mean.size() == kinds.size() && inv_std.size() == kinds.size(),
          "mean / inv_std need one value per channel");
  require(out_h >= 1 && out_w >= 1, "output size must be >= 1");
  require(int64_t{out_h} * out_w * static_cast<int64_t>(kinds.size()) <= kMaxElements,
          "output size too large");
  for (size_t c = 0; c < kinds.size(); ++c) {
    require(std::isfinite(mean[c]) && std::fabs(mean[c]) <= kMaxMean,
            "mean must be finite and within +-1e6");
    require(std::isfinite(inv_std[c]) && inv_std[c] >= kMinInvStd && inv_std[c] <= kMaxInvStd,
            "inv_std (1 / std) must be finite and in [1e-6, 1e6]: std in [1e-6, 1e6]");
  }
  require(interp == kLinear || interp == kArea, "unknown interpolation");
  require(out_dtype == kFloat32 || out_dtype == kFloat16, "unknown output dtype");
  PreprocessParams p{};
  p.out_h = out_h;
  p.out_w = out_w;
  p.interp = interp;
  p.out_dtype = out_dtype;
  p.sigma = sigma;
  p.num_channels = static_cast<int>(kinds.size());
  bool grad = false;
  for (size_t c = 0; c < kinds.size(); ++c) {
    require(kinds[c] >= kImage && kinds[c] <= kGdy, "unknown channel kind");
    grad |= kinds[c] != kImage;
    p.kinds[c] = kinds[c];
    p.mean[c] = mean[c];
    p.inv_std[c] = inv_std[c];
  }
  if (grad) require_sigma(sigma);
  return p;
}

void preprocess_cpu_py(const py::array& frame, std::array<int, 4> roi, py::array out,
                       const std::vector<int>& kinds, const std::vector<float>& mean,
                       const std::vector<float>& inv_std, float sigma, int interp,
                       int color_order, int num_threads) {
  require(frame.dtype().kind() == 'u' && frame.itemsize() == 1, "frame must be uint8");
  require(frame.ndim() == 2 || frame.ndim() == 3, "frame must be (H, W) or (H, W, C)");
  require_sizes(frame, "frame");
  require_threads(num_threads);
  require(color_order == kGray || color_order == kBGR || color_order == kRGB,
          "unknown color order");
  FrameView f{};
  f.data = static_cast<const uint8_t*>(frame.data());
  f.height = static_cast<int>(frame.shape(0));
  f.width = static_cast<int>(frame.shape(1));
  f.channels = frame.ndim() == 3 ? static_cast<int>(frame.shape(2)) : 1;
  require(f.channels == 1 || f.channels == 3 || f.channels == 4, "frame must have 1, 3 or 4 channels");
  f.row_stride = frame.strides(0);
  f.col_stride = frame.strides(1);
  f.ch_stride = frame.ndim() == 3 ? frame.strides(2) : 1;
  f.color_order = color_order;
  require(f.row_stride >= 0 && f.col_stride >= 0 && f.ch_stride >= 0, "negative strides");
  const Roi r = frame_roi(roi, f.width, f.height);
  require(out.ndim() == 3 && out.shape(0) == static_cast<py::ssize_t>(kinds.size()),
          "out must be (C, h, w)");
  require_sizes(out, "out");
  require(is_c_contiguous(out) && out.writeable(), "out must be writable and C-contiguous");
  require(out.dtype().kind() == 'f' && (out.itemsize() == 4 || out.itemsize() == 2),
          "out must be float32 or float16");
  const int dtype = out.itemsize() == 4 ? kFloat32 : kFloat16;
  PreprocessParams p = make_params(static_cast<int>(out.shape(1)), static_cast<int>(out.shape(2)),
                                   kinds, mean, inv_std, sigma, interp, dtype);
  require_area_downscale(p, r);
  void* dst = out.mutable_data();
  py::gil_scoped_release nogil;
  preprocess_cpu(f, r, p, dst, num_threads);
}

void gradient_magnitude_cpu_py(const py::array& img, float sigma, py::array out, int num_threads) {
  require(img.ndim() == 2, "image must be 2-D");
  require_sizes(img, "image");
  require_threads(num_threads);
  const float* src = f32_ptr(img, "image");
  require(out.ndim() == 2 && out.shape(0) == img.shape(0) && out.shape(1) == img.shape(1),
          "out must match the image shape");
  require(out.writeable(), "out must be writable");
  f32_ptr(out, "out");
  require_sigma(sigma);
  float* dst = static_cast<float*>(out.mutable_data());
  const int h = static_cast<int>(img.shape(0)), w = static_cast<int>(img.shape(1));
  py::gil_scoped_release nogil;
  gradient_magnitude_cpu(src, h, w, sigma, dst, num_threads);
}

py::tuple pool_classify_cpu_py(const py::array& features, const py::array& weights,
                               const py::object& labels, int64_t num_labels, float eps,
                               const py::object& w1, const py::object& b1, const py::object& w2,
                               const py::object& b2) {
  PoolArgs a{};
  require(features.ndim() == 3, "features must be (F, h, w)");
  require(weights.ndim() == 2, "weights must be (h, w)");
  require_sizes(features, "features");
  require_sizes(weights, "weights");
  a.features = f32_ptr(features, "features");
  a.F = static_cast<int>(features.shape(0));
  a.hf = static_cast<int>(features.shape(1));
  a.wf = static_cast<int>(features.shape(2));
  a.weights = f32_ptr(weights, "weights");
  a.hm = static_cast<int>(weights.shape(0));
  a.wm = static_cast<int>(weights.shape(1));
  require(std::isfinite(eps) && eps > 0.f, "eps must be finite and > 0");
  a.eps = eps;
  py::array lab;
  if (!labels.is_none()) {
    lab = labels.cast<py::array>();
    require(lab.dtype().kind() == 'i' && lab.itemsize() == 4, "labels must be int32");
    require(is_c_contiguous(lab), "labels must be C-contiguous");
    require(lab.ndim() == 2 && lab.shape(0) == a.hm && lab.shape(1) == a.wm,
            "labels must match weights");
    // At most one lesion per mask pixel: a larger K only allocates rows nothing can fill.
    require(num_labels >= 0 && num_labels <= int64_t{a.hm} * a.wm,
            "num_labels must be in [0, mask pixels = " + str(int64_t{a.hm} * a.wm) + "], got " +
                str(num_labels));
    a.labels = static_cast<const int32_t*>(lab.data());
    a.num_labels = static_cast<int>(num_labels);
  }
  require(a.num_labels >= 0, "num_labels must be >= 0");
  const int64_t scratch = (int64_t{a.num_labels} + 1) *
                          (int64_t{a.hf} * a.wf + int64_t{a.hf} * a.wm + a.F);
  require(scratch <= kMaxPoolScratch,
          "num_labels = " + str(a.num_labels) + " with a " + str(a.hf) + "x" + str(a.wf) +
              " feature grid over a " + str(a.wm) + "-wide mask needs more than 1 GiB of scratch");
  py::array aw1, ab1, aw2, ab2;
  const int heads = !w1.is_none() + !b1.is_none() + !w2.is_none() + !b2.is_none();
  require(heads == 0 || heads == 4, "the head needs all of w1, b1, w2, b2 (or none)");
  if (heads == 4) {
    aw1 = w1.cast<py::array>();
    ab1 = b1.cast<py::array>();
    aw2 = w2.cast<py::array>();
    ab2 = b2.cast<py::array>();
    require(aw1.ndim() == 2 && aw1.shape(1) == a.F, "w1 must be (hidden, F)");
    require(ab1.ndim() == 1 && ab1.shape(0) == aw1.shape(0), "b1 must be (hidden,)");
    require(aw2.ndim() == 2 && aw2.shape(1) == aw1.shape(0), "w2 must be (classes, hidden)");
    require(ab2.ndim() == 1 && ab2.shape(0) == aw2.shape(0), "b2 must be (classes,)");
    require_sizes(aw1, "w1");
    require_sizes(aw2, "w2");
    a.w1 = f32_ptr(aw1, "w1");
    a.b1 = f32_ptr(ab1, "b1");
    a.w2 = f32_ptr(aw2, "w2");
    a.b2 = f32_ptr(ab2, "b2");
    a.hidden = static_cast<int>(aw1.shape(0));
    a.classes = static_cast<int>(aw2.shape(0));
  }
  // The head's ReLU would turn a NaN into 0 (x > 0 is false for NaN) and answer with the
  // softmax of its biases: a confident-looking label out of nothing. Refused, as the NumPy
  // reference refuses it.
  require(all_finite(a.features, static_cast<size_t>(a.F) * a.hf * a.wf),
          "features contain NaN or inf");
  const py::ssize_t rows = a.num_labels + 1;
  py::array_t<float> pooled({rows, static_cast<py::ssize_t>(a.F)});
  py::object logits = py::none(), probs = py::none();
  float* lp = nullptr;
  float* pp = nullptr;
  if (a.w1) {
    py::array_t<float> l({rows, static_cast<py::ssize_t>(a.classes)});
    py::array_t<float> p({rows, static_cast<py::ssize_t>(a.classes)});
    lp = l.mutable_data();
    pp = p.mutable_data();
    logits = l;
    probs = p;
  }
  float* po = pooled.mutable_data();
  {
    py::gil_scoped_release nogil;
    pool_classify_cpu(a, po, lp, pp);
  }
  return py::make_tuple(pooled, logits, probs);
}

void mask_post_cpu_py(const py::array& logits, py::array out, std::array<int, 4> roi,
                      float threshold, int value, int num_threads) {
  require(logits.ndim() == 2, "logits must be (h, w)");
  require_sizes(logits, "logits");
  require_threads(num_threads);
  MaskPostArgs a{};
  a.logits = f32_ptr(logits, "logits");
  a.h = static_cast<int>(logits.shape(0));
  a.w = static_cast<int>(logits.shape(1));
  require(out.ndim() == 2 && out.dtype().kind() == 'u' && out.itemsize() == 1 && out.writeable(),
          "out must be a writable uint8 (H, W) array");
  require_sizes(out, "out");
  require(out.strides(1) == 1, "out rows must be contiguous");
  // Rows one after the other: a row stride of 0, negative or under the width would make rows
  // overlap (or write before the buffer). One row never uses it.
  require(out.shape(0) == 1 || out.strides(0) >= out.shape(1),
          "out row stride must be >= its width (rows must not overlap), got " +
              str(out.strides(0)));
  a.out = static_cast<uint8_t*>(out.mutable_data());
  a.H = static_cast<int>(out.shape(0));
  a.W = static_cast<int>(out.shape(1));
  a.out_stride = out.shape(0) == 1 ? a.W : out.strides(0);
  a.roi = frame_roi(roi, a.W, a.H);
  require(threshold >= 0.f && threshold <= 1.f, "threshold must be in [0, 1]");
  require(value >= 1 && value <= 255, "value must be in [1, 255]");
  a.threshold = threshold;
  a.value = static_cast<uint8_t>(value);
  py::gil_scoped_release nogil;
  mask_post_cpu(a, num_threads);
}

py::tuple components_cpu_py(const py::array& logits, float threshold, double sx, double sy,
                            double min_area, bool to_frame, double x0, double y0, bool borders,
                            const py::object& kept_logits) {
  require(logits.ndim() == 2, "logits must be (h, w)");
  const float* lg = f32_ptr(logits, "logits");
  const py::ssize_t h = logits.shape(0), w = logits.shape(1);
  require(h >= 1 && w >= 1, "logits must not be empty");
  require_sizes(logits, "logits");
  require(threshold >= 0.f && threshold <= 1.f && std::isfinite(sx) && std::isfinite(sy) &&
              sx > 0 && sy > 0 && std::isfinite(min_area) && std::isfinite(x0) &&
              std::isfinite(y0) && std::fabs(x0) <= 1e9 && std::fabs(y0) <= 1e9 &&
              (w + 1) * sx <= 1e9 && (h + 1) * sy <= 1e9,
          "threshold in [0, 1], finite cell size > 0, finite min_area and origin within 1e9");
  float* kp = nullptr;
  py::array kept;
  if (!kept_logits.is_none()) {
    kept = kept_logits.cast<py::array>();
    require(kept.ndim() == 2 && kept.shape(0) == h && kept.shape(1) == w && kept.writeable() &&
                is_c_contiguous(kept) && kept.dtype().kind() == 'f' && kept.itemsize() == 4,
            "kept_logits must be a writable C-contiguous float32 array of the logits' shape");
    kp = static_cast<float*>(kept.mutable_data());
  }
  py::array_t<float> prob({h, w});
  py::array_t<int32_t> labels({h, w});
  float* pp = prob.mutable_data();
  int32_t* lp = labels.mutable_data();
  std::vector<ComponentStats> stats;
  int k;
  {
    py::gil_scoped_release nogil;
    k = components_cpu(lg, static_cast<int>(h), static_cast<int>(w), threshold, sx, sy, min_area,
                       pp, lp, stats, kp);
  }
  py::array_t<int32_t> st({static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(5)});
  int32_t* sp = st.mutable_data();
  for (int i = 0; i < k; ++i) {
    sp[5 * i + 0] = stats[i].x;
    sp[5 * i + 1] = stats[i].y;
    sp[5 * i + 2] = stats[i].w;
    sp[5 * i + 3] = stats[i].h;
    sp[5 * i + 4] = stats[i].area;
  }
  if (!borders) return py::make_tuple(prob, labels, st, py::none());
  std::vector<std::vector<int>> bd(k);
  {
    py::gil_scoped_release nogil;
    for (int i = 0; i < k; ++i)
      trace_outer_border(lp, static_cast<int>(h), static_cast<int>(w), i + 1, stats[i].first_x,
                         stats[i].first_y, bd[i]);
  }
  py::list contours(k);
  for (int i = 0; i < k; ++i) {
    const py::ssize_t np_ = static_cast<py::ssize_t>(bd[i].size() / 2);
    py::array_t<int32_t> c({np_, static_cast<py::ssize_t>(2)});
    int32_t* cp = c.mutable_data();
    if (to_frame) {  // cell centres in frame pixels, rounded half to even as numpy.rint
      for (py::ssize_t j = 0; j < np_; ++j) {
        cp[2 * j] = static_cast<int32_t>(std::nearbyint(x0 + (bd[i][2 * j] + 0.5) * sx));
        cp[2 * j + 1] = static_cast<int32_t>(std::nearbyint(y0 + (bd[i][2 * j + 1] + 0.5) * sy));
      }
    } else {
      std::copy(bd[i].begin(), bd[i].end(), cp);
    }
    contours[i] = c;
  }
  return py::make_tuple(prob, labels, st, contours);
}

// -> d2 (sonoedge/scope.h). features float32 (F, hf, wf) C-contiguous; logits float32 (K,) or
// None; whiten float64 (D, D) C-contiguous with D = 2F + K; wm float64 (D,).
double scope_distance_cpu_py(const py::array& features, const py::object& logits,
                             const py::array& whiten, const py::array& wm) {
  require(features.ndim() == 3 && features.dtype().is(py::dtype::of<float>()) &&
              is_c_contiguous(features),
          "features must be a C-contiguous float32 (F, h, w) array");
  require_sizes(features, "features");
  const int64_t F = features.shape(0), cells = features.shape(1) * features.shape(2);
  const float* lp = nullptr;
  int64_t K = 0;
  py::array lg;
  if (!logits.is_none()) {
    lg = py::reinterpret_borrow<py::array>(logits);
    require(py::isinstance<py::array>(logits) && lg.ndim() == 1 &&
                lg.dtype().is(py::dtype::of<float>()) && is_c_contiguous(lg),
            "class_logits must be a C-contiguous float32 (K,) array or None");
    require_sizes(lg, "class_logits");
    K = lg.shape(0);
    lp = static_cast<const float*>(lg.data());
  }
  const int64_t D = 2 * F + K;
  require(whiten.ndim() == 2 && whiten.dtype().is(py::dtype::of<double>()) &&
              is_c_contiguous(whiten) && whiten.shape(0) == D && whiten.shape(1) == D,
          "whiten must be a C-contiguous float64 (D, D) array with D = 2F + K = " + str(D));
  require(wm.ndim() == 1 && wm.dtype().is(py::dtype::of<double>()) && is_c_contiguous(wm) &&
              wm.shape(0) == D,
          "wm must be a C-contiguous float64 (D,) array with D = " + str(D));
  const float* fp = static_cast<const float*>(features.data());
  const double* w = static_cast<const double*>(whiten.data());
  const double* m = static_cast<const double*>(wm.data());
  return scope_distance_cpu(fp, static_cast<int>(F), cells, lp, static_cast<int>(K), w, m);
}

// -> (boxes int32 (K, 4) x, y, w, h; areas int64 (K,); contours: K lists of int32 (N, 2)).
py::tuple lesion_outlines_cpu_py(const py::array& mask, const py::array& labels, int64_t num_labels,
                                 std::array<int, 4> roi) {
  require(mask.ndim() == 2 && mask.dtype().kind() == 'u' && mask.itemsize() == 1,
          "mask must be a uint8 (H, W) array");
  require_sizes(mask, "mask");
  require(mask.strides(1) == 1 && (mask.shape(0) == 1 || mask.strides(0) >= mask.shape(1)),
          "mask rows must be contiguous and must not overlap");
  require(labels.ndim() == 2 && labels.dtype().kind() == 'i' && labels.itemsize() == 4 &&
              is_c_contiguous(labels),
          "labels must be a C-contiguous int32 (h, w) array");
  require_sizes(labels, "labels");
  OutlineArgs a{};
  a.mask = static_cast<const uint8_t*>(mask.data());
  a.H = static_cast<int>(mask.shape(0));
  a.W = static_cast<int>(mask.shape(1));
  a.stride = mask.shape(0) == 1 ? a.W : mask.strides(0);
  a.labels = static_cast<const int32_t*>(labels.data());
  a.h = static_cast<int>(labels.shape(0));
  a.w = static_cast<int>(labels.shape(1));
  require(num_labels >= 0 && num_labels <= int64_t{a.h} * a.w,
          "num_labels must be in [0, h * w] (one lesion per grid cell at most), got " +
              str(num_labels));
  a.num_labels = static_cast<int>(num_labels);
  a.roi = frame_roi(roi, a.W, a.H);
  std::vector<LesionOutline> out;
  {
    py::gil_scoped_release nogil;
    lesion_outlines_cpu(a, out);
  }
  const py::ssize_t k = static_cast<py::ssize_t>(num_labels);
  py::array_t<int32_t> boxes({k, static_cast<py::ssize_t>(4)});
  py::array_t<int64_t> areas(k);
  int32_t* bp = boxes.mutable_data();
  int64_t* ap = areas.mutable_data();
  py::list contours(k);
  for (py::ssize_t i = 0; i < k; ++i) {
    const LesionOutline& o = out[i];
    bp[4 * i + 0] = o.x;
    bp[4 * i + 1] = o.y;
    bp[4 * i + 2] = o.w;
    bp[4 * i + 3] = o.h;
    ap[i] = o.area;
    py::list pieces(o.contours.size());
    for (size_t p = 0; p < o.contours.size(); ++p) {
      const std::vector<int>& xy = o.contours[p];
      py::array_t<int32_t> c({static_cast<py::ssize_t>(xy.size() / 2), static_cast<py::ssize_t>(2)});
      std::copy(xy.begin(), xy.end(), c.mutable_data());
      pieces[p] = c;
    }
    contours[i] = pieces;
  }
  return py::make_tuple(boxes, areas, contours);
}

#if defined(SONOEDGE_WITH_CUDA)
void preprocess_cuda_py(uintptr_t src, int H, int W, int C, int64_t pitch, int color_order,
                        std::array<int, 4> roi, uintptr_t out, int out_h, int out_w,
                        const std::vector<int>& kinds, const std::vector<float>& mean,
                        const std::vector<float>& inv_std, float sigma, int interp, int out_dtype,
                        uintptr_t stream) {
  require(src != 0 && out != 0, "null device pointer");
  require(H >= 1 && W >= 1, "frame must not be empty");
  require(C == 1 || C == 3 || C == 4, "frame must have 1, 3 or 4 channels");
  require(int64_t{H} * W * C <= kMaxElements, "frame is too large");
  require(pitch >= static_cast<int64_t>(W) * C, "pitch smaller than a row");
  require(color_order == kGray || color_order == kBGR || color_order == kRGB,
          "unknown color order");
  FrameView f{};
  f.data = reinterpret_cast<const uint8_t*>(src);
  f.height = H;
  f.width = W;
  f.channels = C;
  f.row_stride = pitch;
  f.col_stride = C;
  f.ch_stride = 1;
  f.color_order = color_order;
  const Roi r = frame_roi(roi, W, H);
  PreprocessParams p = make_params(out_h, out_w, kinds, mean, inv_std, sigma, interp, out_dtype);
  require_area_downscale(p, r);
  preprocess_cuda(f, r, p, reinterpret_cast<void*>(out), stream);
}

void pool_classify_cuda_py(uintptr_t features, int F, int hf, int wf, uintptr_t weights, int hm,
                           int wm, uintptr_t labels, int num_labels, float eps, uintptr_t w1,
                           uintptr_t b1, uintptr_t w2, uintptr_t b2, int hidden, int classes,
                           uintptr_t pooled, uintptr_t logits, uintptr_t probs, uintptr_t stream) {
  require(features != 0 && weights != 0 && pooled != 0, "null device pointer");
  require(F >= 1 && hf >= 1 && wf >= 1 && hm >= 1 && wm >= 1, "features and weights must not be empty");
  require(int64_t{F} * hf * wf <= kMaxElements && int64_t{hm} * wm <= kMaxElements,
          "features or weights too large");
  require(!labels || (num_labels >= 0 && num_labels <= int64_t{hm} * wm),
          "num_labels must be in [0, mask pixels]");
  require(std::isfinite(eps) && eps > 0.f, "eps must be finite and > 0");
  require(!w1 || (hidden >= 1 && classes >= 1 && int64_t{hidden} * F <= kMaxElements &&
                  int64_t{classes} * hidden <= kMaxElements),
          "head sizes must be >= 1");
  PoolArgs a{};
  a.features = reinterpret_cast<const float*>(features);
  a.F = F;
  a.hf = hf;
  a.wf = wf;
  a.weights = reinterpret_cast<const float*>(weights);
  a.hm = hm;
  a.wm = wm;
  a.labels = reinterpret_cast<const int32_t*>(labels);
  a.num_labels = labels ? num_labels : 0;
  a.eps = eps;
  a.w1 = reinterpret_cast<const float*>(w1);
  a.b1 = reinterpret_cast<const float*>(b1);
  a.w2 = reinterpret_cast<const float*>(w2);
  a.b2 = reinterpret_cast<const float*>(b2);
  a.hidden = hidden;
  a.classes = classes;
  require(!a.w1 || (a.b1 && a.w2 && a.b2 && probs), "head needs w1, b1, w2, b2 and probs");
  pool_classify_cuda(a, reinterpret_cast<float*>(pooled), reinterpret_cast<float*>(logits),
                     reinterpret_cast<float*>(probs), stream);
}

void mask_post_cuda_py(uintptr_t logits, int h, int w, uintptr_t out, int H, int W,
                       int64_t out_pitch, std::array<int, 4> roi, float threshold, int value,
                       uintptr_t stream) {
  require(logits != 0 && out != 0, "null device pointer");
  require(h >= 1 && w >= 1 && H >= 1 && W >= 1, "logits and out must not be empty");
  require(int64_t{h} * w <= kMaxElements && int64_t{H} * W <= kMaxElements, "too large");
  require(H == 1 || out_pitch >= W, "out pitch must be >= its width (rows must not overlap)");
  require(value >= 1 && value <= 255, "value must be in [1, 255]");
  require(threshold >= 0.f && threshold <= 1.f, "threshold must be in [0, 1]");
  MaskPostArgs a{};
  a.logits = reinterpret_cast<const float*>(logits);
  a.h = h;
  a.w = w;
  a.out = reinterpret_cast<uint8_t*>(out);
  a.H = H;
  a.W = W;
  a.out_stride = out_pitch;
  a.roi = frame_roi(roi, W, H);
  a.threshold = threshold;
  a.value = static_cast<uint8_t>(value);
  mask_post_cuda(a, stream);
}
#endif

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "sonoedge compiled kernels (private; use sdk.kernels)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sonoedge::InputError& e) {
      py::object cls = py::module_::import("sdk.errors").attr("InputError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const sonoedge::KernelError& e) {
      py::object cls = py::module_::import("sdk.errors").attr("KernelError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  m.def("built_with_cuda", []() {
#if defined(SONOEDGE_WITH_CUDA)
    return true;
#else
    return false;
#endif
  });
  m.def("cuda_device_count", []() {
#if defined(SONOEDGE_WITH_CUDA)
    return sonoedge::cuda_device_count_impl();
#else
    return 0;
#endif
  });
  m.def("openmp_max_threads", []() {
#if defined(SONOEDGE_WITH_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
  });

  // The enums' names, indexed by value (sonoedge/common.h): sdk._constants holds the same.
  m.attr("INTERPOLATIONS") = name_tuple(kInterpNames);
  m.attr("COLORS") = name_tuple(kColorOrderNames);
  m.attr("CHANNELS") = name_tuple(kChannelNames);

  // Instruction-set dispatch of the CPU kernels (sonoedge/cpu_isa.h).
  m.def("cpu_isa_build", []() { return std::string(cpu_isa_build()); });
  m.def("cpu_isa_supported", []() { return cpu_isa_supported(); });
  m.def("cpu_isa_active", []() { return cpu_isa_active(); });
  m.def("cpu_isa_name", [](int level) { return std::string(cpu_isa_name(level)); },
        py::arg("level"));
  m.def("cpu_isa_set", [](int level) { cpu_isa_set(level); }, py::arg("level"));

  m.def("preprocess_cpu", &preprocess_cpu_py, py::arg("frame"), py::arg("roi"), py::arg("out"),
        py::arg("kinds"), py::arg("mean"), py::arg("inv_std"), py::arg("sigma"),
        py::arg("interp"), py::arg("color_order"), py::arg("num_threads"));
  m.def("gradient_magnitude_cpu", &gradient_magnitude_cpu_py, py::arg("image"), py::arg("sigma"),
        py::arg("out"), py::arg("num_threads"));
  m.def("pool_classify_cpu", &pool_classify_cpu_py, py::arg("features"), py::arg("weights"),
        py::arg("labels"), py::arg("num_labels"), py::arg("eps"), py::arg("w1"), py::arg("b1"),
        py::arg("w2"), py::arg("b2"));
  m.def("components_cpu", &components_cpu_py, py::arg("logits"), py::arg("threshold"),
        py::arg("sx"), py::arg("sy"), py::arg("min_area"), py::arg("to_frame") = false,
        py::arg("x0") = 0.0, py::arg("y0") = 0.0, py::arg("borders") = true,
        py::arg("kept_logits") = py::none());
  m.def("lesion_outlines_cpu", &lesion_outlines_cpu_py, py::arg("mask"), py::arg("labels"),
        py::arg("num_labels"), py::arg("roi"));
  m.def("scope_distance_cpu", &scope_distance_cpu_py, py::arg("features"), py::arg("logits"),
        py::arg("whiten"), py::arg("wm"));
  m.def("mask_post_cpu", &mask_post_cpu_py, py::arg("logits"), py::arg("out"), py::arg("roi"),
        py::arg("threshold"), py::arg("value"), py::arg("num_threads"));
#if defined(SONOEDGE_WITH_CUDA)
  m.def("preprocess_cuda", &preprocess_cuda_py);
  m.def("pool_classify_cuda", &pool_classify_cuda_py);
  m.def("mask_post_cuda", &mask_post_cuda_py);
#endif
}
