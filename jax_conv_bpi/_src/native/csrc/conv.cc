// jax_conv_bpi's native CPU kernels: the forward convolution and the weight gradient of an
// ungrouped convolution, as im2col blocks and OpenBLAS sgemms, and the forward and weight gradient
// of a grouped one with few channels per group, plane by plane (GroupedForward, GroupedWeightGrad).
//
//   y[n, o, p]          = sum_(c, t) w[o, c, t] * x[n, c, p*s + t*d - lo]               (Forward)
//   w[o, c, kd, kh, kw] = sum_n sum_(pd, ph, pw) dout[n, o, pd, ph, pw] * x[n, c, pd*sd + kd*dd - ld, ...]
//                                                                                       (WeightGrad)
//
// float32, channels-first, 1-3 spatial dims given as 3 (leading unit axes); x reads outside the
// input (the padding `lo`, which may be negative: a crop) are zeros, and the output's size sets the
// padding past the end. Per block of output pixels a kernel writes the im2col patches P (C_in *
// taps rows, one column per pixel). The weight gradient accumulates P * dout_block^T with a
// row-major sgemm, so the contraction is over the block's pixels, long, and the small result
// (C_in * taps) x C_out is written once per sgemm (transposed into w at the end); the forward
// writes w * P (C_out x pixels) into y in place. A block is as many whole samples as fit in
// `block` floats of patches (an attribute; 1 MiB from jax_conv_bpi, at least kMinCols pixels, more
// for many rows), else as many output lines of one sample as fit. In the weight gradient, samples
// with fewer than kMinK pixels share one sgemm (their dout rows packed side by side too); the
// others get one each, on dout in place. The stride-1 input gradient is the forward kernel's
// correlation of dout with the flipped kernel (jax_conv_bpi/_cpu_input_grad.py). At stride 1, on
// CPUs with AVX-512, both compute most layers directly instead (DirectForward, DirectWeightGrad:
// no patches, register-blocked vector FMAs; DirectFits and DirectGradFits say where).
//
// Threads: up to `threads` workers (an attribute: the usable cores, from jax_conv_bpi; one for
// problems under kMinParallelFlops), the calling thread one of them and the others tasks on XLA's
// intra-op thread pool, take blocks in turn; each fills its own patches and runs its own
// single-threaded sgemm (into its own partial result of the weight gradient, summed at the end). One
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
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Hot loops compiled for AVX-512 and AVX2 too, picked at load time by the CPU (GCC and Clang on
// x86-64 Linux); the library itself is built for the baseline, so one cached build runs anywhere.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define JCB_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define JCB_CLONES
#endif

// The small templates the hot loops are written with: always inlined, so their bodies take the
// caller's instruction set (a JCB_CLONES clone's).
#if defined(__GNUC__) || defined(__clang__)
#define JCB_INLINE inline __attribute__((always_inline))
#else
#define JCB_INLINE inline
#endif

namespace {

// cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 32-bit ints.
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                       int);
Sgemm g_sgemm = nullptr;

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kMinK = 1024;  // samples with fewer pixels share one sgemm (packed)
constexpr double kMinParallelFlops = 1 << 24;  // smaller problems run on the calling thread alone
constexpr int64_t kMinCols = 256;              // pixels per block at least (MakePlan)
constexpr int64_t kBlocksPerWorker = 4;        // blocks per worker at least, where kMinCols allows

struct Geometry {
  int64_t n, c_in, c_out;
  int64_t in[3], out[3], k[3], s[3], d[3], lo[3];
  int64_t taps() const { return k[0] * k[1] * k[2]; }
  int64_t pixels() const { return out[0] * out[1] * out[2]; }
  int64_t in_pixels() const { return in[0] * in[1] * in[2]; }
  // The tap's kernel indices (kd, kh, kw).
  void tap(int64_t t, int64_t& kd, int64_t& kh, int64_t& kw) const {
    kd = t / (k[1] * k[2]), kh = (t / k[2]) % k[1], kw = t % k[2];
  }
  // The output columns [w0, w1) whose input column (ow * s[2] + kw * d[2] - lo[2]) is inside the
  // input, for width tap kw.
  std::pair<int64_t, int64_t> inside_columns(int64_t kw) const {
    const int64_t off = kw * d[2] - lo[2], sw = s[2], width = out[2];
    const int64_t w0 = std::min(width, off >= 0 ? 0 : (-off + sw - 1) / sw);
    const int64_t w1 = in[2] - off <= 0 ? 0 : std::min(width, (in[2] - off + sw - 1) / sw);
    return {w0, std::max(w1, w0)};
  }
  // The input line (id * in[1] + ih) that output line q (one (depth, height) pair) reads for
  // depth and height taps kd, kh; -1 where it lies outside the input.
  int64_t input_line(int64_t q, int64_t kd, int64_t kh) const {
    const int64_t id = q / out[1] * s[0] + kd * d[0] - lo[0];
    const int64_t ih = q % out[1] * s[1] + kh * d[1] - lo[1];
    return id < 0 || id >= in[0] || ih < 0 || ih >= in[1] ? -1 : id * in[1] + ih;
  }
};

// f(std::integral_constant<int64_t, S>) with S the width stride where it is 1 or 2 (0: any), so the
// plane loops below get the common strides as compile-time constants.
template <typename F>
void ByWidthStride(int64_t s, F&& f) {
  if (s == 1)
    f(std::integral_constant<int64_t, 1>{});
  else if (s == 2)
    f(std::integral_constant<int64_t, 2>{});
  else
    f(std::integral_constant<int64_t, 0>{});
}

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

// 64-byte aligned storage for vectors of floats (aligned AVX-512 loads).
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const AlignedAllocator&) const { return true; }
  bool operator!=(const AlignedAllocator&) const { return false; }
};

