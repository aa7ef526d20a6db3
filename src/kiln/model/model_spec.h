// What a model is, as data: the architecture family, its hyper-parameters,
// and the per-layer variations (which layers rotate, which are MoE). A model
// variant is a field here, not a fork of the forward pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/rope_style.h"

namespace kiln {

struct RopeScaling {
  enum class Kind { None, Linear, Llama3 } kind = Kind::None;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_context = 8192;
};

struct ModelSpec {
  std::string arch;          // kiln's family name: "llama", "qwen3", "qwen3moe", "smollm3"
  std::string source_arch;   // as the file names it (GGUF general.architecture or HF model_type)
  std::string name;          // human-readable, when the file has one

  int64_t vocab_size = 0;
  int64_t hidden = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_hidden = 0;
  int64_t max_context = 2048;
  float norm_eps = 1e-5f;

  // Attention details
  bool qk_norm = false;  // RMSNorm over each head of q and k (Qwen3)
  float rope_theta = 10000.0f;
  int64_t rope_dims = 0;  // leading dims of a head that rotate (head_dim unless partial)
  RopeStyle rope_style = RopeStyle::Halves;
  RopeScaling rope_scaling;
  std::vector<bool> layer_uses_rope;  // false: a NoPE layer (SmolLM3)

  // Mixture of experts
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;
  int64_t expert_ffn_hidden = 0;
  bool expert_weights_norm = false;  // renormalise the top-k routing weights
  std::vector<bool> layer_is_moe;

  bool tied_embeddings = false;

  // Special tokens the model config names (-1: none).
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;

  bool is_moe() const { return n_experts > 0; }
  // Linear-attention (recurrent) layers mixed with attention ones.
  bool is_hybrid() const { return false; }
  // Number of parameters implied by the shapes (for `kiln info`).
  // Throws kiln::Error when a value is missing or inconsistent.
  void validate() const;
};

}  // namespace kiln
