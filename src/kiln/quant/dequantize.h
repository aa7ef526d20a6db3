// Turning rows of any supported tensor type into float32, with exactly the
// values GGML's reference dequantizers produce.
#pragma once

#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// True if dequantize_row (and dot_row / matmul_rows) accept type t.
bool can_dequantize(DType t);

// Converts n consecutive elements of type t at src to float32 at dst.
// n must be a whole number of t's blocks. Supported: F32, F16, BF16, I8, U8,
// I32 (plain casts), Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL,
// IQ4_XS. Throws kiln::Error naming the type otherwise.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

}  // namespace kiln
