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
// correlation of dout with the flipped kernel (jax_conv_bpi/_src/lowering/cpu_input_grad.py). At stride 1,
// on CPUs with AVX-512, both compute most layers directly instead (DirectForward, DirectWeightGrad:
// no patches, register-blocked vector FMAs; DirectFits and DirectGradFits say where).
//
// The parts: plan.h (blocks of output pixels and worker counts), threads.h (the workers on XLA's
// thread pool), im2col_gemm.cc (patches and sgemms), direct_avx512.cc (the stride-1 kernels
// without patches), grouped.cc (grouped convolutions with few channels per group), ffi.cc (the XLA
// FFI handlers and the C entry points that jax_conv_bpi calls through ctypes). This header: what
// they all share, the geometry of a convolution with 3 spatial axes, the instruction sets (isa.h),
// the sgemm's signature and the constants.

#ifndef JCB_NATIVE_COMMON_H_
#define JCB_NATIVE_COMMON_H_

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

#include "isa.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The sanitizer build (JCB_NATIVE_SANITIZE, CMakeLists.txt): GCC's AddressSanitizer does not check
// masked vector loads and stores, so before each one JCB_TOUCH_LANES(p, mask) reads every active
// lane of p[0 .. 16) with a plain scalar load and JCB_TOUCH_LANES_RW(p, mask) also writes it back
// (the value it read), where ASan sees them. Nothing in other builds.
#ifdef JCB_NATIVE_SANITIZE
#define JCB_TOUCH_LANES(p, mask) ::jcb::TouchLanes((p), static_cast<unsigned>(mask))
#define JCB_TOUCH_LANES_RW(p, mask) ::jcb::TouchLanesRW((p), static_cast<unsigned>(mask))
#else
#define JCB_TOUCH_LANES(p, mask) ((void)0)
#define JCB_TOUCH_LANES_RW(p, mask) ((void)0)
#endif

// The small templates the hot loops are written with: always inlined, so their bodies take the
// caller's instruction set (a JCB_ISA_VARIANTS variant's: isa.h).
#if defined(__GNUC__) || defined(__clang__)
#define JCB_INLINE inline __attribute__((always_inline))
#else
#define JCB_INLINE inline
#endif

namespace jcb {

// cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 32-bit ints:
// OpenBLAS's, handed over once through jcb_native_set_sgemm (ffi.cc) before the handlers are
// registered.
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                       int);
extern Sgemm g_sgemm;

#ifdef JCB_NATIVE_SANITIZE
// The sanitizer build's sgemm (check_gemm.cc), g_sgemm from the start: plain loops that check the
// call's order, transposes, sizes and leading dimensions (aborting with a message where they are
// wrong) and touch every element they read and write, where ASan sees them.
void CheckedSgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                  const float* b, int ldb, float beta, float* c, int ldc);

inline void TouchLanes(const float* p, unsigned mask) {
  for (int l = 0; l < 16; ++l)
    if (mask >> l & 1u) static_cast<void>(*static_cast<const volatile float*>(p + l));
}

inline void TouchLanesRW(float* p, unsigned mask) {
  for (int l = 0; l < 16; ++l)
    if (mask >> l & 1u) {
      volatile float* lane = p + l;
      *lane = *lane;
    }
}
#endif

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

// The geometry of x (N, C_in, spatial), y (N, C_out, spatial) and w (C_out, C_in / groups, kernel)
// dims; false where they do not fit together.
inline bool MakeGeometry(Geometry& g, ffi::Span<const int64_t> xd, ffi::Span<const int64_t> yd, ffi::Span<const int64_t> wd,
                         ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                         ffi::Span<const int64_t> lo,
                         int64_t groups = 1) {
  if (xd.size() != 5 || yd.size() != 5 || wd.size() != 5 || stride.size() != 3 || dilation.size() != 3 ||
      lo.size() != 3 || groups < 1 || yd[0] != xd[0] || wd[0] != yd[1] || wd[1] * groups != xd[1] ||
      yd[1] % groups != 0)
    return false;
  g = Geometry{yd[0], xd[1], yd[1], {}, {}, {}, {}, {}, {}};
  for (int a = 0; a < 3; ++a) {
    g.in[a] = xd[2 + a], g.out[a] = yd[2 + a], g.k[a] = wd[2 + a];
    g.s[a] = stride[a], g.d[a] = dilation[a], g.lo[a] = lo[a];
  }
  return true;
}

}  // namespace jcb

#endif  // JCB_NATIVE_COMMON_H_
