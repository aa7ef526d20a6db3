// IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear codebook
// (kIQ4Values), with one f16 scale per 32 elements (IQ4_NL) or a six-bit
// sub-scale per 32 under one f16 super-scale per 256 (IQ4_XS).
#include "kiln/core/half.h"
#include "kiln/quant/blocks.h"

namespace kiln::quant {

void dequant_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_NL*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * float(kIQ4Values[b[i].qs[j] & 0xF]);
      y[j + kQK / 2] = d * float(kIQ4Values[b[i].qs[j] >> 4]);
    }
  }
}

void dequant_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* qs = b[i].qs;
    for (int ib = 0; ib < kQK_K / 32; ++ib, y += 32, qs += 16) {
      const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) |
                     (((b[i].scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * float(ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * float(kIQ4Values[qs[j] & 0xF]);
        y[j + 16] = dl * float(kIQ4Values[qs[j] >> 4]);
      }
    }
  }
}

}  // namespace kiln::quant
