// The forward convolution and the weight gradient of grouped convolutions with few channels per
// group, plane by plane, without BLAS.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "threads.h"

namespace jcb {
namespace {

// One kernel tap t of a Geometry, with its indices (kd, kh, kw) and the output columns [w0, w1)
// whose input column is inside the input (not padding).
struct Tap {
  int64_t t, kd, kh, kw, w0, w1;
};

// f(tap) for each tap of g that reads at least one inside column, in order. A template, so that f
// (a lambda) inlines into the plane loops below, each variant compiled for its own instruction set.
template <typename F>
JCB_INLINE void ForEachTap(const Geometry& g, F&& f) {
  for (int64_t t = 0; t < g.taps(); ++t) {
    Tap tap{t, 0, 0, 0, 0, 0};
    g.tap(t, tap.kd, tap.kh, tap.kw);
    std::tie(tap.w0, tap.w1) = g.inside_columns(tap.kw);
    if (tap.w1 != tap.w0) f(tap);
  }
}

// f(q, xr) for each output line q (one (depth, height) pair) whose input line for the tap lies
// inside the input, in order: xr is that line of the input plane x, shifted so that xr[i * s[2]] is
// what output column i reads (inside for i in [tap.w0, tap.w1)).
template <typename F>
JCB_INLINE void ForEachInputRow(const Geometry& g, const Tap& tap, const float* x, F&& f) {
  const int64_t lines = g.out[0] * g.out[1];
  for (int64_t q = 0; q < lines; ++q) {
    const int64_t line = g.input_line(q, tap.kd, tap.kh);
    if (line < 0) continue;
    f(q, x + line * g.in[2] + tap.kw * g.d[2] - g.lo[2]);
  }
}

// The weight gradient of a grouped convolution with few channels per group (depthwise and channel
// multipliers: jax_conv_bpi's "direct" regime), without im2col or BLAS: per group and sample, one
// dot product per (output channel, input channel, tap) and output line, over planes that stay in
// cache. Workers take groups, so their results are disjoint. XLA CPU ran this as strided
// reductions at a few GFLOP/s (MobileNetV2's depthwise 3x3 weight gradient, 80 ms).
// acc[t] += sum over the output pixels p of d[p] * x[p*s + t*d - lo], for each tap t of one output
// channel plane d and one input channel plane x (of one sample). Along a line the products go to
// kLanes independent partial sums, kept across the lines, that the compiler can hold in vector
// registers (a single float accumulator would have to stay sequential); S is the width stride
// where it is 1 or 2 (0: any, `s`).
constexpr int64_t kLanes = 8;

template <int64_t S>
JCB_INLINE void PlaneGradBody(const Geometry& g, const float* d, const float* x, double* acc) {
  const int64_t width = g.out[2], s = S == 0 ? g.s[2] : S;
  ForEachTap(g, [&](const Tap& tap) {
    const int64_t w0 = tap.w0, w1 = tap.w1;
    float lane[kLanes] = {};
    float tail = 0.0f;
    ForEachInputRow(g, tap, x, [&](int64_t q, const float* xr) {
      const float* dr = d + q * width;
      int64_t i = w0;
      for (; i + kLanes <= w1; i += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) lane[j] += dr[i + j] * xr[(i + j) * s];
      for (; i < w1; ++i) tail += dr[i] * xr[i * s];
    });
    double sum = tail;
    for (int64_t j = 0; j < kLanes; ++j) sum += lane[j];
    acc[tap.t] += sum;
  });
}

// PlaneGrad<S>(isa, g, d, x, acc): PlaneGradBody compiled for each instruction set (isa.h).
JCB_ISA_VARIANTS(PlaneGrad, PlaneGradBody, (const Geometry& g, const float* d, const float* x, double* acc),
                 (g, d, x, acc))

}  // namespace

ffi::Error GroupedWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> x,
                             ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                             ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t groups,
                             int64_t threads) {
  Geometry g;
  if (!MakeGeometry(g, x.dimensions(), dout.dimensions(), out->dimensions(), stride, dilation, lo, groups) ||
      threads < 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_grouped_weight_grad: inconsistent shapes");
  const int64_t og = g.c_out / groups, cg = g.c_in / groups, taps = g.taps();
  const int64_t pixels = g.pixels(), in_pixels = g.in_pixels();
  float* w = out->typed_data();
  std::fill(w, w + g.c_out * cg * taps, 0.0f);
  if (g.n == 0 || pixels == 0 || taps == 0 || cg == 0 || og == 0) return ffi::Error::Success();
  const float* px = x.typed_data();
  const float* pd = dout.typed_data();
  const double flops = 2.0 * g.n * g.c_out * cg * taps * pixels;
  const int64_t used = flops < kMinParallelFlops ? 1 : std::min(threads, groups);
  const Isa isa = ActiveIsa();
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    std::vector<double> acc(og * cg * taps);
    for (int64_t gi; (gi = next.fetch_add(1)) < groups;) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t n = 0; n < g.n; ++n)
        for (int64_t o = 0; o < og; ++o)
          for (int64_t c = 0; c < cg; ++c) {
            const float* dp = pd + (n * g.c_out + gi * og + o) * pixels;
            const float* xp = px + (n * g.c_in + gi * cg + c) * in_pixels;
            double* a = acc.data() + (o * cg + c) * taps;
            ByWidthStride(g.s[2], [&](auto s) { PlaneGrad<decltype(s)::value>(isa, g, dp, xp, a); });
          }
      float* wg = w + gi * og * cg * taps;
      for (int64_t j = 0; j < og * cg * taps; ++j) wg[j] = static_cast<float>(acc[j]);
    }
  };
  RunWorkers(pool, used, work);
  return ffi::Error::Success();
}

