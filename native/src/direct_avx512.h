// The stride-1 kernels without patches, for CPUs with AVX-512 (direct_avx512.cc): JCB_DIRECT is
// defined where they are compiled (x86-64, GCC or Clang); whether a CPU runs them is checked at
// run time (DirectFits, DirectGradFits).

#ifndef JCB_NATIVE_DIRECT_AVX512_H_
#define JCB_NATIVE_DIRECT_AVX512_H_

#include <cstdint>

#include "common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define JCB_DIRECT 1

namespace jcb {

// Whether DirectForward / DirectWeightGrad compute g (stride 1, AVX-512, the measured shapes).
bool DirectFits(const Geometry& g);
bool DirectGradFits(const Geometry& g);

void DirectForward(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* w, float* y,
                   int64_t threads);
void DirectWeightGrad(ffi::ThreadPool& pool, const Geometry& g, const float* dout, const float* x, float* w,
                      int64_t threads);

}  // namespace jcb

#endif

#endif  // JCB_NATIVE_DIRECT_AVX512_H_
