// config.json in both forms found in the wild, and the RoPE frequencies the
// scaling types give.
#include <gtest/gtest.h>

#include <cmath>

#include "kiln/core/error.h"
#include "kiln/io/json_file.h"
#include "kiln/model/building_blocks.h"
#include "kiln/model/model_file.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

TEST(HfConfig, OlderFormWithTopLevelRopeTheta) {
  // SmolLM3-3B's config: transformers 4 keys, no_rope_layers, torch_dtype.
  ModelSpec s = spec_from_hf_config(read_json_file(kData + "/reference/smollm3-3b.config.json"));
  EXPECT_EQ(s.arch, "smollm3");
  EXPECT_EQ(s.hidden, 2048);
  EXPECT_EQ(s.n_layers, 36);
  EXPECT_EQ(s.n_heads, 16);
  EXPECT_EQ(s.n_kv_heads, 4);
  EXPECT_EQ(s.head_dim, 128);
  EXPECT_EQ(s.ffn_hidden, 11008);
  EXPECT_FLOAT_EQ(s.rope_theta, 5000000.0f);
  EXPECT_EQ(s.rope_scaling.kind, RopeScaling::Kind::None);
  ASSERT_EQ(s.layer_uses_rope.size(), 36u);
  for (int i = 0; i < 36; ++i) EXPECT_EQ(s.layer_uses_rope[i], (i + 1) % 4 != 0) << i;
  EXPECT_EQ(s.eos_ids, std::vector<int64_t>{128012});
  s.validate();
}

TEST(HfConfig, Transformers5FormWithRopeParameters) {
  ModelSpec s = spec_from_hf_config(read_json_file(kData + "/hf/qwen3/config.json"));
  EXPECT_EQ(s.arch, "qwen3");
  EXPECT_EQ(s.head_dim, 32);  // independent of hidden / heads = 16
  EXPECT_FLOAT_EQ(s.rope_theta, 1000000.0f);
  EXPECT_TRUE(s.qk_norm);
  EXPECT_TRUE(s.tied_embeddings);
}

TEST(HfConfig, NestedTextConfigIsUsed) {
  // Multimodal checkpoints keep the language model's settings in text_config.
  nlohmann::json text = read_json_file(kData + "/hf/qwen3/config.json");
  nlohmann::json outer = {{"architectures", text["architectures"]}, {"text_config", text}};
  outer["text_config"]["hidden_size"] = 96;
  outer["text_config"]["head_dim"] = 24;
  ModelSpec s = spec_from_hf_config(outer);
  EXPECT_EQ(s.arch, "qwen3");
  EXPECT_EQ(s.hidden, 96);
  EXPECT_EQ(s.head_dim, 24);
}

TEST(HfConfig, Llama3RopeScalingInBothForms) {
  nlohmann::json old_form = {{"architectures", {"LlamaForCausalLM"}},
                             {"model_type", "llama"},
                             {"vocab_size", 128256},
                             {"hidden_size", 4096},
                             {"num_hidden_layers", 32},
                             {"num_attention_heads", 32},
                             {"num_key_value_heads", 8},
                             {"intermediate_size", 14336},
                             {"rope_theta", 500000.0},
                             {"rope_scaling",
                              {{"rope_type", "llama3"},
                               {"factor", 8.0},
                               {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0},
                               {"original_max_position_embeddings", 8192}}}};
  nlohmann::json new_form = old_form;
  new_form.erase("rope_theta");
  new_form.erase("rope_scaling");
  new_form["rope_parameters"] = old_form["rope_scaling"];
  new_form["rope_parameters"]["rope_theta"] = 500000.0;
  for (const auto& cfg : {old_form, new_form}) {
    ModelSpec s = spec_from_hf_config(cfg);
    ASSERT_EQ(s.rope_scaling.kind, RopeScaling::Kind::Llama3);
    EXPECT_FLOAT_EQ(s.rope_scaling.factor, 8.0f);
    EXPECT_EQ(s.rope_scaling.original_context, 8192);
    const auto inv = rope_inverse_frequencies(s, nullptr);
    ASSERT_EQ(inv.size(), 64u);
    // High frequencies (wavelength < 8192/4) are untouched...
    EXPECT_FLOAT_EQ(inv[0], 1.0f);
    EXPECT_NEAR(inv[10], 1.0 / std::pow(500000.0, 20.0 / 128), 1e-7);  // f32 rounding
    // ...low ones (wavelength > 8192) are divided by the factor...
    const double base63 = 1.0 / std::pow(500000.0, 126.0 / 128);
    EXPECT_NEAR(inv[63], base63 / 8, base63 * 1e-6);
    // ...and the band between is blended: strictly between the two.
    for (int i = 0; i < 64; ++i) {
      const double base = 1.0 / std::pow(500000.0, 2.0 * i / 128);
      EXPECT_LE(inv[i], base * (1 + 1e-6));
      EXPECT_GE(inv[i], base / 8 * (1 - 1e-6));
    }
  }
}

TEST(HfConfig, MissingAndWrongKeysAreClearErrors) {
  nlohmann::json c = read_json_file(kData + "/hf/llama/config.json");
  c.erase("hidden_size");
  try {
    spec_from_hf_config(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
  }
  c = read_json_file(kData + "/hf/llama/config.json");
  c["rope_parameters"]["rope_type"] = "yarn-but-not-really";
  EXPECT_THROW(spec_from_hf_config(c), Error);
}

TEST(HfNames, MapToLlamaCppNames) {
  EXPECT_EQ(canonical_name_from_hf("model.layers.3.self_attn.q_proj.weight"), "blk.3.attn_q.weight");
  EXPECT_EQ(canonical_name_from_hf("model.layers.0.mlp.experts.7.down_proj.weight"),
            "blk.0.ffn_down_exps.7.weight");
  EXPECT_EQ(canonical_name_from_hf("model.language_model.layers.1.input_layernorm.weight"),
            "blk.1.attn_norm.weight");
  EXPECT_EQ(canonical_name_from_hf("lm_head.weight"), "output.weight");
  EXPECT_EQ(canonical_name_from_hf("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(canonical_name_from_hf("model.rotary_emb.inv_freq"), "");
}

TEST(GgufSpec, StoriesMetadata) {
  auto f = ModelFile::open(kData + "/../../models/stories260K.gguf");
  const ModelSpec& s = f->spec();
  EXPECT_EQ(s.arch, "llama");
  EXPECT_EQ(s.rope_style, RopeStyle::Interleaved);  // llama.cpp permuted q/k
  EXPECT_EQ(s.n_layers, 5);
  EXPECT_EQ(s.hidden, 64);
  EXPECT_EQ(s.vocab_size, 512);
  EXPECT_EQ(s.bos_id, 1);
}

}  // namespace
}  // namespace kiln
