// kiln bench: prompt processing and generation speed of a model, in the
// shape of llama-bench's table (and its JSON field names), so the two can
// be read side by side. Decode is reported as achieved weight bandwidth
// too: every generated token reads every weight once.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "common.h"
#include "kiln/core/cpu_features.h"
#include "kiln/core/error.h"
#include "kiln/core/thread_pool.h"
#include "kiln/quant/gemm.h"

namespace kiln::app {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Stats {
  double avg = 0, stddev = 0;
  std::vector<double> samples;
};

Stats stats(const std::vector<double>& v) {
  Stats s;
  s.samples = v;
  for (double x : v) s.avg += x;
  s.avg /= double(v.size());
  for (double x : v) s.stddev += (x - s.avg) * (x - s.avg);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / double(v.size() - 1)) : 0.0;
  return s;
}

// Read bandwidth of host memory with `threads` threads: a buffer well past
// the last-level cache summed twice, the faster pass kept. GB/s.
double host_read_bandwidth(int threads) {
  const size_t n = size_t(1) << 28;  // 1 GiB of floats
  std::unique_ptr<float[]> buf(new float[n]);
  ThreadPool pool(threads);
  pool.parallel_for(int64_t(n), [&](int64_t b, int64_t e, int) {
    std::fill(buf.get() + b, buf.get() + e, 1.0f);
  });
  double best = 0;
  std::vector<float> sink(size_t(pool.size()));
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = Clock::now();
    pool.parallel_for(int64_t(n / 4096), [&](int64_t b, int64_t e, int t) {
      const float* p = buf.get() + b * 4096;
      sink[size_t(t)] += dot_f32_simd(p, p, (e - b) * 4096);
    });
    best = std::max(best, double(n * sizeof(float)) / seconds_since(t0) / 1e9);
  }
  return best;
}

