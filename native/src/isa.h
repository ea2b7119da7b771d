// The instruction set the hot loops run with (isa.cc), chosen explicitly at load time: the best the
// CPU runs (CpuIsa), unless jax_conv_bpi asks for a lesser one (SetIsa, from JCB_NATIVE_ISA:
// jcb_native_set_isa in ffi.cc). The library itself is built for the target's baseline; each hot
// loop is an always-inlined body compiled once per instruction set under a target attribute
// (JCB_TARGET_*), and a switch over ActiveIsa() calls one of them (grouped.cc's plane loops; the
// direct kernels run only where ActiveIsa() is kAvx512). No ifunc or target_clones resolver picks
// anything, so a test can force each variant on one machine.
//
// Another architecture's variants (ARM NEON or SVE, say) would be new enumerators here, their
// detection in isa.cc's DetectCpu, a JCB_TARGET_ macro under their own #if and a case in each
// switch (JCB_ISA_VARIANTS); the generic variant needs nothing and compiles everywhere.

#ifndef JCB_NATIVE_ISA_H_
#define JCB_NATIVE_ISA_H_

namespace jcb {

enum class Isa : int {
  kGeneric = 0,  // no SIMD target: the baseline of the build (x86-64: SSE2; any architecture)
  kAvx2 = 1,     // x86-64 AVX2 + FMA
  kAvx512 = 2,   // x86-64 AVX-512F
};

// Its name in the C interface and in JCB_NATIVE_ISA: "generic", "avx2", "avx512".
const char* IsaName(Isa isa);
// The Isa named `name`; false where no Isa has that name.
bool IsaByName(const char* name, Isa& isa);
// The best instruction set this CPU runs (detected once).
Isa CpuIsa();
// Whether this CPU runs `isa`'s variants.
bool CpuRuns(Isa isa);
// The instruction set the kernels use now: CpuIsa() unless SetIsa chose another.
Isa ActiveIsa();
// Use `isa` from now on; false (and no change) where the CPU does not run it.
bool SetIsa(Isa isa);

}  // namespace jcb

// The target attributes of the explicit variants, where the compiler has them.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define JCB_X86_VARIANTS 1
#define JCB_TARGET_AVX512 __attribute__((target("avx512f")))
#define JCB_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

// JCB_ISA_VARIANTS(Name, Body, (params), (args)): template <int64_t S> functions Name##Avx512,
// Name##Avx2 (x86-64 only) and Name##Generic, each Body<S>(args) compiled for its instruction set
// (Body must be JCB_INLINE, as must what it calls in its loops), and Name<S>(Isa isa, params)
// calling the one for `isa` (the generic one for any Isa this build has no variant of).
#ifdef JCB_X86_VARIANTS
#define JCB_ISA_VARIANTS_X86(Name, Body, Params, Args) \
  template <int64_t S>                                 \
  JCB_TARGET_AVX512 void Name##Avx512 Params {         \
    Body<S> Args;                                      \
  }                                                    \
  template <int64_t S>                                 \
  JCB_TARGET_AVX2 void Name##Avx2 Params {             \
    Body<S> Args;                                      \
  }
#define JCB_ISA_CASES_X86(Name, Args) \
  case ::jcb::Isa::kAvx512:           \
    return Name##Avx512<S> Args;      \
  case ::jcb::Isa::kAvx2:             \
    return Name##Avx2<S> Args;
#else
#define JCB_ISA_VARIANTS_X86(Name, Body, Params, Args)
#define JCB_ISA_CASES_X86(Name, Args)
#endif

#define JCB_ISA_VARIANTS(Name, Body, Params, Args)          \
  JCB_ISA_VARIANTS_X86(Name, Body, Params, Args)            \
  template <int64_t S>                                      \
  void Name##Generic Params {                               \
    Body<S> Args;                                           \
  }                                                         \
  template <int64_t S>                                      \
  void Name(::jcb::Isa isa, JCB_ISA_UNPAREN Params) {       \
    switch (isa) {                                          \
      JCB_ISA_CASES_X86(Name, Args)                         \
      default:                                              \
        return Name##Generic<S> Args;                       \
    }                                                       \
  }
#define JCB_ISA_UNPAREN(...) __VA_ARGS__

#endif  // JCB_NATIVE_ISA_H_
