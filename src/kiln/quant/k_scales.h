// The 6-bit scales and minimums of Q4_K / Q5_K blocks, one definition for the
// host (quant/k_quants.cpp) and the GPU (backend/cuda/formats.cuh, and
// matvec_fused.cu two units at a time), whose tests hold it to the format's.
// Branch-free: the GPU's neighbouring lanes decode different units of a
// block.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif

namespace kiln::quant {

// Unit u (0-7) of a block whose 12 scale bytes are q (llama.cpp's
// get_scale_min_k4): units 0-3 the low six bits of bytes u and u + 4, units
// 4-7 four bits of byte u + 4 and the top two of bytes u - 4 and u. Both
// layouts are computed and one selected.
KILN_HOST_DEVICE inline void k4_scale_min(int u, const uint8_t* q, int* sc, int* m) {
  const int i = u & 3;
  const uint32_t a = q[i], b = q[i + 4], c = q[i + 8];
  const bool low = u < 4;
  *sc = int(low ? a & 63 : (c & 0xF) | ((a >> 6) << 4));
  *m = int(low ? b & 63 : (c >> 4) | ((b >> 6) << 4));
}

// Units 2j and 2j + 1 (j = 0..3) of a block whose 12 scale bytes are the
// three little-endian words w: bytes 0..3 of the result are sc[2j],
// sc[2j + 1], m[2j], m[2j + 1], as llama.cpp's get_scale_min_k4 gives them
// (units 0-3: the low six bits of bytes 0-3 and 4-7; units 4-7: four bits
// from bytes 8-11, the top two from bits 6-7 of bytes 0-7).
KILN_HOST_DEVICE inline uint32_t k4_scale_min_pair(const uint32_t* w, int j) {
  const int sh = (j & 1) * 16;  // the pair's two bytes of each word, in the low half
  const uint32_t a = w[0] >> sh, b = w[1] >> sh, c = (w[2] >> sh) & 0xFFFFu;
  const uint32_t ab = (a & 0xFFFFu) | (b << 16);  // bytes a0 a1 b0 b1
  const uint32_t cc = c | (c << 16);              // bytes c0 c1 c0 c1
  // Units 4-7: the low nibbles of c0, c1 and the high ones as the low four
  // bits, and bits 6-7 of a0 a1 b0 b1 as bits 4-5 (a byte's bits from the
  // byte above, shifted in at 6-7, are masked off).
  const uint32_t high = (cc & 0x0F0Fu) | ((cc >> 4) & 0x0F0F0000u) | ((ab >> 2) & 0x30303030u);
  return j < 2 ? ab & 0x3F3F3F3Fu : high;
}

}  // namespace kiln::quant
