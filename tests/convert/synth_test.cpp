// kiln synth: random weights in a config's shapes load and run.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "helpers.h"
#include "kiln/convert/convert.h"
#include "kiln/convert/parts.h"
#include "kiln/io/gguf.h"
#include "kiln/io/json_file.h"
#include "kiln/model/model_file.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

using namespace kiln::test;

// Hidden 256 so that rows are whole K-quant blocks and q4_k_m really uses Q4_K/Q6_K.
const char* kTinyQwen3 = R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
  "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 1024,
  "tie_word_embeddings": true})";

class Synth : public testing::TestWithParam<std::string> {};

TEST_P(Synth, LoadsAndGivesFiniteLogits) {
  TempDir tmp;
  const std::string config = tmp.file("config.json");
  std::ofstream(config) << kTinyQwen3;
  SynthOptions o;
  o.type = parse_file_type(GetParam());
  o.seed = 7;
  synth_model(config, tmp.file("m.gguf"), o);

  auto file = ModelFile::open(tmp.file("m.gguf"));
  const ModelSpec want = spec_from_hf_config(read_json_file(config));
  EXPECT_EQ(file->spec().hidden, want.hidden);
  EXPECT_EQ(file->spec().n_layers, want.n_layers);
  EXPECT_EQ(file->spec().head_dim, 64);
  EXPECT_TRUE(file->spec().tied_embeddings);
  for (const auto& ts : convert::model_tensor_shapes(want))
    EXPECT_EQ(file->get(ts.name).shape, ts.shape) << ts.name;
  if (GetParam() == "q4_k_m") {
    EXPECT_EQ(file->get("blk.1.attn_q.weight").dtype, DType::Q4_K);
    EXPECT_EQ(file->get("token_embd.weight").dtype, DType::Q6_K);
  }

  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 37 + 5) % 512);
  const std::vector<float> logits = prefill_logits(tmp.file("m.gguf"), ids);
  ASSERT_EQ(logits.size(), ids.size() * 512);
  double spread = 0;
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    spread = std::max(spread, std::abs(double(x)));
  }
  EXPECT_GT(spread, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Types, Synth, testing::Values("f32", "bf16", "q8_0", "q4_0", "q4_k_m", "q6_k"));

TEST(SynthDeterminism, SameSeedSameBytesAnyThreads) {
  TempDir tmp;
  const std::string config = tmp.file("config.json");
  std::ofstream(config) << kTinyQwen3;
  SynthOptions o;
  o.type = FileType::Q8_0;
  o.seed = 3;
  o.threads = 1;
  synth_model(config, tmp.file("a.gguf"), o);
  o.threads = 2;
  synth_model(config, tmp.file("b.gguf"), o);
  o.seed = 4;
  synth_model(config, tmp.file("c.gguf"), o);
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(read(tmp.file("a.gguf")), read(tmp.file("b.gguf")));
  EXPECT_NE(read(tmp.file("a.gguf")), read(tmp.file("c.gguf")));
}

// The weights have the requested spread and the norms are 1.
TEST(SynthDeterminism, WeightStatistics) {
  TempDir tmp;
  const std::string config = tmp.file("config.json");
  std::ofstream(config) << kTinyQwen3;
  SynthOptions o;
  o.type = FileType::F32;
  synth_model(config, tmp.file("m.gguf"), o);
  auto g = GgufFile::open(tmp.file("m.gguf"));
  const TensorView* w = g->find_tensor("blk.0.ffn_up.weight");
  const float* p = static_cast<const float*>(w->data);
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < w->numel(); ++i) sum += p[i], sq += double(p[i]) * p[i];
  const double mean = sum / double(w->numel());
  const double sd = std::sqrt(sq / double(w->numel()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(sd, 0.02, 1e-3);
  const float* norm = static_cast<const float*>(g->find_tensor("blk.0.attn_norm.weight")->data);
  EXPECT_EQ(norm[0], 1.0f);
}

// --tokenizer: the file carries the folder's tokenizer, which encodes text
// as the Hugging Face one does; one with more tokens than the config's
// vocabulary is refused (the embedding would have no row for them).
TEST(SynthTokenizer, CarriesTheFoldersTokenizer) {
  const std::string dir = kData + "/hf/qwen3";
  TempDir tmp;
  SynthOptions o;
  o.type = FileType::Q8_0;
  o.tokenizer_dir = dir;
  synth_model(dir + "/config.json", tmp.file("m.gguf"), o);
  auto g = GgufFile::open(tmp.file("m.gguf"));
  const auto from_file = Tokenizer::from_gguf(*g);
  const auto from_hf = Tokenizer::from_hf(dir + "/tokenizer.json");
  for (const char* text : {"Once upon a time", "Hello, world! 123", "<|im_start|>user\nHi<|im_end|>"})
    EXPECT_EQ(from_file->encode(text), from_hf->encode(text)) << text;

  const std::string small = tmp.file("small.json");
  nlohmann::json config = read_json_file(dir + "/config.json");
  config["vocab_size"] = 64;
  std::ofstream(small) << config.dump();
  EXPECT_THROW(synth_model(small, tmp.file("s.gguf"), o), Error);
  o.tokenizer_dir = tmp.path().string();  // no tokenizer.json there
  EXPECT_THROW(synth_model(dir + "/config.json", tmp.file("t.gguf"), o), Error);
}

// Every config in bench/configs describes a model kiln can synthesize.
TEST(SynthDeterminism, BenchConfigsParse) {
  for (const char* name : {"qwen3-0.6b.json", "qwen3-4b.json"}) {
    const std::string path = std::string(KILN_TEST_DATA) + "/../../bench/configs/" + name;
    const ModelSpec s = spec_from_hf_config(read_json_file(path));
    EXPECT_NO_THROW(s.validate()) << name;
    EXPECT_FALSE(convert::model_tensor_shapes(s).empty());
  }
}

}  // namespace
}  // namespace kiln
