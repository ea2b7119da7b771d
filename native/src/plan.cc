#include "plan.h"

#include <algorithm>
#include <cstdint>

namespace jcb {

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

Slots MakeSlots(int64_t tasks, int64_t partial_floats, bool parallel) {
  const int64_t count = partial_floats > kSlotFloats / kMaxSlots ? kMinSlots : kMaxSlots;
  return Slots{tasks, parallel ? std::max<int64_t>(1, std::min(tasks, count)) : 1};
}

bool FitsBlas(const Geometry& g, const Plan& b) {
  return std::max({g.c_in * g.taps(), g.c_out, b.cols, g.pixels()}) <= INT32_MAX;
}

}  // namespace jcb
