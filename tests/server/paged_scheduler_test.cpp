// The scheduler over a paged KV pool: a pool far smaller than slots x
// context forces idle caches out and running sequences to be preempted and
// recomputed, yet every greedy output equals the same request run alone;
// a prompt head another running sequence holds is shared, not recomputed;
// when everything has ended, the pool holds only what idle slots keep.
#include <gtest/gtest.h>

#include <chrono>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/quant/gemm.h"
#include "kiln/quant/quantize.h"
#include "kiln/runtime/engine.h"
#include "kiln/server/scheduler.h"

namespace kiln {
namespace {

const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
const std::string kHybrid = std::string(KILN_TEST_DATA) + "/hf/qwen3_5_text";

std::unique_ptr<Engine> load(const std::string& path) {
  LoadOptions o;
  o.need_tokenizer = false;
  return Engine::load(path, o);
}

std::vector<int32_t> ids_from(int seed, int n, int vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 37 + seed * 101 + 11) % vocab);
  return ids;
}

std::shared_ptr<Sequence> request(std::vector<int32_t> prompt, int max_tokens) {
  auto s = std::make_shared<Sequence>();
  s->prompt = std::move(prompt);
  s->max_tokens = max_tokens;
  s->sampling.temperature = 0;
  return s;
}

std::vector<int32_t> collect(Sequence& s) {
  std::vector<int32_t> ids;
  std::vector<TokenEvent> events;
  while (!s.wait(events, 100)) {
  }
  for (const auto& e : events) ids.push_back(e.id);
  return ids;
}

std::vector<int32_t> alone(Model& m, const std::vector<int32_t>& prompt, int n) {
  SchedulerOptions o;
  o.slots = 1;
  o.context = 256;
  Scheduler one(m, o);
  auto s = request(prompt, n);
  EXPECT_TRUE(one.submit(s));
  return collect(*s);
}

// 8 slots of 256 positions over a pool of 256 positions in all: 8 prompts of
// 20-50 tokens that each generate 80 cannot all be held at once.
void expect_outputs_survive_a_small_pool(const std::string& path, int n_prompts, int gen) {
  auto e = load(path);
  Model& m = e->model();
  const int vocab = int(m.spec().vocab_size);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n_prompts; ++i) prompts.push_back(ids_from(i, 20 + 4 * i, vocab));
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(alone(m, p, gen));

  SchedulerOptions o;
  o.slots = 8;
  o.context = 256;
  o.step_tokens = 64;
  o.kv_block = 16;
  o.kv_positions = 256;
  Scheduler sched(m, o);
  ASSERT_EQ(sched.stats().kv_blocks, 16);
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (const auto& p : prompts) {
    seqs.push_back(request(p, gen));
    ASSERT_TRUE(sched.submit(seqs.back()));
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(collect(*seqs[i]), want[i]) << "request " << i;
    EXPECT_EQ(seqs[i]->finish_reason(), FinishReason::Length) << seqs[i]->error();
  }
  ASSERT_TRUE(sched.wait_idle(10000));
  const SchedulerStats st = sched.stats();
  EXPECT_GT(st.preemptions, 0) << "the pool was meant to run out";
  EXPECT_LE(st.kv_blocks_used, st.kv_blocks);
}

TEST(PagedScheduler, PreemptedSequencesGiveTheirAloneOutputs) {
  expect_outputs_survive_a_small_pool(kStories, 8, 80);
}

// The hybrid: preemption also rewinds the recurrent state (to the start).
TEST(PagedScheduler, PreemptionWorksForHybridModels) {
  expect_outputs_survive_a_small_pool(kHybrid, 6, 60);
}

// Block-format weights: a step of 32 sequences takes the CPU's int8 tiles,
// a sequence alone the strip kernels, both in one order of operations (on
// AVX2 too, where the scheduler asks for it), so each of 32 greedy streams
// equals its run alone. With the row kernels the
// AVX-512 level had for one token before, 2 of these 32 streams parted from
// their alone outputs within 40 tokens.
// weight_tiles: SchedulerOptions::weight_tiles_bytes.
void expect_32_streams_equal_alone(const std::string& path, size_t weight_tiles = 0) {
  auto e = load(path);
  Model& m = e->model();
  const int vocab = int(m.spec().vocab_size);
  constexpr int kStreams = 32, kTokens = 40;
  SchedulerOptions o;
  o.slots = kStreams;
  o.context = 128;
  o.weight_tiles_bytes = weight_tiles;
  Scheduler sched(m, o);
  // Kept tiles are all packed when the scheduler starts, none later.
  auto* cpu = dynamic_cast<CpuBackend*>(&m.backend());
  const size_t kept_at_start = cpu ? cpu->kept_tile_bytes() : 0;
  if (weight_tiles > 0 && cpu) {
    EXPECT_GT(kept_at_start, 0u);
  }
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (int i = 0; i < kStreams; ++i) {
    seqs.push_back(request(ids_from(i, 6 + i % 5, vocab), kTokens));
    ASSERT_TRUE(sched.submit(seqs.back()));
  }
  std::vector<std::vector<int32_t>> together;
  for (auto& s : seqs) together.push_back(collect(*s));
  if (cpu) {
    EXPECT_EQ(cpu->kept_tile_bytes(), kept_at_start);
  }
  for (int i = 0; i < kStreams; ++i)
    EXPECT_EQ(together[size_t(i)], alone(m, ids_from(i, 6 + i % 5, vocab), kTokens)) << "stream " << i;
}

