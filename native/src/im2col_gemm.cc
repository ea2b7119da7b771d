// The im2col kernels: the forward convolution and the weight gradient of an ungrouped convolution
// as patches per block of output pixels (FillRows) and OpenBLAS sgemms (the plan: plan.h), or, where
// they fit, the direct AVX-512 kernels (direct_avx512.h).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"
#include "direct_avx512.h"
#include "kernels.h"
#include "plan.h"
#include "threads.h"

namespace jcb {
namespace {

// dst[i] = src[i * S] for i in [0, count): S a compile-time constant where it is small, so the
// compiler can vectorise the gather.
template <int64_t S>
void Strided(float* dst, const float* src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = src[i * S];
}

void Gather(float* dst, const float* src, int64_t count, int64_t s) {
  switch (s) {
    case 1:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case 2:
      return Strided<2>(dst, src, count);
    case 3:
      return Strided<3>(dst, src, count);
    case 4:
      return Strided<4>(dst, src, count);
    default:
      for (int64_t i = 0; i < count; ++i) dst[i] = src[i * s];
  }
}

// The patch rows (row = c * taps + tap) of sample `n` and output lines [q0, q1) (a line is one
// (depth, height) pair, out[2] pixels), into columns [col, col + (q1 - q0) * out[2]) of P (leading
// dimension ld).
void FillRows(const Geometry& g, const float* x, int64_t n, int64_t q0, int64_t q1, float* p, int64_t ld, int64_t col) {
  const int64_t taps = g.taps(), width = g.out[2];
  // Stride 1 along the lines and the width, input as wide as the output ("same" padding): a run of
  // lines of one depth reads one contiguous stretch of the input, copied at once, then its edges
  // (reads before or past a line) zeroed.
  const bool runs = g.s[1] == 1 && g.s[2] == 1 && g.in[2] == width;
  for (int64_t r = 0; r < g.c_in * taps; ++r) {
    const int64_t c = r / taps;
    int64_t kd, kh, kw;
    g.tap(r % taps, kd, kh, kw);
    const float* xc = x + (n * g.c_in + c) * g.in_pixels();
    float* row = p + r * ld + col;
    const int64_t off_w = kw * g.d[2] - g.lo[2];
    const auto [w0, w1] = g.inside_columns(kw);
    for (int64_t q = q0; q < q1;) {
      float* dst = row + (q - q0) * width;
      const int64_t line = g.input_line(q, kd, kh);
      if (line < 0) {
        std::fill(dst, dst + width, 0.0f);
        ++q;
        continue;
      }
      const float* src = xc + line * g.in[2] + off_w;
      if (runs) {  // lines q .. q + count - 1 of this depth whose input line exists
        const int64_t count = std::min({q1 - q, g.out[1] - q % g.out[1], g.in[1] - line % g.in[1]});
        // [lo, hi) reads inside the input, when this tap reads any column at all: a tap wholly
        // outside the input (w0 == w1) would otherwise copy from before or past it.
        const int64_t lo = w0, hi = count * width - (width - w1);
        if (w0 < w1) std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
        for (int64_t j = 0; j < count; ++j) {
          std::fill(dst + j * width, dst + j * width + w0, 0.0f);
          std::fill(dst + j * width + w1, dst + (j + 1) * width, 0.0f);
        }
        q += count;
        continue;
      }
      std::fill(dst, dst + w0, 0.0f);
      Gather(dst + w0, src + w0 * g.s[2], w1 - w0, g.s[2]);
      std::fill(dst + w1, dst + width, 0.0f);
      ++q;
    }
  }
}

}  // namespace

ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> x,
                      ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                      ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t block, int64_t threads) {
  if (g_sgemm == nullptr) return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "jcb_conv_weight_grad: no sgemm");
  Geometry g;
  if (!MakeGeometry(g, x.dimensions(), dout.dimensions(), out->dimensions(), stride, dilation, lo) || block < 1 ||
      threads < 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_weight_grad: expects rank-5 (N, C, D, H, W) arrays");
  const int64_t rows = g.c_in * g.taps(), width = g.out[2], lines = g.out[0] * g.out[1], pixels = g.pixels();
  float* w = out->typed_data();
  std::fill(w, w + g.c_out * rows, 0.0f);  // also the result of an empty problem
  if (g.n == 0 || pixels == 0 || rows == 0 || g.c_out == 0) return ffi::Error::Success();
#ifdef JCB_DIRECT
  if (DirectGradFits(g)) {
    DirectWeightGrad(pool, g, dout.typed_data(), x.typed_data(), w, threads);
    return ffi::Error::Success();
  }
#endif
  // Scratch per pixel: its patch column, and its packed dout column for samples with few pixels.
  // The blocks are planned for kPlanWorkers workers whatever `threads` says, and summed in slots
  // (plan.h: the same bits for any number of workers and any scheduling).
  const Plan b = MakePlan(g, rows + (pixels < kMinK ? g.c_out : 0), block, kPlanWorkers);
  if (!FitsBlas(g, b))
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_weight_grad: a matrix side exceeds 32-bit BLAS");
  const float* px = x.typed_data();
  const float* pd = dout.typed_data();
  // The sgemms accumulate the transpose, (C_in * taps) x C_out, = P * dout_block^T: with the long
  // side first, OpenBLAS ran this 10% faster here than dout_block * P^T. One per slot, its blocks'
  // sgemms added into it in block order; summed in slot order and transposed at the end.
  const Slots slots = MakeSlots(static_cast<int64_t>(b.tasks.size()), rows * g.c_out, b.used > 1);
  std::vector<std::vector<float>> partial(slots.count);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    std::vector<float> p(rows * b.cols), a(b.samples > 1 && pixels < kMinK ? g.c_out * b.cols : 0);
    for (int64_t s; (s = next.fetch_add(1)) < slots.count;) {
      std::vector<float>& wt = partial[s];
      wt.assign(rows * g.c_out, 0.0f);
      for (int64_t t = slots.begin(s); t < slots.begin(s + 1); ++t) {
        const auto [n0, q0] = b.tasks[t];
        const int64_t ns = std::min(b.samples, g.n - n0);
        const int64_t q1 = std::min(lines, q0 + b.q_rows), k = b.samples > 1 ? ns * pixels : (q1 - q0) * width;
        for (int64_t j = 0; j < ns; ++j) FillRows(g, px, n0 + j, q0, q1, p.data(), b.cols, j * pixels);
        if (b.samples == 1 || pixels >= kMinK) {  // one sgemm per sample, on dout in place
          for (int64_t j = 0; j < ns; ++j)
            g_sgemm(kRowMajor, kNoTrans, kTrans, rows, g.c_out, b.samples > 1 ? pixels : k, 1.0f,
                    p.data() + j * pixels, b.cols, pd + (n0 + j) * g.c_out * pixels + q0 * width, pixels, 1.0f,
                    wt.data(), g.c_out);
          continue;
        }
        for (int64_t o = 0; o < g.c_out; ++o)  // few pixels per sample: their dout rows side by side, one sgemm
          for (int64_t j = 0; j < ns; ++j)
            std::memcpy(&a[o * b.cols + j * pixels], pd + ((n0 + j) * g.c_out + o) * pixels, pixels * sizeof(float));
        g_sgemm(kRowMajor, kNoTrans, kTrans, rows, g.c_out, k, 1.0f, p.data(), b.cols, a.data(), b.cols, 1.0f,
                wt.data(), g.c_out);
      }
    }
  };
  RunWorkers(pool, std::min(threads, slots.count), work);
  // w = (the partials summed in slot order)^T, in tiles that stay in cache on both sides (a plain
  // strided transpose of deeplabv3's 4608 x 512 result took longer than a worker's sgemms).
  std::vector<const float*> parts(slots.count);
  for (int64_t s = 0; s < slots.count; ++s) parts[s] = partial[s].data();
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t o0 = 0; o0 < g.c_out; o0 += kTile)
      for (int64_t o = o0; o < std::min(g.c_out, o0 + kTile); ++o)
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) {
          float sum = parts[0][r * g.c_out + o];
          for (int64_t s = 1; s < slots.count; ++s) sum += parts[s][r * g.c_out + o];
          w[o * rows + r] = sum;
        }
  return ffi::Error::Success();
}

