// Aggregate decode throughput of the scheduler: N concurrent sequences vs
// one. A measurement, not a check, so it is disabled by default; run it with
//   KILN_SERVE_BENCH_MODEL=model.gguf test_server \
//     --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
// (KILN_SERVE_BENCH_TOKENS, default 32: tokens per sequence). It drives the
// Scheduler directly with token-id prompts, so a model without a tokenizer
// (kiln synth) works; the HTTP layer adds nothing per token worth measuring.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "kiln/runtime/engine.h"
#include "kiln/server/scheduler.h"

namespace kiln {
namespace {

double run(Model& model, int streams, int tokens, int64_t context, int prompt = 16) {
  SchedulerOptions o;
  o.slots = streams;
  o.context = context;
  Scheduler sched(model, o);
  std::vector<std::shared_ptr<Sequence>> seqs;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < streams; ++i) {
    auto s = std::make_shared<Sequence>();
    for (int t = 0; t < prompt; ++t) s->prompt.push_back(int32_t((i * 131 + t * 17 + 1) % 500 + 1));
    s->max_tokens = tokens;
    s->sampling.temperature = 0;
    sched.submit(s);
    seqs.push_back(s);
  }
  int64_t total = 0;
  for (auto& s : seqs) {
    std::vector<TokenEvent> ev;
    while (!s->wait(ev, 1000)) {
    }
    total += s->generated();
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const SchedulerStats st = sched.stats();
  const double steps = double(std::max<int64_t>(st.steps, 1));
  std::printf("%3d streams: %lld tokens in %.2f s = %.1f tok/s aggregate (%.1f per stream); "
              "%lld steps, %.1f ms each + %.2f ms sampling, %lld preempted\n",
              streams, (long long)total, wall, double(total) / wall,
              double(total) / wall / streams, (long long)st.steps,
              1e3 * st.busy_seconds / steps, 1e3 * st.sample_seconds / steps,
              (long long)st.preemptions);
  return double(total) / wall;
}

TEST(DISABLED_Throughput, ConcurrentVsSingle) {
  const char* path = std::getenv("KILN_SERVE_BENCH_MODEL");
  const std::string model =
      path ? path : std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
  const char* n = std::getenv("KILN_SERVE_BENCH_TOKENS");
  const int tokens = n ? std::atoi(n) : 32;
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(model, lo);
  std::printf("%s on %s\n", model.c_str(), engine->backend().name().c_str());
  run(engine->model(), 1, 4, 256);  // warm-up
  const double one = run(engine->model(), 1, tokens, 256);
  const double many = run(engine->model(), 32, tokens, 256);
  // The same 32 rows per step as one 32-token prompt (the step above without
  // per-sequence attention, and with one row through the head).
  run(engine->model(), 1, 1, 256, 32);
  std::printf("32 streams / 1 stream: %.1fx\n", many / one);
}

}  // namespace
}  // namespace kiln
