// A sampled token's draw from its top candidates: the filters (top-p,
// min-p), the temperature and the pick, defined once for the host's sampler
// and for a GPU that draws where the logits are. Both give the same token
// for the same candidates: every value below is made by the same rounded
// operations in the same order on either side (double precision, each
// operation rounded on its own, never fused into a multiply-add; an exp of
// our own rather than the platform's), and the random number of a draw is a
// function of the seed and the draw's index alone, not of a generator's
// state that one side would have to hand to the other.
//
// The inline functions are internal to each translation unit (static): host
// code calls draw_candidates(), whose file is built without fused
// multiply-adds, so that a build for a CPU with FMA (KILN_NATIVE) cannot
// fuse them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kiln/core/host_device.h"
#include "kiln/core/splitmix.h"
#include "kiln/core/top_k.h"

namespace kiln {

// The most candidates a draw made where the logits are takes
// (Backend::draw_rows): Sampler::model_top_k's limit.
inline constexpr int64_t kDrawMaxTopK = 1024;

// What one draw needs beyond the candidates: the sampler's settings and the
// index of this draw among the sequence's draws (0 for its first token).
struct DrawSpec {
  float temperature = 0.8f;  // > 0
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  int32_t top_k = 40;        // the candidates drawn from, the first top_k in by_logit's order
  uint64_t seed = 0;
  uint64_t index = 0;
};

namespace draw_detail {

// Double arithmetic rounded after each operation (on the device the
// intrinsics, which are never contracted into a fused multiply-add).
KILN_HD static inline double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
KILN_HD static inline double sub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
KILN_HD static inline double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
KILN_HD static inline double div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
KILN_HD static inline double from_bits(uint64_t bits) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
#endif
}

}  // namespace draw_detail

// e^x for x <= 0, within a few units in the last place: 0 below -708
// (where e^x leaves the normal doubles; a weight that small changes no
// draw) and for NaN. x = k ln 2 + r with |r| <= ln 2 / 2 (k ln 2 in two
// parts, the first exact for |k| < 2^11), e^r by its Taylor series to r^13
// (the rest below 4e-18 of it), times 2^k made from its bits.
KILN_HD static inline double draw_exp(double x) {
  using namespace draw_detail;
  if (!(x >= -708.0)) return 0.0;
  constexpr double kLog2e = 0x1.71547652b82fep+0;
  constexpr double kLn2Hi = 0x1.62e42feep-1;         // ln 2's first 33 bits
  constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;  // ln 2 - kLn2Hi
  // 1 / n!, n = 13 down to 2, each correctly rounded.
  constexpr double kInvFactorial[12] = {
      0x1.6124613a86d09p-33, 0x1.1eed8eff8d898p-29, 0x1.ae64567f544e4p-26,
      0x1.27e4fb7789f5cp-22, 0x1.71de3a556c734p-19, 0x1.a01a01a01a01ap-16,
      0x1.a01a01a01a01ap-13, 0x1.6c16c16c16c17p-10, 0x1.1111111111111p-7,
      0x1.5555555555555p-5,  0x1.5555555555555p-3,  0x1.0p-1};
  // k = floor(x / ln 2 + 1/2), as a truncation stepped down for negative
  // fractions (floor itself is a library call on a CPU without SSE4.1).
  const double v = add(mul(x, kLog2e), 0.5);
  double k = double(int64_t(v));
  if (k > v) k = sub(k, 1.0);
  const double r = sub(sub(x, mul(k, kLn2Hi)), mul(k, kLn2Lo));
  double p = kInvFactorial[0];
  for (int i = 1; i < 12; ++i) p = add(mul(p, r), kInvFactorial[i]);
  p = add(mul(p, r), 1.0);  // 1 / 1!
  p = add(mul(p, r), 1.0);  // 1 / 0!
  // k is in [-1022, 0] here, so 2^k is a normal double and the product exact.
  return mul(p, from_bits(uint64_t(int64_t(k) + 1023) << 52));
}

