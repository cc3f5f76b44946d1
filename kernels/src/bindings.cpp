// pybind11 bindings of sdk._kernels. Private: the typed, validating API is sdk/kernels.
//
// Host functions take NumPy arrays; the Python wrapper has validated them already, the checks
// here are a second line (a wrong call never reaches raw memory). Every kernel releases the GIL.
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
  require(!grad || (sigma > 0.f && gaussian_radius(sigma) <= kMaxRadius), "sigma must be in (0, 8]");
  return p;
}

void preprocess_cpu_py(const py::array& frame, std::array<int, 4> roi, py::array out,
                       const std::vector<int>& kinds, const std::vector<float>& mean,
                       const std::vector<float>& inv_std, float sigma, int interp,
                       int color_order, int num_threads) {
  require(frame.dtype().kind() == 'u' && frame.itemsize() == 1, "frame must be uint8");
  require(frame.ndim() == 2 || frame.ndim() == 3, "frame must be (H, W) or (H, W, C)");
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
  Roi r{roi[0], roi[1], roi[2], roi[3]};
  require(r.w >= 1 && r.h >= 1 && r.x >= 0 && r.y >= 0 && r.x + r.w <= f.width &&
              r.y + r.h <= f.height,
          "roi outside the frame");
  require(out.ndim() == 3 && out.shape(0) == static_cast<py::ssize_t>(kinds.size()),
          "out must be (C, h, w)");
  require(is_c_contiguous(out) && out.writeable(), "out must be writable and C-contiguous");
  require(out.dtype().kind() == 'f' && (out.itemsize() == 4 || out.itemsize() == 2),
          "out must be float32 or float16");
  const int dtype = out.itemsize() == 4 ? kFloat32 : kFloat16;
  PreprocessParams p = make_params(static_cast<int>(out.shape(1)), static_cast<int>(out.shape(2)),
                                   kinds, mean, inv_std, sigma, interp, dtype);
  require(interp != kArea || (p.out_h <= r.h && p.out_w <= r.w),
          "area interpolation needs a downscale on both axes");
  void* dst = out.mutable_data();
  py::gil_scoped_release nogil;
  preprocess_cpu(f, r, p, dst, num_threads);
}

void gradient_magnitude_cpu_py(const py::array& img, float sigma, py::array out, int num_threads) {
  require(img.ndim() == 2, "image must be 2-D");
  const float* src = f32_ptr(img, "image");
  require(out.ndim() == 2 && out.shape(0) == img.shape(0) && out.shape(1) == img.shape(1),
          "out must match the image shape");
  require(out.writeable(), "out must be writable");
  f32_ptr(out, "out");
  require(sigma > 0.f && gaussian_radius(sigma) <= kMaxRadius, "sigma must be in (0, 8]");
  float* dst = static_cast<float*>(out.mutable_data());
  const int h = static_cast<int>(img.shape(0)), w = static_cast<int>(img.shape(1));
  py::gil_scoped_release nogil;
  gradient_magnitude_cpu(src, h, w, sigma, dst, num_threads);
}

