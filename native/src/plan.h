// How the im2col kernels cut a problem into blocks of output pixels, and how many workers take them.

#ifndef JCB_NATIVE_PLAN_H_
#define JCB_NATIVE_PLAN_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "common.h"

namespace jcb {

// Blocks of output pixels: `samples` whole samples, or one sample's `q_rows` output lines, within
// `block` floats (`per_pixel` floats of scratch per pixel); `tasks` their (first sample, first
// line); `used` workers, at most `threads` (the kernels plan for kPlanWorkers, below, and run up to
// their own `threads` workers where `used` is more than 1).
struct Plan {
  int64_t samples = 1, q_rows = 0, cols = 0, used = 1;
  std::vector<std::pair<int64_t, int64_t>> tasks;
};

Plan MakePlan(const Geometry& g, int64_t per_pixel, int64_t block, int64_t threads);

// Whether every matrix side of the plan's sgemms fits BLAS's 32-bit ints.
bool FitsBlas(const Geometry& g, const Plan& b);

// The same bits on every call and for any number of workers. The blocks are planned as for
// kPlanWorkers workers whatever `threads` says (MakePlan, DirectLayout), so their partition, and
// with it the shapes of the sgemms (OpenBLAS rounds an element differently with the matrix's width:
// the forward kernel too), is the geometry's alone; `threads` only says how many workers take them.
// (The direct forward's layout follows `threads`: each of its output lanes sums its channels and
// taps in one fixed order, whatever task it falls in.)
// The weight gradients, whose blocks all add into one result, group consecutive blocks into `count`
// slots, a number fixed by the task count and the partial's size (never by the workers), each with
// its own partial result: a worker takes a whole slot from a shared counter (the dynamic balance
// stays, slot by slot) and adds its blocks into the slot's partial in block order; the partials are
// then added in slot order. At most kMaxSlots partials, kMinSlots where that would take over
// kSlotFloats floats.
constexpr int64_t kPlanWorkers = 2;  // today's plans for 2 workers: kBlocksPerWorker blocks each
constexpr int64_t kMaxSlots = 8, kMinSlots = 4;
constexpr int64_t kSlotFloats = int64_t{1} << 23;  // 32 MiB of partials

struct Slots {
  int64_t tasks = 0, count = 0;
  // The first task of slot s (s in [0, count]; slot s is [begin(s), begin(s + 1))).
  int64_t begin(int64_t s) const { return s * tasks / count; }
};

// The slots of `tasks` blocks whose partial results are `partial_floats` floats each; one slot
// where the plan keeps the problem on one worker (`parallel` false: too small to share, a decision
// of the geometry alone).
Slots MakeSlots(int64_t tasks, int64_t partial_floats, bool parallel);

}  // namespace jcb

#endif  // JCB_NATIVE_PLAN_H_
