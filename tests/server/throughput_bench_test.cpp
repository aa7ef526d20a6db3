// Aggregate decode throughput of the scheduler: N concurrent sequences vs
// one. A measurement, not a check, so it is disabled by default; run it with
//   KILN_SERVE_BENCH_MODEL=model.gguf test_server
//     --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
// (KILN_SERVE_BENCH_TOKENS, default 32: tokens per sequence; KILN_SERVE_BENCH_THREADS:
// CPU threads, default the physical cores; KILN_SERVE_BENCH_KV=f16: an f16 KV
// cache, as --cache-type f16; KILN_SERVE_BENCH_TEMP=T: streams sampled at
// temperature T (the default top-k, top-p and min-p) instead of greedy, each
// with its own seed; KILN_SERVE_BENCH_TOP_FROM=N: sampled streams' steps
// bring back top-k candidates from N of them (SchedulerOptions::
// top_k_rows_from; 0 never); KILN_SERVE_BENCH_TILES=0: weights not
// kept in tiles, see SchedulerOptions::weight_tiles_bytes; KILN_SERVE_BENCH_CHECK=0:
// the streams are not compared with their runs alone). It drives the
// Scheduler directly with token-id prompts, so a model without a tokenizer
// (kiln synth) works; the HTTP layer adds nothing per token worth measuring.
// It also checks that each of the 32 streams got the tokens its prompt gets
// alone.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kiln/convert/convert.h"
#include "kiln/runtime/engine.h"
#include "kiln/server/scheduler.h"

namespace kiln {
namespace {

using Outputs = std::vector<std::vector<int32_t>>;

// Stream i's prompt: the same token ids whichever run it is in.
std::vector<int32_t> prompt_of(int i, int prompt) {
  std::vector<int32_t> p;
  for (int t = 0; t < prompt; ++t) p.push_back(int32_t((i * 131 + t * 17 + 1) % 500 + 1));
  return p;
}

// first: the index of the first stream (its prompt); outputs, when given,
// receives each stream's token ids.
double run(Model& model, int streams, int tokens, int64_t context, int prompt = 16,
           int first = 0, Outputs* outputs = nullptr) {
  SchedulerOptions o;
  o.slots = streams;
  o.context = context;
  // As kiln serve does where the memory allows (KILN_SERVE_BENCH_TILES=0: off).
  const char* tiles = std::getenv("KILN_SERVE_BENCH_TILES");
  o.weight_tiles_bytes = tiles && std::atoi(tiles) == 0 ? 0 : SIZE_MAX;
  if (const char* from = std::getenv("KILN_SERVE_BENCH_TOP_FROM")) o.top_k_rows_from = std::atoi(from);
  Scheduler sched(model, o);
  std::vector<std::shared_ptr<Sequence>> seqs;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < streams; ++i) {
    auto s = std::make_shared<Sequence>();
    s->prompt = prompt_of(first + i, prompt);
    s->max_tokens = tokens;
    // Greedy, or sampled at KILN_SERVE_BENCH_TEMP with a seed of the
    // stream's own (the same draws in either run).
    const char* temp = std::getenv("KILN_SERVE_BENCH_TEMP");
    s->sampling.temperature = temp ? float(std::atof(temp)) : 0.0f;
    s->sampling.seed = uint64_t(first + i);
    sched.submit(s);
    seqs.push_back(s);
  }
  // Decode alone: from when every stream has its first token (the prompts
  // are in) to the end, counting the tokens (events) that came after.
  std::vector<std::vector<TokenEvent>> events(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i)
    while (events[i].empty() && !seqs[i]->wait(events[i], 1)) {
    }
  const auto t_first = std::chrono::steady_clock::now();
  int64_t at_first = 0;
  for (const auto& ev : events) at_first += int64_t(ev.size());
  int64_t total = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    while (!seqs[i]->wait(events[i], 1000)) {
    }
    total += int64_t(events[i].size());
  }
  const auto t_end = std::chrono::steady_clock::now();
  if (outputs)
    for (const auto& ev : events) {
      outputs->emplace_back();
      for (const auto& e : ev) outputs->back().push_back(e.id);
    }
  const double wall = std::chrono::duration<double>(t_end - t0).count();
  const double decode_wall = std::chrono::duration<double>(t_end - t_first).count();
  const SchedulerStats st = sched.stats();
  const double steps = double(std::max<int64_t>(st.steps, 1));
  std::printf("%3d streams: %lld tokens in %.2f s = %.1f tok/s aggregate (%.1f per stream); "
              "%lld steps, %.1f ms each + %.2f ms sampling, %lld preempted; "
              "after every first token %.1f tok/s; %.0f tok/s of the scheduler's busy time\n",
              streams, (long long)total, wall, double(total) / wall,
              double(total) / wall / streams, (long long)st.steps,
              1e3 * st.busy_seconds / steps, 1e3 * st.sample_seconds / steps,
              (long long)st.preemptions,
              // One stream's first wait may return after most of its tokens.
              streams > 1 && decode_wall > 0 ? double(total - at_first) / decode_wall : 0.0,
              // A tiny model's whole run can be shorter than the waits' wake-ups:
              // the time spent in steps is its steadier rate.
              st.busy_seconds > 0 ? double(total) / st.busy_seconds : 0.0);
  return double(total) / wall;
}