py::tuple pool_classify_cpu_py(const py::array& features, const py::array& weights,
                               const py::object& labels, int num_labels, float eps,
                               const py::object& w1, const py::object& b1, const py::object& w2,
                               const py::object& b2) {
  PoolArgs a{};
  require(features.ndim() == 3, "features must be (F, h, w)");
  require(weights.ndim() == 2, "weights must be (h, w)");
  a.features = f32_ptr(features, "features");
  a.F = static_cast<int>(features.shape(0));
  a.hf = static_cast<int>(features.shape(1));
  a.wf = static_cast<int>(features.shape(2));
  a.weights = f32_ptr(weights, "weights");
  a.hm = static_cast<int>(weights.shape(0));
  a.wm = static_cast<int>(weights.shape(1));
  a.eps = eps;
  py::array lab;
  if (!labels.is_none()) {
    lab = labels.cast<py::array>();
    require(lab.dtype().kind() == 'i' && lab.itemsize() == 4, "labels must be int32");
    require(is_c_contiguous(lab), "labels must be C-contiguous");
    require(lab.ndim() == 2 && lab.shape(0) == a.hm && lab.shape(1) == a.wm,
            "labels must match weights");
    a.labels = static_cast<const int32_t*>(lab.data());
    a.num_labels = num_labels;
  }
  require(a.num_labels >= 0, "num_labels must be >= 0");
  py::array aw1, ab1, aw2, ab2;
  if (!w1.is_none()) {
    aw1 = w1.cast<py::array>();
    ab1 = b1.cast<py::array>();
    aw2 = w2.cast<py::array>();
    ab2 = b2.cast<py::array>();
    a.w1 = f32_ptr(aw1, "w1");
    a.b1 = f32_ptr(ab1, "b1");
    a.w2 = f32_ptr(aw2, "w2");
    a.b2 = f32_ptr(ab2, "b2");
    require(aw1.ndim() == 2 && aw1.shape(1) == a.F, "w1 must be (hidden, F)");
    a.hidden = static_cast<int>(aw1.shape(0));
    require(ab1.ndim() == 1 && ab1.shape(0) == a.hidden, "b1 must be (hidden,)");
    require(aw2.ndim() == 2 && aw2.shape(1) == a.hidden, "w2 must be (classes, hidden)");
    a.classes = static_cast<int>(aw2.shape(0));
    require(ab2.ndim() == 1 && ab2.shape(0) == a.classes, "b2 must be (classes,)");
  }
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
  MaskPostArgs a{};
  a.logits = f32_ptr(logits, "logits");
  a.h = static_cast<int>(logits.shape(0));
  a.w = static_cast<int>(logits.shape(1));
  require(a.h >= 1 && a.w >= 1, "logits must not be empty");
  require(out.ndim() == 2 && out.dtype().kind() == 'u' && out.itemsize() == 1 && out.writeable(),
          "out must be a writable uint8 (H, W) array");
  require(out.strides(1) == 1, "out rows must be contiguous");
  a.out = static_cast<uint8_t*>(out.mutable_data());
  a.H = static_cast<int>(out.shape(0));
  a.W = static_cast<int>(out.shape(1));
  a.out_stride = out.strides(0);
  a.roi = Roi{roi[0], roi[1], roi[2], roi[3]};
  require(a.roi.w >= 1 && a.roi.h >= 1 && a.roi.x >= 0 && a.roi.y >= 0 &&
              a.roi.x + a.roi.w <= a.W && a.roi.y + a.roi.h <= a.H,
          "roi outside the frame");
  require(value >= 1 && value <= 255, "value must be in [1, 255]");
  a.threshold = threshold;
  a.value = static_cast<uint8_t>(value);
  py::gil_scoped_release nogil;
  mask_post_cpu(a, num_threads);
}

py::tuple components_cpu_py(const py::array& logits, float threshold, double sx, double sy,
                            double min_area, bool to_frame, double x0, double y0) {
  require(logits.ndim() == 2, "logits must be (h, w)");
  const float* lg = f32_ptr(logits, "logits");
  const py::ssize_t h = logits.shape(0), w = logits.shape(1);
  require(h >= 1 && w >= 1, "logits must not be empty");
  py::array_t<float> prob({h, w});
  py::array_t<int32_t> labels({h, w});
  float* pp = prob.mutable_data();
  int32_t* lp = labels.mutable_data();
  std::vector<ComponentStats> stats;
  int k;
  {
    py::gil_scoped_release nogil;
    k = components_cpu(lg, static_cast<int>(h), static_cast<int>(w), threshold, sx, sy, min_area,
                       pp, lp, stats);
  }
  py::array_t<int32_t> st({static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(5)});
  int32_t* sp = st.mutable_data();
  std::vector<std::vector<int>> borders(k);
  {
    py::gil_scoped_release nogil;
    for (int i = 0; i < k; ++i) {
      sp[5 * i + 0] = stats[i].x;
      sp[5 * i + 1] = stats[i].y;
      sp[5 * i + 2] = stats[i].w;
      sp[5 * i + 3] = stats[i].h;
      sp[5 * i + 4] = stats[i].area;
      trace_outer_border(lp, static_cast<int>(h), static_cast<int>(w), i + 1, stats[i].first_x,
                         stats[i].first_y, borders[i]);
    }
  }
  py::list contours(k);
  for (int i = 0; i < k; ++i) {
    const py::ssize_t np_ = static_cast<py::ssize_t>(borders[i].size() / 2);
    py::array_t<int32_t> c({np_, static_cast<py::ssize_t>(2)});
    int32_t* cp = c.mutable_data();
    if (to_frame) {  // cell centres in frame pixels, rounded half to even as numpy.rint
      for (py::ssize_t j = 0; j < np_; ++j) {
        cp[2 * j] = static_cast<int32_t>(std::nearbyint(x0 + (borders[i][2 * j] + 0.5) * sx));
        cp[2 * j + 1] = static_cast<int32_t>(std::nearbyint(y0 + (borders[i][2 * j + 1] + 0.5) * sy));
      }
    } else {
      std::copy(borders[i].begin(), borders[i].end(), cp);
    }
    contours[i] = c;
  }
  return py::make_tuple(prob, labels, st, contours);
}

