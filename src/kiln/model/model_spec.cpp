#include "kiln/model/model_spec.h"

#include "kiln/core/error.h"

namespace kiln {

bool ModelSpec::is_hybrid() const {
  for (bool linear : layer_is_linear)
    if (linear) return true;
  return false;
}

void ModelSpec::validate() const {
  auto positive = [&](int64_t v, const char* what) {
    KILN_CHECK(v > 0, arch, " model: ", what, " must be positive, got ", v);
  };
  positive(vocab_size, "vocabulary size");
  positive(hidden, "hidden size");
  positive(n_layers, "layer count");
  positive(n_heads, "attention head count");
  positive(n_kv_heads, "key/value head count");
  positive(head_dim, "head dimension");
  KILN_CHECK(n_heads % n_kv_heads == 0, arch, " model: ", n_heads,
             " attention heads are not a multiple of ", n_kv_heads, " key/value heads");
  KILN_CHECK(rope_dims >= 0 && rope_dims <= head_dim && rope_dims % 2 == 0, arch,
             " model: rotary dimension ", rope_dims, " does not fit head dimension ", head_dim);
  KILN_CHECK(int64_t(layer_uses_rope.size()) == n_layers, arch, " model: rope layer list has ",
             layer_uses_rope.size(), " entries for ", n_layers, " layers");
  KILN_CHECK(int64_t(layer_is_moe.size()) == n_layers, arch, " model: MoE layer list has ",
             layer_is_moe.size(), " entries for ", n_layers, " layers");
  if (is_hybrid()) {
    KILN_CHECK(int64_t(layer_is_linear.size()) == n_layers, arch, " model: layer type list has ",
               layer_is_linear.size(), " entries for ", n_layers, " layers");
    positive(linear_k_heads, "linear-attention key head count");
    positive(linear_v_heads, "linear-attention value head count");
    positive(linear_k_dim, "linear-attention key head dimension");
    positive(linear_v_dim, "linear-attention value head dimension");
    positive(linear_conv_kernel, "linear-attention convolution width");
    KILN_CHECK(linear_v_heads % linear_k_heads == 0, arch, " model: ", linear_v_heads,
               " linear-attention value heads are not a multiple of ", linear_k_heads,
               " key heads");
  }
  if (is_moe()) {
    KILN_CHECK(n_experts_used > 0 && n_experts_used <= n_experts, arch, " model: ",
               n_experts_used, " experts per token out of ", n_experts);
    positive(expert_ffn_hidden, "expert feed-forward size");
  }
}

}  // namespace kiln
