// The golden fixtures through Engine on the GPU: transformers' logits for one
// prefill, and the greedy continuation decoded token by token (the decode
// steps go through recorded CUDA graphs after the first two).
//
// Tolerances as tests/runtime/golden_logits_test.cpp: f32/bf16 weights, max
// |logit - ref| / max |ref| <= 1e-4 (the GPU sums in another order than the
// CPU, ~1e-6 relative) with exact BF16 products; as loaded, a dense model's
// BF16 prefill rounds the products' activations to bf16 on the tensor
// cores (Backend::set_exact_bf16_products): 2e-2 (measured 4e-3 to
// 1.4e-2), and the greedy continuation still equal; q8_0, the share of
// positions with cosine >= 0.99 is at least 90% (60% for the hybrids, where
// llama.cpp itself reaches only ~65%) and at least llama.cpp's on the same
// file. The hybrids (and the
// hybrid shapes of tests/data/hf_shapes) against their exact (float64)
// logits, for the reason given there (heads whose output nearly cancels).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/io/safetensors.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/generate.h"
#include "support/reference.h"
#include "support/sampled_generation.h"

namespace kiln {
namespace {

using test::max_relative_error;
using test::read_f32;
using test::read_i32;

// Positions with cosine >= 0.99, the q8_0 measure.
int positions_with_cosine(const std::vector<float>& a, const std::vector<float>& b, int64_t T,
                          int64_t V) {
  return test::positions_with_cosine(a, b, T, V, 0.99);
}

const std::string kData = KILN_TEST_DATA;

// The hybrids from the exact (float64) logits, where their fixtures have
// them (tests/runtime/golden_logits_test.cpp explains why): the issue's
// 1e-4, not the CPU's 5e-5, since the GPU sums the DeltaNet input
// projections in f32 (measured on an H100: 1.0-7.8e-5).
constexpr double kGpuFromExact = 1e-4;

struct Case {
  std::string arch, source;
  bool exact;
  DType kv = DType::F32;
  double min_share = 0.9;
  double max_rel = 1e-4;
  std::string ref_arch = "";  // the folder whose ref.safetensors applies, if not arch's
};

class CudaGolden : public testing::TestWithParam<Case> {};

TEST_P(CudaGolden, MatchesReference) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  const std::string dir = kData + "/hf/" + c.arch;
  const std::string model_path = c.source.empty() ? dir : dir + "/gguf/" + c.source;
  const std::string ref_dir = c.ref_arch.empty() ? dir : kData + "/hf/" + c.ref_arch;
  auto ref = SafetensorsModel::open(ref_dir + "/ref.safetensors");
  const auto ids = read_i32(*ref, "input_ids");
  const auto want = read_f32(*ref, "logits");
  const auto greedy = read_i32(*ref, "greedy_ids");

  LoadOptions lo;
  lo.need_tokenizer = false;
  lo.device = 0;  // the GPU or an error, never a silent CPU fallback
  auto engine = Engine::load(model_path, lo);
  // Every architecture runs on the GPU when one is present, none falls back.
  EXPECT_EQ(engine->backend().name().rfind("CUDA", 0), 0u) << engine->backend().name();
  ASSERT_EQ(engine->backend().name().rfind("CUDA", 0), 0u) << engine->backend().name();
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  ASSERT_EQ(int64_t(want.size()), T * V);

  StateOptions so;
  so.context = T + 16;
  so.kv_dtype = c.kv;
  auto state = engine->model().new_state(so);
  std::vector<float> got(size_t(T * V));
  if (c.exact) {
    // As loaded, BF16 weights' prefill products round their activations to
    // bf16 (Backend::set_exact_bf16_products), the dense fixtures' logits
    // 4e-3 to 1.4e-2 from the reference on an H100; the hybrids keep them
    // exact. Then exact, to the tolerances below.
    engine->model().forward(*state, ids.data(), T, got.data(), true);
    const double err = max_relative_error(got, want);
    EXPECT_LE(err, 2e-2);
    std::printf("[ %s ] as loaded: max relative logit error %.3g\n", model_path.c_str(), err);
    engine->backend().set_exact_bf16_products(true);
    state = engine->model().new_state(so);
  }
  engine->model().forward(*state, ids.data(), T, got.data(), true);