// The workers handed to XLA's thread pool by one call: how many are running, and whether the call
// still takes more.
struct Join {
  std::mutex m;
  std::condition_variable cv;
  int64_t active = 0;
  bool closed = false;
};

// work(0) on the calling thread, work(1 .. used - 1) as tasks on XLA's intra-op thread pool, whose
// idle threads pick them up at once (new threads had to wait for a time slice next to the pool's
// spinning ones: ms_doc's second worker started after the first had done both blocks). Workers
// take blocks from a shared counter, so the call waits only for those that started; one that
// starts after the call closed returns without touching it.
template <typename Work>
void RunWorkers(ffi::ThreadPool& pool, int64_t used, Work& work) {
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
  work(0);
  std::unique_lock<std::mutex> lock(join->m);
  join->closed = true;
  join->cv.wait(lock, [&] { return join->active == 0; });
}

// The geometry of x (N, C_in, spatial), y (N, C_out, spatial) and w (C_out, C_in / groups, kernel)
// dims; false where they do not fit together.
bool MakeGeometry(Geometry& g, ffi::Span<const int64_t> xd, ffi::Span<const int64_t> yd, ffi::Span<const int64_t> wd,
                  ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo,
                  int64_t groups = 1) {
  if (xd.size() != 5 || yd.size() != 5 || wd.size() != 5 || stride.size() != 3 || dilation.size() != 3 ||
      lo.size() != 3 || groups < 1 || yd[0] != xd[0] || wd[0] != yd[1] || wd[1] * groups != xd[1] ||
      yd[1] % groups != 0)
    return false;
  g = Geometry{yd[0], xd[1], yd[1]};
  for (int a = 0; a < 3; ++a) {
    g.in[a] = xd[2 + a], g.out[a] = yd[2 + a], g.k[a] = wd[2 + a];
    g.s[a] = stride[a], g.d[a] = dilation[a], g.lo[a] = lo[a];
  }
  return true;
}

// Blocks of output pixels: `samples` whole samples, or one sample's `q_rows` output lines, within
// `block` floats (`per_pixel` floats of scratch per pixel); `tasks` their (first sample, first
// line); `used` workers, at most `threads`.
struct Plan {
  int64_t samples = 1, q_rows = 0, cols = 0, used = 1;
  std::vector<std::pair<int64_t, int64_t>> tasks;
};

