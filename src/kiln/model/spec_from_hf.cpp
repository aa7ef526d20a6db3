// Hugging Face config.json -> ModelSpec, in both of the forms found in the
// wild: transformers 5 ("rope_parameters") and earlier ("rope_theta" and
// "rope_scaling" at the top level).
#include <algorithm>

#include "kiln/core/error.h"
#include "kiln/model/architectures.h"
#include "kiln/model/model_file.h"

namespace kiln {
namespace {

using nlohmann::json;

int64_t get_int(const json& c, const char* key, int64_t fallback) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  KILN_CHECK(it->is_number(), "config.json: '", key, "' should be a number, got ", it->dump());
  return it->get<int64_t>();
}

double get_float(const json& c, const char* key, double fallback) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  KILN_CHECK(it->is_number(), "config.json: '", key, "' should be a number, got ", it->dump());
  return it->get<double>();
}

int64_t require_int(const json& c, const char* key) {
  auto it = c.find(key);
  KILN_CHECK(it != c.end() && it->is_number_integer(), "config.json: missing integer '", key, "'");
  return it->get<int64_t>();
}

// Reads the rope parameters from either form; per-layer-type dictionaries
// (transformers 5 for mixed-attention models) give the full-attention entry.
void read_rope(const json& c, ModelSpec& s) {
  json rope = json::object();
  if (auto it = c.find("rope_parameters"); it != c.end() && it->is_object()) {
    rope = *it;
    if (rope.contains("full_attention") && rope["full_attention"].is_object())
      rope = rope["full_attention"];
  } else {
    if (auto sc = c.find("rope_scaling"); sc != c.end() && sc->is_object()) rope = *sc;
    if (c.contains("rope_theta")) rope["rope_theta"] = c["rope_theta"];
  }
  s.rope_theta = float(get_float(rope, "rope_theta", get_float(c, "rope_theta", 10000.0)));
  if (rope.contains("mrope_section") && rope["mrope_section"].is_array()) {
    s.mrope_sections = rope["mrope_section"].get<std::vector<int64_t>>();
    s.mrope_interleaved = rope.value("mrope_interleaved", false);
  }
  std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (type == "default" || type == "mrope" || type.empty()) return;
  if (type == "linear") {
    s.rope_scaling.kind = RopeScaling::Kind::Linear;
    s.rope_scaling.factor = float(get_float(rope, "factor", 1.0));
  } else if (type == "llama3") {
    s.rope_scaling.kind = RopeScaling::Kind::Llama3;
    s.rope_scaling.factor = float(get_float(rope, "factor", 8.0));
    s.rope_scaling.low_freq_factor = float(get_float(rope, "low_freq_factor", 1.0));
    s.rope_scaling.high_freq_factor = float(get_float(rope, "high_freq_factor", 4.0));
    s.rope_scaling.original_context = get_int(rope, "original_max_position_embeddings", 8192);
  } else {
    fail("config.json: unsupported rope type '", type, "'");
  }
}

// Layer types and Gated DeltaNet shapes of Qwen3.5 / Qwen3-Next.
void read_hybrid(const json& c, ModelSpec& s) {
  s.layer_is_linear.assign(size_t(s.n_layers), false);
  if (auto it = c.find("layer_types"); it != c.end() && it->is_array()) {
    KILN_CHECK(int64_t(it->size()) == s.n_layers, "config.json: layer_types has ", it->size(),
               " entries for ", s.n_layers, " layers");
    for (int64_t i = 0; i < s.n_layers; ++i) {
      const std::string type = (*it)[i].is_string() ? (*it)[i].get<std::string>() : "";
      KILN_CHECK(type == "linear_attention" || type == "full_attention",
                 "config.json: unknown layer type '", type, "' for layer ", i);
      s.layer_is_linear[i] = type == "linear_attention";
    }
  } else {
    const int64_t interval = get_int(c, "full_attention_interval", 4);
    KILN_CHECK(interval > 0, "config.json: full_attention_interval must be positive");
    for (int64_t i = 0; i < s.n_layers; ++i) s.layer_is_linear[i] = (i + 1) % interval != 0;
  }
  s.linear_k_heads = require_int(c, "linear_num_key_heads");
  s.linear_v_heads = require_int(c, "linear_num_value_heads");
  s.linear_k_dim = require_int(c, "linear_key_head_dim");
  s.linear_v_dim = require_int(c, "linear_value_head_dim");
  s.linear_conv_kernel = get_int(c, "linear_conv_kernel_dim", 4);
  s.linear_tiled_heads = false;  // Hugging Face order: value heads grouped per key head
  s.attn_output_gate = c.value("attn_output_gate", true);
  s.norm_unit_offset = true;  // zero-centred RMSNorm weights
}

std::vector<int64_t> token_ids(const json& v) {
  std::vector<int64_t> ids;
  if (v.is_number_integer()) ids.push_back(v.get<int64_t>());
  if (v.is_array())
    for (const auto& x : v)
      if (x.is_number_integer()) ids.push_back(x.get<int64_t>());
  return ids;
}

}  // namespace

