// The XLA FFI handlers and the C entry points that jax_conv_bpi calls through ctypes.
//
// The sgemm is OpenBLAS's CBLAS entry point, looked up by the Python side (jax_conv_bpi/_src/native/kernels.py)
// in the scipy-openblas32 wheel (its private copy, set to one thread) and handed over once through
// jcb_native_set_sgemm before the handler is registered; nothing here links against a BLAS. A call
// keeps no state beyond its own buffers and its workers, so concurrent calls from XLA's threads
// are as safe as OpenBLAS's own concurrent sgemms.

#include <cstdint>

#include "common.h"
#include "direct_avx512.h"
#include "kernels.h"

namespace jcb {
#ifdef JCB_NATIVE_SANITIZE
Sgemm g_sgemm = CheckedSgemm;  // the sanitizer build's own (check_gemm.cc): jcb_native_set_sgemm keeps it
#else
Sgemm g_sgemm = nullptr;
#endif
}  // namespace jcb

using jcb::Geometry;
using jcb::MakeGeometry;
#ifdef JCB_DIRECT
using jcb::DirectFits;
using jcb::DirectGradFits;
#endif

// The version of the C interface below (the entry points, the handlers' operands and attributes):
// jax_conv_bpi loads a library only where it is the one it expects.
#define JCB_NATIVE_ABI 2

// What the build recorded (CMakeLists.txt): the jaxlib whose FFI headers it compiled against.
#ifndef JCB_NATIVE_JAXLIB
#define JCB_NATIVE_JAXLIB "unknown"
#endif

extern "C" int jcb_native_abi() { return JCB_NATIVE_ABI; }

extern "C" const char* jcb_native_jaxlib() { return JCB_NATIVE_JAXLIB; }

// The instruction set the kernels run with (isa.h): "avx512" (the direct stride-1 kernels and the
// grouped kernels' AVX-512 variants), "avx2" (the grouped kernels' AVX2 variants; no direct
// kernels) or "generic" (no SIMD target); the CPU's best unless jcb_native_set_isa chose another.
extern "C" const char* jcb_native_isa() { return jcb::IsaName(jcb::ActiveIsa()); }

// The best instruction set this CPU runs, by the same names.
extern "C" const char* jcb_native_cpu_isa() { return jcb::IsaName(jcb::CpuIsa()); }

// Run the kernels with the instruction set `name` (JCB_NATIVE_ISA, before the handlers are
// registered): 0 done, 1 no such name, 2 this CPU does not run it (both change nothing).
extern "C" int jcb_native_set_isa(const char* name) {
  jcb::Isa isa;
  if (!jcb::IsaByName(name, isa)) return 1;
  return jcb::SetIsa(isa) ? 0 : 2;
}

// The sanitizer build ignores the handed-over sgemm and keeps its checking one.
extern "C" void jcb_native_set_sgemm(void* sgemm) {
#ifdef JCB_NATIVE_SANITIZE
  static_cast<void>(sgemm);
#else
  jcb::g_sgemm = reinterpret_cast<jcb::Sgemm>(sgemm);
#endif
}

// Whether the forward (kernel 0) or the weight-gradient kernel (1) computes this convolution
// directly (DirectFits, DirectGradFits), dims as the forward handler's: x, y and w rank 5, then
// stride, dilation, lo 3 each.
extern "C" int jcb_native_direct(int kernel, const int64_t* xd, const int64_t* yd, const int64_t* wd,
                                 const int64_t* s, const int64_t* d, const int64_t* lo) {
  Geometry g;
  using S = ffi::Span<const int64_t>;
  if (!MakeGeometry(g, S(xd, 5), S(yd, 5), S(wd, 5), S(s, 3), S(d, 3), S(lo, 3))) return 0;
#ifdef JCB_DIRECT
  return kernel == 0 ? DirectFits(g) : DirectGradFits(g);
#else
  static_cast<void>(kernel);  // no direct kernels in this build
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvWeightGrad, jcb::WeightGrad, JCB_BIND("block"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvForward, jcb::Forward, JCB_BIND("block"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvGroupedWeightGrad, jcb::GroupedWeightGrad, JCB_BIND("groups"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JcbConvGroupedForward, jcb::GroupedForward, JCB_BIND("groups"));
