// Micro-benchmarks of the CPU matrix kernels (kiln/quant/gemm.h), one
// thread. Decode shapes report the weight bandwidth the kernel sustains
// (GB/s, bytes of weights per second: the decode roofline's unit); prefill
// shapes report GFLOP/s (2 * rows * cols * tokens per call).
//
//   build-perf/bench/kiln_bench_kernels --benchmark_filter=Matvec
#include <array>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

#include "kiln/core/dtype.h"
#include "kiln/quant/gemm.h"
#include "kiln/quant/quantize.h"

namespace kiln {
namespace {

struct Aligned {
  explicit Aligned(size_t n) : p(static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64))) {}
  ~Aligned() { std::free(p); }
  uint8_t* p;
};

// A weight matrix {rows, cols} of type t with random values.
std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols) {
  const size_t rb = dtype_row_bytes(t, cols);
  std::vector<uint8_t> w(rb * size_t(rows));
  std::mt19937 rng(42);
  if (!can_quantize(t)) {  // IQ4: any bytes time the same
    for (auto& b : w) b = uint8_t(rng());
    return w;
  }
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng);
    quantize_row(t, row.data(), w.data() + size_t(r) * rb, cols);
  }
  return w;
}

std::vector<float> make_acts(int64_t n) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  return x;
}