  if (c.exact && c.kv == DType::F32 && std::filesystem::exists(ref_dir + "/ref_exact.safetensors")) {
    std::printf("[ %s ] %s\n", model_path.c_str(),
                test::expect_near_exact_logits(got, want, ref_dir, kGpuFromExact).c_str());
  } else if (c.exact) {
    const double err = max_relative_error(got, want);
    const double tol = c.kv == DType::F16 ? 2e-3 : c.max_rel;
    EXPECT_LE(err, tol);
    std::printf("[ %s ] max relative logit error %.3g\n", model_path.c_str(), err);
  } else {
    const int ours = positions_with_cosine(got, want, T, V);
    auto peer = SafetensorsModel::open(model_path.substr(0, model_path.size() - 5) +
                                       ".llamacpp.safetensors");
    const int theirs = positions_with_cosine(read_f32(*peer, "logits"), want, T, V);
    EXPECT_GE(ours, theirs) << "positions with cosine >= 0.99: kiln " << ours << ", llama.cpp "
                            << theirs << " of " << T;
    EXPECT_GE(ours, int(c.min_share * double(T))) << "kiln " << ours << " of " << T;
    std::printf("[ %s ] positions with cosine >= 0.99: %d of %lld (llama.cpp %d)\n",
                model_path.c_str(), ours, (long long)T, theirs);
  }