// The forward convolution y = conv(x, w): per block, the patches P and y_block = w * P (C_out x
// pixels, row-major), one sgemm per sample written into y in place; blocks are disjoint, so the
// workers need no partial results. A 1x1 kernel at stride 1 without padding reads x as P itself.
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wb,
                   ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                   ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t block, int64_t threads) {
  if (g_sgemm == nullptr) return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "jcb_conv_forward: no sgemm");
  Geometry g;
  if (!MakeGeometry(g, x.dimensions(), out->dimensions(), wb.dimensions(), stride, dilation, lo) || block < 1 ||
      threads < 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_forward: expects rank-5 (N, C, D, H, W) arrays");
  const int64_t rows = g.c_in * g.taps(), width = g.out[2], lines = g.out[0] * g.out[1], pixels = g.pixels();
  float* y = out->typed_data();
  if (g.n == 0 || pixels == 0 || g.c_out == 0) return ffi::Error::Success();
  if (rows == 0) {
    std::fill(y, y + g.n * g.c_out * pixels, 0.0f);
    return ffi::Error::Success();
  }
#ifdef JCB_DIRECT
  if (DirectFits(g)) {
    DirectForward(pool, g, x.typed_data(), wb.typed_data(), y, threads);
    return ffi::Error::Success();
  }
#endif
  bool in_place = g.taps() == 1;
  for (int a = 0; a < 3; ++a) in_place = in_place && g.s[a] == 1 && g.lo[a] == 0 && g.in[a] == g.out[a];
  // Reading x in place needs no scratch: then blocks only share the work out. Planned as for
  // kPlanWorkers workers whatever `threads` says (plan.h: the same bits for any number of workers).
  const Plan b = MakePlan(g, rows, in_place ? std::numeric_limits<int64_t>::max() / 2 : block, kPlanWorkers);
  if (!FitsBlas(g, b))
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_forward: a matrix side exceeds 32-bit BLAS");
  const float* px = x.typed_data();
  const float* pw = wb.typed_data();
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    std::vector<float> p(in_place ? 0 : rows * b.cols);
    for (int64_t t; (t = next.fetch_add(1)) < static_cast<int64_t>(b.tasks.size());) {
      const auto [n0, q0] = b.tasks[t];
      const int64_t ns = std::min(b.samples, g.n - n0);
      const int64_t q1 = std::min(lines, q0 + b.q_rows), k = b.samples > 1 ? pixels : (q1 - q0) * width;
      for (int64_t j = 0; j < ns; ++j) {
        const float* src = px + (n0 + j) * g.c_in * pixels + q0 * width;
        if (!in_place) {
          FillRows(g, px, n0 + j, q0, q1, p.data(), b.cols, j * pixels);
          src = p.data() + j * pixels;
        }
        g_sgemm(kRowMajor, kNoTrans, kNoTrans, g.c_out, k, rows, 1.0f, pw, rows, src, in_place ? pixels : b.cols,
                0.0f, y + (n0 + j) * g.c_out * pixels + q0 * width, pixels);
      }
    }
  };
  RunWorkers(pool, b.used > 1 ? std::min<int64_t>(threads, b.tasks.size()) : 1, work);
  return ffi::Error::Success();
}

}  // namespace jcb
