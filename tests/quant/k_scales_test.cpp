// k4_scale_min and k4_scale_min_pair (the branch-free decoding of Q4_K / Q5_K
// scales the CPU and the GPU share) against the format's definition, unit by
// unit.
#include "kiln/quant/k_scales.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace kiln::quant {
namespace {

// get_scale_min_k4 as the GGML format defines it.
void reference(int u, const uint8_t* q, int* sc, int* m) {
  if (u < 4) {
    *sc = q[u] & 63;
    *m = q[u + 4] & 63;
  } else {
    *sc = (q[u + 4] & 0xF) | ((q[u - 4] >> 6) << 4);
    *m = (q[u + 4] >> 4) | ((q[u] >> 6) << 4);
  }
}

void expect_matches(const uint8_t (&q)[12]) {
  uint32_t w[3];
  std::memcpy(w, q, sizeof q);
  for (int u = 0; u < 8; ++u) {
    int sc = 0, m = 0, want_sc = 0, want_m = 0;
    k4_scale_min(u, q, &sc, &m);
    reference(u, q, &want_sc, &want_m);
    EXPECT_EQ(sc, want_sc) << "unit " << u;
    EXPECT_EQ(m, want_m) << "unit " << u;
  }
  for (int j = 0; j < 4; ++j) {
    const uint32_t got = k4_scale_min_pair(w, j);
    for (int h = 0; h < 2; ++h) {
      int sc = 0, m = 0;
      reference(2 * j + h, q, &sc, &m);
      EXPECT_EQ(int((got >> (8 * h)) & 0xFF), sc) << "unit " << 2 * j + h;
      EXPECT_EQ(int((got >> (16 + 8 * h)) & 0xFF), m) << "unit " << 2 * j + h;
    }
  }
}

TEST(KScales, EveryByteValueInEveryPosition) {
  // Each of the 12 bytes through all 256 values, the others random: every
  // bit of every byte reaches the units it belongs to, and no other.
  std::mt19937 rng(7);
  for (int pos = 0; pos < 12; ++pos)
    for (int v = 0; v < 256; ++v) {
      uint8_t q[12];
      for (uint8_t& b : q) b = uint8_t(rng());
      q[pos] = uint8_t(v);
      expect_matches(q);
    }
}

TEST(KScales, AllOnesAndZeros) {
  uint8_t ones[12], zeros[12] = {};
  std::memset(ones, 0xFF, sizeof ones);
  expect_matches(ones);
  expect_matches(zeros);
}

}  // namespace
}  // namespace kiln::quant
