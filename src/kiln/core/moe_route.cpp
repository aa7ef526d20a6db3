#include "kiln/core/moe_route.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kiln {

void route_experts(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                   bool renormalise, int32_t* ids, float* weights) {
  std::vector<float> probs(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* l = logits + t * n_experts;
    const float m = *std::max_element(l, l + n_experts);
    float total = 0;
    for (int64_t e = 0; e < n_experts; ++e) total += probs[size_t(e)] = std::exp(l[e] - m);
    for (auto& p : probs) p /= total;
    std::iota(order.begin(), order.end(), 0);
    // Highest probability first; ties go to the lower expert id.
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return probs[size_t(a)] > probs[size_t(b)] || (probs[size_t(a)] == probs[size_t(b)] && a < b);
    });
    float chosen = 0;
    for (int64_t j = 0; j < k; ++j) chosen += probs[size_t(order[size_t(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const float p = probs[size_t(order[size_t(j)])];
      ids[t * k + j] = order[size_t(j)];
      weights[t * k + j] = renormalise ? p / chosen : p;
    }
  }
}

}  // namespace kiln