// Sampled streams, eight at a time: each step brings back each stream's
// top-k candidates (BatchItem::top), and every stream draws what it draws
// alone from its full logits on the host (top_logprobs asks for those),
// seed for seed. One stream with a penalty and one with top-k off take the
// logits together too.
TEST(PagedScheduler, SampledStreamsDrawWhatTheirLogitsGive) {
  for (const std::string& path : {kStories, kHybrid}) {
    auto e = load(path);
    Model& m = e->model();
    const int vocab = int(m.spec().vocab_size);
    constexpr int kStreams = 8, kTokens = 30;
    auto sampled = [&](int i) {
      auto s = request(ids_from(i, 5 + i % 4, vocab), kTokens);
      s->sampling.temperature = 0.9f;
      s->sampling.seed = uint64_t(100 + i);
      if (i == 3) s->sampling.repeat_penalty = 1.2f;
      if (i == 5) s->sampling.top_k = 0;
      return s;
    };
    SchedulerOptions o;
    o.slots = kStreams;
    o.context = 128;
    o.top_k_rows_from = 1;  // the CPU's own choice is never
    Scheduler sched(m, o);
    std::vector<std::shared_ptr<Sequence>> seqs;
    for (int i = 0; i < kStreams; ++i) {
      seqs.push_back(sampled(i));
      ASSERT_TRUE(sched.submit(seqs.back()));
    }
    std::vector<std::vector<int32_t>> together;
    for (auto& s : seqs) together.push_back(collect(*s));
    ASSERT_TRUE(sched.wait_idle(10000));  // one scheduler on the model at a time
    for (int i = 0; i < kStreams; ++i) {
      SchedulerOptions o1 = o;
      o1.slots = 1;
      o1.top_k_rows_from = 0;
      Scheduler one(m, o1);
      auto s = sampled(i);
      s->top_logprobs = 0;  // the logits come to the host
      ASSERT_TRUE(one.submit(s));
      EXPECT_EQ(together[size_t(i)], collect(*s)) << path << " stream " << i;
    }
  }
}

TEST(PagedScheduler, ThirtyTwoStreamsOfQ8_0WeightsEqualTheirAloneOutputs) {
  expect_32_streams_equal_alone(std::string(KILN_TEST_DATA) + "/hf/qwen3/gguf/qwen3-q8_0.gguf");
}

// The same with the weights kept packed in tiles (what kiln serve does where
// memory allows): the steps read the kept tiles, the alone runs' decode the
// file's rows, and the outputs still agree.
TEST(PagedScheduler, ThirtyTwoStreamsFromKeptWeightTilesEqualTheirAloneOutputs) {
  const std::string path = std::string(KILN_TEST_DATA) + "/hf/qwen3/gguf/qwen3-q8_0.gguf";
  if (kept_tiles_bytes(DType::Q8_0, 16, 64) == 0)
    GTEST_SKIP() << "this CPU's kernels (" << gemm_kernel_level() << ") keep no tiles";
  expect_32_streams_equal_alone(path, size_t(1) << 30);
}

