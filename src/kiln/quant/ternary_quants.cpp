// TQ1_0 and TQ2_0 exactly as GGML lays them out (ggml-common.h), and
// bitnet.cpp's I2_S (see ternary.h).
#include <cmath>
#include <cstring>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

constexpr int kQK_K = 256;

// 1.6875 bits a value: 48 bytes of five trits each, 4 bytes of four, f16 d.
struct BlockTQ1_0 {
  uint8_t qs[(kQK_K - 4 * kQK_K / 64) / 5];
  uint8_t qh[kQK_K / 64];
  uint16_t d;
};
// 2.0625 bits a value: four 2-bit codes a byte, f16 d.
struct BlockTQ2_0 {
  uint8_t qs[kQK_K / 4];
  uint16_t d;
};
static_assert(sizeof(BlockTQ1_0) == 54 && sizeof(BlockTQ2_0) == 66);

constexpr uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};

// The trit a TQ1_0 byte holds at position n (0 = most significant): the
// byte is a fixed-point fraction of 243, so multiplying by 3^n moves trit n
// to the top and (q * 3) >> 8 reads it.
inline int trit(uint8_t byte, int n) {
  const uint8_t q = uint8_t(byte * kPow3[n]);
  return int((uint16_t(q) * 3) >> 8);
}

// Codes 0..2 of one TQ1_0 block in value order.
void tq1_codes(const BlockTQ1_0& b, int8_t* out) {
  int k = 0;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) out[k++] = int8_t(trit(b.qs[m], n));
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) out[k++] = int8_t(trit(b.qs[32 + m], n));
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) out[k++] = int8_t(trit(b.qh[j], n));
}

void tq2_codes(const BlockTQ2_0& b, int8_t* out) {
  int k = 0;
  for (int j = 0; j < 64; j += 32)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) out[k++] = int8_t((b.qs[j + m] >> (2 * l)) & 3);
}

float block_amax(const float* x) {
  float amax = 0.0f;
  for (int j = 0; j < kQK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// -1, 0, 1 (after scaling by id) -> 0, 1, 2, rounding half away from zero as GGML's lroundf.
inline int code_of(float v, float id) { return int(std::lround(v * id)) + 1; }

inline int i2s_code_at(const uint8_t* data, int64_t i) {
  const int64_t block = i / 128, j = i % 128;
  return (data[block * 32 + j % 32] >> (6 - 2 * (j / 32))) & 3;
}

// Where value (r, c) of a {rows, cols} I2_S tensor lives: its byte, and the
// shift of its 2-bit code in that byte (see ternary.h).
struct I2sPlace {
  int64_t byte;
  int shift;
};

inline I2sPlace i2s_place(I2sLayout l, int64_t r, int64_t c, int64_t cols) {
  switch (l) {
    case I2sLayout::X86: {
      const int64_t i = r * cols + c;
      return {i / 128 * 32 + i % 32, 6 - 2 * int(i % 128 / 32)};
    }
    case I2sLayout::Arm: {
      const int64_t i = r * cols + c;
      return {i / 64 * 16 + i % 16, 6 - 2 * int(i % 64 / 16)};
    }
    case I2sLayout::Rows4:
      return {r / 4 * cols + c, 6 - 2 * int(r % 4)};
  }
  return {0, 0};
}

void check_i2s_fits(I2sLayout l, int64_t rows, int64_t cols) {
  KILN_CHECK(i2s_layout_fits(l, rows, cols), "i2_s (", i2s_layout_name(l), " layout): a [", rows,
             ", ", cols, "] tensor is not ",
             l == I2sLayout::Rows4 ? "a whole number of 4-row groups"
                                   : l == I2sLayout::Arm ? "a whole number of 64-value blocks"
                                                         : "a whole number of 128-value blocks");
}

}  // namespace

const char* i2s_layout_name(I2sLayout l) {
  switch (l) {
    case I2sLayout::X86: return "x86";
    case I2sLayout::Arm: return "arm";
    case I2sLayout::Rows4: return "1x4";
  }
  return "?";
}

I2sLayout parse_i2s_layout(std::string_view s) {
  if (s == "x86") return I2sLayout::X86;
  if (s == "arm") return I2sLayout::Arm;
  if (s == "1x4") return I2sLayout::Rows4;
  fail("unknown I2_S layout '", s, "' (x86, arm or 1x4)");
}

std::string i2s_layout_description(I2sLayout l) {
  switch (l) {
    case I2sLayout::X86: return "x86 layout, 128-value blocks of 32 bytes";
    case I2sLayout::Arm: return "arm layout, 64-value blocks of 16 bytes as bitnet.cpp on ARM writes";
    case I2sLayout::Rows4:
      return "1x4 layout, 4 rows a byte as bitnet.cpp on x86 without ACT_PARALLEL writes";
  }
  return "?";
}

bool i2s_layout_fits(I2sLayout l, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return false;
  switch (l) {
    case I2sLayout::X86: return rows * cols % 128 == 0;
    case I2sLayout::Arm: return rows * cols % 64 == 0;
    case I2sLayout::Rows4: return rows % 4 == 0;
  }
  return false;
}

void quantize_i2s(const float* src, int64_t rows, int64_t cols, I2sLayout layout, void* dst) {
  check_i2s_fits(layout, rows, cols);
  const int64_t numel = rows * cols;
  double max = 0;
  for (int64_t i = 0; i < numel; ++i) max = std::fmax(max, std::fabs(double(src[i])));
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, i2s_tensor_bytes(numel));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double v = src[r * cols + c];
      const int code = std::fabs(v) < 1e-6 ? 1 : (v * max > 0 ? 2 : 0);
      const I2sPlace at = i2s_place(layout, r, c, cols);
      out[at.byte] |= uint8_t(code << at.shift);
    }
  const float scale = float(max);
  std::memcpy(out + numel / 4, &scale, sizeof(float));
}

