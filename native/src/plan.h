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
// line); `used` workers, at most `threads`.
struct Plan {
  int64_t samples = 1, q_rows = 0, cols = 0, used = 1;
  std::vector<std::pair<int64_t, int64_t>> tasks;
};

Plan MakePlan(const Geometry& g, int64_t per_pixel, int64_t block, int64_t threads);

// Whether every matrix side of the plan's sgemms fits BLAS's 32-bit ints.
bool FitsBlas(const Geometry& g, const Plan& b);

}  // namespace jcb

#endif  // JCB_NATIVE_PLAN_H_
