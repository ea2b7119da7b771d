// The kernels behind the XLA FFI handlers (ffi.cc binds them): each takes XLA's thread pool, two
// float32 operands and the result, channels-first with 3 spatial axes, then the geometry's stride,
// dilation and `lo` padding, a knob (the im2col kernels' block in floats, the grouped kernels'
// group count) and the most workers.

#ifndef JCB_NATIVE_KERNELS_H_
#define JCB_NATIVE_KERNELS_H_

#include <cstdint>

#include "common.h"

namespace jcb {

// im2col_gemm.cc
ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> x,
                      ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                      ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t block, int64_t threads);
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wb,
                   ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                   ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t block, int64_t threads);

// grouped.cc
ffi::Error GroupedWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> x,
                             ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                             ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t groups,
                             int64_t threads);
ffi::Error GroupedForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wb,
                          ffi::ResultBuffer<ffi::F32> out, ffi::Span<const int64_t> stride,
                          ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> lo, int64_t groups,
                          int64_t threads);

}  // namespace jcb

#endif  // JCB_NATIVE_KERNELS_H_