void dequantize_i2s(const void* src, int64_t rows, int64_t cols, I2sLayout layout, float* dst) {
  check_i2s_fits(layout, rows, cols);
  const auto* data = static_cast<const uint8_t*>(src);
  const float scale = i2s_scale(src, rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const I2sPlace at = i2s_place(layout, r, c, cols);
      dst[r * cols + c] = float(((data[at.byte] >> at.shift) & 3) - 1) * scale;
    }
}

void i2s_repack_to_x86(const void* src, int64_t rows, int64_t cols, I2sLayout layout, void* dst) {
  check_i2s_fits(layout, rows, cols);
  check_i2s_fits(I2sLayout::X86, rows, cols);
  const int64_t numel = rows * cols;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, i2s_tensor_bytes(numel));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const I2sPlace from = i2s_place(layout, r, c, cols), to = i2s_place(I2sLayout::X86, r, c, cols);
      out[to.byte] |= uint8_t(((in[from.byte] >> from.shift) & 3) << to.shift);
    }
  std::memcpy(out + numel / 4, in + numel / 4, sizeof(float));
}

void dequantize_row_tq1_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockTQ1_0*>(src);
  int8_t codes[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    tq1_codes(b[i], codes);
    for (int j = 0; j < kQK_K; ++j) *dst++ = float(codes[j] - 1) * d;
  }
}

void dequantize_row_tq2_0(const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const BlockTQ2_0*>(src);
  int8_t codes[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    tq2_codes(b[i], codes);
    for (int j = 0; j < kQK_K; ++j) *dst++ = float(codes[j] - 1) * d;
  }
}

void quantize_row_tq1_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockTQ1_0*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = block_amax(x), id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    // Five values a byte along 32 bytes, then along 16; the byte stores the
    // base-3 number as a fraction of 243, rounded up, so trit() reads it back.
    for (int m = 0; m < 32; ++m) {
      int q = 0;
      for (int k = 0; k < 5; ++k) q = q * 3 + code_of(x[m + k * 32], id);
      y[i].qs[m] = uint8_t((q * 256 + 242) / 243);
    }
    x += 160;
    for (int m = 0; m < 16; ++m) {
      int q = 0;
      for (int k = 0; k < 5; ++k) q = q * 3 + code_of(x[m + k * 16], id);
      y[i].qs[32 + m] = uint8_t((q * 256 + 242) / 243);
    }
    x += 80;
    for (int j = 0; j < 4; ++j) {
      int q = 0;
      for (int k = 0; k < 4; ++k) q = q * 3 + code_of(x[j + k * 4], id);
      q *= 3;  // four trits: the first goes to the most significant place
      y[i].qh[j] = uint8_t((q * 256 + 242) / 243);
    }
    x += 16;
  }
}

