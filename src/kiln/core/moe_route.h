// Mixture-of-experts routing on the host: each token's softmax over the
// router logits, its k most probable experts (ties to the lower id), and
// their weights, renormalised over the k or not. One definition, so that
// every backend (the GPU copies the logits back for it) routes alike.
#pragma once

#include <cstdint>

namespace kiln {

// logits [n_tokens, n_experts] (host); ids and weights [n_tokens, k].
void route_experts(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                   bool renormalise, int32_t* ids, float* weights);

}  // namespace kiln
