// Hybrid models (Gated DeltaNet + gated attention) of shapes the main
// fixtures do not have, against transformers (tests/data/hf_shapes,
// make_shape_fixtures.py): V heads 3x, 1x and 4x the K heads, K and V heads
// of different widths (and widths that are no multiple of 16), GQA 3:1 and
// 4:1, attention at irregular layers, a 3-tap convolution, a dense layer
// among MoE ones, top-1 experts without renormalisation, the Qwen3.5 MoE
// class, and prompts of 100, 128 (exactly two chunks), 150 and 200 tokens.
//
// Each from its safetensors folder and from the f32 GGUF kiln convert makes
// of it (llama.cpp's layout: V heads regrouped, A_log stored as -exp): as the
// main hybrids in golden_logits_test.cpp, within 5e-5 of the exact (float64)
// logits and within 1e-4 plus the float32 reference's own error of that
// reference; greedy ids as transformers' generate(). Decoding token by token
// (the recurrent form) gives the one-prefill logits within 1e-4.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "helpers.h"
#include "kiln/convert/convert.h"
#include "kiln/runtime/generate.h"

namespace kiln {
namespace {

using namespace kiln::test;

class HybridShapes : public testing::TestWithParam<std::string> {};

void check_logits_and_greedy(const std::string& model_path, const std::string& fixture) {
  auto ref = SafetensorsModel::open(fixture + "/ref.safetensors");
  const std::vector<int32_t> ids = read_i32(*ref, "input_ids");
  const std::vector<float> want = read_f32(*ref, "logits");
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(model_path, lo);
  Model& model = engine->model();
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  ASSERT_EQ(int64_t(want.size()), T * V);
  StateOptions so;
  so.context = T + 16;

  std::vector<float> prefill(size_t(T * V));
  auto a = model.new_state(so);
  model.forward(*a, ids.data(), T, prefill.data(), true);
  std::printf("[ measured ] %s: %s\n", model_path.c_str(),
              expect_near_exact_logits(prefill, want, fixture).c_str());

  std::vector<float> decode(size_t(T * V));
  auto b = model.new_state(so);
  for (int64_t t = 0; t < T; ++t) model.forward(*b, &ids[t], 1, &decode[t * V], false);
  const double drift = max_relative_error(decode, prefill);
  EXPECT_LE(drift, 1e-4) << "decode vs prefill";
  std::printf("[ measured ] decode vs prefill %.3g\n", drift);

  const std::vector<int32_t> greedy = read_i32(*ref, "greedy_ids");
  auto c = model.new_state(so);
  GenerateRequest req;
  req.prompt = ids;
  req.max_tokens = int(greedy.size());
  req.sampling.temperature = 0;
  EXPECT_EQ(generate(model, *c, req, nullptr).tokens, greedy);
}

TEST_P(HybridShapes, SafetensorsMatchTransformers) {
  const std::string dir = kData + "/hf_shapes/" + GetParam();
  check_logits_and_greedy(dir, dir);
}

// What a GGUF cannot say: llama.cpp's keys give the attention layers as
// "every k-th" (qwen3_5_kv3 has them at layers 1 and 5) and qwen3next's
// feed-forward as MoE in every layer (qwen3_next_kv4's layer 0 is dense).
// Those conversions must stop with a message naming the reason.
const char* gguf_cannot_hold(const std::string& shape) {
  if (shape == "qwen3_5_kv3") return "not periodic";
  if (shape == "qwen3_next_kv4") return "dense layers among the MoE ones";
  return nullptr;
}

TEST_P(HybridShapes, ConvertedF32GgufMatchesTransformers) {
  const std::string dir = kData + "/hf_shapes/" + GetParam();
  TempDir tmp;
  const std::string out = tmp.file(GetParam() + "-f32.gguf");
  ConvertOptions o;
  o.type = parse_file_type("f32");
  o.allow_no_tokenizer = true;  // these fixtures are ids only
  if (const char* reason = gguf_cannot_hold(GetParam())) {
    try {
      convert_model(dir, out, o);
      ADD_FAILURE() << "converted a model a GGUF cannot describe";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(out)) << "a refused conversion left a file";
    return;
  }
  convert_model(dir, out, o);
  check_logits_and_greedy(out, dir);
}

// Quantized to q8_0 (rows that are not whole 32-value blocks stay F16):
// these random hybrids swing with rounding as the main ones do, so judged as
// convert_logits_test.cpp judges those, by the share of positions with
// cosine >= 0.99 (at least 60%) and the mean cosine (at least 0.9).
TEST_P(HybridShapes, ConvertedQ8_0KeepsTheLogits) {
  const std::string dir = kData + "/hf_shapes/" + GetParam();
  if (gguf_cannot_hold(GetParam())) GTEST_SKIP() << "no GGUF for this shape";
  TempDir tmp;
  const std::string out = tmp.file(GetParam() + "-q8_0.gguf");
  ConvertOptions o;
  o.type = parse_file_type("q8_0");
  o.allow_no_tokenizer = true;
  convert_model(dir, out, o);
  auto ref = SafetensorsModel::open(dir + "/ref.safetensors");
  const std::vector<int32_t> ids = read_i32(*ref, "input_ids");
  const std::vector<float> want = read_f32(*ref, "logits");
  int64_t V = 0;
  const std::vector<float> got = prefill_logits(out, ids, &V);
  const int64_t T = int64_t(ids.size());
  ASSERT_EQ(got.size(), want.size());
  const int good = positions_with_cosine(got, want, T, V, 0.99);
  const double mean = mean_cosine(got, want, T, V);
  EXPECT_GE(good, int(0.6 * double(T))) << good << " of " << T << ", mean " << mean;
  EXPECT_GE(mean, 0.9);
  std::printf("[ measured ] %s q8_0: cosine >= 0.99 at %d of %lld positions, mean %.4f\n",
              GetParam().c_str(), good, (long long)T, mean);
}

INSTANTIATE_TEST_SUITE_P(Shapes, HybridShapes,
                         testing::Values("qwen3_5_kv3", "qwen3_5_kv1", "qwen3_next_kv4",
                                         "qwen3_5_moe"));

}  // namespace
}  // namespace kiln
