// The k most likely tokens of a row of logits, in the order every sampler
// and backend shares: the higher logit first, the lower id among equal
// ones; NaN never a candidate. A sampler's top-k draws from these alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace kiln {

using Candidate = std::pair<float, int32_t>;  // a logit and its token id

// The candidate order. An object, not a function, so that the sorts inline
// it rather than call through a pointer (with a function, a fifth of a tiny
// model's sampled serving time went to those calls).
struct ByLogit {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
};
inline constexpr ByLogit by_logit;

// The k candidates of logits[0, vocab) that come first in by_logit's order,
// sorted so, into out (fewer where fewer than k logits are not NaN): the
// head of a sort of the whole row, made without sorting it.
void top_k_candidates(const float* logits, int64_t vocab, size_t k, std::vector<Candidate>& out);

// Candidates as a backend hands them over (any order, NaN logits where a
// row had fewer than k): the NaNs dropped, the rest in by_logit's order.
void sort_candidates(std::vector<Candidate>& c);

// The first k of candidates in by_logit's order into out[0, k), NaN logits
// (id -1) past their end: the fixed width Backend::top_k_rows hands over.
void write_candidates(const std::vector<Candidate>& in_order, size_t k, Candidate* out);

}  // namespace kiln
