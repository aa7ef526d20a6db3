// ThreadPool: every index of a parallel_for exactly once, and a
// parallel_for inside a job (a serving step's part calling the usual ops)
// runs whole on the thread that calls it, without waiting on the pool.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "kiln/core/thread_pool.h"

namespace kiln {
namespace {

TEST(ThreadPool, EveryIndexOnce) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(1000);
  pool.parallel_for(1000, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
  });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_FALSE(ThreadPool::in_job());
}

TEST(ThreadPool, NestedParallelForRunsOnTheCallingThread) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(2 * 100);
  std::atomic<int> elsewhere{0};
  pool.parallel_for(2, [&](int64_t b, int64_t e, int) {
    EXPECT_TRUE(ThreadPool::in_job());
    for (int64_t part = b; part < e; ++part) {
      const std::thread::id me = std::this_thread::get_id();
      pool.parallel_for(100, [&](int64_t i0, int64_t i1, int) {
        if (std::this_thread::get_id() != me) elsewhere++;
        for (int64_t i = i0; i < i1; ++i) hits[size_t(part * 100 + i)]++;
      });
    }
  });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_EQ(elsewhere.load(), 0);
  EXPECT_FALSE(ThreadPool::in_job());
}

}  // namespace
}  // namespace kiln
