// Micro-benchmark of the CPU ternary (BitNet b1.58) kernel through
// Backend::ternary_matmul: an I2_S matrix shaped like BitNet 2B-4T's FFN
// (6912 x 2560 for gate/up, 2560 x 6912 for down), 1 and 16 tokens, one
// thread and all threads. Reports GB/s of weight bytes (the packed 2-bit
// data plus its scale) read per call, activation quantization included.
//
//   build/bench/kiln_bench_kernels --benchmark_filter=Ternary
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/backend/cpu/ternary_kernels.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

void run_ternary(benchmark::State& state, int64_t rows, int64_t cols, int threads) {
  const int64_t tokens = state.range(0);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> trit(-1, 1);
  std::vector<float> wf(size_t(rows * cols));
  for (auto& v : wf) v = float(trit(rng));
  std::vector<uint8_t> data(i2s_tensor_bytes(rows * cols));
  quantize_i2s(wf.data(), rows * cols, data.data());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(tokens * cols)), y(size_t(tokens * rows));
  for (auto& v : x) v = nd(rng);

  auto backend = make_cpu_backend(BackendOptions{threads});
  TensorView v;
  v.name = "ffn";
  v.dtype = DType::I2_S;
  v.shape = {rows, cols};
  v.data = data.data();
  v.nbytes = data.size();
  const Weight w = backend->load_weight(v);
  for (auto _ : state) {
    backend->ternary_matmul(w, x.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double calls = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(calls * double(data.size()),
                                              benchmark::Counter::kIsRate,
                                              benchmark::Counter::kIs1000);
  state.counters["tok/s"] = benchmark::Counter(calls * double(tokens), benchmark::Counter::kIsRate);
  state.SetLabel(ternary::kernels().level);
}

void BM_TernaryI2S_Up_1T(benchmark::State& s) { run_ternary(s, 6912, 2560, 1); }
void BM_TernaryI2S_Down_1T(benchmark::State& s) { run_ternary(s, 2560, 6912, 1); }
void BM_TernaryI2S_Up_AllT(benchmark::State& s) { run_ternary(s, 6912, 2560, 0); }
void BM_TernaryI2S_Down_AllT(benchmark::State& s) { run_ternary(s, 2560, 6912, 0); }

BENCHMARK(BM_TernaryI2S_Up_1T)->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TernaryI2S_Down_1T)->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TernaryI2S_Up_AllT)->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TernaryI2S_Down_AllT)->Arg(1)->Arg(16)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace kiln
