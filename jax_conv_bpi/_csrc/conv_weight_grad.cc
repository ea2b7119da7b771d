// jax_conv_bpi's native CPU kernel: the weight gradient of an ungrouped convolution, on OpenBLAS.
//
//   w[o, c, kd, kh, kw] = sum_n sum_(pd, ph, pw) dout[n, o, pd, ph, pw] * x[n, c, pd*sd + kd*dd - ld, ...]
//
// float32, channels-first, 1-3 spatial dims given as 3 (leading unit axes); x reads outside the
// input (the padding `lo`) are zeros. Per block of output pixels the kernel writes the im2col
// patches P (C_in * taps rows, one column per pixel) and accumulates P * dout_block^T with a
// row-major sgemm, so the contraction is over the block's pixels, long, and the small result
// (C_in * taps) x C_out is written once per sgemm (transposed into w at the end). A block is as
// many whole samples as fit in `block` floats of patches (an attribute; 1 MiB from
// jax_conv_bpi), else as many output lines of one sample as fit. Samples with fewer than kMinK
// pixels share one sgemm (their dout rows packed side by side too); the others get one each, on
// dout in place.
//
// Threads: up to `threads` workers (an attribute: the usable cores, from jax_conv_bpi; one for
// problems under kMinParallelFlops), the calling thread one of them and the others tasks on XLA's
// intra-op thread pool, take blocks in turn; each fills its own patches and runs its own
// single-threaded sgemm into its own partial result, and the partials are summed at the end. One
// worker's im2col fill then overlaps the other's sgemm; measured here (2 cores), this beat one
// fill thread feeding OpenBLAS's own threads (resnet50_l1 82-88 -> 60 ms, unet3d_conv 30 -> 16-17
// ms), and 2 workers took resnet50_l1 77 -> 40 ms against 1.
//
// The sgemm is OpenBLAS's CBLAS entry point, looked up by the Python side (jax_conv_bpi/_native.py)
// in the scipy-openblas32 wheel (its private copy, set to one thread) and handed over once through
// jcb_native_set_sgemm before the handler is registered; nothing here links against a BLAS. A call
// keeps no state beyond its own buffers and its workers, so concurrent calls from XLA's threads
// are as safe as OpenBLAS's own concurrent sgemms.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 32-bit ints.
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                       int);
Sgemm g_sgemm = nullptr;

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kMinK = 1024;  // samples with fewer pixels share one sgemm (packed)
constexpr double kMinParallelFlops = 1 << 24;  // smaller problems run on the calling thread alone