// The counters every product reports: weight bytes read per second, and
// GFLOP/s (2 * rows * cols * tokens per call).
void set_rates(benchmark::State& state, size_t weight_bytes, int64_t rows, int64_t cols,
               int64_t tokens) {
  const double calls = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(calls * double(weight_bytes),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["GFLOP/s"] =
      benchmark::Counter(calls * 2.0 * double(rows * cols * tokens) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(gemm_kernel_level());
}

// One matmul of {rows, cols} weights by `tokens` activations.
void run_gemm(benchmark::State& state, DType t, int64_t rows, int64_t cols, int64_t tokens) {
  if (gemm_path(t, cols) == GemmPath::kNone) {
    state.SkipWithError("no kernel for this type on this CPU");
    return;
  }
  const std::vector<uint8_t> w = make_weights(t, rows, cols);
  const std::vector<float> x = make_acts(tokens * cols);
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  Aligned qmem(quantized_rows_bytes(tokens, cols)), scratch(gemm_scratch_bytes(cols));
  const QuantizedRows q = quantized_rows_view(qmem.p, tokens, cols);
  const size_t rb = dtype_row_bytes(t, cols);
  for (auto _ : state) {
    if (gemm_path(t, cols) == GemmPath::kInt8) {
      quantize_rows_q8(x.data(), 0, tokens, q);
      gemm_int8(t, w.data(), rb, 0, rows, q, y.data(), rows, scratch.p);
    } else {
      gemm_float(t, w.data(), rb, 0, rows, x.data(), tokens, cols, y.data(), rows, scratch.p);
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, w.size(), rows, cols, tokens);
}

// gemm_float_sum_f64 (the DeltaNet input projections: products summed in
// double), to compare with the f32 sums of run_gemm.
void run_gemm_sum_f64(benchmark::State& state, DType t, int64_t rows, int64_t cols, int64_t tokens) {
  const std::vector<uint8_t> w = make_weights(t, rows, cols);
  const std::vector<float> x = make_acts(tokens * cols);
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  const size_t rb = dtype_row_bytes(t, cols);
  for (auto _ : state) {
    gemm_float_sum_f64(t, w.data(), rb, 0, rows, x.data(), tokens, cols, y.data(), rows);
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, w.size(), rows, cols, tokens);
}

// The same product from tiles packed once (kept_tiles_bytes): what a serving
// step costs when the weights are kept in tiles.
// invariant: as serving steps call them (QuantizedRows::batch_invariant),
// each token summed in the order it has alone.
void run_gemm_kept(benchmark::State& state, DType t, int64_t rows, int64_t cols, int64_t tokens,
                   bool invariant = false) {
  const size_t bytes = kept_tiles_bytes(t, rows, cols);
  if (gemm_path(t, cols) != GemmPath::kInt8 || bytes == 0) {
    state.SkipWithError("no kept tiles for this type on this CPU");
    return;
  }
  const std::vector<uint8_t> w = make_weights(t, rows, cols);
  const std::vector<float> x = make_acts(tokens * cols);
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  Aligned qmem(quantized_rows_bytes(tokens, cols)), scratch(gemm_scratch_bytes(cols)), tiles(bytes);
  QuantizedRows q = quantized_rows_view(qmem.p, tokens, cols);
  q.batch_invariant = invariant;
  const size_t rb = dtype_row_bytes(t, cols);
  pack_kept_tiles(t, w.data(), rb, rows, cols, 0, (rows + kept_tile_rows() - 1) / kept_tile_rows(),
                  tiles.p, scratch.p);
  for (auto _ : state) {
    quantize_rows_q8(x.data(), 0, tokens, q);
    if (!gemm_int8_kept(t, tiles.p, 0, rows, q, y.data(), rows)) {
      state.SkipWithError("these tokens take another kernel");
      return;
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, bytes, rows, cols, tokens);
}

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::IQ4_NL, DType::Q4_K,
                        DType::Q5_K, DType::Q6_K, DType::IQ4_XS, DType::BF16, DType::F16,
                        DType::F32};

// Decode: a {256, 1024} slice (in L2 on any CPU: the kernel's arithmetic
// alone), Qwen3-0.6B's FFN up projection {3072, 1024} (in L2 or L3) and a {16384, 4096} matrix streamed from memory.
void register_all() {
  for (DType t : kTypes) {
    const std::string n(dtype_name(t));
    benchmark::RegisterBenchmark(("Matvec/" + n + "/256x1024").c_str(),
                                 [t](benchmark::State& s) { run_gemm(s, t, 256, 1024, 1); });
    benchmark::RegisterBenchmark(("Matvec/" + n + "/3072x1024").c_str(),
                                 [t](benchmark::State& s) { run_gemm(s, t, 3072, 1024, 1); });
    benchmark::RegisterBenchmark(("Matvec/" + n + "/16384x4096").c_str(),
                                 [t](benchmark::State& s) { run_gemm(s, t, 16384, 4096, 1); });
    benchmark::RegisterBenchmark(("Gemm/" + n + "/3072x1024x128").c_str(),
                                 [t](benchmark::State& s) { run_gemm(s, t, 3072, 1024, 128); })
        ->Unit(benchmark::kMillisecond);
    // A serving step's 32 sequences, one token each: the tiles are unpacked
    // for a quarter of the tokens a prompt gives them.
    benchmark::RegisterBenchmark(("Gemm/" + n + "/3072x1024x32").c_str(),
                                 [t](benchmark::State& s) { run_gemm(s, t, 3072, 1024, 32); })
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("GemmKept/" + n + "/3072x1024x32").c_str(),
                                 [t](benchmark::State& s) { run_gemm_kept(s, t, 3072, 1024, 32); })
        ->Unit(benchmark::kMillisecond);
    if (t == DType::BF16 || t == DType::F16 || t == DType::F32) {
      benchmark::RegisterBenchmark(("MatvecSumF64/" + n + "/3072x1024").c_str(),
                                   [t](benchmark::State& s) { run_gemm_sum_f64(s, t, 3072, 1024, 1); });
      benchmark::RegisterBenchmark(("GemmSumF64/" + n + "/3072x1024x128").c_str(),
                                   [t](benchmark::State& s) { run_gemm_sum_f64(s, t, 3072, 1024, 128); })
          ->Unit(benchmark::kMillisecond);
    }
  }
  // A serving step's products as they run there: 32 tokens through Q8_0
  // tiles streamed from memory (Qwen3-0.6B's down projection {1024, 3072},
  // in L3 like the shape above, and its tied output head {151936, 1024},
  // 165 MB of tiles read once an iteration).
  // GemmKeptInvariant: the same, summed as serving steps sum them.
  // (Shapes as plain pairs, not structured bindings: clang before 16 cannot
  // capture those in a lambda.)
  for (const std::pair<int64_t, int64_t>& shape : {std::pair<int64_t, int64_t>{1024, 3072}, {151936, 1024}})
    for (const bool invariant : {false, true}) {
      const int64_t rows = shape.first, cols = shape.second;
      benchmark::RegisterBenchmark(
          (std::string(invariant ? "GemmKeptInvariant" : "GemmKept") + "/q8_0/" +
           std::to_string(rows) + "x" + std::to_string(cols) + "x32")
              .c_str(),
          [rows, cols, invariant](benchmark::State& s) {
            run_gemm_kept(s, DType::Q8_0, rows, cols, 32, invariant);
          })
          ->Unit(benchmark::kMillisecond);
    }
  benchmark::RegisterBenchmark("QuantizeActs/128x1024", [](benchmark::State& s) {
    const std::vector<float> x = make_acts(128 * 1024);
    Aligned qmem(quantized_rows_bytes(128, 1024));
    const QuantizedRows q = quantized_rows_view(qmem.p, 128, 1024);
    for (auto _ : s) {
      quantize_rows_q8(x.data(), 0, 128, q);
      benchmark::DoNotOptimize(q.q);
    }
    s.counters["GB/s"] = benchmark::Counter(double(s.iterations()) * 128 * 1024 * 4,
                                            benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  });
  // The tiny models' float products ({rows, cols} by 1, 16 and 32 tokens;
  // 16 is a part of a served 32-sequence step on two threads):
  // gemm_float's lanes over the columns against the transposed tiles.
  for (const std::pair<int64_t, int64_t>& rc : {std::pair<int64_t, int64_t>{64, 64}, {172, 64}, {64, 172}}) {
    const int64_t rows = rc.first, cols = rc.second;
    for (int64_t tokens : {int64_t(1), int64_t(16), int64_t(32)}) {
      const std::string shape =
          std::to_string(rows) + "x" + std::to_string(cols) + "x" + std::to_string(tokens);
      benchmark::RegisterBenchmark(("GemmSmall/F32/" + shape).c_str(),
                                   [=](benchmark::State& s) { run_gemm(s, DType::F32, rows, cols, tokens); });
      benchmark::RegisterBenchmark(("GemmFloatCols/F32/" + shape).c_str(), [=](benchmark::State& s) {
        const std::vector<uint8_t> w = make_weights(DType::F32, rows, cols);
        const std::vector<float> x = make_acts(tokens * cols);
        std::vector<float> y(static_cast<size_t>(tokens * rows));
        Aligned tiles(float_cols_bytes(rows, cols));
        auto* t = reinterpret_cast<float*>(tiles.p);
        pack_float_cols(DType::F32, w.data(), dtype_row_bytes(DType::F32, cols), rows, cols, t);
        for (auto _ : s) {
          gemm_float_cols(t, 0, rows, cols, x.data(), tokens, y.data(), rows);
          benchmark::DoNotOptimize(y.data());
        }
        set_rates(s, w.size(), rows, cols, tokens);
      });
    }
  }
  // One step of decode attention (32 keys) for every head of a token, as
  // the CPU backend calls it: the tiny models' short heads, then Qwen3's.
  for (const std::array<int64_t, 3>& shape : {std::array<int64_t, 3>{8, 8, 32}, {8, 8, 80}, {8, 8, 83}, {8, 16, 32}, {16, 128, 32}}) {
    const int64_t heads = shape[0], hd = shape[1], keys = shape[2];
    const std::string name =
        "AttentionRows/" + std::to_string(heads) + "x" + std::to_string(hd) + "/" + std::to_string(keys) + "keys";
    benchmark::RegisterBenchmark(name.c_str(), [heads, hd, keys](benchmark::State& s) {
      const std::vector<float> q = make_acts(heads * hd), k = make_acts(keys * hd),
                               v = make_acts(keys * hd);
      std::vector<float> out(static_cast<size_t>(heads * hd)), mx(static_cast<size_t>(heads)),
          sum(static_cast<size_t>(heads));
      std::vector<float> scratch(static_cast<size_t>(attention_rows_scratch_floats(heads, keys, hd)));
      std::vector<AttentionRows> rows;
      for (int64_t h = 0; h < heads; ++h)
        rows.push_back(AttentionRows{q.data() + h * hd, k.data(), v.data(), keys,
                                     out.data() + h * hd, &mx[size_t(h)], &sum[size_t(h)]});
      for (auto _ : s) {
        // A step after the first (the output rescaled), as most of a decode's are.
        for (int64_t h = 0; h < heads; ++h) mx[size_t(h)] = -1.0f, sum[size_t(h)] = 1.0f;
        attention_rows_f32_simd(rows.data(), heads, hd, 0.3f, scratch.data());
        benchmark::DoNotOptimize(out.data());
      }
    });
  }
  // The same step as served, each iteration another sequence's (and layer's)
  // cache, so that the rows come from memory or L3, not L1: Qwen3-0.6B's 16
  // query heads on 8 KV heads of 128 dims over 64 caches (16 MB of keys and
  // values) taken in turn, and the tiny models' 8 heads of 8 dims on 4 KV
  // heads over 160 (32 sequences x 5 layers, 5 MB) in no order a
  // prefetcher could follow (every 37th), against the warm steps above.
  struct Cold {
    const char* name;
    int64_t heads, kv, hd, keys, caches, stride;
  };
  for (const Cold& cold : {Cold{"AttentionRows/16x128/32keys/cold", 16, 8, 128, 32, 64, 1},
                           Cold{"AttentionRows/8x8/128keys/cold", 8, 4, 8, 128, 160, 37}}) {
    benchmark::RegisterBenchmark(cold.name, [cold](benchmark::State& s) {
      const int64_t heads = cold.heads, kv = cold.kv, hd = cold.hd, keys = cold.keys;
      const std::vector<float> q = make_acts(heads * hd),
                               k = make_acts(cold.caches * kv * keys * hd),
                               v = make_acts(cold.caches * kv * keys * hd);
      std::vector<float> out(static_cast<size_t>(heads * hd)), mx(static_cast<size_t>(heads)),
          sum(static_cast<size_t>(heads));
      std::vector<float> scratch(
          static_cast<size_t>(attention_rows_scratch_floats(heads, keys, hd)));
      int64_t c = 0;
      for (auto _ : s) {
        std::vector<AttentionRows> rows;
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t at = ((c * kv) + h / (heads / kv)) * keys * hd;
          rows.push_back(AttentionRows{q.data() + h * hd, k.data() + at, v.data() + at, keys,
                                       out.data() + h * hd, &mx[size_t(h)], &sum[size_t(h)]});
          mx[size_t(h)] = -1.0f, sum[size_t(h)] = 1.0f;
        }
        attention_rows_f32_simd(rows.data(), heads, hd, 0.3f, scratch.data());
        benchmark::DoNotOptimize(out.data());
        c = (c + cold.stride) % cold.caches;
      }
    });
  }
  benchmark::RegisterBenchmark("DotF32/4096", [](benchmark::State& s) {
    const std::vector<float> a = make_acts(4096), b = make_acts(4096);
    for (auto _ : s) benchmark::DoNotOptimize(dot_f32_simd(a.data(), b.data(), 4096));
    s.counters["GFLOP/s"] =
        benchmark::Counter(double(s.iterations()) * 2 * 4096 / 1e9, benchmark::Counter::kIsRate);
  });
}

const int registered = (register_all(), 0);

}  // namespace
}  // namespace kiln