  // Greedy continuation, twice: the second run replays recorded graphs from
  // its first step and must agree with the first. With the products as
  // loaded, as kiln run has them.
  // (The hybrids ask for exact products when loaded, and keep them.)
  if (!engine->spec().is_hybrid()) engine->backend().set_exact_bf16_products(false);
  for (int run = 0; run < 2; ++run) {
    auto st2 = engine->model().new_state(so);
    GenerateRequest req;
    req.prompt = ids;
    req.max_tokens = int(greedy.size());
    req.sampling.temperature = 0;
    auto result = generate(engine->model(), *st2, req, nullptr);
    if (c.exact && c.kv == DType::F32) {
      EXPECT_EQ(result.tokens, greedy) << "run " << run;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Hf, CudaGolden,
    testing::Values(Case{"llama", "", true}, Case{"llama", "llama-f32.gguf", true},
                    Case{"llama", "llama-bf16.gguf", true}, Case{"llama", "llama-q8_0.gguf", false},
                    Case{"qwen3", "", true}, Case{"qwen3", "qwen3-f32.gguf", true},
                    Case{"qwen3", "qwen3-bf16.gguf", true}, Case{"qwen3", "qwen3-q8_0.gguf", false},
                    Case{"qwen3_moe", "", true}, Case{"qwen3_moe", "qwen3_moe-f32.gguf", true},
                    Case{"qwen3_moe", "qwen3_moe-q8_0.gguf", false},
                    Case{"smollm3", "", true}, Case{"smollm3", "smollm3-f32.gguf", true},
                    Case{"smollm3", "smollm3-q8_0.gguf", false},
                    Case{"qwen3", "", true, DType::F16},
                    Case{"qwen3_5_text", "", true},
                    Case{"qwen3_5_text", "qwen3_5_text-f32.gguf", true},
                    Case{"qwen3_5_text", "qwen3_5_text-bf16.gguf", true},
                    Case{"qwen3_5_text", "qwen3_5_text-q8_0.gguf", false, DType::F32, 0.6},
                    Case{"qwen3_next", "", true},
                    Case{"qwen3_next", "qwen3_next-f32.gguf", true},
                    Case{"qwen3_next", "qwen3_next-q8_0.gguf", false, DType::F32, 0.6},
                    // BitNet, packed and as bf16 master weights made ternary
                    // at load: the CPU's 1e-3 (tests/runtime/golden_logits_test.cpp
                    // says why); the GPU's ternary products equal the CPU's.
                    Case{"bitnet", "", true, DType::F32, 0.9, 1e-3},
                    Case{"bitnet_bf16", "", true, DType::F32, 0.9, 1e-3, "bitnet"}),
    [](const testing::TestParamInfo<Case>& info) {
      std::string s = info.param.arch + "_" +
                      (info.param.source.empty() ? "safetensors" : info.param.source) +
                      (info.param.kv == DType::F16 ? "_kv16" : "");
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// generate() on the GPU, where a greedy step brings back only its pick:
// the tokens of the plain loop that brings every step's logits to the
// host, seed for seed, sampled too (tests/runtime/generate_test.cpp on the
// CPU). The decode steps are recorded and replayed as graphs.
class CudaGenerate : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    LoadOptions lo;
    lo.need_tokenizer = false;
    lo.device = 0;
    engine_ = Engine::load(kData + "/hf/" + GetParam(), lo);
    ASSERT_EQ(engine_->backend().name().rfind("CUDA", 0), 0u) << engine_->backend().name();
  }
  std::unique_ptr<Engine> engine_;
};

TEST_P(CudaGenerate, DrawsEqualDrawsFromTheLogits) {
  test::expect_generate_equals_sampling_logits(engine_->model(), GetParam());
}

// Steps launched ahead, each fed the pick of the step still running on the
// device (greedy: its argmax; sampled: drawn there), against each step
// waited for (the sampled picks then drawn on the host from the step's
// candidates; the hybrid keeps waiting: its recurrent state cannot undo a
// step).
TEST_P(CudaGenerate, DecodingAheadEqualsWaitingForEachStep) {
  ASSERT_TRUE(engine_->backend().decodes_ahead());
  SamplingParams greedy, sampled;
  greedy.temperature = 0.0f;
  sampled.seed = 7;  // temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
  test::expect_decoding_ahead_equals_waiting(engine_->model(), GetParam() + ", greedy", greedy);
  test::expect_decoding_ahead_equals_waiting(engine_->model(), GetParam() + ", sampled", sampled);
}

INSTANTIATE_TEST_SUITE_P(Hf, CudaGenerate,
                         testing::Values("qwen3", "qwen3_moe", "qwen3_5_text", "bitnet"));

// The hybrid shapes of tests/data/hf_shapes (see
// tests/convert/hybrid_shapes_test.cpp) on the GPU: one prefill against the
// exact logits, decoding token by token against the prefill, greedy ids.
class CudaHybridShapes : public testing::TestWithParam<std::string> {};

TEST_P(CudaHybridShapes, MatchTransformers) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string dir = kData + "/hf_shapes/" + GetParam();
  auto ref = SafetensorsModel::open(dir + "/ref.safetensors");
  const auto ids = read_i32(*ref, "input_ids");
  const auto want = read_f32(*ref, "logits");
  LoadOptions lo;
  lo.need_tokenizer = false;
  lo.device = 0;
  auto engine = Engine::load(dir, lo);
  ASSERT_EQ(engine->backend().name().rfind("CUDA", 0), 0u) << engine->backend().name();
  Model& model = engine->model();
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  StateOptions so;
  so.context = T + 16;
  std::vector<float> prefill(size_t(T * V)), decode(size_t(T * V));
  auto a = model.new_state(so);
  model.forward(*a, ids.data(), T, prefill.data(), true);
  std::printf("[ %s ] %s\n", GetParam().c_str(),
              test::expect_near_exact_logits(prefill, want, dir, kGpuFromExact).c_str());
  auto b = model.new_state(so);
  for (int64_t t = 0; t < T; ++t) model.forward(*b, &ids[t], 1, &decode[t * V], false);
  EXPECT_LE(max_relative_error(decode, prefill), 1e-4);
  std::printf("[ %s ] decode vs prefill %.3g\n", GetParam().c_str(),
              max_relative_error(decode, prefill));
  auto c = model.new_state(so);
  GenerateRequest req;
  req.prompt = ids;
  const auto greedy = read_i32(*ref, "greedy_ids");
  req.max_tokens = int(greedy.size());
  req.sampling.temperature = 0;
  EXPECT_EQ(generate(model, *c, req, nullptr).tokens, greedy);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaHybridShapes,
                         testing::Values("qwen3_5_kv3", "qwen3_5_kv1", "qwen3_next_kv4",
                                         "qwen3_5_moe"));

}  // namespace
}  // namespace kiln
