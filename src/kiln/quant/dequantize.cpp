#include "kiln/quant/dequantize.h"

#include <cstring>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

void plain_f32(const void* src, float* y, int64_t n) { std::memcpy(y, src, size_t(n) * 4); }
void plain_f16(const void* src, float* y, int64_t n) {
  const auto* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(s[i]);
}
void plain_bf16(const void* src, float* y, int64_t n) {
  const auto* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(s[i]);
}
void plain_i8(const void* src, float* y, int64_t n) {
  const auto* s = static_cast<const int8_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = float(s[i]);
}
void plain_u8(const void* src, float* y, int64_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = float(s[i]);
}
void plain_i32(const void* src, float* y, int64_t n) {
  const auto* s = static_cast<const int32_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = float(s[i]);
}

}  // namespace

namespace quant {

DequantFn dequant_fn(DType t) {
  switch (t) {
    case DType::F32: return plain_f32;
    case DType::F16: return plain_f16;
    case DType::BF16: return plain_bf16;
    case DType::I8: return plain_i8;
    case DType::U8: return plain_u8;
    case DType::I32: return plain_i32;
    case DType::Q4_0: return dequant_q4_0;
    case DType::Q4_1: return dequant_q4_1;
    case DType::Q5_0: return dequant_q5_0;
    case DType::Q5_1: return dequant_q5_1;
    case DType::Q8_0: return dequant_q8_0;
    case DType::Q2_K: return dequant_q2_K;
    case DType::Q3_K: return dequant_q3_K;
    case DType::Q4_K: return dequant_q4_K;
    case DType::Q5_K: return dequant_q5_K;
    case DType::Q6_K: return dequant_q6_K;
    case DType::IQ4_NL: return dequant_iq4_nl;
    case DType::IQ4_XS: return dequant_iq4_xs;
    case DType::TQ1_0: return dequantize_row_tq1_0;
    case DType::TQ2_0: return dequantize_row_tq2_0;
    default: return nullptr;
  }
}

}  // namespace quant

bool can_dequantize(DType t) { return quant::dequant_fn(t) != nullptr; }

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  const quant::DequantFn fn = quant::dequant_fn(t);
  if (!fn) fail("cannot dequantize tensor type ", dtype_name(t), " (id ", uint32_t(t), ")");
  KILN_CHECK(n >= 0 && n % dtype_info(t).block_size == 0, "dequantize_row: ", n,
             " elements are not a whole number of ", dtype_name(t), " blocks");
  fn(src, dst, n);
}

}  // namespace kiln
