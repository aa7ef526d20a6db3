// The greedy choice over a row of logits, shared by the samplers and the
// backends' and models' fallbacks, so that every path picks the same token.
#pragma once

#include <cstdint>

namespace kiln {

// Index of the largest value (the first on ties; NaN never wins; 0 when all
// are NaN), as std::max_element with NaNs skipped.
int32_t argmax(const float* logits, int64_t vocab);

}  // namespace kiln
