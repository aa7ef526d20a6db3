// Continuous batching on the GPU: a serving step of several sequences, one
// token each, runs every weight product once for all of them and their
// attention as one launch per layer over each sequence's own cache. Each
// sequence must get the logits it gets when decoded alone, or, asking only
// for its greedy pick (the argmax on the device), the argmax of those.
//
// The model is random (kiln synth) with the decode kernels' head size (64,
// 4 heads over 2 KV heads), f32 weights so that the products' paths (up to
// 8 tokens the matrix-vector kernels, beyond that cuBLAS) differ only in
// summation order: 1e-5 of the largest logit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/convert/convert.h"
#include "kiln/core/argmax.h"
#include "kiln/runtime/engine.h"
#include "support/reference.h"

namespace kiln {
namespace {

const char* kConfig = R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
  "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 1024,
  "tie_word_embeddings": true})";

// BitNet in TQ2_0, rows of whole 256-value blocks as a real model's (the
// bitnet fixture's 64- and 160-wide rows load as I2_S).
const char* kBitnetConfig = R"({"architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
  "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
  "hidden_act": "relu2", "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
  "max_position_embeddings": 1024, "tie_word_embeddings": true})";

std::string synth(const char* name, const char* config, FileType type) {
  const std::string dir = testing::TempDir() + "/kiln_cuda_batch_" + name;
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config;
  SynthOptions o;
  o.type = type;
  o.seed = 3;
  o.stddev = 0.08f;  // sharper attention than 0.02 gives, so positions matter
  synth_model(dir + "/config.json", dir + "/m.gguf", o);
  return dir + "/m.gguf";
}

std::string synth_once() {
  static const std::string path = synth("qwen3", kConfig, FileType::F32);
  return path;
}

// n_seqs sequences with prompts of different lengths, decoded four steps in
// batched steps and one at a time; logits within tol of the largest.
// invariant: as the serving scheduler runs it (Backend::set_batch_invariant).
void check_decode_steps(const std::string& model_path, int n_seqs, DType kv, double tol,
                        bool invariant = false) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  lo.device = 0;
  auto engine = Engine::load(model_path, lo);
  ASSERT_EQ(engine->backend().name().rfind("CUDA", 0), 0u) << engine->backend().name();
  engine->backend().set_batch_invariant(invariant);
  Model& model = engine->model();
  const int64_t V = model.spec().vocab_size;
  StateOptions so;
  so.context = 96;
  so.kv_dtype = kv;
  // The same prompts, of different lengths, in two sets of states: one
  // decoded in batched steps, one sequence at a time.
  std::vector<std::unique_ptr<SequenceState>> batched, alone;
  std::vector<int32_t> next(static_cast<size_t>(n_seqs));
  std::vector<float> logits(static_cast<size_t>(V));
  for (int i = 0; i < n_seqs; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 1 + (i * 7) % 23; ++t) prompt.push_back(int32_t((i * 131 + t * 17 + 1) % V));
    batched.push_back(model.new_state(so));
    alone.push_back(model.new_state(so));
    model.forward(*batched.back(), prompt.data(), int64_t(prompt.size()), logits.data(), false);
    model.forward(*alone.back(), prompt.data(), int64_t(prompt.size()), nullptr, false);
    next[size_t(i)] = int32_t(i * 29 % V);
  }
  double worst = 0;
  for (int step = 0; step < 4; ++step) {
    std::vector<std::vector<float>> got(static_cast<size_t>(n_seqs),
                                        std::vector<float>(static_cast<size_t>(V)));
    // Odd sequences bring back only their greedy pick, as a serving step
    // does for greedy requests.
    std::vector<int32_t> picks(static_cast<size_t>(n_seqs), -1);
    std::vector<BatchItem> items;
    for (int i = 0; i < n_seqs; ++i) {
      BatchItem it{batched[size_t(i)].get(), &next[size_t(i)], 1, got[size_t(i)].data()};
      if (i % 2) it.logits = nullptr, it.argmax = &picks[size_t(i)];
      items.push_back(it);
    }
    model.forward_batch(items);
    for (int i = 0; i < n_seqs; ++i) {
      model.forward(*alone[size_t(i)], &next[size_t(i)], 1, logits.data(), false);
      if (i % 2) {
        EXPECT_EQ(picks[size_t(i)], argmax(logits.data(), V)) << "sequence " << i << " step " << step;
        EXPECT_EQ(batched[size_t(i)]->position(), alone[size_t(i)]->position());
        next[size_t(i)] = int32_t((next[size_t(i)] * 7 + step + 1) % V);
        continue;
      }
      const double err = test::max_relative_error(got[size_t(i)], logits);
      worst = std::max(worst, err);
      EXPECT_LE(err, tol) << "sequence " << i << " step " << step;
      EXPECT_EQ(batched[size_t(i)]->position(), alone[size_t(i)]->position());
      next[size_t(i)] = int32_t((next[size_t(i)] * 7 + step + 1) % V);
    }
  }
  std::printf("[ measured ] %s, %d sequences, %s cache: worst relative logit error %.3g\n",
              model_path.c_str(), n_seqs, std::string(dtype_name(kv)).c_str(), worst);
}