Plan MakePlan(const Geometry& g, int64_t per_pixel, int64_t block, int64_t threads) {
  const int64_t rows = g.c_in * g.taps(), width = g.out[2], lines = g.out[0] * g.out[1], pixels = g.pixels();
  Plan b;
  b.q_rows = lines;
  // At least kMinCols pixels per block whatever `block` says: each sgemm also repacks (or rereads)
  // its C_out x (C_in * taps) side, which short blocks repeat too often (deeplabv3's 4608 x 512
  // forward, one 33-pixel line per 1 MiB block: 38 ms; 198 pixels: 26 ms).
  const int64_t min_cols = std::max(kMinCols, rows / 8);
  block = std::max(block, rows * min_cols);
  if (per_pixel * pixels <= block) {
    b.samples = std::max<int64_t>(1, std::min(g.n, block / (per_pixel * pixels)));
  } else {
    b.q_rows = std::max<int64_t>(1, block / (rows * width));
  }
  // Workers: up to `threads`, none beyond one for a small problem (a thread costs more than it saves);
  const double flops = 2.0 * rows * g.c_out * g.n * pixels;
  const int64_t workers = flops < kMinParallelFlops ? 1 : std::max<int64_t>(1, threads);
  // then kBlocksPerWorker blocks per worker where blocks of kMinCols pixels allow it, so that a
  // worker slowed by another process's thread on its core (PyTorch's spinning OpenMP threads, in
  // the benchmark) holds up no one.
  if (workers > 1) {
    const int64_t target = kBlocksPerWorker * workers;
    if (b.samples > 1) {
      const int64_t fewest = (min_cols + pixels - 1) / pixels;
      b.samples = std::min(b.samples, std::max(fewest, (g.n + target - 1) / target));
    } else {
      const int64_t per_sample = (target + g.n - 1) / g.n, fewest = (min_cols + width - 1) / width;
      b.q_rows = std::min(b.q_rows, std::max(fewest, (lines + per_sample - 1) / per_sample));
    }
  }
  // Few blocks: as many per worker, so that none waits on another's last one (stylegan2_up, one
  // sample of 64 lines in blocks of 28: 3 blocks for 2 workers).
  // Blocks of equal size, too (hifigan_up1: 16 samples in blocks of 14 were 2 blocks, 14 and 2).
  if (workers > 1 && b.samples > 1) {
    int64_t blocks = (g.n + b.samples - 1) / b.samples;
    if (blocks < kBlocksPerWorker * workers) blocks = (blocks + workers - 1) / workers * workers;
    b.samples = std::max<int64_t>(1, (g.n + blocks - 1) / blocks);
  } else if (workers > 1) {
    int64_t per_sample = (lines + b.q_rows - 1) / b.q_rows;
    if (g.n * per_sample < kBlocksPerWorker * workers)
      while (g.n * per_sample % workers != 0 && per_sample < lines) ++per_sample;
    b.q_rows = (lines + per_sample - 1) / per_sample;
  }
  b.cols = b.samples > 1 ? b.samples * pixels : b.q_rows * width;
  for (int64_t n0 = 0; n0 < g.n; n0 += b.samples)
    for (int64_t q0 = 0; q0 < lines; q0 += b.q_rows) b.tasks.emplace_back(n0, q0);
  b.used = std::min<int64_t>(workers, b.tasks.size());
  return b;
}

bool FitsBlas(const Geometry& g, const Plan& b) {
  return std::max({g.c_in * g.taps(), g.c_out, b.cols, g.pixels()}) <= INT32_MAX;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define JCB_DIRECT 1
// The stride-1 forward convolution without patches, for CPUs with AVX-512 (DirectForward): per
// output line, register blocks of CO output channels x V vectors of kVec pixels accumulate
// w[o, c, t] * x[c, line(t), column + kw * d - lo] over a chunk of input channels and every tap,
// with the input read in place by masked loads (the lanes whose column lies in the padding, or
// past the line, read nothing and add zeros), then are stored (added to the earlier chunks' sum).
// im2col's patches repeat the input `taps` times and its sgemm then streams them from memory:
// unet3d_conv's 3x3x3 forward (32 channels, 32^3) took 13 ms that way, 7.3 direct, where PyTorch
// took 6.5-9.2.
constexpr int64_t kVec = 16;

// The weights of output channels [o0, o0 + CO) as [c][t][CO] (zeros past C_out), so a block's CO
// broadcasts per (c, t) read one run of memory.
void PackWeights(const Geometry& g, const float* w, int64_t co, float* packed) {
  const int64_t taps = g.taps(), blocks = (g.c_out + co - 1) / co;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < g.c_in; ++c)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t i = 0; i < co; ++i) {
          const int64_t o = b * co + i;
          packed[((b * g.c_in + c) * taps + t) * co + i] = o < g.c_out ? w[(o * g.c_in + c) * taps + t] : 0.0f;
        }
}

// Per vector v of an output line (the direct forward's lanes), store[v] its lanes inside the line
// and masks[kw * vectors + v] those whose input column (for width tap kw) lies inside the input.
struct LineMasks {
  std::vector<__mmask16> masks, store;
  explicit LineMasks(const Geometry& g) {
    const int64_t width = g.out[2], vectors = (width + kVec - 1) / kVec;
    masks.resize(g.k[2] * vectors), store.resize(vectors);
    for (int64_t v = 0; v < vectors; ++v) {
      store[v] = static_cast<__mmask16>((1u << std::min<int64_t>(kVec, width - v * kVec)) - 1);
      for (int64_t kw = 0; kw < g.k[2]; ++kw) {
        unsigned m = 0;
        for (int64_t l = 0; l < kVec; ++l) {
          const int64_t ow = v * kVec + l, iw = ow + kw * g.d[2] - g.lo[2];
          if (ow < width && iw >= 0 && iw < g.in[2]) m |= 1u << l;
        }
        masks[kw * vectors + v] = static_cast<__mmask16>(m);
      }
    }
  }
};

