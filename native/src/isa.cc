// The instruction set the kernels run with (isa.h): detected once, changed only by SetIsa.

#include "isa.h"

#include <atomic>
#include <cstring>

namespace jcb {
namespace {

Isa DetectCpu() {
#ifdef JCB_X86_VARIANTS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

constexpr Isa kAll[] = {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512};

std::atomic<int> g_active{-1};  // -1: CpuIsa()

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      break;
  }
  return "generic";
}

bool IsaByName(const char* name, Isa& isa) {
  for (Isa candidate : kAll)
    if (name != nullptr && std::strcmp(name, IsaName(candidate)) == 0) {
      isa = candidate;
      return true;
    }
  return false;
}

Isa CpuIsa() {
  static const Isa cpu = DetectCpu();
  return cpu;
}

// The x86-64 variants nest (AVX-512F CPUs run AVX2 + FMA); another architecture's would say here
// which of its own the CPU runs.
bool CpuRuns(Isa isa) {
  return isa == Isa::kGeneric || static_cast<int>(isa) <= static_cast<int>(CpuIsa());
}

Isa ActiveIsa() {
  const int active = g_active.load(std::memory_order_relaxed);
  return active < 0 ? CpuIsa() : static_cast<Isa>(active);
}

bool SetIsa(Isa isa) {
  if (!CpuRuns(isa)) return false;
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace jcb
