#include "kiln/quant/quantize.h"

#include <cstring>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

using RowFn = void (*)(const float*, void*, int64_t);

void to_f32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, size_t(n) * 4); }
void to_f16(const float* x, void* dst, int64_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(x[i]);
}
void to_bf16(const float* x, void* dst, int64_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(x[i]);
}

RowFn row_fn(DType t) {
  using namespace quant;
  switch (t) {
    case DType::F32: return to_f32;
    case DType::F16: return to_f16;
    case DType::BF16: return to_bf16;
    case DType::Q4_0: return quant_q4_0;
    case DType::Q4_1: return quant_q4_1;
    case DType::Q5_0: return quant_q5_0;
    case DType::Q5_1: return quant_q5_1;
    case DType::Q8_0: return quant_q8_0;
    case DType::Q2_K: return quant_q2_K;
    case DType::Q3_K: return quant_q3_K;
    case DType::Q4_K: return quant_q4_K;
    case DType::Q5_K: return quant_q5_K;
    case DType::Q6_K: return quant_q6_K;
    case DType::TQ1_0: return quantize_row_tq1_0;
    case DType::TQ2_0: return quantize_row_tq2_0;
    default: return nullptr;
  }
}

}  // namespace

bool can_quantize(DType t) { return row_fn(t) != nullptr; }

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  const RowFn fn = row_fn(t);
  if (!fn) fail("cannot quantize to tensor type ", dtype_name(t), " (id ", uint32_t(t), ")");
  KILN_CHECK(n >= 0 && n % dtype_info(t).block_size == 0, "quantize_row: ", n,
             " elements are not a whole number of ", dtype_name(t), " blocks");
  fn(src, dst, n);
}

}  // namespace kiln
