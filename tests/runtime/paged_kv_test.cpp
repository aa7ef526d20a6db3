// Paged KV caches (blocks of a shared pool, as kiln serve uses them on the
// CPU): the same logits as a contiguous cache, blocks taken as a sequence
// grows and given back when it shrinks or ends, a prompt head shared between
// sequences stored once and left intact by what each writes after it.
//
// Tolerance 1e-5 relative: a paged cache holds the same values; only the
// value sum is split at block boundaries (partial sums added), a regrouping
// of f32 additions. A wrong block table shows as O(1) differences.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/error.h"
#include "kiln/model/kv_cache.h"
#include "kiln/runtime/engine.h"
#include "support/reference.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

std::vector<int32_t> ids_from(int seed, int n) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 37 + seed * 101 + 11) % 1000);
  return ids;
}

std::unique_ptr<Engine> load(const std::string& arch) {
  LoadOptions o;
  o.need_tokenizer = false;
  return Engine::load(kData + "/hf/" + arch, o);
}

// Feeds a prompt in one call, then `decode` more tokens one at a time; the
// logits of every position. With `other`, that sequence of the same pool is
// fed one token after each of these, so the two take blocks in turn and
// any mix-up of block tables shows.
std::vector<float> run(Model& m, SequenceState& s, const std::vector<int32_t>& prompt,
                       const std::vector<int32_t>& decode, SequenceState* other = nullptr) {
  const int64_t V = m.spec().vocab_size;
  std::vector<float> all(prompt.size() * size_t(V));
  std::vector<float> one(static_cast<size_t>(V));
  m.forward(s, prompt.data(), int64_t(prompt.size()), all.data(), true);
  for (int32_t id : decode) {
    m.forward(s, &id, 1, one.data(), false);
    all.insert(all.end(), one.begin(), one.end());
    if (other) m.forward(*other, &id, 1, nullptr, false);
  }
  return all;
}

StateOptions paged_options(std::shared_ptr<KvBlockPool> pool) {
  StateOptions o;
  o.context = 64;
  o.kv_pool = std::move(pool);
  return o;
}

class PagedKv : public ::testing::TestWithParam<const char*> {};