ModelSpec spec_from_hf_config(const json& root) {
  KILN_CHECK(root.is_object(), "config.json: expected a JSON object");
  // Multimodal checkpoints keep the language model's settings in text_config.
  const json& c = root.contains("text_config") && root["text_config"].is_object()
                      ? root["text_config"]
                      : root;
  std::string model_type = c.value("model_type", root.value("model_type", std::string()));
  std::string class_name;
  if (root.contains("architectures") && root["architectures"].is_array() &&
      !root["architectures"].empty() && root["architectures"][0].is_string())
    class_name = root["architectures"][0].get<std::string>();
  const ArchEntry* arch = find_arch_by_hf(model_type, class_name);
  if (!arch)
    fail("config.json: unsupported architecture '", class_name.empty() ? model_type : class_name,
         "' (kiln runs: ", supported_arch_list(), ")");

  ModelSpec s;
  s.arch = std::string(arch->kiln_name);
  s.source_arch = model_type;
  s.name = root.value("_name_or_path", std::string());
  s.vocab_size = require_int(c, "vocab_size");
  s.hidden = require_int(c, "hidden_size");
  s.n_layers = require_int(c, "num_hidden_layers");
  s.n_heads = require_int(c, "num_attention_heads");
  s.n_kv_heads = get_int(c, "num_key_value_heads", s.n_heads);
  s.head_dim = get_int(c, "head_dim", s.hidden / s.n_heads);
  s.ffn_hidden = get_int(c, "intermediate_size", 0);
  s.max_context = get_int(c, "max_position_embeddings", 2048);
  s.norm_eps = float(get_float(c, "rms_norm_eps", 1e-6));
  s.rope_style = RopeStyle::Halves;  // Hugging Face weights are never permuted
  read_rope(c, s);
  // transformers 5 reads partial_rotary_factor from rope_parameters (a
  // top-level one may sit beside it with another value, and is then
  // ignored); older configs have only the top-level one.
  double partial = -1.0;
  if (c.contains("rope_parameters") && c["rope_parameters"].is_object())
    partial = get_float(c["rope_parameters"], "partial_rotary_factor", -1.0);
  if (partial < 0) partial = get_float(c, "partial_rotary_factor", -1.0);
  if (partial < 0) partial = 1.0;
  s.rope_dims = int64_t(double(s.head_dim) * partial);
  s.tied_embeddings = root.value("tie_word_embeddings", c.value("tie_word_embeddings", false));
  const bool hybrid = s.arch == "qwen35" || s.arch == "qwen35moe" || s.arch == "qwen3next";
  s.qk_norm = s.arch == "qwen3" || s.arch == "qwen3moe" || hybrid;
  if (hybrid) read_hybrid(c, s);
  // BitNet b1.58 2B-4T: "relu2"; the 1bitLLM models use SiLU.
  s.ffn_squared_relu = s.arch == "bitnet" && c.value("hidden_act", std::string()) == "relu2";

  s.layer_uses_rope.assign(size_t(s.n_layers), true);
  if (auto it = c.find("no_rope_layers"); it != c.end() && it->is_array()) {
    // 1 means "this layer uses RoPE", 0 "NoPE".
    KILN_CHECK(int64_t(it->size()) == s.n_layers, "config.json: no_rope_layers has ", it->size(),
               " entries for ", s.n_layers, " layers");
    for (int64_t i = 0; i < s.n_layers; ++i) s.layer_uses_rope[i] = (*it)[i].get<int>() != 0;
  } else if (s.arch == "smollm3") {
    const int64_t interval = get_int(c, "no_rope_layer_interval", 4);
    for (int64_t i = 0; i < s.n_layers; ++i) s.layer_uses_rope[i] = (i + 1) % interval != 0;
  }

  s.n_experts = get_int(c, "num_experts", get_int(c, "num_local_experts", 0));
  s.n_experts_used = get_int(c, "num_experts_per_tok", 0);
  s.expert_ffn_hidden = get_int(c, "moe_intermediate_size", s.ffn_hidden);
  // Qwen3.5-MoE configs may omit it: that model always renormalises.
  s.expert_weights_norm = c.value("norm_topk_prob", s.arch == "qwen35moe");
  s.shared_expert_ffn_hidden = get_int(c, "shared_expert_intermediate_size", 0);
  s.layer_is_moe.assign(size_t(s.n_layers), false);
  if (s.n_experts > 0) {
    const int64_t step = get_int(c, "decoder_sparse_step", 1);
    std::vector<int64_t> dense_only;
    if (c.contains("mlp_only_layers") && c["mlp_only_layers"].is_array())
      dense_only = c["mlp_only_layers"].get<std::vector<int64_t>>();
    for (int64_t i = 0; i < s.n_layers; ++i) {
      bool dense = std::find(dense_only.begin(), dense_only.end(), i) != dense_only.end();
      s.layer_is_moe[i] = !dense && step > 0 && (i + 1) % step == 0;
    }
  }

  if (c.contains("bos_token_id")) {
    auto ids = token_ids(c["bos_token_id"]);
    if (!ids.empty()) s.bos_id = ids[0];
  }
  if (c.contains("eos_token_id")) s.eos_ids = token_ids(c["eos_token_id"]);
  return s;
}

}  // namespace kiln
