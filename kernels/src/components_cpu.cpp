// Connected components of the thresholded mask grid (see sonoedge/components.h).
//
// Two raster passes with union-find over provisional labels (the 4 already-visited 8-neighbours
// W, NW, N, NE); a union keeps the smaller label as the root, so each root is the first label its
// component received: numbering the kept roots in increasing order gives raster order of first
// pixels. On the 32x32 .. 256x256 grids of the models everything stays in L1 / L2; a call costs
// a few microseconds against ~10 us for cv::connectedComponentsWithStats through its Python
// binding plus the NumPy sigmoid, threshold and relabelling it replaced.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "sonoedge/components.h"
#include "sonoedge/sigmoid_cpu.h"

namespace sonoedge {

namespace {

inline int32_t find_root(std::vector<int32_t>& parent, int32_t a) {
  while (parent[a] != a) {
    parent[a] = parent[parent[a]];  // path halving
    a = parent[a];
  }
  return a;
}

inline int32_t unite(std::vector<int32_t>& parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a == b) return a;
  if (b < a) std::swap(a, b);
  parent[b] = a;
  return a;
}

}  // namespace

int components_cpu(const float* logits, int h, int w, float threshold, double sx, double sy,
                   double min_area, float* prob, int32_t* labels,
                   std::vector<ComponentStats>& stats, float* kept_logits) {
  const size_t n = static_cast<size_t>(h) * w;
  const int64_t bad = sigmoid_cpu(logits, prob, n, /*inf_ok=*/false);  // vectorized
  if (bad >= 0)
    throw InputError("mask logits contain NaN or inf at flat index " + std::to_string(bad) +
                     ": the model produced invalid output");
  // ---- pass 1: provisional labels ----------------------------------------------------------
  std::vector<int32_t> parent(1, 0);  // label 0 = background
  for (int y = 0; y < h; ++y) {
    const float* pr = prob + static_cast<size_t>(y) * w;
    int32_t* lab = labels + static_cast<size_t>(y) * w;
    const int32_t* up = y > 0 ? lab - w : nullptr;
    for (int x = 0; x < w; ++x) {
      if (!(pr[x] > threshold)) {
        lab[x] = 0;
        continue;
      }
      int32_t l = 0;
      auto take = [&](int32_t m) {
        if (m == 0) return;
        l = l == 0 ? find_root(parent, m) : unite(parent, l, m);
      };
      if (x > 0) take(lab[x - 1]);
      if (up) {
        if (x > 0) take(up[x - 1]);
        take(up[x]);
        if (x + 1 < w) take(up[x + 1]);
      }
      if (l == 0) {
        l = static_cast<int32_t>(parent.size());
        parent.push_back(l);
      }
      lab[x] = l;
    }
  }
  // ---- pass 2: statistics per root ----------------------------------------------------------
  const size_t nl = parent.size();
  std::vector<ComponentStats> all(nl, ComponentStats{w, h, -1, -1, 0, 0, 0});  // w, h: max x, y
  for (int y = 0; y < h; ++y) {
    int32_t* lab = labels + static_cast<size_t>(y) * w;
    for (int x = 0; x < w; ++x) {
      if (lab[x] == 0) continue;
      const int32_t r = find_root(parent, lab[x]);
      lab[x] = r;
      ComponentStats& s = all[r];
      if (s.area == 0) {
        s.first_x = x;
        s.first_y = y;
      }
      s.x = std::min(s.x, x);
      s.y = std::min(s.y, y);
      s.w = std::max(s.w, x);
      s.h = std::max(s.h, y);
      ++s.area;
    }
  }
  // ---- keep the lesion-sized ones, numbered in root (= raster) order --------------------------
  std::vector<int32_t> remap(nl, 0);
  stats.clear();
  for (size_t r = 1; r < nl; ++r) {
    ComponentStats& s = all[r];
    if (s.area == 0) continue;  // not a root
    if (static_cast<double>(s.area) * sx * sy < min_area) continue;
    s.w = s.w - s.x + 1;
    s.h = s.h - s.y + 1;
    stats.push_back(s);
    remap[r] = static_cast<int32_t>(stats.size());
  }
  for (size_t i = 0; i < n; ++i) labels[i] = remap[labels[i]];
  if (kept_logits) {  // the dropped components' cells (above the threshold, label 0) -> -inf
    const float ninf = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < n; ++i)
      kept_logits[i] = labels[i] == 0 && prob[i] > threshold ? ninf : logits[i];
  }
  return static_cast<int>(stats.size());
}