// Blocks of 4 positions put a boundary inside every stretch of the prompt
// and of the decode; f32 and f16 caches.
TEST_P(PagedKv, EqualsAContiguousCache) {
  auto e = load(GetParam());
  Model& m = e->model();
  const auto prompt = ids_from(1, 29), decode = ids_from(2, 9);
  for (DType dtype : {DType::F32, DType::F16}) {
    StateOptions flat;
    flat.context = 64;
    flat.kv_dtype = dtype;
    auto a = m.new_state(flat);
    const auto want = run(m, *a, prompt, decode);

    auto pool = m.new_kv_pool(4, 32, dtype);
    ASSERT_TRUE(pool) << "the CPU backend pages its KV caches";
    auto other = m.new_state(paged_options(pool));
    const auto other_prompt = ids_from(3, 6);
    m.forward(*other, other_prompt.data(), 6, nullptr, false);
    auto b = m.new_state(paged_options(pool));
    const auto got = run(m, *b, prompt, decode, other.get());
    EXPECT_LE(test::max_relative_error(got, want), 1e-5) << GetParam() << " " << dtype_name(dtype);
    EXPECT_EQ(b->kv_blocks_held(), (29 + 9 + 3) / 4);  // 38 positions in blocks of 4
    EXPECT_EQ(other->kv_blocks_held(), (6 + 9 + 3) / 4);
    EXPECT_EQ(pool->free_blocks(), 32 - b->kv_blocks_held() - other->kv_blocks_held());
    b.reset();
    other.reset();
    EXPECT_EQ(pool->free_blocks(), 32) << "a state gives its blocks back when it goes";
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, PagedKv,
                         ::testing::Values("llama", "qwen3", "smollm3", "qwen3_moe", "qwen3_5_text",
                                           "qwen3_next", "bitnet"));

// Two sequences with a common head: the second takes the first's blocks for
// it, then each goes its own way; both get what they would get alone.
TEST(PagedKvSharing, ASharedPrefixIsStoredOnceAndLeftIntact) {
  auto e = load("qwen3");
  Model& m = e->model();
  const int64_t V = m.spec().vocab_size;
  auto pool = m.new_kv_pool(8, 32, DType::F32);
  const auto head = ids_from(3, 30);  // 30 positions: blocks 0-2 full, block 3 partial
  auto donor = m.new_state(paged_options(pool));
  std::vector<float> scratch(head.size() * size_t(V));
  m.forward(*donor, head.data(), int64_t(head.size()), scratch.data(), true);
  ASSERT_EQ(donor->kv_blocks_held(), 4);

  auto taker = m.new_state(paged_options(pool));
  ASSERT_TRUE(taker->share_prefix(*donor, 24));
  EXPECT_EQ(taker->position(), 24);
  EXPECT_EQ(taker->kv_blocks_held(), 3);
  EXPECT_EQ(pool->free_blocks(), 32 - 4) << "sharing takes no new block";

  // The taker continues differently from position 24; the donor from 30.
  const auto tail_taker = ids_from(4, 10), tail_donor = ids_from(5, 6);
  const auto got_taker = run(m, *taker, tail_taker, {});
  const auto got_donor = run(m, *donor, tail_donor, {});

  auto expect_alone = [&](std::vector<int32_t> prefix, const std::vector<int32_t>& tail,
                          const std::vector<float>& got, const char* who) {
    StateOptions flat;
    flat.context = 64;
    auto s = m.new_state(flat);
    const size_t skip = prefix.size();
    prefix.insert(prefix.end(), tail.begin(), tail.end());
    auto all = run(m, *s, prefix, {});
    all.erase(all.begin(), all.begin() + int64_t(skip) * V);
    EXPECT_LE(test::max_relative_error(got, all), 1e-5) << who;
  };
  expect_alone(std::vector<int32_t>(head.begin(), head.begin() + 24), tail_taker, got_taker,
               "taker");
  expect_alone(head, tail_donor, got_donor, "donor");
}

// Truncating into a block another sequence reads keeps only the whole blocks
// before it (the next write would land in the shared block); the result
// after continuing is still exact.
TEST(PagedKvSharing, TruncateNeverWritesIntoASharedBlock) {
  auto e = load("llama");
  Model& m = e->model();
  auto pool = m.new_kv_pool(8, 16, DType::F32);
  const auto head = ids_from(6, 30);
  auto a = m.new_state(paged_options(pool));
  run(m, *a, head, {});
  auto b = m.new_state(paged_options(pool));
  ASSERT_TRUE(b->share_prefix(*a, 24));
  const auto b_tail = ids_from(7, 5);
  const auto b_before = run(m, *b, b_tail, {});

  a->truncate(20);  // block 2 ([16, 24)) is shared with b
  EXPECT_EQ(a->position(), 16);
  EXPECT_EQ(a->kv_blocks_held(), 2);
  a->truncate(12);  // block 1 is shared too, and truncate never grows a sequence
  EXPECT_EQ(a->position(), 8);

  const auto a_tail = ids_from(8, 12);
  const auto got = run(m, *a, a_tail, {});
  StateOptions flat;
  flat.context = 64;
  auto fresh = m.new_state(flat);
  std::vector<int32_t> direct(head.begin(), head.begin() + 8);
  direct.insert(direct.end(), a_tail.begin(), a_tail.end());
  auto want = run(m, *fresh, direct, {});
  want.erase(want.begin(), want.begin() + 8 * m.spec().vocab_size);
  EXPECT_LE(test::max_relative_error(got, want), 1e-5);

  // b's head was not touched by a's writes: b continues as before.
  auto b2 = m.new_state(paged_options(pool));
  ASSERT_TRUE(b2->share_prefix(*b, 24));
  std::vector<int32_t> b_again = b_tail;
  EXPECT_LE(test::max_relative_error(run(m, *b2, b_again, {}), b_before), 1e-6);
}

TEST(PagedKvSharing, WhatCannotBeSharedIsRefused) {
  auto hybrid = load("qwen3_5_text");
  auto pool = hybrid->model().new_kv_pool(8, 16, DType::F32);
  ASSERT_TRUE(pool);
  auto a = hybrid->model().new_state(paged_options(pool));
  run(hybrid->model(), *a, ids_from(1, 20), {});
  auto b = hybrid->model().new_state(paged_options(pool));
  EXPECT_FALSE(b->share_prefix(*a, 16)) << "a recurrent state has no per-position prefix";
  EXPECT_EQ(b->position(), 0);

  auto e = load("llama");
  auto p = e->model().new_kv_pool(8, 16, DType::F32);
  StateOptions flat;
  flat.context = 64;
  auto c = e->model().new_state(flat), d = e->model().new_state(flat);
  run(e->model(), *c, ids_from(1, 20), {});
  EXPECT_FALSE(d->share_prefix(*c, 16)) << "contiguous caches share nothing";
  auto f = e->model().new_state(paged_options(p));
  EXPECT_FALSE(f->share_prefix(*c, 16)) << "not the same pool";
}

// A pool too small for a prompt: a clear error, and the blocks are not lost.
TEST(PagedKvPool, RunningOutIsAClearErrorAndLosesNothing) {
  auto e = load("llama");
  Model& m = e->model();
  auto pool = m.new_kv_pool(8, 3, DType::F32);
  auto s = m.new_state(paged_options(pool));
  const auto ids = ids_from(1, 30);  // 4 blocks
  EXPECT_THROW(m.forward(*s, ids.data(), 30, nullptr, false), Error);
  s->reset();
  EXPECT_EQ(pool->free_blocks(), 3);
  EXPECT_EQ(s->kv_blocks_needed(30), 4);
  EXPECT_EQ(s->kv_blocks_needed(24), 3);

  auto t = m.new_state(paged_options(pool));
  m.forward(*t, ids.data(), 17, nullptr, false);
  EXPECT_EQ(pool->free_blocks(), 0);
  t->truncate(9);
  EXPECT_EQ(t->kv_blocks_held(), 2);
  EXPECT_EQ(pool->free_blocks(), 1);
}

// Resident bytes of this process (Linux), -1 where unknown.
int64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  return n == 2 ? int64_t(resident) * int64_t(sysconf(_SC_PAGESIZE)) : -1;
}