// A budget too small for a weight leaves it to the per-call tiles.
TEST(CpuWeightTiles, KeptWhileTheBudgetLastsAndEqualEitherWay) {
  if (kept_tiles_bytes(DType::Q8_0, 16, 64) == 0)
    GTEST_SKIP() << "this CPU's kernels (" << gemm_kernel_level() << ") keep no tiles";
  const int64_t N = 40, K = 256, T = 7;  // a partial last tile
  const size_t rb = dtype_row_bytes(DType::Q8_0, K);
  std::vector<uint8_t> bytes(rb * size_t(N));
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t k = 0; k < K; ++k) row[size_t(k)] = float(int((r * K + k) * 7919 % 201) - 100) / 900.0f;
    quantize_row(DType::Q8_0, row.data(), bytes.data() + size_t(r) * rb, K);
  }
  CpuBackend cpu(BackendOptions{});
  TensorView view;
  view.name = "w";
  view.dtype = DType::Q8_0;
  view.shape = {N, K};
  view.data = bytes.data();
  view.nbytes = bytes.size();
  const Weight w = cpu.load_weight(view);
  std::vector<float> x(size_t(T * K));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 104729 % 301) - 150) / 37.0f;
  std::vector<float> plain(size_t(T * N)), kept(size_t(T * N)), small(size_t(T * N));
  cpu.matmul(w, x.data(), T, plain.data());
  const size_t need = kept_tiles_bytes(DType::Q8_0, N, K);
  cpu.keep_weight_tiles(need - 1);
  cpu.matmul(w, x.data(), T, small.data());
  EXPECT_EQ(cpu.kept_tile_bytes(), 0u);
  cpu.keep_weight_tiles(0);  // forgets, so the next budget is tried again
  cpu.keep_weight_tiles(need);
  cpu.matmul(w, x.data(), T, kept.data());
  EXPECT_EQ(cpu.kept_tile_bytes(), need);
  EXPECT_EQ(plain, small);
  EXPECT_EQ(plain, kept);
  cpu.keep_weight_tiles(0);
  EXPECT_EQ(cpu.kept_tile_bytes(), 0u);
}

// Requests that begin like a running one take its blocks for that head.
TEST(PagedScheduler, RunningSequencesSharePromptHeads) {
  auto e = load(kStories);
  Model& m = e->model();
  const int vocab = int(m.spec().vocab_size);
  const auto head = ids_from(9, 70, vocab);
  auto with_tail = [&](int seed) {
    auto p = head;
    const auto tail = ids_from(seed, 6, vocab);
    p.insert(p.end(), tail.begin(), tail.end());
    return p;
  };
  const std::vector<std::vector<int32_t>> prompts = {with_tail(1), with_tail(2), with_tail(3)};
  // The first runs long (to the end of its context), so it is surely still
  // running when the others arrive.
  const int first_tokens = 256 - 76;
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < prompts.size(); ++i) want.push_back(alone(m, prompts[i], i ? 40 : first_tokens));

  SchedulerOptions o;
  o.slots = 4;
  o.context = 256;
  o.kv_block = 16;
  Scheduler sched(m, o);
  auto first = request(prompts[0], first_tokens);
  ASSERT_TRUE(sched.submit(first));
  std::vector<TokenEvent> events;
  while (events.empty()) first->wait(events, 100);  // its prompt is in the cache
  std::vector<std::shared_ptr<Sequence>> rest = {request(prompts[1], 40), request(prompts[2], 40)};
  for (auto& s : rest) ASSERT_TRUE(sched.submit(s));

  std::vector<TokenEvent> more;
  while (!first->wait(more, 100)) {
  }
  std::vector<int32_t> got;
  for (const auto& ev : events) got.push_back(ev.id);
  for (const auto& ev : more) got.push_back(ev.id);
  EXPECT_EQ(got, want[0]);
  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(collect(*rest[i]), want[i + 1]);
    // 70 common tokens: 4 whole blocks of 16 shared from another slot, or
    // all 70 when the slot itself last held a finished one of them.
    EXPECT_GE(rest[i]->cached_tokens(), 64);
  }
  EXPECT_GE(sched.stats().shared_prefix_tokens, 64);
}

// A paced requester (Sequence::wait's pace_us) takes a stream of tokens at
// most once per pace, and gets every token: stories260K makes 200 in a few
// milliseconds, which an unpaced requester takes a token or two at a time.
TEST(SequencePacing, TakesTokensAtMostOncePerPaceAndLosesNone) {
  auto e = load(kStories);
  Model& m = e->model();
  const std::vector<int32_t> want = alone(m, ids_from(3, 8, 512), 200);
  SchedulerOptions o;
  o.slots = 1;
  o.context = 256;
  Scheduler sched(m, o);
  auto s = request(ids_from(3, 8, 512), 200);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(sched.submit(s));
  std::vector<TokenEvent> events;
  int takes = 0;
  for (bool done = false; !done;) {
    const size_t before = events.size();
    done = s->wait(events, 1000, 2000);
    if (events.size() > before) ++takes;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int32_t> got;
  for (const auto& ev : events) got.push_back(ev.id);
  EXPECT_EQ(got, want);
  EXPECT_LE(takes, int(ms / 2.0) + 2) << takes << " takes in " << ms << " ms";
}

}  // namespace
}  // namespace kiln
