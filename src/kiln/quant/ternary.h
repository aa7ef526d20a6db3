// Ternary (BitNet b1.58) weight layouts: GGML's TQ1_0 and TQ2_0 blocks and
// bitnet.cpp's I2_S, plus the decoding the ternary kernels run on.
//
// I2_S (x86 layout, as bitnet.cpp writes it): the tensor's values, flattened
// row-major, go in blocks of 128; block b is 32 bytes at b * 32, value j of
// the block sits in byte j % 32 at bits 6 - 2 * (j / 32) (the first 32 values
// in the high bits). Codes 0, 1, 2 mean -1, 0, +1. One f32 scale follows the
// packed data (at byte numel / 4), padded to 32 bytes: numel / 4 + 32 bytes in all.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// GGML's reference (de)quantizers, a whole number of 256-value blocks.
void dequantize_row_tq1_0(const void* src, float* dst, int64_t n);
void dequantize_row_tq2_0(const void* src, float* dst, int64_t n);
void quantize_row_tq1_0(const float* src, void* dst, int64_t n);
void quantize_row_tq2_0(const float* src, void* dst, int64_t n);

// Bytes of an I2_S tensor of numel values (a multiple of 4).
size_t i2s_tensor_bytes(int64_t numel);
// Encodes a whole tensor as bitnet.cpp's quantize_i2_s does: scale = max |x|,
// code 1 where |x| < 1e-6, else 2 for positive and 0 for negative values.
void quantize_i2s(const float* src, int64_t numel, void* dst);
// Values (code - 1) * scale of a whole I2_S tensor.
void dequantize_i2s(const void* src, int64_t numel, float* dst);
float i2s_scale(const void* src, int64_t numel);

// Whether the ternary kernels take this weight type.
bool is_ternary_type(DType t);

// Row `row` of a ternary matrix of `cols` columns as values in {-1, 0, 1}
// (codes[cols]) with one scale per block of `block` values (TQ1_0/TQ2_0:
// 256, their f16 d; I2_S: the whole row, the tensor's scale). `data` is the
// start of the whole tensor (I2_S blocks may straddle rows). Returns block.
int64_t decode_ternary_row(DType t, const void* data, int64_t row, int64_t cols, int64_t rows,
                           int8_t* codes, float* scales);

}  // namespace kiln
