// The CPU ternary kernel's integer core, compiled once per instruction-set
// level (ternary_<level>.cpp, flags in CMakeLists.txt) and picked at startup
// from cpu_features(), with the portable loop as the fallback.
//
// Every level computes the same integers: for a weight code c in {0, 1, 2}
// (value c - 1) and int8 activations q, sum (c - 1) * q = sum c * q - sum q,
// where sum c * q comes from vpdpbusd / vpmaddubsw on the unsigned codes and
// sum q is the token's precomputed block sum. Integer sums are exact, so the
// result equals the scalar add/subtract loop bit for bit; the float scales
// are applied by the caller in one fixed order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

class ThreadPool;

namespace ternary {

// Activations of n_tokens tokens as the kernels read them.
struct Acts {
  int64_t n_tokens = 0, K = 0;
  const int8_t* q = nullptr;      // [n_tokens][K], value order
  const int8_t* qa = nullptr;     // [n_tokens][K], the level's arranged order (may equal q)
  const int32_t* sum128 = nullptr;  // [n_tokens][ceil(K / 128)]: sum of q per 128 values
  const int32_t* sum_all = nullptr;  // [n_tokens]: sum of q over K
};

// Integer dots of rows [r0, r1) with every token. I2_S (K % 128 == 0): one
// per (row, token) at dots[(r - r0) * T + t]. TQ2_0 and TQ1_0: one per
// 256-value block, dots[((r - r0) * T + t) * (K / 256) + b].
using RowsFn = void (*)(const uint8_t* w, int64_t r0, int64_t r1, const Acts& a, int32_t* dots);
// sum c * q over n values, c in {-1, 0, 1} (decoded rows of any format).
using DotFn = int32_t (*)(const int8_t* c, const int8_t* q, int64_t n);
// One token's BitLinear quantization, q = clamp(round_half_even(x * a)) with
// a = 127 / max(max |x|, 1e-5) returned, plus its sums per 128 values and in
// all (as Acts holds them). Exactly the portable loop's results: max is exact
// in any order and x * a, the rounding and the clamp are single IEEE steps.
using QuantFn = float (*)(const float* x, int64_t K, int8_t* q, int32_t* sum128, int32_t* sum_all);
// The level's arranged order of one token's K activations (out: K bytes).
using ArrangeFn = void (*)(const int8_t* q, int64_t K, int8_t* out);

struct Kernels {
  const char* level = "scalar";
  RowsFn i2s = nullptr;     // null: decode rows and use dot
  RowsFn tq2 = nullptr;
  RowsFn tq1 = nullptr;
  DotFn dot = nullptr;
  ArrangeFn arrange = nullptr;  // null: value order
  QuantFn quantize = nullptr;
};

// The kernels for this CPU (capped by KILN_CPU), and the portable ones.
const Kernels& kernels();
const Kernels& scalar_kernels();
// Every level this CPU can run, scalar first (for tests comparing them).
int available_levels(const Kernels** out, int max);

// y[t][r] = W[r] . x[t] for a ternary matrix of N rows and K columns, split
// over the pool's threads by output rows.
void matmul(ThreadPool& pool, const Kernels& k, DType t, const void* data, int64_t N,
            int64_t K, const float* x, int64_t n_tokens, float* y);

}  // namespace ternary
}  // namespace kiln