int bench_command(const std::vector<std::string>& args) {
  std::string model;
  int n_prompt = 512, n_gen = 128, reps = 3, n_depth = 0;
  bool json = false;
  RuntimeFlags rt;
  ArgParser p("kiln bench", "MODEL [-p N] [-n N] [-d N] [-r N] [-t THREADS] [--cpu] [--json]",
              "Measure prompt processing (one forward pass over -p tokens) and generation\n"
              "(-n tokens one at a time, logits copied back each step) in tokens per second,\n"
              "averaged over -r repetitions after one warm-up; decode also as the weight\n"
              "bandwidth it achieves. With -d, each test starts after that many tokens\n"
              "already in the context (fed untimed), as llama-bench's -d does: the speed\n"
              "deep into a long conversation. Token ids are fixed pseudo-random ids, no\n"
              "tokenizer is needed.");
  p.positional("MODEL", "model file or folder", &model, true);
  p.option("-p,--n-prompt", "N", "prompt tokens for the prefill test (default 512; 0 skips)",
           &n_prompt);
  p.option("-n,--n-gen", "N", "tokens for the generation test (default 128; 0 skips)", &n_gen);
  p.option("-d,--n-depth", "N", "tokens in the context before each test (default 0)", &n_depth);
  p.option("-r,--repetitions", "N", "repetitions of each test (default 3)", &reps);
  p.flag("--json", "print a JSON array, one object per test (llama-bench's field names)", &json);
  add_runtime_flags(p, &rt);
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(n_prompt >= 0 && n_gen >= 0 && n_depth >= 0, "-p, -n and -d must not be negative");
  KILN_CHECK(reps >= 1, "-r must be at least 1");

  RuntimeFlags sized = rt;
  sized.ctx_size = std::max(rt.ctx_size, n_depth + n_prompt + n_gen + 16);
  auto engine = load_engine(model, sized, /*need_tokenizer=*/false);
  Model& m = engine->model();
  const ModelSpec& spec = engine->spec();
  StateOptions so = state_options(sized);
  so.max_batch = std::max<int64_t>(so.max_batch, n_prompt);
  auto state = m.new_state(so);

  // Fixed ids spread over the vocabulary.
  const auto fixed_id = [&](uint64_t i) {
    return int32_t((i * 2654435761ull + 12345) % uint64_t(spec.vocab_size));
  };
  std::vector<int32_t> ids(size_t(std::max(n_prompt, 1)));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = fixed_id(i);
  // The context a test starts from: n_depth tokens, fed in prompt-sized
  // pieces (the state's batch), untimed.
  std::vector<int32_t> depth_ids(static_cast<size_t>(n_depth));
  for (size_t i = 0; i < depth_ids.size(); ++i) depth_ids[i] = fixed_id(uint64_t(n_prompt) + i);
  const int64_t depth_piece = std::max<int64_t>(so.max_batch, 1);
  auto fill_depth = [&] {
    for (int64_t i = 0; i < n_depth; i += depth_piece)
      m.forward(*state, depth_ids.data() + i, std::min<int64_t>(depth_piece, n_depth - i), nullptr,
                false);
    m.backend().synchronize();
  };
  // The logits land in the backend's host memory (pinned on a GPU), as
  // llama.cpp's output buffer does: the copy from the device goes straight
  // there rather than through a staging area and a second copy.
  HostBuffer logits_mem(m.backend(), size_t(spec.vocab_size) * sizeof(float));
  float* const logits = logits_mem.f32();

  auto run_prompt = [&](int n) {
    state->reset();
    fill_depth();
    const auto t0 = Clock::now();
    m.forward(*state, ids.data(), n, logits, false);
    m.backend().synchronize();
    return seconds_since(t0);
  };
  auto run_gen = [&](int n) {
    state->reset();
    fill_depth();
    int32_t tok = ids[0];
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      m.forward(*state, &tok, 1, logits, false);
      // The next id fixed too, as llama-bench's generation test has it: the
      // time is the model's and the logits' copy, not a sampler's.
      tok = fixed_id(uint64_t(i) + 1);
    }
    m.backend().synchronize();
    return seconds_since(t0);
  };

  // llama-bench's names: "pp512", "tg128", and " @ d4096" at a depth.
  const std::string at_depth = n_depth > 0 ? " @ d" + std::to_string(n_depth) : "";
  struct Result {
    std::string test;
    int n_prompt, n_gen;
    Stats ts;
  };
  std::vector<Result> results;
  if (n_prompt > 0) {
    // Warm-up at full size, as llama-bench does: pages in the weights, spins
    // up threads, and makes the backend's one-time scratch for this size.
    run_prompt(n_prompt);
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) ts.push_back(n_prompt / run_prompt(n_prompt));
    results.push_back({"pp" + std::to_string(n_prompt) + at_depth, n_prompt, 0, stats(ts)});
  }
  if (n_gen > 0) {
    run_gen(std::min(n_gen, 4));
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) ts.push_back(n_gen / run_gen(n_gen));
    results.push_back({"tg" + std::to_string(n_gen) + at_depth, 0, n_gen, stats(ts)});
  }

  const std::string backend = m.backend().name();
  const bool on_cpu = backend.rfind("CPU", 0) == 0;
  const int threads = rt.threads > 0 ? rt.threads : physical_core_count();
  const double weight_bytes = double(m.weight_bytes());
  double params = 0;
  for (const auto& [name, view] : engine->file().tensors()) params += double(view.numel());
  const double bandwidth = on_cpu && n_gen > 0 ? host_read_bandwidth(threads) : 0.0;
  std::string name = std::filesystem::path(model).filename().string();

  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Result& r : results) {
      nlohmann::json o;
      o["model_filename"] = model;
      o["model_type"] = spec.arch;
      o["model_size"] = uint64_t(engine->file().file_bytes());
      o["model_n_params"] = uint64_t(params);
      o["backends"] = backend;
      o["cpu_kernels"] = on_cpu ? gemm_kernel_level() : "";
      o["n_threads"] = threads;
      o["n_prompt"] = r.n_prompt;
      o["n_gen"] = r.n_gen;
      o["n_depth"] = n_depth;
      o["test"] = r.test;
      o["avg_ts"] = r.ts.avg;
      o["stddev_ts"] = r.ts.stddev;
      o["samples_ts"] = r.ts.samples;
      if (r.n_gen > 0) {
        o["weight_bytes"] = uint64_t(weight_bytes);
        o["avg_gbps"] = weight_bytes * r.ts.avg / 1e9;
        if (bandwidth > 0) o["device_gbps"] = bandwidth;
      }
      out.push_back(o);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }

  std::printf("| %-28s | %10s | %9s | %-22s | %7s | %14s | %22s |\n", "model", "size", "params",
              "backend", "threads", "test", "t/s");
  std::printf("| %s | %s: | %s: | %s | %s: | %s: | %s: |\n", std::string(28, '-').c_str(),
              std::string(9, '-').c_str(), std::string(8, '-').c_str(),
              std::string(22, '-').c_str(), std::string(6, '-').c_str(),
              std::string(13, '-').c_str(), std::string(21, '-').c_str());
  const std::string params_s = human_count(params);
  for (const Result& r : results) {
    char ts[64];
    std::snprintf(ts, sizeof ts, "%.2f ± %.2f", r.ts.avg, r.ts.stddev);
    std::printf("| %-28s | %10s | %9s | %-22s | %7d | %14s | %22s |\n", name.c_str(),
                human_bytes(double(engine->file().file_bytes())).c_str(), params_s.c_str(),
                backend.c_str(), threads, r.test.c_str(), ts);
  }
  for (const Result& r : results) {
    if (r.n_gen == 0) continue;
    const double gbps = weight_bytes * r.ts.avg / 1e9;
    std::printf("\n%s: %s of weights read per token, %.1f GB/s achieved", r.test.c_str(),
                human_bytes(weight_bytes).c_str(), gbps);
    if (bandwidth > 0 && gbps > bandwidth)  // a small model's weights stay in the caches
      std::printf(", above the %.1f GB/s measured from memory: the weights fit in the CPU caches",
                  bandwidth);
    else if (bandwidth > 0)
      std::printf(" of %.1f GB/s measured read bandwidth (%.0f%%)", bandwidth,
                  100.0 * gbps / bandwidth);
    std::printf("\n");
  }
  if (on_cpu) std::printf("CPU kernels: %s\n", gemm_kernel_level());
  return 0;
}

}  // namespace

KILN_COMMAND("bench", "measure prompt processing and generation speed (tok/s)", bench_command);

}  // namespace kiln::app