// The direct kernels' tasks, kBlocksPerWorker per worker where the lines allow, as (sample, run
// of lines) or, for few lines (1-D: one per sample), spans of each line's vectors (a multiple of
// `group` vectors).
struct DirectLayout {
  int64_t vectors, lines, run, runs, span, spans, tasks, workers;
  struct Task {
    int64_t n, q0, q1, v0, v1;
  };
  DirectLayout(const Geometry& g, int64_t group, int64_t threads) {
    vectors = (g.out[2] + kVec - 1) / kVec, lines = g.out[0] * g.out[1];
    workers = std::max<int64_t>(1, threads);
    const int64_t target = kBlocksPerWorker * workers, groups = (vectors + group - 1) / group;
    const int64_t per_sample = std::min(lines, (target + g.n - 1) / g.n);
    run = (lines + per_sample - 1) / per_sample, runs = (lines + run - 1) / run;
    const int64_t per_run = std::min(groups, (target + g.n * runs - 1) / (g.n * runs));
    span = (groups + per_run - 1) / per_run * group, spans = (vectors + span - 1) / span;
    tasks = g.n * runs * spans;
  }
  Task task(int64_t t) const {
    const int64_t q0 = t / spans % runs * run, v0 = t % spans * span;
    return {t / (runs * spans), q0, std::min(lines, q0 + run), v0, std::min(vectors, v0 + span)};
  }
};

// Output line q of one sample, vectors [v0, v0 + V), input channels [c0, c1) and output channels
// [0, count) of a CO-block: x the sample's input, w the block's packed weights, y the block's
// first output plane, added to where `add` (the channels before c0 are in it); masks[kw * vectors
// + v] the lanes of vector v that read inside the input for width tap kw, and store[v] the lanes
// inside the output line.
template <int CO, int V>
__attribute__((target("avx512f"))) void DirectLine(const Geometry& g, const float* x, const float* w, int64_t q,
                                                    int64_t v0, int64_t c0, int64_t c1, bool add, int64_t count,
                                                    float* y, const __mmask16* masks, const __mmask16* store) {
  const int64_t taps = g.taps(), in_pixels = g.in_pixels(), vectors = (g.out[2] + kVec - 1) / kVec;
  float* yq = y + q * g.out[2] + v0 * kVec;
  const int64_t pixels = g.pixels();
  __m512 acc[CO][V];
#pragma GCC unroll 16
  for (int i = 0; i < CO; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < V; ++j)
      acc[i][j] = add && i < count ? _mm512_maskz_loadu_ps(store[v0 + j], yq + i * pixels + j * kVec)
                                   : _mm512_setzero_ps();
  for (int64_t kd = 0; kd < g.k[0]; ++kd)
    for (int64_t kh = 0; kh < g.k[1]; ++kh) {
      const int64_t line = g.input_line(q, kd, kh);
      if (line < 0) continue;
      const int64_t t0 = (kd * g.k[1] + kh) * g.k[2];
      for (int64_t c = c0; c < c1; ++c) {
        const float* xr = x + c * in_pixels + line * g.in[2] - g.lo[2] + v0 * kVec;
        const float* wc = w + (c * taps + t0) * CO;
        for (int64_t kw = 0; kw < g.k[2]; ++kw) {
          const float* xk = xr + kw * g.d[2];
          const __mmask16* mk = masks + kw * vectors + v0;
          __m512 xv[V];
#pragma GCC unroll 2
          for (int j = 0; j < V; ++j) xv[j] = _mm512_maskz_loadu_ps(mk[j], xk + j * kVec);
#pragma GCC unroll 16
          for (int i = 0; i < CO; ++i) {
            const __m512 wv = _mm512_set1_ps(wc[kw * CO + i]);
#pragma GCC unroll 2
            for (int j = 0; j < V; ++j) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
          }
        }
      }
    }
#pragma GCC unroll 16
  for (int i = 0; i < CO; ++i)
    if (i < count)
#pragma GCC unroll 2
      for (int j = 0; j < V; ++j) _mm512_mask_storeu_ps(yq + i * pixels + j * kVec, store[v0 + j], acc[i][j]);
}

