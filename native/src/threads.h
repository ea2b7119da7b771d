// The workers of one call on XLA's intra-op thread pool (RunWorkers).
//
// Threads: up to `threads` workers (an attribute: the usable cores, from jax_conv_bpi; one for
// problems under kMinParallelFlops), the calling thread one of them and the others tasks on XLA's
// intra-op thread pool, take blocks in turn; each fills its own patches and runs its own
// single-threaded sgemm (in the weight gradient, into the partial result of the block's slot, fixed
// by the plan and summed in slot order at the end: plan.h's Slots, the same bits for any workers). One
// worker's im2col fill then overlaps the other's sgemm; measured here (2 cores), this beat one
// fill thread feeding OpenBLAS's own threads (resnet50_l1 82-88 -> 60 ms, unet3d_conv 30 -> 16-17
// ms), and 2 workers took resnet50_l1 77 -> 40 ms against 1.

#ifndef JCB_NATIVE_THREADS_H_
#define JCB_NATIVE_THREADS_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "common.h"

namespace jcb {

// The workers handed to XLA's thread pool by one call: how many are running, and whether the call
// still takes more.
struct Join {
  std::mutex m;
  std::condition_variable cv;
  int64_t active = 0;
  bool closed = false;
};

// work(0) on the calling thread, work(1 .. used - 1) as tasks on XLA's intra-op thread pool, whose
// idle threads pick them up at once (new threads had to wait for a time slice next to the pool's
// spinning ones: ms_doc's second worker started after the first had done both blocks). Workers
// take blocks from a shared counter, so the call waits only for those that started; one that
// starts after the call closed returns without touching it.
template <typename Work>
void RunWorkers(ffi::ThreadPool& pool, int64_t used, Work& work) {
  auto join = std::make_shared<Join>();
  for (int64_t id = 1; id < used; ++id)
    pool.Schedule([join, &work, id] {
      {
        std::lock_guard<std::mutex> lock(join->m);
        if (join->closed) return;
        ++join->active;
      }
      work(id);
      std::lock_guard<std::mutex> lock(join->m);
      if (--join->active == 0) join->cv.notify_all();
    });
  work(0);
  std::unique_lock<std::mutex> lock(join->m);
  join->closed = true;
  join->cv.wait(lock, [&] { return join->active == 0; });
}

}  // namespace jcb

#endif  // JCB_NATIVE_THREADS_H_
