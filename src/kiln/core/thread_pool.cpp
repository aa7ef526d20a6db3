#include "kiln/core/thread_pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kiln {
namespace {

// A waiting thread spins before it sleeps: kPauses pauses (tens of cycles
// each, longer than the gap between two ops of a forward pass), then kYields
// turns of giving its CPU away (about half a millisecond in all, much
// shorter than a pause between requests). The yields matter when threads
// outnumber CPUs (a server's connection and scheduler threads beside the
// pool): a pure spin would hold the CPU that the thread it waits for
// needs, for the rest of a time slice.
constexpr int kPauses = 1 << 10, kYields = 512;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

void futex_wait(std::atomic<uint32_t>* a, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(a), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>* a) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(a), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

void pin(pthread_t thread, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(thread, sizeof(set), &set);  // best effort
}

}  // namespace

thread_local bool ThreadPool::in_job_ = false;

bool ThreadPool::in_job() { return in_job_; }

void ThreadPool::run_job(JobFn fn, void* ctx, int t) {
  struct Scope {
    Scope() { in_job_ = true; }
    ~Scope() { in_job_ = false; }
  } scope;
  fn(ctx, t);
}

int physical_core_count() {
  // Count distinct (physical id, core id) pairs: hyper-threads share a core,
  // and two threads on one core only slow a bandwidth-bound kernel down.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int physical = 0;
  while (std::getline(in, line)) {
    auto value = [&] { return std::stoi(line.substr(line.find(':') + 1)); };
    if (line.rfind("physical id", 0) == 0) physical = value();
    if (line.rfind("core id", 0) == 0) cores.insert({physical, value()});
  }
  int n = int(cores.size());
  int logical = int(std::thread::hardware_concurrency());
  if (n <= 0 || n > logical) n = logical;
  return n > 0 ? n : 1;
}

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = physical_core_count();
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  // Pin only when every thread gets a CPU of its own: with fewer CPUs than
  // threads the scheduler must be free to move them. The calling thread is
  // not pinned (its first CPU is left for it): pinning it would outlive the
  // pool and every thread it starts later would inherit the single CPU.
  const char* no_pin = std::getenv("KILN_NO_PIN");
  const std::vector<int> cpus = allowed_cpus();
  if (n_threads > 1 && !(no_pin && *no_pin && *no_pin != '0') && int(cpus.size()) >= n_threads)
    for (int i = 1; i < n_threads; ++i) pin(workers_[size_t(i - 1)].native_handle(), cpus[size_t(i)]);
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  futex_wake(&generation_);
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t g;
    int spins = 0;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kPauses + kYields) {
        if (spins < kPauses) cpu_relax();
        else sched_yield();
        continue;
      }
      // Announce the sleep before re-checking: the caller reads
      // sleeping_workers_ after bumping the generation (both seq_cst), and
      // the futex re-checks the generation atomically.
      sleeping_workers_.fetch_add(1);
      futex_wait(&generation_, seen);
      sleeping_workers_.fetch_sub(1);
      spins = 0;
    }
    seen = g;
    if (stop_.load(std::memory_order_relaxed)) return;
    run_job(job_fn_, job_ctx_, index);
    if (remaining_.fetch_sub(1) == 1 && caller_sleeping_.load() != 0)
      futex_wake(&remaining_);
  }
}

void ThreadPool::run(JobFn fn, void* ctx) {
  if (in_job_) {
    for (int t = 0; t < size(); ++t) fn(ctx, t);
    return;
  }
  if (workers_.empty()) {
    run_job(fn, ctx, 0);
    return;
  }
  job_fn_ = fn;
  job_ctx_ = ctx;
  remaining_.store(uint32_t(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job
  if (sleeping_workers_.load() != 0) futex_wake(&generation_);
  run_job(fn, ctx, 0);
  int spins = 0;
  uint32_t left;
  while ((left = remaining_.load(std::memory_order_acquire)) != 0) {
    if (++spins < kPauses + kYields) {
      if (spins < kPauses) cpu_relax();
      else sched_yield();
      continue;
    }
    caller_sleeping_.fetch_add(1);
    futex_wait(&remaining_, left);
    caller_sleeping_.fetch_sub(1);
    spins = 0;
  }
}

}  // namespace kiln