class CudaBatch : public testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(CudaBatch, DecodeStepEqualsOneAtATime) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [n_seqs, kv] = GetParam();
  check_decode_steps(synth_once(), n_seqs, kv, 1e-5);
}

// The hybrids and BitNet batch their steps too: the products for all
// sequences at once; a hybrid's convolution window and delta rule state per
// sequence; attention batched. Without batch invariance the hybrid
// fixtures' bf16 weights take the matrix-vector kernels alone and cuBLAS
// batched, and these random hybrids amplify rounding (see the CPU goldens):
// 1e-4, as their goldens.
TEST(CudaBatchOtherArchitectures, DecodeStepEqualsOneAtATime) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* m : {"qwen3_5_text", "qwen3_next"})
    check_decode_steps(std::string(KILN_TEST_DATA) + "/hf/" + m, 6, DType::F32, 1e-4);
  check_decode_steps(synth("bitnet", kBitnetConfig, FileType::TQ2_0), 6, DType::F32, 1e-4);
}

// As the server runs it: every sequence's logits equal, bit for bit, its
// logits alone, with up to 32 sequences in one product and beyond (40: the
// products in chunks), and the attention splits of a sequence alone.
TEST(CudaBatchInvariant, DecodeStepEqualsOneAtATimeExactly) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (int n : {12, 32, 40}) check_decode_steps(synth_once(), n, DType::F32, 0.0, true);
  check_decode_steps(synth_once(), 32, DType::F16, 0.0, true);
  for (const char* m : {"qwen3_5_text", "qwen3_next"})
    check_decode_steps(std::string(KILN_TEST_DATA) + "/hf/" + m, 12, DType::F32, 0.0, true);
}

// Q4_K_M: a sequence decoded alone takes q/k (Q4_K) and v (Q6_K, in the
// first layer) in one launch, and in a batch in two; the same bits either way.
TEST(CudaBatchInvariant, MixedFormatsDecodeStepEqualsOneAtATimeExactly) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  check_decode_steps(synth("qwen3_q4_k_m", kConfig, FileType::Q4_K_M), 12, DType::F32, 0.0, true);
}

// BitNet's ternary products for all sequences at once, each token's int8
// activations its own.
TEST(CudaBatchInvariant, BitnetDecodeStepEqualsOneAtATimeExactly) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  check_decode_steps(synth("bitnet", kBitnetConfig, FileType::TQ2_0), 12, DType::F32, 0.0, true);
}

INSTANTIATE_TEST_SUITE_P(Steps, CudaBatch,
                         testing::Values(std::make_tuple(5, DType::F32),
                                         std::make_tuple(12, DType::F32),
                                         std::make_tuple(8, DType::F16)),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "_seqs_" +
                                  std::string(dtype_name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace kiln