// Where DirectForward beats the patches (measured here, ms, patches against direct): stride 1,
// more than one tap, lines that fill at least 3/4 of their vectors' lanes (deeplabv3's 33-pixel
// lines: 19.5 against 33), and at most 2^18 weights (256 -> 256 channels at 14x14, batch 32: 31
// against 38; 256 -> 128: 17.5 against 19.3). Within them: unet3d_conv 13.0 -> 7.3, ms_doc
// 1.25 -> 0.77, resnet50_l1 38.0 -> 34.2, 64 channels along 4096 samples (k7) 6.6 -> 4.0.
// What both direct kernels need: AVX-512, stride 1 and more than one tap.
bool DirectStride1(const Geometry& g) {
  return __builtin_cpu_supports("avx512f") && g.s[0] == 1 && g.s[1] == 1 && g.s[2] == 1 && g.taps() > 1;
}

bool DirectFits(const Geometry& g) {
  const int64_t vectors = (g.out[2] + kVec - 1) / kVec;
  return DirectStride1(g) && 4 * g.out[2] >= 3 * vectors * kVec && g.c_out * g.c_in * g.taps() <= (1 << 18);
}

// y = conv(x, w) at stride 1 (DirectFits): workers take (sample, run of output lines) tasks; per
// task, each CO-block of output channels and each chunk of input channels in turn, small enough
// that the chunk's input lines under a few output lines and the block's weights for the chunk
// stay in L1 while the run's lines go by. Register blocks: 12 or 14 output channels by 2 vectors,
// or 16 by 1 for lines of one vector (measured here: unet3d_conv 7.9-8.5 ms, against 8.3 for 8 by 2
// and 10.2 for 6 by 4; 24 by 1 took 30; 14 by 2 for resnet50_l1's 64 channels 35.2-39.5 against
// 37.8-42.0 for 12 by 2).
void DirectForward(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* w, float* y,
                   int64_t threads) {
  const int64_t pixels = g.pixels(), taps = g.taps(), vectors = (g.out[2] + kVec - 1) / kVec;
  // Blocks of 14 where they pad C_out less than blocks of 12 (64 channels: 70 rows against 72).
  const int vmax = vectors > 1 ? 2 : 1;
  const bool by14 = vmax == 2 && (g.c_out + 13) / 14 * 14 < (g.c_out + 11) / 12 * 12;
  const int co = vmax == 1 ? 16 : by14 ? 14 : 12;
  const auto line_fn = vmax == 1 ? DirectLine<16, 1> : by14 ? DirectLine<14, 2> : DirectLine<12, 2>;
  const auto tail_fn = by14 ? DirectLine<14, 1> : DirectLine<12, 1>;
  const int64_t blocks = (g.c_out + co - 1) / co;
  // Input channels per chunk: kChunkFloats of input lines (at most 256 pixels wide) under one
  // output line, 16 KiB (deeplabv3's 512 channels, forced onto this path: 8 KiB 32.9 ms, 16 KiB
  // 33.1, 64 KiB 38.3, all channels at once 42.5).
  constexpr int64_t kChunkFloats = 4096;
  const int64_t per_channel = g.k[0] * g.k[1] * std::min<int64_t>(g.in[2], 256);
  const int64_t chunks = std::max<int64_t>(1, (g.c_in * per_channel + kChunkFloats - 1) / kChunkFloats);
  const int64_t chunk = (g.c_in + chunks - 1) / chunks;
  std::vector<float> packed(blocks * co * g.c_in * taps);
  PackWeights(g, w, co, packed.data());
  const double flops = 2.0 * g.n * g.c_out * g.c_in * taps * pixels;
  const DirectLayout at(g, vmax, flops < kMinParallelFlops ? 1 : threads);
  const LineMasks lanes(g);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    for (int64_t t; (t = next.fetch_add(1)) < at.tasks;) {
      const auto [n, q0, q1, first, last] = at.task(t);
      const float* xs = x + n * g.c_in * g.in_pixels();
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t count = std::min<int64_t>(co, g.c_out - b * co);
        float* yb = y + (n * g.c_out + b * co) * pixels;
        const float* wb = packed.data() + b * co * g.c_in * taps;
        for (int64_t c0 = 0; c0 < g.c_in; c0 += chunk)
          for (int64_t q = q0; q < q1; ++q)
            for (int64_t v0 = first; v0 < last; v0 += vmax) {
              const int64_t c1 = std::min(g.c_in, c0 + chunk);
              const auto fn = last - v0 >= vmax ? line_fn : tail_fn;
              fn(g, xs, wb, q, v0, c0, c1, c0 > 0, count, yb, lanes.masks.data(), lanes.store.data());
            }
      }
    }
  };
  RunWorkers(pool, std::min(at.workers, at.tasks), work);
}