// The uniform number in [0, 1) of draw `index` of a sequence seeded `seed`:
// splitmix64's value at that index of a sequence started from the mixed
// seed (mixed, so that nearby seeds do not give shifted sequences).
KILN_HD static inline double draw_uniform(uint64_t seed, uint64_t index) {
  const uint64_t z = splitmix64_mix(splitmix64_mix(seed) + (index + 1) * kSplitmixGamma);
  return draw_detail::mul(double(z >> 11), 0x1.0p-53);
}

// How many of n >= 1 candidates in by_logit's order the filters keep,
// given e[i] = draw_exp(logit_i - logit_0) (temperature 1, as top-p and
// min-p are defined) and their total: cut where their probabilities first
// add up to top_p, then to those of at least min_p times the first's.
// *decided: whether the cut falls within these n, so that candidates after
// them (of a longer list whose total this is) could change nothing.
KILN_HD static inline int64_t draw_keep_of_total(const double* e, int64_t n, double total,
                                                 float top_p, float min_p, bool* decided) {
  using namespace draw_detail;
  int64_t keep = n;
  *decided = false;
  if (top_p < 1.0f) {
    double cumulative = 0;
    for (int64_t i = 0; i < n; ++i) {
      cumulative = add(cumulative, div(e[i], total));
      if (cumulative >= double(top_p)) {
        keep = i + 1;
        *decided = true;
        break;
      }
    }
  }
  if (min_p > 0.0f) {
    const double floor_p = mul(div(e[0], total), double(min_p));
    int64_t cut = 1;
    while (cut < keep && div(e[cut], total) >= floor_p) ++cut;
    if (cut < n) *decided = true;
    keep = cut;
  }
  return keep;
}

// draw_keep_of_total for all of a row's candidates: their total summed in
// order.
KILN_HD static inline int64_t draw_keep(const double* e, int64_t n, float top_p, float min_p) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total = draw_detail::add(total, e[i]);
  bool decided;
  return draw_keep_of_total(e, n, total, top_p, min_p, &decided);
}

// Which of the kept candidates is drawn, given their weights w[i] =
// draw_exp((logit_i - logit_0) / temperature) and u = draw_uniform(...).
KILN_HD static inline int64_t draw_pick(const double* w, int64_t keep, double u) {
  using namespace draw_detail;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum = add(sum, w[i]);
  double r = mul(u, sum);
  for (int64_t i = 0; i < keep; ++i) {
    r = sub(r, w[i]);
    if (r < 0) return i;
  }
  return keep - 1;
}

// The two weights of candidate logit l against the first (largest) l0.
KILN_HD static inline double draw_weight_t1(float l, float l0) {
  return draw_exp(draw_detail::sub(double(l), double(l0)));
}
KILN_HD static inline double draw_weight(float l, float l0, float temperature) {
  return draw_exp(draw_detail::div(draw_detail::sub(double(l), double(l0)), double(temperature)));
}

// The token drawn from candidates[0, n) in by_logit's order (the first
// spec.top_k of a row's, no NaN), n >= 1, as a GPU draws it (draw_rows).
int32_t draw_candidates(const Candidate* candidates, size_t n, const DrawSpec& spec);

// draw_candidates for the first n candidates of a longer list (top-k off:
// the whole vocabulary), whose temperature-1 total (the sum of draw_exp
// of each logit less the first) is `total`: the token drawn, or -1 where
// the filters would keep candidates past these n.
int32_t draw_head_candidates(const Candidate* candidates, size_t n, double total,
                             const DrawSpec& spec);

// The token drawn from a row of logits: its first spec.top_k candidates
// (0 < top_k), drawn from as draw_candidates does; 0 for a row of NaN only.
int32_t draw_from_logits(const float* logits, int64_t vocab, const DrawSpec& spec);

}  // namespace kiln
