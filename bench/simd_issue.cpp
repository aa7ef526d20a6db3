// kiln_bench_simd_issue: how many 256-bit integer multiply-adds a core
// issues a cycle, alone and with the add that accumulates each one, which is
// the roofline of the AVX2 int8 tiles (gemm_kernels_tiles256.inc, tile8_tokens).
// Without vpdpbusd every 32 int8 products there take two vpmaddubsw (Q8_0's
// weights split into nibbles, so that the pair sums cannot saturate) and
// two vpaddw: if the adds share the multiplies' pipes, the tiles are bound
// by all four, not by the multiplies alone (bench/RESULTS.md).
//
//   kiln_bench_simd_issue            prints ns per instruction and per step
#include <immintrin.h>

#include <chrono>
#include <cstdio>

namespace {

volatile int sink;

using Clock = std::chrono::steady_clock;

// Eight independent chains of vpmaddubsw alone (each result feeds the next).
__attribute__((target("avx2"))) void maddubs_alone(long iters) {
  __m256i r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_set1_epi16(short(i));
  const __m256i b = _mm256_set1_epi8(5);
  for (long k = 0; k < iters; ++k)
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = _mm256_maddubs_epi16(r[i], b);
  int s = 0;
  for (int i = 0; i < 8; ++i) s += _mm256_extract_epi16(r[i], 0);
  sink = s;
}

// The tiles' step: 8 independent vpmaddubsw, each added into its own
// accumulator by a vpaddw (two weight vectors x four tokens).
__attribute__((target("avx2"))) void tile_steps(long iters) {
  __m256i w0 = _mm256_set1_epi8(3), w1 = _mm256_set1_epi8(7);
  __m256i x[4], acc[8];
  for (int i = 0; i < 4; ++i) x[i] = _mm256_set1_epi8(char(i + 1));
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_si256();
  for (long k = 0; k < iters; ++k) {
    asm volatile("" : "+x"(w0), "+x"(w1));  // new weights every step
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      acc[i] = _mm256_add_epi16(acc[i], _mm256_maddubs_epi16(w0, x[i]));
      acc[4 + i] = _mm256_add_epi16(acc[4 + i], _mm256_maddubs_epi16(w1, x[i]));
    }
  }
  int s = 0;
  for (int i = 0; i < 8; ++i) s += _mm256_extract_epi16(acc[i], 0);
  sink = s;
}

double ns_per_iteration(void (*body)(long), long n) {
  const auto t0 = Clock::now();
  body(n);
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / double(n);
}

}  // namespace

int main() {
  if (!__builtin_cpu_supports("avx2")) {
    std::printf("this CPU has no AVX2\n");
    return 0;
  }
  constexpr long kIters = 50'000'000;
  maddubs_alone(kIters / 10);  // warm up the clock
  const double alone = ns_per_iteration(maddubs_alone, kIters) / 8;
  const double step = ns_per_iteration(tile_steps, kIters);
  std::printf("vpmaddubsw alone:            %.3f ns each (%.2f a ns)\n", alone, 1 / alone);
  std::printf("8 vpmaddubsw + 8 vpaddw:     %.3f ns a step (%.2f vpmaddubsw a ns, %.0f int8 "
              "products a ns)\n",
              step, 8 / step, 8 * 32 / step);
  return 0;
}