// A pool holds its memory from the start (kiln serve: the server's memory
// does not grow under load, and no step pays the page faults of a new
// block), so making one raises the resident size by about its bytes.
TEST(PagedKvPool, IsCommittedWhenMade) {
  auto e = load("llama");
  const int64_t before = resident_bytes();
  if (before < 0) GTEST_SKIP() << "no /proc/self/statm";
  auto pool = e->model().new_kv_pool(32, 1024, DType::F32);  // 3 layers: 24 MiB
  ASSERT_TRUE(pool);
  const int64_t grew = resident_bytes() - before;
  EXPECT_GE(double(grew), 0.9 * double(pool->bytes())) << grew << " of " << pool->bytes();
}

// Buffers of 2 MiB and more start on a 2 MiB boundary, where transparent
// huge pages can back them.
TEST(CpuBuffers, LargeOnesAreHugePageAligned) {
  auto b = make_cpu_backend(BackendOptions{});
  for (size_t bytes : {size_t(2) << 20, (size_t(3) << 20) + 5}) {
    void* p = b->alloc(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (uintptr_t(2) << 20), 0u) << bytes;
    static_cast<char*>(p)[bytes - 1] = 1;  // all of it usable
    b->free(p);
  }
  void* small = b->alloc(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  b->free(small);
}

}  // namespace
}  // namespace kiln