namespace {

// y[p] += sum_t w[t] * x[p*s + t*d - lo] over one output plane y and one input plane x (of one
// sample), for the taps of one (output channel, input channel) pair: the forward of the grouped
// weight gradient's PlaneGrad, one axpy per tap and output line.
template <int64_t S>
JCB_INLINE void PlaneConvBody(const Geometry& g, const float* w, const float* x, float* y) {
  const int64_t width = g.out[2], s = S == 0 ? g.s[2] : S;
  ForEachTap(g, [&](const Tap& tap) {
    const int64_t w0 = tap.w0, w1 = tap.w1;
    const float wt = w[tap.t];
    ForEachInputRow(g, tap, x, [&](int64_t q, const float* xr) {
      float* yr = y + q * width;
      for (int64_t i = w0; i < w1; ++i) yr[i] += wt * xr[i * s];
    });
  });
}

// PlaneConv<S>(isa, g, w, x, y): PlaneConvBody compiled for each instruction set (isa.h).
JCB_ISA_VARIANTS(PlaneConv, PlaneConvBody, (const Geometry& g, const float* w, const float* x, float* y),
                 (g, w, x, y))

}  // namespace

// The forward convolution of a grouped convolution with few channels per group: per sample and
// group, PlaneConv for each channel pair into planes of y that stay in cache. Workers take (sample,
// group) pairs, whose outputs are disjoint.
ffi::Error GroupedForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wb,
                          ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                          ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t groups,
                          int64_t threads) {
  Geometry g;
  if (!MakeGeometry(g, x.dimensions(), out->dimensions(), wb.dimensions(), stride, dilation, lo, groups) ||
      threads < 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_grouped_forward: inconsistent shapes");
  const int64_t og = g.c_out / groups, cg = g.c_in / groups, taps = g.taps();
  const int64_t pixels = g.pixels(), in_pixels = g.in_pixels();
  float* y = out->typed_data();
  std::fill(y, y + g.n * g.c_out * pixels, 0.0f);
  if (g.n == 0 || pixels == 0 || taps == 0 || cg == 0 || og == 0) return ffi::Error::Success();
  const float* px = x.typed_data();
  const float* pw = wb.typed_data();
  const double flops = 2.0 * g.n * g.c_out * cg * taps * pixels;
  const int64_t jobs = g.n * groups;
  const int64_t used = flops < kMinParallelFlops ? 1 : std::min(threads, jobs);
  const Isa isa = ActiveIsa();
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    for (int64_t j; (j = next.fetch_add(1)) < jobs;) {
      const int64_t n = j / groups, gi = j % groups;
      for (int64_t o = 0; o < og; ++o)
        for (int64_t c = 0; c < cg; ++c) {
          const float* wp = pw + ((gi * og + o) * cg + c) * taps;
          const float* xp = px + (n * g.c_in + gi * cg + c) * in_pixels;
          float* yp = y + (n * g.c_out + gi * og + o) * pixels;
          ByWidthStride(g.s[2], [&](auto s) { PlaneConv<decltype(s)::value>(isa, g, wp, xp, yp); });
        }
    }
  };
  RunWorkers(pool, used, work);
  return ffi::Error::Success();
}

}  // namespace jcb