void quantize_row_tq2_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockTQ2_0*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = block_amax(x), id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < 64; j += 32) {
      for (int m = 0; m < 32; ++m) {
        int q = 0;
        for (int k = 0; k < 4; ++k) q += (code_of(x[m + k * 32], id) & 3) << (2 * k);
        y[i].qs[j + m] = uint8_t(q);
      }
      x += 128;
    }
  }
}

size_t i2s_tensor_bytes(int64_t numel) { return size_t(numel / 4) + 32; }

void quantize_i2s(const float* src, int64_t numel, void* dst) {
  // Codes sit in 128-value blocks and the scale right after numel / 4 bytes:
  // a partial block would write codes over the scale.
  KILN_CHECK(numel % 128 == 0, "i2_s: ", numel,
             " values are not a whole number of 128-value blocks");
  double max = 0;
  for (int64_t i = 0; i < numel; ++i) max = std::fmax(max, std::fabs(double(src[i])));
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, i2s_tensor_bytes(numel));
  for (int64_t i = 0; i < numel; ++i) {
    const double v = src[i];
    const int code = std::fabs(v) < 1e-6 ? 1 : (v * max > 0 ? 2 : 0);
    const int64_t block = i / 128, j = i % 128;
    out[block * 32 + j % 32] |= uint8_t(code << (6 - 2 * (j / 32)));
  }
  const float scale = float(max);
  std::memcpy(out + numel / 4, &scale, sizeof(float));
}

float i2s_scale(const void* src, int64_t numel) {
  float s;
  std::memcpy(&s, static_cast<const uint8_t*>(src) + numel / 4, sizeof(float));
  return s;
}

void dequantize_i2s(const void* src, int64_t numel, float* dst) {
  const auto* data = static_cast<const uint8_t*>(src);
  const float scale = i2s_scale(src, numel);
  for (int64_t i = 0; i < numel; ++i) dst[i] = float(i2s_code_at(data, i) - 1) * scale;
}

bool is_ternary_type(DType t) {
  return t == DType::TQ1_0 || t == DType::TQ2_0 || t == DType::I2_S;
}

int64_t decode_ternary_row(DType t, const void* data, int64_t row, int64_t cols, int64_t rows,
                           int8_t* codes, float* scales) {
  const auto* base = static_cast<const uint8_t*>(data);
  switch (t) {
    case DType::TQ1_0:
    case DType::TQ2_0: {
      const int64_t nb = cols / kQK_K;
      const size_t bytes = t == DType::TQ1_0 ? sizeof(BlockTQ1_0) : sizeof(BlockTQ2_0);
      const uint8_t* r = base + size_t(row) * size_t(nb) * bytes;
      for (int64_t b = 0; b < nb; ++b) {
        int8_t* c = codes + b * kQK_K;
        if (t == DType::TQ1_0) {
          BlockTQ1_0 blk;
          std::memcpy(&blk, r + b * bytes, bytes);
          tq1_codes(blk, c);
          scales[b] = f16_to_f32(blk.d);
        } else {
          BlockTQ2_0 blk;
          std::memcpy(&blk, r + b * bytes, bytes);
          tq2_codes(blk, c);
          scales[b] = f16_to_f32(blk.d);
        }
        for (int j = 0; j < kQK_K; ++j) c[j] = int8_t(c[j] - 1);
      }
      return kQK_K;
    }
    case DType::I2_S: {
      const int64_t first = row * cols;
      if (first % 128 == 0 && cols % 128 == 0) {
        // Whole blocks: byte m of a block holds values m, m+32, m+64, m+96.
        for (int64_t b = 0; b < cols / 128; ++b) {
          const uint8_t* p = base + (first / 128 + b) * 32;
          int8_t* c = codes + b * 128;
          for (int g = 0; g < 4; ++g)
            for (int m = 0; m < 32; ++m) c[g * 32 + m] = int8_t(((p[m] >> (6 - 2 * g)) & 3) - 1);
        }
      } else {
        for (int64_t i = 0; i < cols; ++i) codes[i] = int8_t(i2s_code_at(base, first + i) - 1);
      }
      scales[0] = i2s_scale(data, rows * cols);
      return cols;
    }
    default:
      fail("tensor type ", dtype_name(t), " is not a ternary format");
  }
}

}  // namespace kiln
