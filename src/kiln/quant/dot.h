// Matrix-vector and matrix-matrix products straight from quantized rows.
// Weights are dequantized a chunk (at most 256 elements, whole blocks) at a
// time into a stack buffer and never as a whole matrix; products accumulate
// in float32. Every type dequantize_row accepts is accepted here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// sum_i W[i] * x[i] over one row of n elements of type t.
float dot_row(DType t, const void* row, const float* x, int64_t n);

// y[tok * n_rows + r] = dot(W[r], x[tok * n_cols ...]) for r < n_rows and
// tok < n_tokens. w points at the first of n_rows consecutive rows of
// row_bytes each (dtype_row_bytes(t, n_cols), or more for padded rows).
// Each dequantized weight chunk is reused for every token.
void matmul_rows(DType t, const void* w, size_t row_bytes, int64_t n_rows, const float* x,
                 int64_t n_cols, int64_t n_tokens, float* y);

// As matmul_rows, writing y[tok * y_stride + r]: lets callers split the rows
// of one matrix across threads into one output of y_stride >= n_rows columns.
void matmul_rows_strided(DType t, const void* w, size_t row_bytes, int64_t n_rows, const float* x,
                         int64_t n_cols, int64_t n_tokens, float* y, int64_t y_stride);

}  // namespace kiln