// KILN_SERVE_BENCH_SYNTH=CONFIG:TYPE makes the model first (kiln synth's
// random weights of CONFIG's shapes), where no kiln command is at hand.
std::string synth_from_env() {
  const std::string spec = std::getenv("KILN_SERVE_BENCH_SYNTH");
  const size_t colon = spec.rfind(':');
  SynthOptions o;
  o.type = parse_file_type(spec.substr(colon + 1));
  const std::string out = testing::TempDir() + "/kiln_serve_bench.gguf";
  synth_model(spec.substr(0, colon), out, o);
  return out;
}

TEST(DISABLED_Throughput, ConcurrentVsSingle) {
  const char* path = std::getenv("KILN_SERVE_BENCH_MODEL");
  const std::string model = std::getenv("KILN_SERVE_BENCH_SYNTH") ? synth_from_env()
                            : path ? path
                                   : std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
  const char* n = std::getenv("KILN_SERVE_BENCH_TOKENS");
  const int tokens = n ? std::atoi(n) : 32;
  LoadOptions lo;
  lo.need_tokenizer = false;
  if (const char* t = std::getenv("KILN_SERVE_BENCH_THREADS")) lo.threads = std::atoi(t);
  if (const char* kv = std::getenv("KILN_SERVE_BENCH_KV"); kv && std::string(kv) == "f16")
    lo.kv_dtype = DType::F16;
  auto engine = Engine::load(model, lo);
  std::printf("%s on %s\n", model.c_str(), engine->backend().name().c_str());
  run(engine->model(), 1, 4, 256);  // warm-up
  // Three pairs of runs, one stream then 32, and the median of the pairs'
  // ratios: a tiny model's run is a few milliseconds and this VM's speed
  // drifts by the minute (one stream of the 0.6B 17-24 ms a token), so each
  // ratio compares two runs made side by side. together: the first 32-stream
  // run's tokens.
  Outputs together;
  double ones[3], manys[3], ratios[3];
  for (int i = 0; i < 3; ++i) {
    ones[i] = run(engine->model(), 1, tokens, 256);
    manys[i] = run(engine->model(), 32, tokens, 256, 16, 0, i == 0 ? &together : nullptr);
    ratios[i] = manys[i] / ones[i];
  }
  // The same 32 rows per step as one 32-token prompt (the step above without
  // per-sequence attention, and with one row through the head).
  run(engine->model(), 1, 1, 256, 32);
  std::printf("32 streams / 1 stream, pair by pair: %.1fx, %.1fx, %.1fx\n", ratios[0], ratios[1],
              ratios[2]);
  std::sort(ratios, ratios + 3);
  std::sort(ones, ones + 3);
  std::sort(manys, manys + 3);
  std::printf("32 streams / 1 stream: %.1fx (median pair; medians %.1f and %.1f tok/s)\n",
              ratios[1], manys[1], ones[1]);
  // KILN_SERVE_BENCH_CHECK=0: no runs alone afterwards (a profile of the
  // process is then mostly the 32-stream steps).
  if (const char* check = std::getenv("KILN_SERVE_BENCH_CHECK"); check && std::atoi(check) == 0)
    return;
  // Serving must not change what a greedy request gets: each stream's
  // tokens equal its prompt's run alone (decode through the single-token
  // kernels, not the batched tiles).
  int differ = 0;
  for (int i = 0; i < 32; ++i) {
    Outputs alone;
    run(engine->model(), 1, tokens, 256, 16, i, &alone);
    size_t at = 0;
    while (at < alone[0].size() && at < together[size_t(i)].size() &&
           alone[0][at] == together[size_t(i)][at])
      ++at;
    if (alone[0] != together[size_t(i)]) {
      ++differ;
      std::printf("stream %d differs from its run alone at token %zu\n", i, at);
    }
  }
  EXPECT_EQ(differ, 0);
}

}  // namespace
}  // namespace kiln
