// Float32 rows into GGML block formats. Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are
// byte-identical with GGML's reference quantizers (what llama-quantize writes
// without an importance matrix); the K-quants run the same scale search.
#pragma once

#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// True if quantize_row accepts type t.
bool can_quantize(DType t);

// Encodes n floats at src as type t at dst (dtype_row_bytes(t, n) bytes).
// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
// Q5_K, Q6_K. n must be a whole number of blocks; throws kiln::Error naming
// the type otherwise.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

}  // namespace kiln