struct Geometry {
  int64_t n, c_in, c_out;
  int64_t in[3], out[3], k[3], s[3], d[3], lo[3];
  int64_t taps() const { return k[0] * k[1] * k[2]; }
  int64_t pixels() const { return out[0] * out[1] * out[2]; }
  int64_t in_pixels() const { return in[0] * in[1] * in[2]; }
};

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
    const int64_t c = r / taps, t = r % taps;
    const int64_t kd = t / (g.k[1] * g.k[2]), kh = (t / g.k[2]) % g.k[1], kw = t % g.k[2];
    const float* xc = x + (n * g.c_in + c) * g.in_pixels();
    float* row = p + r * ld + col;
    // Output columns whose input column is inside: ow in [w0, w1).
    const int64_t off_w = kw * g.d[2] - g.lo[2];
    int64_t w0 = off_w >= 0 ? 0 : (-off_w + g.s[2] - 1) / g.s[2];
    int64_t w1 = g.in[2] - off_w <= 0 ? 0 : std::min(width, (g.in[2] - off_w + g.s[2] - 1) / g.s[2]);
    w0 = std::min(w0, width);
    w1 = std::max(w1, w0);
    for (int64_t q = q0; q < q1;) {
      float* dst = row + (q - q0) * width;
      const int64_t qd = q / g.out[1], qh = q % g.out[1];
      const int64_t id = qd * g.s[0] + kd * g.d[0] - g.lo[0];
      const int64_t ih = qh * g.s[1] + kh * g.d[1] - g.lo[1];
      if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
        std::fill(dst, dst + width, 0.0f);
        ++q;
        continue;
      }
      const float* src = xc + (id * g.in[1] + ih) * g.in[2] + off_w;
      if (runs) {  // lines q .. q + count - 1 of this depth whose input line exists
        const int64_t count = std::min({q1 - q, g.out[1] - qh, g.in[1] - ih});
        const int64_t lo = w0, hi = count * width - (width - w1);  // [lo, hi) reads inside the input
        std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
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

// The workers handed to XLA's thread pool by one call: how many are running, and whether the call
// still takes more.
struct Join {
  std::mutex m;
  std::condition_variable cv;
  int64_t active = 0;
  bool closed = false;
};

ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> out,
                      ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                      ffi::Span<const int64_t> lo, int64_t block, int64_t threads) {
  if (g_sgemm == nullptr) return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "jcb_conv_weight_grad: no sgemm");
  auto dd = dout.dimensions(), xd = x.dimensions(), wd = out->dimensions();
  if (dd.size() != 5 || xd.size() != 5 || wd.size() != 5 || stride.size() != 3 || dilation.size() != 3 ||
      lo.size() != 3 || dd[0] != xd[0] || wd[0] != dd[1] || wd[1] != xd[1] || block < 1 || threads < 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_weight_grad: expects rank-5 (N, C, D, H, W) arrays");
  Geometry g{dd[0], xd[1], dd[1]};
  for (int a = 0; a < 3; ++a) {
    g.in[a] = xd[2 + a], g.out[a] = dd[2 + a], g.k[a] = wd[2 + a];
    g.s[a] = stride[a], g.d[a] = dilation[a], g.lo[a] = lo[a];
  }
  const int64_t rows = g.c_in * g.taps(), width = g.out[2], lines = g.out[0] * g.out[1], pixels = g.pixels();
  float* w = out->typed_data();
  std::fill(w, w + g.c_out * rows, 0.0f);  // also the result of an empty problem
  if (g.n == 0 || pixels == 0 || rows == 0 || g.c_out == 0) return ffi::Error::Success();
  // Block: `samples` whole samples, or one sample's `q_rows` output lines, within `block` floats of
  // patches (and of packed dout rows, for samples with few pixels).
  const int64_t per_pixel = rows + (pixels < kMinK ? g.c_out : 0);
  int64_t samples = 1, q_rows = lines;
  if (per_pixel * pixels <= block) {
    samples = std::max<int64_t>(1, std::min(g.n, block / (per_pixel * pixels)));
  } else {
    q_rows = std::max<int64_t>(1, block / (rows * width));
  }
  // Workers: up to `threads`, none beyond one for a small problem (a thread costs more than it saves);
  // then blocks small enough that each worker gets one.
  const double flops = 2.0 * rows * g.c_out * g.n * pixels;
  const int64_t workers = flops < kMinParallelFlops ? 1 : std::max<int64_t>(1, threads);
  if (workers > 1 && samples > 1) samples = std::min(samples, (g.n + workers - 1) / workers);
  if (workers > 1 && samples == 1 && g.n < workers)
    q_rows = std::min(q_rows, std::max<int64_t>(1, lines * g.n / workers));
  // Few blocks: as many per worker, so that none waits on another's last one (stylegan2_up, one
  // sample of 64 lines in blocks of 28: 3 blocks for 2 workers).
  if (workers > 1 && samples > 1) {
    const int64_t blocks = (g.n + samples - 1) / samples;
    if (blocks % workers != 0 && blocks < 4 * workers) {
      const int64_t even = (blocks + workers - 1) / workers * workers;
      samples = std::max<int64_t>(1, (g.n + even - 1) / even);
    }
  } else if (workers > 1) {
    int64_t per_sample = (lines + q_rows - 1) / q_rows;
    if (g.n * per_sample % workers != 0 && g.n * per_sample < 4 * workers) {
      while (g.n * per_sample % workers != 0 && per_sample < lines) ++per_sample;
      q_rows = (lines + per_sample - 1) / per_sample;
    }
  }
  const int64_t cols = samples > 1 ? samples * pixels : q_rows * width;
  if (std::max({rows, g.c_out, cols, pixels}) > INT32_MAX)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_weight_grad: a matrix side exceeds 32-bit BLAS");
  std::vector<std::pair<int64_t, int64_t>> tasks;  // (first sample, first line) of each block
  for (int64_t n0 = 0; n0 < g.n; n0 += samples)
    for (int64_t q0 = 0; q0 < lines; q0 += q_rows) tasks.emplace_back(n0, q0);
  const float* px = x.typed_data();
  const float* pd = dout.typed_data();
  // The sgemms accumulate the transpose, (C_in * taps) x C_out, = P * dout_block^T: with the long
  // side first, OpenBLAS ran this 10% faster here than dout_block * P^T. One per worker, summed and
  // transposed at the end.
  const int64_t used = std::min<int64_t>(workers, tasks.size());
  std::vector<std::vector<float>> partial(used);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t id) {
    std::vector<float> p(rows * cols), a(samples > 1 && pixels < kMinK ? g.c_out * cols : 0);
    std::vector<float>& wt = partial[id];
    wt.assign(rows * g.c_out, 0.0f);
    for (int64_t t; (t = next.fetch_add(1)) < static_cast<int64_t>(tasks.size());) {
      const auto [n0, q0] = tasks[t];
      const int64_t ns = std::min(samples, g.n - n0);
      const int64_t q1 = std::min(lines, q0 + q_rows), k = samples > 1 ? ns * pixels : (q1 - q0) * width;
      for (int64_t j = 0; j < ns; ++j) FillRows(g, px, n0 + j, q0, q1, p.data(), cols, j * pixels);
      if (samples == 1 || pixels >= kMinK) {  // one sgemm per sample, on dout in place
        for (int64_t j = 0; j < ns; ++j)
          g_sgemm(kRowMajor, kNoTrans, kTrans, rows, g.c_out, samples > 1 ? pixels : k, 1.0f, p.data() + j * pixels,
                  cols, pd + (n0 + j) * g.c_out * pixels + q0 * width, pixels, 1.0f, wt.data(), g.c_out);
        continue;
      }
      for (int64_t o = 0; o < g.c_out; ++o)  // few pixels per sample: their dout rows side by side, one sgemm
        for (int64_t j = 0; j < ns; ++j)
          std::memcpy(&a[o * cols + j * pixels], pd + ((n0 + j) * g.c_out + o) * pixels, pixels * sizeof(float));
      g_sgemm(kRowMajor, kNoTrans, kTrans, rows, g.c_out, k, 1.0f, p.data(), cols, a.data(), cols, 1.0f, wt.data(),
              g.c_out);
    }
  };
  // Workers 1.. go to XLA's intra-op thread pool, whose idle threads pick them up at once (new
  // threads had to wait for a time slice next to the pool's spinning ones: ms_doc's second worker
  // started after the first had done both blocks). The call waits only for the workers that
  // started; one that starts after the call closed returns without touching it.
  auto join = std::make_shared<Join>();
  for (int64_t id = 1; id < used; ++id)
    pool.Schedule([join, &work, id] {
      {
        std::lock_guard<std::mutex> lock(join->m);
        if (join->closed) return;
        ++join->active;
      }
      work(id);
      std::lock_guard<std::mutex> lock(join->m);
      if (--join->active == 0) join->cv.notify_all();
    });
  work(0);  // the calling thread is worker 0
  {
    std::unique_lock<std::mutex> lock(join->m);
    join->closed = true;
    join->cv.wait(lock, [&] { return join->active == 0; });
  }
  // w = (sum of the partials)^T, in tiles that stay in cache on both sides (a plain strided
  // transpose of deeplabv3's 4608 x 512 result took longer than a worker's sgemms).
  for (int64_t id = 1; id < used; ++id)
    if (!partial[id].empty())
      for (int64_t j = 0; j < rows * g.c_out; ++j) partial[0][j] += partial[id][j];
  const float* wt = partial[0].data();
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t o0 = 0; o0 < g.c_out; o0 += kTile)
      for (int64_t o = o0; o < std::min(g.c_out, o0 + kTile); ++o)
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) w[o * rows + r] = wt[r * g.c_out + o];
  return ffi::Error::Success();
}

}  // namespace

extern "C" void jcb_native_set_sgemm(void* sgemm) { g_sgemm = reinterpret_cast<Sgemm>(sgemm); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvWeightGrad, WeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<ffi::Span<const int64_t>>("lo")
                                  .Attr<int64_t>("block")
                                  .Attr<int64_t>("threads"));