// The weight gradient without patches (DirectWeightGrad): w[o, c, t] sums dout[o, p] * x[c, p
// shifted by t] over the pixels p. A task first copies the input lines its output lines read
// channels-last (xt: one line of in[2] pixels, each `cpad` channels, zeros past C_in), so that for
// each pixel and tap one aligned vector load gives 16 input channels; OB output channels' dout
// values are broadcast against CV such vectors into OB x CV register accumulators, as the direct
// forward's weights are against its input vectors. Per task, every block pair and tap; the
// accumulators are then added to the worker's partial w (taps x opad x cpad floats, the channel
// blocks padded), summed over the workers at the end. Reading the input channels-first
// instead (vectors along the pixels, 4 dout and 6 input loads per 24 FMAs, most of them across
// cache lines) ran at half the forward's speed.
constexpr int kGradOB = 12, kGradCV = 2;

// Lines [q0, q1) and columns [col0, col1) of one sample for tap t, output channel block `dy` (OB
// planes at o_off), CV input channel vectors of xt (input lines from `first`, at the vectors'
// first channel), into `part` (OB rows of cpad floats, at the same channel).
template <int CV>
__attribute__((target("avx512f"))) void DirectGradTile(const Geometry& g, const float* dy, const int64_t* o_off,
                                                       const float* xt, int64_t first, int64_t cpad, int64_t t,
                                                       int64_t q0, int64_t q1, int64_t col0, int64_t col1,
                                                       float* part) {
  constexpr int OB = kGradOB;
  int64_t kd, kh, kw;
  g.tap(t, kd, kh, kw);
  const auto [inside0, inside1] = g.inside_columns(kw);
  const int64_t w0 = std::max(inside0, col0), w1 = std::min(inside1, col1);
  if (w1 <= w0) return;
  const int64_t width = g.out[2], shift = kw * g.d[2] - g.lo[2];
  __m512 acc[OB][CV];
#pragma GCC unroll 12
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < CV; ++j) acc[i][j] = _mm512_setzero_ps();
  // The input line of output line q = (od, oh), kept by counters (a division per line cost as
  // much as a short line's FMAs).
  const int64_t id0 = kd * g.d[0] - g.lo[0], ih0 = kh * g.d[1] - g.lo[1];
  int64_t od = q0 / g.out[1], oh = q0 % g.out[1];
  for (int64_t q = q0; q < q1; ++q, oh = oh + 1 == g.out[1] ? (++od, 0) : oh + 1) {
    const int64_t id = od + id0, ih = oh + ih0;
    if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) continue;
    const float* xr = xt + ((id * g.in[1] + ih - first) * g.in[2] + shift) * cpad;
    const float* dq = dy + q * width;
    for (int64_t w = w0; w < w1; ++w) {
      __m512 xv[CV];
#pragma GCC unroll 2
      for (int j = 0; j < CV; ++j) xv[j] = _mm512_load_ps(xr + w * cpad + j * kVec);
#pragma GCC unroll 12
      for (int i = 0; i < OB; ++i) {
        const __m512 dv = _mm512_set1_ps(dq[o_off[i] + w]);
#pragma GCC unroll 2
        for (int j = 0; j < CV; ++j) acc[i][j] = _mm512_fmadd_ps(dv, xv[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < CV; ++j) {
      float* pp = part + i * cpad + j * kVec;
      _mm512_storeu_ps(pp, _mm512_add_ps(_mm512_loadu_ps(pp), acc[i][j]));
    }
}

// Where DirectWeightGrad beats the patches (measured here, ms, patches against direct): stride
// 1, more than one tap, at least 16 input channels (8 x 3 -> 64 channels at 64x64: 1.2 against 3.0)
// and at most 2^20 weights (deeplabv3's 2.4M: 26.4 against 32.3; 256 -> 256 channels at 14x14,
// batch 32: 27.6 against 27.4). Within them: unet3d_conv 11.5 -> 7.9, resnet50_l1 36.6 -> 31.8, ms_doc 1.26 ->
// 1.03, 128 -> 256 channels at 28x28 13.9 -> 12.6.
bool DirectGradFits(const Geometry& g) {
  return DirectStride1(g) && g.c_in >= kVec && g.c_out * g.c_in * g.taps() <= (1 << 20);
}

// w = the weight gradient at stride 1 (DirectGradFits): workers take the layout's tasks; per
// task, the channels-last copy of its input lines, then every block pair and tap over all its
// output lines (tiles of fewer lines, to keep the input lines in L1, measured slower: unet3d_conv
// 8.9 ms at 16 KiB of them, 8.1 at 64 KiB and at a whole task).
void DirectWeightGrad(ffi::ThreadPool& pool, const Geometry& g, const float* dout, const float* x, float* w,
                      int64_t threads) {
  const int64_t taps = g.taps(), pixels = g.pixels(), in_pixels = g.in_pixels(), in_lines = g.in[0] * g.in[1];
  const int64_t cvec = (g.c_in + kVec - 1) / kVec, cpad = cvec * kVec;
  const int64_t oblocks = (g.c_out + kGradOB - 1) / kGradOB, opad = oblocks * kGradOB;
  const double flops = 2.0 * g.n * g.c_out * g.c_in * taps * pixels;
  const DirectLayout at(g, 1, flops < kMinParallelFlops ? 1 : threads);
  const int64_t used = std::min(at.workers, at.tasks);
  std::vector<std::vector<float>> partial(used);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t id) {
    std::vector<float>& part = partial[id];
    part.assign(taps * opad * cpad, 0.0f);
    std::vector<float, AlignedAllocator<float>> xt;
    for (int64_t k; (k = next.fetch_add(1)) < at.tasks;) {
      const auto [n, q0, q1, v0, v1] = at.task(k);
      // The input lines [first, last] that output lines [q0, q1) read, channels-last.
      int64_t first = in_lines, last = -1;
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t kd = 0; kd < g.k[0]; ++kd)
          for (int64_t kh = 0; kh < g.k[1]; ++kh)
            if (const int64_t line = g.input_line(q, kd, kh); line >= 0)
              first = std::min(first, line), last = std::max(last, line);
      if (last < 0) continue;
      xt.assign((last - first + 1) * g.in[2] * cpad, 0.0f);
      const float* xs = x + n * g.c_in * in_pixels;
      for (int64_t c = 0; c < g.c_in; ++c)
        for (int64_t l = first; l <= last; ++l)
          for (int64_t iw = 0; iw < g.in[2]; ++iw)
            xt[((l - first) * g.in[2] + iw) * cpad + c] = xs[c * in_pixels + l * g.in[2] + iw];
      for (int64_t ob = 0; ob < oblocks; ++ob) {
        const float* dy = dout + (n * g.c_out + ob * kGradOB) * pixels;
        int64_t o_off[kGradOB];  // a partial block's missing channels reread its last, into padding
        for (int i = 0; i < kGradOB; ++i) o_off[i] = std::min<int64_t>(i, g.c_out - ob * kGradOB - 1) * pixels;
        for (int64_t cv = 0; cv < cvec; cv += kGradCV)
          for (int64_t t = 0; t < taps; ++t) {
            float* pp = part.data() + (t * opad + ob * kGradOB) * cpad + cv * kVec;
            const float* xc = xt.data() + cv * kVec;
            if (cvec - cv >= kGradCV)
              DirectGradTile<kGradCV>(g, dy, o_off, xc, first, cpad, t, q0, q1, v0 * kVec, v1 * kVec, pp);
            else
              DirectGradTile<1>(g, dy, o_off, xc, first, cpad, t, q0, q1, v0 * kVec, v1 * kVec, pp);
          }
      }
    }
  };
  RunWorkers(pool, used, work);
  for (int64_t id = 1; id < used; ++id)
    if (!partial[id].empty())
      for (size_t j = 0; j < partial[0].size(); ++j) partial[0][j] += partial[id][j];
  for (int64_t o = 0; o < g.c_out; ++o)
    for (int64_t c = 0; c < g.c_in; ++c)
      for (int64_t t = 0; t < taps; ++t) w[(o * g.c_in + c) * taps + t] = partial[0][(t * opad + o) * cpad + c];
}
#endif

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
  const Plan b = MakePlan(g, rows + (pixels < kMinK ? g.c_out : 0), block, threads);
  if (!FitsBlas(g, b))
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jcb_conv_weight_grad: a matrix side exceeds 32-bit BLAS");
  const float* px = x.typed_data();
  const float* pd = dout.typed_data();
  // The sgemms accumulate the transpose, (C_in * taps) x C_out, = P * dout_block^T: with the long
  // side first, OpenBLAS ran this 10% faster here than dout_block * P^T. One per worker, summed and
  // transposed at the end.
  std::vector<std::vector<float>> partial(b.used);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t id) {
    std::vector<float> p(rows * b.cols), a(b.samples > 1 && pixels < kMinK ? g.c_out * b.cols : 0);
    std::vector<float>& wt = partial[id];
    wt.assign(rows * g.c_out, 0.0f);
    for (int64_t t; (t = next.fetch_add(1)) < static_cast<int64_t>(b.tasks.size());) {
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
  };
  RunWorkers(pool, b.used, work);
  // w = (sum of the partials)^T, in tiles that stay in cache on both sides (a plain strided
  // transpose of deeplabv3's 4608 x 512 result took longer than a worker's sgemms).
  for (int64_t id = 1; id < b.used; ++id)
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
  // Reading x in place needs no scratch: then blocks only share the work out.
  const Plan b = MakePlan(g, rows, in_place ? std::numeric_limits<int64_t>::max() / 2 : block, threads);
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
  RunWorkers(pool, b.used, work);
  return ffi::Error::Success();
}