#if defined(SONOEDGE_WITH_CUDA)
void preprocess_cuda_py(uintptr_t src, int H, int W, int C, int64_t pitch, int color_order,
                        std::array<int, 4> roi, uintptr_t out, int out_h, int out_w,
                        const std::vector<int>& kinds, const std::vector<float>& mean,
                        const std::vector<float>& inv_std, float sigma, int interp, int out_dtype,
                        uintptr_t stream) {
  require(src != 0 && out != 0, "null device pointer");
  require(C == 1 || C == 3 || C == 4, "frame must have 1, 3 or 4 channels");
  require(pitch >= static_cast<int64_t>(W) * C, "pitch smaller than a row");
  FrameView f{};
  f.data = reinterpret_cast<const uint8_t*>(src);
  f.height = H;
  f.width = W;
  f.channels = C;
  f.row_stride = pitch;
  f.col_stride = C;
  f.ch_stride = 1;
  f.color_order = color_order;
  Roi r{roi[0], roi[1], roi[2], roi[3]};
  require(r.w >= 1 && r.h >= 1 && r.x >= 0 && r.y >= 0 && r.x + r.w <= W && r.y + r.h <= H,
          "roi outside the frame");
  PreprocessParams p = make_params(out_h, out_w, kinds, mean, inv_std, sigma, interp, out_dtype);
  require(interp != kArea || (p.out_h <= r.h && p.out_w <= r.w),
          "area interpolation needs a downscale on both axes");
  preprocess_cuda(f, r, p, reinterpret_cast<void*>(out), stream);
}

void pool_classify_cuda_py(uintptr_t features, int F, int hf, int wf, uintptr_t weights, int hm,
                           int wm, uintptr_t labels, int num_labels, float eps, uintptr_t w1,
                           uintptr_t b1, uintptr_t w2, uintptr_t b2, int hidden, int classes,
                           uintptr_t pooled, uintptr_t logits, uintptr_t probs, uintptr_t stream) {
  require(features != 0 && weights != 0, "null device pointer");
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
  MaskPostArgs a{};
  a.logits = reinterpret_cast<const float*>(logits);
  a.h = h;
  a.w = w;
  a.out = reinterpret_cast<uint8_t*>(out);
  a.H = H;
  a.W = W;
  a.out_stride = out_pitch;
  a.roi = Roi{roi[0], roi[1], roi[2], roi[3]};
  require(a.roi.w >= 1 && a.roi.h >= 1 && a.roi.x >= 0 && a.roi.y >= 0 &&
              a.roi.x + a.roi.w <= W && a.roi.y + a.roi.h <= H,
          "roi outside the frame");
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
        py::arg("x0") = 0.0, py::arg("y0") = 0.0);
  m.def("mask_post_cpu", &mask_post_cpu_py, py::arg("logits"), py::arg("out"), py::arg("roi"),
        py::arg("threshold"), py::arg("value"), py::arg("num_threads"));
#if defined(SONOEDGE_WITH_CUDA)
  m.def("preprocess_cuda", &preprocess_cuda_py);
  m.def("pool_classify_cuda", &pool_classify_cuda_py);
  m.def("mask_post_cuda", &mask_post_cuda_py);
#endif
}
