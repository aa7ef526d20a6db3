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
  std::string arch;          // kiln's family name: "llama", "qwen3", "qwen35", "qwen3next"...
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
  // Multimodal RoPE (Qwen3-VL, Qwen3.5): how many rotary frequencies follow the
  // temporal, height and width positions; empty = plain RoPE. Interleaved:
  // frequency i follows h when i % 3 == 1 and i < 3 * sections[1], w when
  // i % 3 == 2 and i < 3 * sections[2], t otherwise; else consecutive blocks.
  std::vector<int64_t> mrope_sections;
  bool mrope_interleaved = false;

  // Mixture of experts
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;
  int64_t expert_ffn_hidden = 0;
  bool expert_weights_norm = false;  // renormalise the top-k routing weights
  std::vector<bool> layer_is_moe;

  // Shared expert beside the routed ones (Qwen3-Next, Qwen3.5-MoE): its size,
  // 0 = none; its output is scaled by sigmoid(ffn_gate_inp_shexp . x).
  int64_t shared_expert_ffn_hidden = 0;

  // Hybrid models (Qwen3.5, Qwen3-Next): Gated DeltaNet layers between
  // full-attention ones. Empty layer_is_linear: no linear layers.
  std::vector<bool> layer_is_linear;
  int64_t linear_k_heads = 0;     // query/key heads of a DeltaNet layer
  int64_t linear_v_heads = 0;     // value heads (one recurrent state each)
  int64_t linear_k_dim = 0;       // head dim of q and k
  int64_t linear_v_dim = 0;       // head dim of v
  int64_t linear_conv_kernel = 0; // causal conv1d width
  // Value heads tiled over key heads (h -> h % k_heads) instead of grouped
  // (h -> h / (v_heads / k_heads)): llama.cpp's Qwen3.5 GGUFs regroup them.
  bool linear_tiled_heads = false;
  // The q projection carries a per-head output gate: [q_h, gate_h] per head,
  // attention output multiplied by sigmoid(gate).
  bool attn_output_gate = false;
  // RMSNorm weights stored zero-centred, applied as 1 + w (Hugging Face
  // Qwen3-Next/3.5; llama.cpp's converter stores them with the 1 added).
  bool norm_unit_offset = false;

  // BitNet b1.58 feed-forward activation: squared ReLU (2B-4T) instead of SiLU.
  bool ffn_squared_relu = false;

  bool tied_embeddings = false;

  // Special tokens the model config names (-1: none).
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;

  bool is_moe() const { return n_experts > 0; }
  bool is_hybrid() const;
  // Number of parameters implied by the shapes (for `kiln info`).
  // Throws kiln::Error when a value is missing or inconsistent.
  void validate() const;
};

}  // namespace kiln
