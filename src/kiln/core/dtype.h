// Element and block types of tensors. The numbering is GGML's type ids, so a
// GGUF tensor's type field casts straight to DType; the few types that only
// safetensors has live above 1000.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kiln {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  I2_S = 36,  // bitnet.cpp's ternary format (its fork's id)
  MXFP4 = 39,
  U8 = 1000,  // safetensors only
};

struct DTypeInfo {
  std::string_view name;  // GGML's spelling: "q4_K", "bf16"...
  int block_size;         // elements per block (1 for plain types)
  int type_size;          // bytes per block
  bool supported;         // kiln can compute with it
};

// Info for a type; throws kiln::Error for an id kiln does not know.
const DTypeInfo& dtype_info(DType t);
bool dtype_known(uint32_t id);
std::string_view dtype_name(DType t);
// Parses GGML's spelling, case-insensitive ("q8_0", "Q4_K", "bf16").
bool dtype_from_name(std::string_view name, DType* out);
bool dtype_is_quantized(DType t);

// Bytes of n consecutive elements; throws if n is not a whole number of blocks.
size_t dtype_row_bytes(DType t, int64_t n);

}  // namespace kiln