namespace {

// Outer border of the 8-connected set {on(x, y)} that contains (x0, y0), (x0, y0) being its first
// pixel in raster order, traced as cv::findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE) traces it
// (Suzuki & Abe's border following; straight runs reduced to their end points). `on` must be
// false outside the image. (x, y) pairs are appended to `xy`, mapped through `emit`.
template <class On, class Emit>
void trace_border(const On& on, int x0, int y0, std::vector<int>& xy, const Emit& emit) {
  // Neighbour directions counter-clockwise on the screen (rows grow downwards): E, NE, N, NW,
  // W, SW, S, SE.
  static const int kDx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
  static const int kDy[8] = {0, -1, -1, -1, 0, 1, 1, 1};
  // The first pixel's west neighbour is background (raster order): search clockwise from it
  // for the previous border pixel.
  int d1 = -1;
  for (int k = 0; k < 8; ++k) {
    const int d = (4 - k + 8) % 8;  // W, NW, N, NE, E, SE, S, SW: clockwise from W
    if (on(x0 + kDx[d], y0 + kDy[d])) {
      d1 = d;
      break;
    }
  }
  if (d1 < 0) {  // a single pixel
    emit(xy, x0, y0);
    return;
  }
  const int x1 = x0 + kDx[d1], y1 = y0 + kDy[d1];
  // Walk: at (x3, y3) having come from direction `back` (the previous pixel), search
  // counter-clockwise starting after `back` for the next border pixel.
  int x3 = x0, y3 = y0, back = d1;
  int prev_dir = -1;
  bool first = true;
  for (;;) {
    int d4 = -1;
    for (int k = 1; k <= 8; ++k) {
      const int d = (back + k) % 8;
      if (on(x3 + kDx[d], y3 + kDy[d])) {
        d4 = d;
        break;
      }
    }
    // CHAIN_APPROX_SIMPLE: a pixel is a vertex when the chain turns there (the first always).
    if (d4 != prev_dir || first) {
      emit(xy, x3, y3);
      first = false;
    }
    prev_dir = d4;
    const int x4 = x3 + kDx[d4], y4 = y3 + kDy[d4];
    if (x4 == x0 && y4 == y0 && x3 == x1 && y3 == y1) break;
    back = (d4 + 4) % 8;  // from (x4, y4), the pixel we came from
    x3 = x4;
    y3 = y4;
  }
}

inline void emit_xy(std::vector<int>& xy, int x, int y) {
  xy.push_back(x);
  xy.push_back(y);
}

// INTER_LINEAR taps of every output position along one axis (mask_post's axis_span, so the
// same taps the frame mask was blended from; hi == lo where the second weight is 0), cached
// per (source, destination) size: the Analyzer asks for the same geometry every frame.
struct Taps {
  int ssize = -1, dsize = -1;
  std::vector<int> lo, hi;
};

const Taps& taps_for(Taps& t, int ssize, int dsize) {
  if (t.ssize != ssize || t.dsize != dsize) {
    t.lo.resize(dsize);
    t.hi.resize(dsize);
    for (int d = 0; d < dsize; ++d) {
      const AxisSpan s = axis_span(d, ssize, dsize, kLinear);
      t.lo[d] = s.lo;
      t.hi[d] = s.hi;
    }
    t.ssize = ssize;
    t.dsize = dsize;
  }
  return t;
}

thread_local Taps t_xtaps, t_ytaps;

struct Run {
  int y, x0, x1;  // ROI-local row, first and last column (inclusive)
};

}  // namespace