// One kernel tap t of a Geometry, with its indices (kd, kh, kw) and the output columns [w0, w1)
// whose input column is inside the input (not padding).
struct Tap {
  int64_t t, kd, kh, kw, w0, w1;
};

// f(tap) for each tap of g that reads at least one inside column, in order. A template, so that f
// (a lambda) inlines into the plane loops below, each clone compiled for its own instruction set.
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
JCB_CLONES void PlaneGrad(const Geometry& g, const float* d, const float* x, double* acc) {
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
            ByWidthStride(g.s[2], [&](auto s) { PlaneGrad<decltype(s)::value>(g, dp, xp, a); });
          }
      float* wg = w + gi * og * cg * taps;
      for (int64_t j = 0; j < og * cg * taps; ++j) wg[j] = static_cast<float>(acc[j]);
    }
  };
  RunWorkers(pool, used, work);
  return ffi::Error::Success();
}

// y[p] += sum_t w[t] * x[p*s + t*d - lo] over one output plane y and one input plane x (of one
// sample), for the taps of one (output channel, input channel) pair: the forward of the grouped
// weight gradient's PlaneGrad, one axpy per tap and output line.
template <int64_t S>
JCB_CLONES void PlaneConv(const Geometry& g, const float* w, const float* x, float* y) {
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
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    for (int64_t j; (j = next.fetch_add(1)) < jobs;) {
      const int64_t n = j / groups, gi = j % groups;
      for (int64_t o = 0; o < og; ++o)
        for (int64_t c = 0; c < cg; ++c) {
          const float* wp = pw + ((gi * og + o) * cg + c) * taps;
          const float* xp = px + (n * g.c_in + gi * cg + c) * in_pixels;
          float* yp = y + (n * g.c_out + gi * og + o) * pixels;
          ByWidthStride(g.s[2], [&](auto s) { PlaneConv<decltype(s)::value>(g, wp, xp, yp); });
        }
    }
  };
  RunWorkers(pool, used, work);
  return ffi::Error::Success();
}

}  // namespace

