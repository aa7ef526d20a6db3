#include "kiln/core/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "kiln/core/error.h"

namespace kiln {
namespace {

struct Entry {
  DType type;
  DTypeInfo info;
};

// Block sizes and byte sizes as ggml-common.h defines them.
constexpr std::array kTable = {
    Entry{DType::F32, {"f32", 1, 4, true}},
    Entry{DType::F16, {"f16", 1, 2, true}},
    Entry{DType::Q4_0, {"q4_0", 32, 18, true}},
    Entry{DType::Q4_1, {"q4_1", 32, 20, true}},
    Entry{DType::Q5_0, {"q5_0", 32, 22, true}},
    Entry{DType::Q5_1, {"q5_1", 32, 24, true}},
    Entry{DType::Q8_0, {"q8_0", 32, 34, true}},
    Entry{DType::Q8_1, {"q8_1", 32, 36, false}},
    Entry{DType::Q2_K, {"q2_K", 256, 84, true}},
    Entry{DType::Q3_K, {"q3_K", 256, 110, true}},
    Entry{DType::Q4_K, {"q4_K", 256, 144, true}},
    Entry{DType::Q5_K, {"q5_K", 256, 176, true}},
    Entry{DType::Q6_K, {"q6_K", 256, 210, true}},
    Entry{DType::Q8_K, {"q8_K", 256, 292, false}},
    Entry{DType::IQ2_XXS, {"iq2_xxs", 256, 66, false}},
    Entry{DType::IQ2_XS, {"iq2_xs", 256, 74, false}},
    Entry{DType::IQ3_XXS, {"iq3_xxs", 256, 98, false}},
    Entry{DType::IQ1_S, {"iq1_s", 256, 50, false}},
    Entry{DType::IQ4_NL, {"iq4_nl", 32, 18, true}},
    Entry{DType::IQ3_S, {"iq3_s", 256, 110, false}},
    Entry{DType::IQ2_S, {"iq2_s", 256, 82, false}},
    Entry{DType::IQ4_XS, {"iq4_xs", 256, 136, true}},
    Entry{DType::I8, {"i8", 1, 1, true}},
    Entry{DType::I16, {"i16", 1, 2, false}},
    Entry{DType::I32, {"i32", 1, 4, true}},
    Entry{DType::I64, {"i64", 1, 8, false}},
    Entry{DType::F64, {"f64", 1, 8, false}},
    Entry{DType::IQ1_M, {"iq1_m", 256, 56, false}},
    Entry{DType::BF16, {"bf16", 1, 2, true}},
    Entry{DType::TQ1_0, {"tq1_0", 256, 54, true}},
    Entry{DType::TQ2_0, {"tq2_0", 256, 66, true}},
    Entry{DType::I2_S, {"i2_s", 1, 1, true}},  // 4 values a byte, then a per-tensor scale
    Entry{DType::MXFP4, {"mxfp4", 32, 17, false}},
    Entry{DType::U8, {"u8", 1, 1, true}},
};

const Entry* find(DType t) {
  for (const auto& e : kTable)
    if (e.type == t) return &e;
  return nullptr;
}

}  // namespace

bool dtype_known(uint32_t id) { return find(static_cast<DType>(id)) != nullptr; }

const DTypeInfo& dtype_info(DType t) {
  const Entry* e = find(t);
  if (!e) fail("unknown tensor type id ", static_cast<uint32_t>(t));
  return e->info;
}

std::string_view dtype_name(DType t) {
  const Entry* e = find(t);
  return e ? e->info.name : std::string_view("unknown");
}

bool dtype_from_name(std::string_view name, DType* out) {
  auto lower = [](std::string_view s) {
    std::string r(s);
    std::transform(r.begin(), r.end(), r.begin(), [](unsigned char c) { return std::tolower(c); });
    return r;
  };
  const std::string want = lower(name);
  for (const auto& e : kTable) {
    if (lower(e.info.name) == want) {
      *out = e.type;
      return true;
    }
  }
  return false;
}

bool dtype_is_quantized(DType t) { return dtype_info(t).block_size > 1 || t == DType::I2_S; }

size_t dtype_row_bytes(DType t, int64_t n) {
  const DTypeInfo& info = dtype_info(t);
  if (t == DType::I2_S) return size_t((n + 3) / 4);
  KILN_CHECK(n % info.block_size == 0, n, " elements are not a whole number of ", info.name,
             " blocks of ", info.block_size);
  return size_t(n / info.block_size) * info.type_size;
}

}  // namespace kiln