void trace_outer_border(const int32_t* labels, int h, int w, int32_t label, int first_x,
                        int first_y, std::vector<int>& xy) {
  auto on = [&](int x, int y) {
    return x >= 0 && y >= 0 && x < w && y < h && labels[static_cast<size_t>(y) * w + x] == label;
  };
  trace_border(on, first_x, first_y, xy, emit_xy);
}

void lesion_outlines_cpu(const OutlineArgs& a, std::vector<LesionOutline>& out) {
  const int h = a.h, w = a.w, K = a.num_labels;
  const Roi roi = a.roi;
  // Grid boxes of labels 1..K (and the label range check).
  std::vector<int> gx0(K + 1, w), gy0(K + 1, h), gx1(K + 1, -1), gy1(K + 1, -1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int32_t l = a.labels[static_cast<size_t>(y) * w + x];
      if (l == 0) continue;
      if (l < 0 || l > K)
        throw InputError("labels must be in [0, num_labels=" + std::to_string(K) + "]; found " +
                         std::to_string(l) + " at (" + std::to_string(y) + ", " +
                         std::to_string(x) + ")");
      gx0[l] = std::min(gx0[l], x);
      gx1[l] = std::max(gx1[l], x);
      gy0[l] = std::min(gy0[l], y);
      gy1[l] = std::max(gy1[l], y);
    }
  const Taps& tx = taps_for(t_xtaps, w, roi.w);
  const Taps& ty = taps_for(t_ytaps, h, roi.h);
  out.assign(K, LesionOutline{});
  std::vector<Run> runs;
  std::vector<int32_t> parent, area;
  std::vector<uint8_t> own(w), owned, reg;
  std::vector<int> order;
  for (int k = 1; k <= K; ++k) {
    LesionOutline& o = out[k - 1];
    if (gx1[k] < 0) continue;  // no cell: an empty region
    // ROI columns / rows whose taps reach the lesion's grid box: lo and hi never decrease.
    const int rx0 = static_cast<int>(std::lower_bound(tx.hi.begin(), tx.hi.end(), gx0[k]) -
                                     tx.hi.begin());
    const int rx1 = static_cast<int>(std::upper_bound(tx.lo.begin(), tx.lo.end(), gx1[k]) -
                                     tx.lo.begin()) - 1;
    const int ry0 = static_cast<int>(std::lower_bound(ty.hi.begin(), ty.hi.end(), gy0[k]) -
                                     ty.hi.begin());
    const int ry1 = static_cast<int>(std::upper_bound(ty.lo.begin(), ty.lo.end(), gy1[k]) -
                                     ty.lo.begin()) - 1;
    // Runs of the region, row by row. Rows blended from the same pair of grid rows share the
    // ownership of every column: `owned` is rebuilt only when the pair changes (every ~19 rows
    // at 32 -> 600), then a row is one vectorizable AND with the mask and a run scan that skips
    // 8 equal bytes at a time (lesion interiors and background).
    runs.clear();
    parent.clear();
    // The region as a byte map of its box with a zero border (and 8 bytes of slack per row for
    // the word scan): the border tracing below reads it without bounds checks.
    const int nx = rx1 - rx0 + 1, ny = ry1 - ry0 + 1;
    const size_t bs = static_cast<size_t>(nx) + 10;
    owned.resize(nx);
    reg.assign((static_cast<size_t>(ny) + 2) * bs, 0);
    int pair_lo = -1, pair_hi = -1;
    bool any = false;
    int prev_begin = 0, prev_end = 0;
    for (int y = ry0; y <= ry1; ++y) {
      if (ty.lo[y] != pair_lo || ty.hi[y] != pair_hi) {
        pair_lo = ty.lo[y];
        pair_hi = ty.hi[y];
        const int32_t* l0 = a.labels + static_cast<size_t>(pair_lo) * w;
        const int32_t* l1 = a.labels + static_cast<size_t>(pair_hi) * w;
        any = false;
        for (int c = tx.lo[rx0]; c <= tx.hi[rx1]; ++c) {
          own[c] = (l0[c] == k) | (l1[c] == k);
          any |= own[c] != 0;
        }
        for (int x = 0; x < nx; ++x) owned[x] = own[tx.lo[rx0 + x]] | own[tx.hi[rx0 + x]];
      }
      const int begin = static_cast<int>(runs.size());
      if (any) {
        const uint8_t* __restrict__ m = a.mask + static_cast<int64_t>(roi.y + y) * a.stride + roi.x + rx0;
        const uint8_t* __restrict__ ow = owned.data();
        uint8_t* __restrict__ vv = reg.data() + (static_cast<size_t>(y - ry0) + 1) * bs + 1;
        for (int x = 0; x < nx; ++x) vv[x] = static_cast<uint8_t>((m[x] != 0) & ow[x]);
        int start = -1;
        int x = 0;
        while (x < nx) {
          uint64_t word;
          std::memcpy(&word, vv + x, 8);
          const uint64_t same = start < 0 ? 0 : 0x0101010101010101ull;
          if (word == same && x + 8 <= nx) {  // 8 bytes with no transition
            x += 8;
            continue;
          }
          const bool on = vv[x] != 0;
          if (on && start < 0) {
            start = x;
          } else if (!on && start >= 0) {
            runs.push_back(Run{y, rx0 + start, rx0 + x - 1});
            start = -1;
          }
          ++x;
        }
        if (start >= 0) runs.push_back(Run{y, rx0 + start, rx1});
      }
      const int end = static_cast<int>(runs.size());
      // 8-connected union with the previous row's runs (two pointers over sorted runs).
      for (int i = begin; i < end; ++i) parent.push_back(i);
      if (prev_end > prev_begin) {
        int j = prev_begin;
        for (int i = begin; i < end; ++i) {
          while (j < prev_end && runs[j].x1 + 1 < runs[i].x0) ++j;
          for (int jj = j; jj < prev_end && runs[jj].x0 <= runs[i].x1 + 1; ++jj)
            unite(parent, i, jj);
        }
      }
      prev_begin = begin;
      prev_end = end;
    }
    if (runs.empty()) continue;  // the lesion's cells left no pixel above the threshold
    // Pieces: roots are each piece's first run (unions keep the smaller index).
    const int nr = static_cast<int>(runs.size());
    area.assign(nr, 0);
    int bx0 = roi.w, bx1 = -1, by0 = runs.front().y, by1 = runs.back().y;
    int64_t total = 0;
    for (int i = 0; i < nr; ++i) {
      const int len = runs[i].x1 - runs[i].x0 + 1;
      area[find_root(parent, i)] += len;
      total += len;
      bx0 = std::min(bx0, runs[i].x0);
      bx1 = std::max(bx1, runs[i].x1);
    }
    order.clear();
    for (int i = 0; i < nr; ++i)
      if (parent[i] == i) order.push_back(i);
    // Largest piece first; equal areas in raster order of their first pixels.
    std::stable_sort(order.begin(), order.end(),
                     [&](int p, int q) { return area[p] > area[q]; });
    o.x = roi.x + bx0;
    o.y = roi.y + by0;
    o.w = bx1 - bx0 + 1;
    o.h = by1 - by0 + 1;
    o.area = total;
    o.contours.resize(order.size());
    const int ox = roi.x, oy = roi.y;
    auto emit = [ox, oy](std::vector<int>& xy, int x, int y) {
      xy.push_back(ox + x);
      xy.push_back(oy + y);
    };
    // Is ROI pixel (x, y) (within one pixel of the box) of lesion k: set in the region map.
    const uint8_t* rg = reg.data();
    auto on = [rg, bs, rx0, ry0](int x, int y) {
      return rg[static_cast<size_t>(y - ry0 + 1) * bs + static_cast<size_t>(x - rx0 + 1)] != 0;
    };
    for (size_t p = 0; p < order.size(); ++p)
      trace_border(on, runs[order[p]].x0, runs[order[p]].y, o.contours[p], emit);
  }
}

}  // namespace sonoedge