extern "C" void jcb_native_set_sgemm(void* sgemm) { g_sgemm = reinterpret_cast<Sgemm>(sgemm); }

// Whether the forward (kernel 0) or the weight-gradient kernel (1) computes this convolution
// directly (DirectFits, DirectGradFits), dims as the forward handler's: x, y and w rank 5, then
// stride, dilation, lo 3 each.
extern "C" int jcb_native_direct(int kernel, const int64_t* xd, const int64_t* yd, const int64_t* wd,
                                 const int64_t* s, const int64_t* d, const int64_t* lo) {
#ifdef JCB_DIRECT
  Geometry g;
  using S = ffi::Span<const int64_t>;
  if (!MakeGeometry(g, S(xd, 5), S(yd, 5), S(wd, 5), S(s, 3), S(d, 3), S(lo, 3))) return 0;
  return kernel == 0 ? DirectFits(g) : DirectGradFits(g);
#else
  return 0;
#endif
}

// Every handler: (x-like, y-or-w-like) -> result, stride / dilation / lo, then `knob` (the im2col
// kernels' block size, the grouped kernels' group count) and the workers.
#define JCB_BIND(knob)                                                                                         \
  ffi::Ffi::Bind()                                                                                             \
      .Ctx<ffi::ThreadPool>()                                                                                  \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                            \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                            \
      .Ret<ffi::Buffer<ffi::F32>>()                                                                            \
      .Attr<ffi::Span<const int64_t>>("stride")                                                                \
      .Attr<ffi::Span<const int64_t>>("dilation")                                                              \
      .Attr<ffi::Span<const int64_t>>("lo")                                                                    \
      .Attr<int64_t>(knob)                                                                                     \
      .Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvWeightGrad, WeightGrad, JCB_BIND("block"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvForward, Forward, JCB_BIND("block"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvGroupedWeightGrad, GroupedWeightGrad, JCB_BIND("groups"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvGroupedForward, GroupedForward, JCB_BIND("groups"));
