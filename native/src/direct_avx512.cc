#include "direct_avx512.h"

#ifdef JCB_DIRECT

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "plan.h"
#include "threads.h"

namespace jcb {
namespace {

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
    for (int j = 0; j < V; ++j) {
      if (add && i < count) JCB_TOUCH_LANES(yq + i * pixels + j * kVec, store[v0 + j]);
      acc[i][j] = add && i < count ? _mm512_maskz_loadu_ps(store[v0 + j], yq + i * pixels + j * kVec)
                                   : _mm512_setzero_ps();
    }
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
          for (int j = 0; j < V; ++j) {
            JCB_TOUCH_LANES(xk + j * kVec, mk[j]);
            xv[j] = _mm512_maskz_loadu_ps(mk[j], xk + j * kVec);
          }
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
      for (int j = 0; j < V; ++j) {
        JCB_TOUCH_LANES_RW(yq + i * pixels + j * kVec, store[v0 + j]);
        _mm512_mask_storeu_ps(yq + i * pixels + j * kVec, store[v0 + j], acc[i][j]);
      }
}

// Where DirectForward beats the patches (measured here, ms, patches against direct): stride 1,
// more than one tap, lines that fill at least 3/4 of their vectors' lanes (deeplabv3's 33-pixel
// lines: 19.5 against 33), and at most 2^18 weights (256 -> 256 channels at 14x14, batch 32: 31
// against 38; 256 -> 128: 17.5 against 19.3). Within them: unet3d_conv 13.0 -> 7.3, ms_doc
// 1.25 -> 0.77, resnet50_l1 38.0 -> 34.2, 64 channels along 4096 samples (k7) 6.6 -> 4.0.
// What both direct kernels need: AVX-512 (the instruction set the kernels run with: isa.h), stride 1
// and more than one tap.
}  // namespace

bool DirectStride1(const Geometry& g) {
  return ActiveIsa() == Isa::kAvx512 && g.s[0] == 1 && g.s[1] == 1 && g.s[2] == 1 && g.taps() > 1;
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

namespace {

// The weight gradient without patches (DirectWeightGrad): w[o, c, t] sums dout[o, p] * x[c, p
// shifted by t] over the pixels p. A task first copies the input lines its output lines read
// channels-last (xt: one line of in[2] pixels, each `cpad` channels, zeros past C_in), so that for
// each pixel and tap one aligned vector load gives 16 input channels; OB output channels' dout
// values are broadcast against CV such vectors into OB x CV register accumulators, as the direct
// forward's weights are against its input vectors. Per task, every block pair and tap; the
// accumulators are then added to its slot's partial w (taps x opad x cpad floats, the channel
// blocks padded; plan.h's Slots), summed in slot order at the end. Reading the input channels-first
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

}  // namespace

// Where DirectWeightGrad beats the patches (measured here, ms, patches against direct): stride
// 1, more than one tap, at least 16 input channels (8 x 3 -> 64 channels at 64x64: 1.2 against 3.0)
// and at most 2^20 weights (deeplabv3's 2.4M: 26.4 against 32.3; 256 -> 256 channels at 14x14,
// batch 32: 27.6 against 27.4). Within them: unet3d_conv 11.5 -> 7.9, resnet50_l1 36.6 -> 31.8, ms_doc 1.26 ->
// 1.03, 128 -> 256 channels at 28x28 13.9 -> 12.6.
bool DirectGradFits(const Geometry& g) {
  return DirectStride1(g) && g.c_in >= kVec && g.c_out * g.c_in * g.taps() <= (1 << 20);
}

// w = the weight gradient at stride 1 (DirectGradFits): workers take slots of the layout's tasks
// (laid out for kPlanWorkers workers, whatever `threads` says: plan.h), each slot's tasks in
// order; per task, the channels-last copy of its input lines, then every block pair and tap over
// all its output lines (tiles of fewer lines, to keep the input lines in L1, measured slower:
// unet3d_conv 8.9 ms at 16 KiB of them, 8.1 at 64 KiB and at a whole task).
void DirectWeightGrad(ffi::ThreadPool& pool, const Geometry& g, const float* dout, const float* x, float* w,
                      int64_t threads) {
  const int64_t taps = g.taps(), pixels = g.pixels(), in_pixels = g.in_pixels(), in_lines = g.in[0] * g.in[1];
  const int64_t cvec = (g.c_in + kVec - 1) / kVec, cpad = cvec * kVec;
  const int64_t oblocks = (g.c_out + kGradOB - 1) / kGradOB, opad = oblocks * kGradOB;
  const double flops = 2.0 * g.n * g.c_out * g.c_in * taps * pixels;
  const bool parallel = flops >= kMinParallelFlops;
  const DirectLayout at(g, 1, parallel ? kPlanWorkers : 1);
  const int64_t size = taps * opad * cpad;
  const Slots slots = MakeSlots(at.tasks, size, parallel);
  std::vector<std::vector<float>> partial(slots.count);
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t) {
    std::vector<float, AlignedAllocator<float>> xt;
    for (int64_t s; (s = next.fetch_add(1)) < slots.count;) {
      std::vector<float>& part = partial[s];
      part.assign(size, 0.0f);
      for (int64_t k = slots.begin(s); k < slots.begin(s + 1); ++k) {
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
    }
  };
  RunWorkers(pool, std::min(threads, slots.count), work);
  for (int64_t s = 1; s < slots.count; ++s)  // in slot order
    for (int64_t j = 0; j < size; ++j) partial[0][j] += partial[s][j];
  for (int64_t o = 0; o < g.c_out; ++o)
    for (int64_t c = 0; c < g.c_in; ++c)
      for (int64_t t = 0; t < taps; ++t) w[(o * g.c_in + c) * taps + t] = partial[0][(t * opad + o) * cpad + c];
}

}  // namespace jcb

#endif  // JCB_DIRECT
