// One pool of worker threads for all CPU kernels. A decode step runs a few
// hundred small parallel ops, so handing out work must cost about a
// microsecond: workers spin on a generation counter between jobs (and sleep
// on a futex only after a while idle), the caller spins on a countdown.
// Work is split statically: parallel_for(n, fn) hands each thread one
// contiguous range, so a kernel's partition is deterministic and needs no
// atomics in its inner loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  // n_threads <= 0: the number of physical cores. Threads are pinned one per
  // CPU of the process's affinity mask when there are enough CPUs
  // (KILN_NO_PIN=1 turns that off).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) over [0, n) split into size() ranges;
  // the calling thread takes a range too. Returns when all are done.
  template <class F>
  void parallel_for(int64_t n, F&& fn) {
    if (n <= 0) return;
    const int threads = int(n < size() ? n : size());
    if (threads == 1) {
      fn(int64_t(0), n, 0);
      return;
    }
    run_on_all([&](int t) {
      if (t >= threads) return;
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      if (begin < end) fn(begin, end, t);
    });
  }

  // Runs fn(thread_index) once on every thread.
  template <class F>
  void run_on_all(F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run(+[](void* ctx, int t) { (*static_cast<Fn*>(ctx))(t); }, (void*)&fn);
  }

 private:
  using JobFn = void (*)(void*, int);
  void run(JobFn fn, void* ctx);
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  JobFn job_fn_ = nullptr;
  void* job_ctx_ = nullptr;
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleeping_workers_{0};
  alignas(64) std::atomic<uint32_t> remaining_{0};
  std::atomic<int> caller_sleeping_{0};
  std::atomic<bool> stop_{false};
};

int physical_core_count();

}  // namespace kiln
