// GGUF metadata -> ModelSpec. Keys are "<arch>.<field>" as llama.cpp's
// converter writes them.
#include "kiln/core/error.h"
#include "kiln/model/architectures.h"
#include "kiln/model/model_file.h"

namespace kiln {

ModelSpec spec_from_gguf(const GgufFile& g) {
  const std::string arch_name = g.get_string("general.architecture");
  const ArchEntry* arch = find_arch_by_gguf(arch_name);
  if (!arch)
    fail(g.path(), ": unsupported architecture '", arch_name, "' (kiln runs: ",
         supported_arch_list(), ")");

  const std::string p = arch_name + ".";
  ModelSpec s;
  s.arch = std::string(arch->kiln_name);
  s.source_arch = arch_name;
  s.name = g.get_string_or("general.name", "");
  s.hidden = g.get_int(p + "embedding_length");
  s.n_layers = g.get_int(p + "block_count");
  s.n_heads = g.get_int(p + "attention.head_count");
  s.n_kv_heads = g.get_int_or(p + "attention.head_count_kv", s.n_heads);
  s.ffn_hidden = g.get_int_or(p + "feed_forward_length", 0);
  s.max_context = g.get_int_or(p + "context_length", 2048);
  s.norm_eps = float(g.get_float_or(p + "attention.layer_norm_rms_epsilon", 1e-5));
  s.head_dim = g.get_int_or(p + "attention.key_length", s.n_heads ? s.hidden / s.n_heads : 0);
  s.rope_theta = float(g.get_float_or(p + "rope.freq_base", 10000.0));
  s.rope_dims = g.get_int_or(p + "rope.dimension_count", s.head_dim);
  if (g.has(p + "rope.dimension_sections")) {
    // llama.cpp runs these architectures' sections interleaved (its IMROPE).
    s.mrope_sections = g.get_int_array(p + "rope.dimension_sections");
    while (!s.mrope_sections.empty() && s.mrope_sections.back() == 0) s.mrope_sections.pop_back();
    s.mrope_interleaved = arch_name == "qwen3vl" || arch_name == "qwen35" || arch_name == "qwen35moe";
  }
  s.rope_style = arch->gguf_rope;

  const std::string scaling = g.get_string_or(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    s.rope_scaling.kind = RopeScaling::Kind::Linear;
    s.rope_scaling.factor = float(g.get_float_or(p + "rope.scaling.factor", 1.0));
  } else if (scaling != "none" && !scaling.empty()) {
    fail(g.path(), ": unsupported rope scaling '", scaling, "'");
  }
  // Llama 3 frequency scaling arrives as a rope_freqs tensor, not metadata:
  // the model reads it when present.

  if (const TensorView* embd = g.find_tensor("token_embd.weight"))
    s.vocab_size = embd->shape.empty() ? 0 : embd->shape.front();
  s.vocab_size = g.get_int_or(p + "vocab_size", s.vocab_size);
  s.tied_embeddings = g.find_tensor("output.weight") == nullptr;

  s.layer_uses_rope.assign(size_t(s.n_layers), true);
  if (s.arch == "smollm3") {
    // llama.cpp stores no per-layer list: every 4th layer (3, 7, ...) is NoPE.
    const int64_t interval = g.get_int_or(p + "no_rope_layer_interval", 4);
    for (int64_t i = 0; i < s.n_layers; ++i) s.layer_uses_rope[i] = (i + 1) % interval != 0;
  }

  s.n_experts = g.get_int_or(p + "expert_count", 0);
  s.n_experts_used = g.get_int_or(p + "expert_used_count", 0);
  s.expert_ffn_hidden = g.get_int_or(p + "expert_feed_forward_length", s.ffn_hidden);
  // Qwen3-MoE renormalises its top-k weights; llama.cpp assumes it too.
  s.expert_weights_norm = g.get_bool_or(p + "expert_weights_norm",
                                        s.arch == "qwen3moe" || s.arch == "qwen3next" ||
                                            s.arch == "qwen35moe");
  s.layer_is_moe.assign(size_t(s.n_layers), s.n_experts > 0);
  if (s.n_experts > 0)
    for (int64_t i = 0; i < s.n_layers; ++i)
      s.layer_is_moe[i] = g.find_tensor(cat("blk.", i, ".ffn_gate_inp.weight")) != nullptr;

  s.shared_expert_ffn_hidden = g.get_int_or(p + "expert_shared_feed_forward_length", 0);

  // Hybrids: a layer with DeltaNet tensors is a linear-attention layer.
  if (s.arch == "qwen35" || s.arch == "qwen35moe" || s.arch == "qwen3next") {
    s.layer_is_linear.assign(size_t(s.n_layers), false);
    for (int64_t i = 0; i < s.n_layers; ++i)
      s.layer_is_linear[i] = g.find_tensor(cat("blk.", i, ".ssm_a")) != nullptr;
    s.linear_conv_kernel = g.get_int(p + "ssm.conv_kernel");
    s.linear_k_dim = g.get_int(p + "ssm.state_size");
    s.linear_k_heads = g.get_int(p + "ssm.group_count");
    s.linear_v_heads = g.get_int(p + "ssm.time_step_rank");
    const int64_t inner = g.get_int(p + "ssm.inner_size");
    KILN_CHECK(s.linear_v_heads > 0 && inner % s.linear_v_heads == 0, g.path(),
               ": ssm.inner_size ", inner, " is not a multiple of ", s.linear_v_heads,
               " value heads");
    s.linear_v_dim = inner / s.linear_v_heads;
    // The Qwen3.5 converter regroups value heads so that GGML's broadcast of
    // key heads (tiling) applies; Qwen3-Next's keeps them grouped.
    s.linear_tiled_heads = s.arch != "qwen3next";
    s.attn_output_gate = true;
    s.norm_unit_offset = false;  // the converter stored 1 + w
  }

  if (s.arch == "bitnet") {
    // bitnet.cpp's 2B-4T architectures use squared ReLU; llama.cpp's "bitnet"
    // is the 1bitLLM family (SiLU) unless the file says otherwise.
    s.ffn_squared_relu = arch_name != "bitnet" ||
                         g.get_string_or(p + "hidden_act", "silu") == "relu2";
  }

  s.qk_norm = false;
  for (int64_t i = 0; i < s.n_layers && !s.qk_norm; ++i)
    s.qk_norm = g.find_tensor(cat("blk.", i, ".attn_q_norm.weight")) != nullptr;
  s.bos_id = g.get_int_or("tokenizer.ggml.bos_token_id", -1);
  if (g.has("tokenizer.ggml.eos_token_id")) s.eos_ids.push_back(g.get_int("tokenizer.ggml.eos_token_id"));
  if (g.has("tokenizer.ggml.eot_token_id")) {
    int64_t eot = g.get_int("tokenizer.ggml.eot_token_id");
    if (s.eos_ids.empty() || s.eos_ids[0] != eot) s.eos_ids.push_back(eot);
  }
  return s;
}

}  // namespace kiln
