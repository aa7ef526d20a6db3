// Ternary (BitNet b1.58) weight layouts: GGML's TQ1_0 and TQ2_0 blocks and
// bitnet.cpp's I2_S, plus the decoding the ternary kernels run on.
//
// I2_S (x86 layout, as bitnet.cpp writes it): the tensor's values, flattened
// row-major, go in blocks of 128; block b is 32 bytes at b * 32, value j of
// the block sits in byte j % 32 at bits 6 - 2 * (j / 32) (the first 32 values
// in the high bits). Codes 0, 1, 2 mean -1, 0, +1. One f32 scale follows the
// packed data (at byte numel / 4), padded to 32 bytes: numel / 4 + 32 bytes in all.
//
// bitnet.cpp picks the packing when llama-quantize is compiled (quantize_i2_s
// in src/ggml-bitnet-mad.cpp, include/gemm-config.h), and records it nowhere:
// the type id (36), the size and the scale's place are the same for all three.
// - x86: the layout above. Every build before the 2026 parallel kernels, and
//   x86 builds since (gemm-config.h defines ACT_PARALLEL). Microsoft's
//   published ggml-model-i2_s.gguf files are this one.
// - arm: ARM NEON builds since the 2026 kernels (QK_I2_S 64): blocks of 64
//   values in 16 bytes, value j of a block in byte j % 16 at bits
//   6 - 2 * (j / 16).
// - 1x4: x86 builds with ACT_PARALLEL undefined: rows in groups of four,
//   byte (r / 4) * cols + c holds column c of the group's rows, row r % 4 at
//   bits 6 - 2 * (r % 4).
// The kernels run on the x86 layout; a file in another one is repacked into
// it once at load (the file's metadata key kiln.i2_s.layout, which kiln
// writes for the other two, or the KILN_I2S_LAYOUT environment variable for
// bitnet.cpp's own files, says which).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

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

enum class I2sLayout { X86, Arm, Rows4 };

// "x86", "arm", "1x4"; parse_i2s_layout takes those and throws on others.
const char* i2s_layout_name(I2sLayout l);
I2sLayout parse_i2s_layout(std::string_view s);
// One line for people: block size and who writes it.
std::string i2s_layout_description(I2sLayout l);
// Whether a {rows, cols} tensor fits the layout (whole blocks, or whole row
// groups for 1x4); the *_i2s functions below throw otherwise.
bool i2s_layout_fits(I2sLayout l, int64_t rows, int64_t cols);
// quantize_i2s / dequantize_i2s in any of the layouts.
void quantize_i2s(const float* src, int64_t rows, int64_t cols, I2sLayout layout, void* dst);
void dequantize_i2s(const void* src, int64_t rows, int64_t cols, I2sLayout layout, float* dst);
// The same codes and scale in the x86 layout (i2s_tensor_bytes(rows * cols)
// at dst), which the kernels read.
void i2s_repack_to_x86(const void* src, int64_t rows, int64_t cols, I2sLayout layout, void* dst);

// Whether the ternary kernels take this weight type.
bool is_ternary_type(DType t);

// Row `row` of a ternary matrix of `cols` columns as values in {-1, 0, 1}
// (codes[cols]) with one scale per block of `block` values (TQ1_0/TQ2_0:
// 256, their f16 d; I2_S: the whole row, the tensor's scale). `data` is the
// start of the whole tensor (I2_S blocks may straddle rows). Returns block.
int64_t decode_ternary_row(DType t, const void* data, int64_t row, int64_t cols, int64_t rows,
                           int8_t* codes, float* scales);

}  // namespace kiln
