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
    if (threads == 1 || in_job()) {  // nested in a job: this thread does it all
      fn(int64_t(0), n, 0);
      return;
    }
    run_on_all([&](int t) {
      if (t >= threads) return;
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      if (begin < end) fn(begin, end, t);
    });
  }

  // Whether the calling thread is running a job of a pool (any pool): a
  // parallel_for or run_on_all inside one runs on the calling thread alone,
  // so that a job can call code that uses the pool (a serving step split
  // over the threads by sequence, each part running the model's usual ops).
  // (Defined in thread_pool.cpp, beside the variable: read through GCC's
  // thread_local wrapper from other files, UndefinedBehaviorSanitizer took
  // it for a load through a null pointer.)
  static bool in_job();

  // Runs fn(thread_index) once on every thread (in turn, on the calling
  // thread, inside a job).
  template <class F>
  void run_on_all(F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run(+[](void* ctx, int t) { (*static_cast<Fn*>(ctx))(t); }, (void*)&fn);
  }

 private:
  using JobFn = void (*)(void*, int);
  void run(JobFn fn, void* ctx);
  static void run_job(JobFn fn, void* ctx, int t);  // fn(ctx, t) with in_job() true
  void worker_loop(int index);

  static thread_local bool in_job_;
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
