// Every op of the CUDA backend against the CPU backend on random inputs.
//
// Tolerances (max |gpu - cpu| / max |cpu| unless said otherwise):
// - embed (dequantization): exact; both sides decode the same bytes with the
//   same multiplies, unfused.
// - matmul: against dequantized rows summed in f64 (the CPU backend
//   quantizes activations to int8 with its own block sizes, so it is not the
//   reference here). F32/F16/BF16 weights: 2e-5 (f32 sums in the GPU's
//   order, ~1e-6). Block formats, up to 8 tokens: the GPU quantizes the
//   activations to int8 per 32 values (scale amax / 127, round half away
//   from zero) and the reference does the same, 2e-5. Block formats,
//   prefill: f16 tensor cores on f16 tiles and activations (11-bit
//   significands on both operands, as TF32's), f32 accumulation, 2e-3.
//   BF16 prefill (T = 40): the bf16 tensor cores on the exact weights with
//   the activations rounded to bf16 (8-bit significands, 2^-9 relative
//   each; the sums' error averages to ~1e-3 of the largest output): 4e-3.
//   With Backend::set_exact_bf16_products (the hybrids) the activations are
//   split into three bf16 parts (all 24 significand bits), so f32-exact
//   products: 2e-5, checked too.
// - fused decode step (rmsnorm + q/k/v in one launch, q/k norms + rope +
//   cache store in one launch, silu_mul + down + residual add): 1e-6 against
//   the same ops run one by one on the GPU; the per-row arithmetic is the
//   same, so in practice equal.
// - Gated DeltaNet ops: 1e-6 against the CPU (both compute in double inside;
//   only the f32 results' rounding differs), the delta rule 1e-5 (the CPU's
//   and the GPU's forms, chunked or recurrent, differ at ~1e-9).
// - attention: 2e-5, online softmax and split merging against a two-pass one.
// - rmsnorm, rope, silu_mul, add, gather/scatter: 1e-6 (at most an ulp or two:
//   sum order, expf).
// - moe_route: identical ids, weights equal (computed on the host the same way).
// - vision ops: layernorm, add_bias, gelu 1e-6 (same arithmetic; erff/tanhf
//   against libm within an ulp or two); attention_segments 2e-6 (online
//   softmax in tiles of 32 keys against the CPU's exact max first).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/argmax.h"
#include "kiln/core/draw.h"
#include "kiln/core/error.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/quantize.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

struct Fixture {
  std::unique_ptr<Backend> cpu, gpu;
};

Fixture& fx() {
  static Fixture f = [] {
    Fixture x;
    BackendOptions o;
    x.cpu = make_cpu_backend(o);
    if (cuda_device_count() > 0) x.gpu = make_cuda_backend(o);
    return x;
  }();
  return f;
}

#define REQUIRE_GPU() \
  if (!fx().gpu) GTEST_SKIP() << "no CUDA device"

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A vector in GPU memory.
struct Dev {
  DeviceBuffer buf;
  size_t n = 0;
  Dev(Backend& b, const std::vector<float>& v) : buf(b, v.size() * 4), n(v.size()) {
    b.to_device(buf.get(), v.data(), v.size() * 4);
  }
  Dev(Backend& b, size_t count) : buf(b, count * 4), n(count) { b.fill_zero(buf.get(), count * 4); }
  float* f() const { return buf.f32(); }
  std::vector<float> get(Backend& b) const {
    std::vector<float> v(n);
    b.to_host(v.data(), buf.get(), n * 4);
    return v;
  }
};

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    max_ref = std::max(max_ref, std::abs(double(want[i])));
    max_err = std::max(max_err, std::abs(double(got[i]) - want[i]));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

// x rounded as the GPU's block-format products round activations.
std::vector<float> q8_activations(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (size_t i = b; i < b + 32; ++i) out[i] = float(int(std::round(x[i] * id))) * d;
  }
  return out;
}

struct Quantized {
  std::vector<uint8_t> bytes;
  TensorView view;
};

Quantized make_weight(DType t, int64_t N, int64_t K, uint32_t seed) {
  Quantized q;
  const auto w = random_vec(size_t(N * K), seed, 0.5f);
  const size_t rb = dtype_row_bytes(t, K);
  q.bytes.resize(rb * size_t(N));
  for (int64_t r = 0; r < N; ++r) quantize_row(t, w.data() + r * K, q.bytes.data() + r * rb, K);
  q.view.name = "w";
  q.view.dtype = t;
  q.view.shape = {N, K};
  q.view.data = q.bytes.data();
  q.view.nbytes = q.bytes.size();
  return q;
}

// Weight q ([N, K]) times each of the T rows of xr, every output summed
// in double from the dequantized weights: y[t * N + r].
std::vector<float> reference_products(const Quantized& q, const std::vector<float>& xr,
                                      int64_t T) {
  const int64_t N = q.view.shape[0], K = q.view.shape[1];
  std::vector<float> y(size_t(T * N)), row(static_cast<size_t>(K));
  for (int64_t r = 0; r < N; ++r) {
    dequantize_row(q.view.dtype, q.bytes.data() + size_t(r) * q.view.row_bytes(), row.data(), K);
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(row[k]) * xr[t * K + k];
      y[t * N + r] = float(acc);
    }
  }
  return y;
}

class MatmulTest : public testing::TestWithParam<DType> {};

TEST_P(MatmulTest, MatchesCpu) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  const DType t = GetParam();
  const bool plain = t == DType::F32 || t == DType::F16 || t == DType::BF16;
  for (int64_t K : plain ? std::vector<int64_t>{512, 72} : std::vector<int64_t>{512, 1536}) {
    const int64_t N = 203;
    auto q = make_weight(t, N, K, uint32_t(K));
    Weight wc = cpu.load_weight(q.view), wg = gpu.load_weight(q.view);
    for (int64_t T : {1, 3, 8, 40}) {
      const auto x = random_vec(size_t(T * K), uint32_t(T + 7));
      const bool int8_x = !plain && T <= 8;
      const auto want = reference_products(q, int8_x ? q8_activations(x) : x, T);
      Dev xg(gpu, x), yg(gpu, size_t(T * N));
      gpu.matmul(wg, xg.f(), T, yg.f());
      const bool bf16_prefill = t == DType::BF16 && T > 8;
      const double tol = bf16_prefill ? 4e-3 : plain || T <= 8 ? 2e-5 : 2e-3;
      EXPECT_LE(rel_err(yg.get(gpu), want), tol) << dtype_name(t) << " K=" << K << " T=" << T;
      if (bf16_prefill) {
        gpu.set_exact_bf16_products(true);
        gpu.matmul(wg, xg.f(), T, yg.f());
        gpu.set_exact_bf16_products(false);
        EXPECT_LE(rel_err(yg.get(gpu), want), 2e-5) << "exact BF16 K=" << K << " T=" << T;
      }
    }
    // Embedding rows: the dequantization itself, exactly.
    const std::vector<int32_t> ids = {5, 0, 202, 5, 77};
    std::vector<float> want(ids.size() * size_t(K));
    cpu.embed(wc, ids.data(), int64_t(ids.size()), want.data());
    Dev out(gpu, want.size());
    gpu.embed(wg, ids.data(), int64_t(ids.size()), out.f());
    EXPECT_EQ(rel_err(out.get(gpu), want), 0.0) << dtype_name(t) << " embed";
  }
}

// Serving (Backend::set_batch_invariant): each token of a product of T
// tokens gets the same bits as the token alone, for T the decode kernels
// take whole (up to 8, or 32 on Hopper) and beyond (in chunks), so a greedy
// request's output does not depend on who shares its steps. Widths where
// the 32-token input fits beside the weight buffers (1536) and where it
// does not (4608: chunks of fewer tokens), and rows of at most 16 pairs of
// units (1024: half of a warp's lanes without one).
TEST_P(MatmulTest, BatchInvariantTokensEqualThemselvesAlone) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  const DType t = GetParam();
  const bool plain = t == DType::F32 || t == DType::F16 || t == DType::BF16;
  gpu.set_batch_invariant(true);
  struct Off {  // the fixture's backend is shared with the other tests
    Backend& b;
    ~Off() { b.set_batch_invariant(false); }
  } off{gpu};
  // Plain formats also at 9728 wide with enough rows that one token takes
  // 8192-byte pieces and several take 4096-byte ones (piece_bytes): the
  // same chunks a lane, so the same bits.
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      plain ? std::vector<std::pair<int64_t, int64_t>>{{72, 203}, {512, 203}, {9728, 1500}}
            : std::vector<std::pair<int64_t, int64_t>>{{1024, 203}, {1536, 203}, {4608, 203}};
  for (const auto& [K, N] : shapes) {
    auto q = make_weight(t, N, K, uint32_t(K) + 1);
    Weight wg = gpu.load_weight(q.view);
    for (int64_t T : {2, 9, 32, 40, 77}) {
      const auto x = random_vec(size_t(T * K), uint32_t(T + 11));
      Dev xg(gpu, x), yg(gpu, size_t(T * N)), one(gpu, size_t(N));
      gpu.matmul(wg, xg.f(), T, yg.f());
      const std::vector<float> y = yg.get(gpu);
      for (int64_t tt = 0; tt < T; ++tt) {
        gpu.matmul(wg, xg.f() + tt * K, 1, one.f());
        const std::vector<float> alone = one.get(gpu);
        int64_t differ = 0;
        for (int64_t r = 0; r < N; ++r) differ += y[size_t(tt * N + r)] != alone[size_t(r)];
        ASSERT_EQ(differ, 0) << dtype_name(t) << " K=" << K << " token " << tt << " of " << T;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, MatmulTest,
                         testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0,
                                         DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                         DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                         DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// A decode step's worth of ops, recorded (a one-token embed starts a
// deferred step) so the backend fuses them, against the same ops run
// eagerly one at a time. Three rounds: eager run, graph capture, replay.
// Then the same without the cache store (a serving step's attention
// stores k and v itself), whose per-head ops fuse without it.
// The second format is v's and down's (Q4_K_M files keep them in Q6_K, so
// that v takes the input the q/k product prepared).
class FusedStep : public testing::TestWithParam<std::pair<DType, DType>> {};

TEST_P(FusedStep, MatchesUnfused) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  const DType t = GetParam().first, tv = GetParam().second;
  const int64_t H = 512, F = 768, NQ = 256, NK = 128;
  auto wq = make_weight(t, NQ, H, 1), wk = make_weight(t, NK, H, 2), wv = make_weight(tv, NK, H, 3);
  auto wg = make_weight(t, F, H, 4), wu = make_weight(t, F, H, 5), wd = make_weight(tv, H, F, 6);
  auto wo = make_weight(t, H, NQ, 10);
  auto table = make_weight(DType::F32, 4, H, 7);
  Weight q = gpu.load_weight(wq.view), k = gpu.load_weight(wk.view), v = gpu.load_weight(wv.view);
  Weight g = gpu.load_weight(wg.view), u = gpu.load_weight(wu.view), d = gpu.load_weight(wd.view);
  Weight e = gpu.load_weight(table.view), o = gpu.load_weight(wo.view);
  const auto nw = random_vec(size_t(H), 9);
  Dev norm(gpu, nw);
  // Per-head ops between the products and attention (fused into one launch
  // when recorded): q/k norms of head_dim 64, rotary embedding, the cache
  // store. The cache holds 70 earlier positions, so that a one-token
  // attention has three splits and the new row lands in the last.
  const int64_t hd = 64, cap = 160, pos = 70;
  const auto qn = random_vec(size_t(hd), 11), kn = random_vec(size_t(hd), 12);
  std::vector<float> inv(size_t(hd / 2));
  for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(10000.0f, -2.0f * float(i) / hd);
  Dev qnorm(gpu, qn), knorm(gpu, kn), invf(gpu, inv);
  // One token (a decode step), then three (a short prompt, or a serving
  // step of three sequences: recorded and replayed the same way); both
  // rotations (halves, and the adjacent pairs of llama GGUFs).
  for (const RopeStyle style : {RopeStyle::Halves, RopeStyle::Interleaved})
  for (int64_t T : {1, 3}) {
    const auto x0 = random_vec(size_t(T * H), uint32_t(8 + T));
    // Allocated once for the rounds: a free drops the recorded graphs.
    Dev kc(gpu, size_t(NK * cap)), vc(gpu, size_t(NK * cap)), att(gpu, size_t(T * NQ));
    const auto k0 = random_vec(size_t(NK * cap), 13), v0 = random_vec(size_t(NK * cap), 14);
    const KvLayer layer{kc.f(), vc.f(), DType::F32, NK / hd, hd, cap};
    Dev x(gpu, x0), h(gpu, size_t(T * H)), yq(gpu, size_t(T * NQ)), yk(gpu, size_t(T * NK)),
        yv(gpu, size_t(T * NK)), ga(gpu, size_t(T * F)), up(gpu, size_t(T * F)),
        dn(gpu, size_t(T * H)), scratch(gpu, size_t(T * H));
    std::vector<int32_t> ids, positions;
    for (int64_t i = 0; i < T; ++i) {
      ids.push_back(int32_t(1 + i % 3));
      positions.push_back(int32_t(pos + i));
    }
    // store: the cache store, then attention over the cache into the output
    // projection (which otherwise reads q).
    auto run = [&](bool deferred, bool store, std::vector<float>* outs) {
      gpu.to_device(kc.f(), k0.data(), k0.size() * 4);
      gpu.to_device(vc.f(), v0.data(), v0.size() * 4);
      gpu.to_device(x.f(), x0.data(), x0.size() * 4);
      if (deferred) gpu.embed(e, ids.data(), T, scratch.f());
      gpu.rmsnorm(x.f(), norm.f(), T, H, 1e-6f, h.f());
      gpu.matmul(q, h.f(), T, yq.f());
      gpu.matmul(k, h.f(), T, yk.f());
      gpu.matmul(v, h.f(), T, yv.f());
      gpu.rmsnorm(yq.f(), qnorm.f(), T * NQ / hd, hd, 1e-6f, yq.f());
      gpu.rmsnorm(yk.f(), knorm.f(), T * NK / hd, hd, 1e-6f, yk.f());
      gpu.rope(yq.f(), T, NQ / hd, hd, hd, positions.data(), invf.f(), style);
      gpu.rope(yk.f(), T, NK / hd, hd, hd, positions.data(), invf.f(), style);
      if (store) {
        gpu.store_kv(layer, yk.f(), yv.f(), T, pos);
        AttentionParams ap;
        ap.n_tokens = T;
        ap.start = pos;
        ap.n_heads = NQ / hd;
        ap.scale = 0.125f;
        gpu.attention(yq.f(), layer, ap, att.f());
      }
      // The output projection, then the residual add.
      gpu.matmul(o, store ? att.f() : yq.f(), T, dn.f());
      gpu.add(x.f(), dn.f(), T * H);
      gpu.rmsnorm(x.f(), norm.f(), T, H, 1e-6f, h.f());
      gpu.matmul(g, h.f(), T, ga.f());
      gpu.matmul(u, h.f(), T, up.f());
      gpu.silu_mul(ga.f(), up.f(), T * F, ga.f());
      gpu.matmul(d, ga.f(), T, dn.f());
      gpu.add(x.f(), dn.f(), T * H);
      // The gather's rows last (the eager run's are put in place after).
      std::vector<const Dev*> bufs{&x, &h, &yq, &yk, &yv, &ga, &dn, &kc, &vc};
      if (store) bufs.push_back(&att);
      bufs.push_back(&scratch);
      for (const Dev* b : bufs) {
        outs->push_back(0.0f);  // separator
        const auto got = b->get(gpu);
        outs->insert(outs->end(), got.begin(), got.end());
      }
    };
    for (bool store : {true, false}) {
      std::vector<float> want;
      run(false, store, &want);
      // The eager run embeds nothing: the recorded run's gather, alone.
      {
        Dev alone(gpu, size_t(T * H));
        gpu.embed(e, ids.data(), T, alone.f());
        const auto rows = alone.get(gpu);
        std::copy(rows.begin(), rows.end(), want.end() - int64_t(rows.size()));
      }
      for (int round = 0; round < 3; ++round) {
        std::vector<float> got;
        run(true, store, &got);
        EXPECT_LE(rel_err(got, want), 1e-6) << dtype_name(t) << "/" << dtype_name(tv) << " T=" << T
                                            << " round " << round << " store " << store
                                            << " interleaved " << (style == RopeStyle::Interleaved);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, FusedStep,
    testing::Values(std::pair{DType::BF16, DType::BF16}, std::pair{DType::F32, DType::F32},
                    std::pair{DType::Q8_0, DType::Q8_0}, std::pair{DType::Q4_K, DType::Q4_K},
                    std::pair{DType::Q6_K, DType::Q6_K}, std::pair{DType::Q4_K, DType::Q6_K}),
    [](const auto& info) {
      std::string name(dtype_name(info.param.first));
      if (info.param.second != info.param.first) {
        name += "_";
        name += dtype_name(info.param.second);
      }
      return name;
    });

// A one-token product shaped like an output head (2560 wide, 40000 rows:
// at least 8 rows for each of the 32 warps of each SM), where Q6_K takes
// two of its 2100-byte rows a piece (plan_pieces) and Q8_0 one: against
// the CPU's sums, and in a serving step (batch-invariant, two tokens) the
// same bits as alone.
TEST(CudaOps, OutputHeadShapedProduct) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  const int64_t K = 2560, N = 40000;
  for (const DType t : {DType::Q6_K, DType::Q8_0}) {
    auto q = make_weight(t, N, K, 90);
    Weight wg = gpu.load_weight(q.view);
    const auto x = random_vec(size_t(2 * K), 91);
    const auto want =
        reference_products(q, q8_activations(std::vector<float>(x.begin(), x.begin() + K)), 1);
    Dev xg(gpu, x), one(gpu, size_t(N)), two(gpu, size_t(2 * N));
    gpu.matmul(wg, xg.f(), 1, one.f());
    const auto alone = one.get(gpu);
    EXPECT_LE(rel_err(alone, want), 2e-5) << dtype_name(t);
    gpu.set_batch_invariant(true);
    gpu.matmul(wg, xg.f(), 2, two.f());
    gpu.set_batch_invariant(false);
    const auto both = two.get(gpu);
    int64_t differ = 0;
    for (int64_t r = 0; r < N; ++r) differ += both[size_t(r)] != alone[size_t(r)];
    EXPECT_EQ(differ, 0) << dtype_name(t) << ": token 0 of 2 against alone";
  }
}

// rmsnorm in front of a one-token product, recorded (so that the product's
// blocks make the normed int8 input themselves, in one pass up to 4096
// values: one batch of loads for the sum of squares up to 3072, two up to
// 4096, the per-token loop beyond) against the same ops run eagerly one at
// a time (the standalone rmsnorm kernel, then the product preparing the
// normed row). The same arithmetic either way: 1e-6, as FusedStep.
TEST(CudaOps, FusedRmsnormProductWidths) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  const int64_t N = 192;
  for (const DType t : {DType::Q8_0, DType::Q4_K})
    for (const int64_t H : {int64_t(512), int64_t(2560), int64_t(3072), int64_t(4096),
                            int64_t(5120)}) {
      auto w = make_weight(t, N, H, uint32_t(40 + H));
      auto table = make_weight(DType::F32, 2, H, 41);
      Weight wg = gpu.load_weight(w.view), eg = gpu.load_weight(table.view);
      const auto x0 = random_vec(size_t(H), uint32_t(42 + H));
      const auto nw = random_vec(size_t(H), uint32_t(43 + H));
      Dev x(gpu, x0), norm(gpu, nw), h(gpu, size_t(H)), y(gpu, size_t(N)), e(gpu, size_t(H));
      auto run = [&](bool deferred) {
        const int32_t id = 1;  // a one-token embed starts a deferred (fused) step
        if (deferred) gpu.embed(eg, &id, 1, e.f());
        gpu.rmsnorm(x.f(), norm.f(), 1, H, 1e-6f, h.f());
        gpu.matmul(wg, h.f(), 1, y.f());
        auto out = y.get(gpu);
        const auto normed = h.get(gpu);
        out.insert(out.end(), normed.begin(), normed.end());
        return out;
      };
      const auto want = run(false);
      for (int round = 0; round < 2; ++round)  // capture, then replay
        EXPECT_LE(rel_err(run(true), want), 1e-6)
            << dtype_name(t) << " H=" << H << " round " << round;
    }
}

// The feed-forward block of one token as the models run it (rmsnorm, gate,
// up, silu_mul in place, down), fused against eager at the 4B's and 2B's
// widths and smaller: rmsnorm into the self-preparing gate/up product,
// silu_mul into down's input preparation (9728 and 6144 wide), down alone
// eagerly; the same bits as each op alone, for the formats of Q4_K_M,
// Q4_0, Q5_K_M and Q8_0 files.
TEST(CudaOps, FusedFeedForward) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  struct Case {
    DType gate_up, down;
    int64_t H, I;
  };
  for (const Case c : {Case{DType::Q4_K, DType::Q6_K, 2560, 9728},
                       Case{DType::Q4_K, DType::Q4_K, 2048, 6144},
                       Case{DType::Q4_0, DType::Q4_0, 1024, 3072},
                       Case{DType::Q5_K, DType::Q5_K, 512, 1536},
                       Case{DType::Q8_0, DType::Q8_0, 2560, 9728}}) {
    const uint32_t seed = uint32_t(c.H + c.I);
    auto wg = make_weight(c.gate_up, c.I, c.H, seed + 1);
    auto wu = make_weight(c.gate_up, c.I, c.H, seed + 2);
    auto wd = make_weight(c.down, c.H, c.I, seed + 3);
    auto table = make_weight(DType::F32, 2, c.H, 41);
    Weight gate_w = gpu.load_weight(wg.view), up_w = gpu.load_weight(wu.view),
           down_w = gpu.load_weight(wd.view), eg = gpu.load_weight(table.view);
    const auto x0 = random_vec(size_t(c.H), seed + 4);
    const auto nw = random_vec(size_t(c.H), seed + 5);
    Dev x(gpu, x0), norm(gpu, nw), h(gpu, size_t(c.H)), gate(gpu, size_t(c.I)),
        up(gpu, size_t(c.I)), out(gpu, size_t(c.H)), e(gpu, size_t(c.H));
    auto run = [&](bool deferred) {
      const int32_t id = 1;  // a one-token embed starts a deferred (fused) step
      if (deferred) gpu.embed(eg, &id, 1, e.f());
      gpu.rmsnorm(x.f(), norm.f(), 1, c.H, 1e-6f, h.f());
      gpu.matmul(gate_w, h.f(), 1, gate.f());
      gpu.matmul(up_w, h.f(), 1, up.f());
      gpu.silu_mul(gate.f(), up.f(), c.I, gate.f());
      gpu.matmul(down_w, gate.f(), 1, out.f());
      auto all = out.get(gpu);
      for (Dev* d : {&gate, &up}) {
        const auto v = d->get(gpu);
        all.insert(all.end(), v.begin(), v.end());
      }
      return all;
    };
    const auto want = run(false);
    for (int round = 0; round < 2; ++round)  // capture, then replay
      EXPECT_LE(rel_err(run(true), want), 1e-6)
          << dtype_name(c.gate_up) << "/" << dtype_name(c.down) << " H=" << c.H << " I=" << c.I
          << " round " << round;
  }
}

TEST(CudaOps, DeltaNetOps) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  // conv1d_silu, several calls in a row, so each starts from the state the
  // one before advanced: prompts (8 tokens or more: a thread per token and
  // channel) and short steps (a thread per channel walking the tokens).
  const int64_t C = 96, kern = 4;
  const auto cw = random_vec(size_t(C * kern), 20, 0.5f);
  std::vector<float> st_c(size_t((kern - 1) * C), 0.0f);
  Dev cwg(gpu, cw), st_g(gpu, st_c);
  for (int64_t T : {5, 40, 1, 9, 2}) {
    const auto x = random_vec(size_t(T * C), uint32_t(21 + T));
    std::vector<float> want(x.size());
    cpu.conv1d_silu(x.data(), T, C, cw.data(), kern, st_c.data(), want.data());
    Dev xg(gpu, x), og(gpu, x.size());
    gpu.conv1d_silu(xg.f(), T, C, cwg.f(), kern, st_g.f(), og.f());
    EXPECT_LE(rel_err(og.get(gpu), want), 1e-6) << "conv1d_silu T=" << T;
    EXPECT_LE(rel_err(st_g.get(gpu), st_c), 0.0) << "conv state T=" << T;
  }
  // Gates, in place as the models call them.
  const int64_t T = 70, nk = 2, nv = 4, dk = 32, dv = 48;
  auto a = random_vec(size_t(T * nv), 30), b = random_vec(size_t(T * nv), 31);
  const auto A = random_vec(size_t(nv), 32, 0.5f), dt = random_vec(size_t(nv), 33);
  std::vector<float> An(A);
  for (auto& x : An) x = -std::exp(x);
  Dev ag(gpu, a), bg(gpu, b), Ag(gpu, An), dtg(gpu, dt);
  cpu.deltanet_gates(a.data(), b.data(), An.data(), dt.data(), T, nv, a.data(), b.data());
  gpu.deltanet_gates(ag.f(), bg.f(), Ag.f(), dtg.f(), T, nv, ag.f(), bg.f());
  EXPECT_LE(rel_err(ag.get(gpu), a), 1e-6) << "g";
  EXPECT_LE(rel_err(bg.get(gpu), b), 1e-6) << "beta";
  // The rule: a prompt (chunked on the CPU) then one token, both head layouts.
  for (bool tiled : {false, true}) {
    const int64_t stride = 2 * nk * dk + nv * dv;
    std::vector<float> S(size_t(nv * dk * dv), 0.0f);
    Dev Sg(gpu, S);
    for (int64_t n : {T - 1, int64_t(1)}) {
      const int64_t t0 = n == 1 ? T - 1 : 0;
      const auto qkv = random_vec(size_t(n * stride), uint32_t(40 + n + tiled));
      DeltaRuleParams p;
      p.n_tokens = n;
      p.n_k_heads = nk;
      p.n_v_heads = nv;
      p.head_k_dim = dk;
      p.head_v_dim = dv;
      p.tiled_heads = tiled;
      p.chunk = 16;
      std::vector<float> want(size_t(n * nv * dv));
      cpu.gated_delta_rule(qkv.data(), a.data() + t0 * nv, b.data() + t0 * nv, S.data(), p,
                           want.data());
      Dev qg(gpu, qkv), og(gpu, want.size());
      gpu.gated_delta_rule(qg.f(), ag.f() + t0 * nv, bg.f() + t0 * nv, Sg.f(), p, og.f());
      EXPECT_LE(rel_err(og.get(gpu), want), 1e-5) << "delta rule n=" << n << " tiled=" << tiled;
      EXPECT_LE(rel_err(Sg.get(gpu), S), 1e-5) << "state n=" << n << " tiled=" << tiled;
    }
  }
  // Qwen3.5's head size (128 x 128), a prompt over two full chunks of the
  // GPU's chunked form and a partial one, then a prompt shorter than a chunk
  // (the recurrent form) continuing from its state, then one token.
  {
    const int64_t nk2 = 2, nv2 = 4, d2 = 128, stride = 2 * nk2 * d2 + nv2 * d2;
    std::vector<float> S(size_t(nv2 * d2 * d2), 0.0f);
    Dev Sg(gpu, S);
    for (int64_t n : {int64_t(150), int64_t(20), int64_t(1)}) {
      const auto qkv = random_vec(size_t(n * stride), uint32_t(60 + n));
      auto ga = random_vec(size_t(n * nv2), uint32_t(61 + n)), gb = random_vec(size_t(n * nv2), uint32_t(62 + n));
      cpu.deltanet_gates(ga.data(), gb.data(), An.data(), dt.data(), n, nv2, ga.data(), gb.data());
      DeltaRuleParams p;
      p.n_tokens = n;
      p.n_k_heads = nk2;
      p.n_v_heads = nv2;
      p.head_k_dim = d2;
      p.head_v_dim = d2;
      p.chunk = 64;
      std::vector<float> want(size_t(n * nv2 * d2));
      cpu.gated_delta_rule(qkv.data(), ga.data(), gb.data(), S.data(), p, want.data());
      Dev qg(gpu, qkv), gg(gpu, ga), bg2(gpu, gb), og(gpu, want.size());
      gpu.gated_delta_rule(qg.f(), gg.f(), bg2.f(), Sg.f(), p, og.f());
      EXPECT_LE(rel_err(og.get(gpu), want), 1e-5) << "delta rule 128x128 n=" << n;
      EXPECT_LE(rel_err(Sg.get(gpu), S), 1e-5) << "state 128x128 n=" << n;
    }
  }
  // Gated norm (in place) and the sigmoid gates.
  const int64_t rows = 12, dim = 48;
  auto x = random_vec(size_t(rows * dim), 50);
  const auto z = random_vec(size_t(rows * dim), 51), w = random_vec(size_t(dim), 52);
  Dev xg(gpu, x), zg(gpu, z), wg(gpu, w);
  cpu.rmsnorm_gated(x.data(), w.data(), z.data(), rows, dim, 1e-6f, x.data());
  gpu.rmsnorm_gated(xg.f(), wg.f(), zg.f(), rows, dim, 1e-6f, xg.f());
  EXPECT_LE(rel_err(xg.get(gpu), x), 1e-6) << "rmsnorm_gated";
  for (bool per_row : {false, true}) {
    cpu.sigmoid_mul(x.data(), z.data(), rows, dim, per_row);
    gpu.sigmoid_mul(xg.f(), zg.f(), rows, dim, per_row);
    EXPECT_LE(rel_err(xg.get(gpu), x), 1e-6) << "sigmoid_mul per_row=" << per_row;
  }
}

// BitNet's ternary product: the same integer sums and the same final
// float operations as the CPU backend, so equal bit for bit; I2_S and
// TQ2_0, one token (decode) to many (prefill), rows of 1.5 and 4 groups.
TEST(CudaOps, TernaryMatmulEqualsCpu) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  for (DType t : {DType::I2_S, DType::TQ2_0}) {
    // I2_S also in rows that share 128-value groups (the test models' 64
    // and 160): a whole tensor is still whole groups, so 204 rows there.
    for (int64_t K : {512, 1536, 64, 160}) {
      if (t == DType::TQ2_0 && K % 256 != 0) continue;
      const int64_t N = K % 128 == 0 ? 203 : 204;
      auto w = random_vec(size_t(N * K), uint32_t(K) + 3, 1.0f);
      for (auto& v : w) v = std::fabs(v) < 0.4f ? 0.0f : v;  // some zero weights
      Quantized q;
      if (t == DType::I2_S) {
        q.bytes.resize(i2s_tensor_bytes(N * K));
        quantize_i2s(w.data(), N * K, q.bytes.data());
      } else {
        const size_t rb = dtype_row_bytes(t, K);
        q.bytes.resize(rb * size_t(N));
        for (int64_t r = 0; r < N; ++r) quantize_row_tq2_0(w.data() + r * K, q.bytes.data() + r * rb, K);
      }
      q.view.name = "w";
      q.view.dtype = t;
      q.view.shape = {N, K};
      q.view.data = q.bytes.data();
      q.view.nbytes = q.bytes.size();
      Weight wc = cpu.load_weight(q.view), wg = gpu.load_weight(q.view);
      for (int64_t T : {1, 3, 8, 40}) {
        const auto x = random_vec(size_t(T * K), uint32_t(T + 11));
        std::vector<float> want(size_t(T * N));
        cpu.ternary_matmul(wc, x.data(), T, want.data());
        Dev xg(gpu, x), yg(gpu, size_t(T * N));
        gpu.ternary_matmul(wg, xg.f(), T, yg.f());
        EXPECT_EQ(rel_err(yg.get(gpu), want), 0.0) << dtype_name(t) << " K=" << K << " T=" << T;
      }
    }
  }
  const auto g = random_vec(1000, 21), u = random_vec(1000, 22);
  std::vector<float> want(1000);
  cpu.relu2_mul(g.data(), u.data(), 1000, want.data());
  Dev gg(gpu, g), ug(gpu, u), og(gpu, size_t(1000));
  gpu.relu2_mul(gg.f(), ug.f(), 1000, og.f());
  EXPECT_EQ(rel_err(og.get(gpu), want), 0.0);
}

TEST(CudaOps, RmsnormRopeElementwise) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  const int64_t rows = 37, dim = 320;
  const auto x = random_vec(size_t(rows * dim), 1), w = random_vec(size_t(dim), 2);
  std::vector<float> want(x.size());
  cpu.rmsnorm(x.data(), w.data(), rows, dim, 1e-6f, want.data());
  Dev xg(gpu, x), wg(gpu, w), yg(gpu, x.size());
  gpu.rmsnorm(xg.f(), wg.f(), rows, dim, 1e-6f, yg.f());
  EXPECT_LE(rel_err(yg.get(gpu), want), 1e-6);

  for (RopeStyle style : {RopeStyle::Halves, RopeStyle::Interleaved}) {
    const int64_t T = 5, heads = 3, hd = 64, rot = 48;
    auto v = random_vec(size_t(T * heads * hd), 3);
    std::vector<float> inv(size_t(rot / 2));
    for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(10000.0f, -2.0f * float(i) / rot);
    const std::vector<int32_t> pos = {0, 1, 17, 900, 4095};
    Dev vg(gpu, v), ig(gpu, inv);
    cpu.rope(v.data(), T, heads, hd, rot, pos.data(), inv.data(), style);
    gpu.rope(vg.f(), T, heads, hd, rot, pos.data(), ig.f(), style);
    EXPECT_LE(rel_err(vg.get(gpu), v), 1e-6) << "rope style " << int(style);
  }

  const auto a = random_vec(1000, 4), b = random_vec(1000, 5);
  std::vector<float> sm(1000), ad = a;
  cpu.silu_mul(a.data(), b.data(), 1000, sm.data());
  cpu.add(ad.data(), b.data(), 1000);
  Dev ag(gpu, a), bg(gpu, b), og(gpu, size_t(1000));
  gpu.silu_mul(ag.f(), bg.f(), 1000, og.f());
  EXPECT_LE(rel_err(og.get(gpu), sm), 1e-6);
  gpu.add(ag.f(), bg.f(), 1000);
  EXPECT_LE(rel_err(ag.get(gpu), ad), 1e-6);
}

TEST(CudaOps, VisionOps) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  const int64_t rows = 29, dim = 72;
  auto x = random_vec(size_t(rows * dim), 11);
  for (float& v : x) v += 3.0f;  // a mean far from zero, as ViT rows have
  const auto w = random_vec(size_t(dim), 12), b = random_vec(size_t(dim), 13);
  std::vector<float> want(x.size());
  cpu.layernorm(x.data(), w.data(), b.data(), rows, dim, 1e-6f, want.data());
  Dev xg(gpu, x), wg(gpu, w), bg(gpu, b), yg(gpu, x.size());
  gpu.layernorm(xg.f(), wg.f(), bg.f(), rows, dim, 1e-6f, yg.f());
  EXPECT_LE(rel_err(yg.get(gpu), want), 1e-6);

  std::vector<float> biased = x;
  cpu.add_bias(biased.data(), b.data(), rows, dim);
  gpu.add_bias(xg.f(), bg.f(), rows, dim);
  EXPECT_LE(rel_err(xg.get(gpu), biased), 1e-6);

  for (bool tanh_approx : {false, true}) {
    auto g = random_vec(4000, 14, 3.0f);
    Dev gg(gpu, g);
    cpu.gelu(g.data(), int64_t(g.size()), tanh_approx);
    gpu.gelu(gg.f(), int64_t(g.size()), tanh_approx);
    EXPECT_LE(rel_err(gg.get(gpu), g), 1e-6) << "tanh " << tanh_approx;
  }

  // Three segments (two frames and a short one), lengths that cross the
  // 16-query and 32-key tiles; head sizes with one, three and four lanes' worth
  // of dims (16, 72 as Qwen3-VL's tower has, 128).
  const std::vector<int32_t> bounds = {0, 70, 141, 150};
  const int64_t T = 150, heads = 3;
  for (int64_t hd : {16, 72, 128}) {
    const size_t n = size_t(T * heads * hd);
    const auto q = random_vec(n, 15), k = random_vec(n, 16), v = random_vec(n, 17);
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<float> ref(n);
    cpu.attention_segments(q.data(), k.data(), v.data(), T, heads, hd, bounds.data(), 3, scale,
                           ref.data());
    Dev qg(gpu, q), kg(gpu, k), vg(gpu, v), og(gpu, n);
    gpu.attention_segments(qg.f(), kg.f(), vg.f(), T, heads, hd, bounds.data(), 3, scale, og.f());
    EXPECT_LE(rel_err(og.get(gpu), ref), 2e-6) << "head_dim " << hd;
  }
}

TEST(CudaOps, MoePlumbing) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  const int64_t T = 9, E = 16, k = 3, dim = 40;
  const auto logits = random_vec(size_t(T * E), 6);
  for (bool renorm : {false, true}) {
    std::vector<int32_t> ic(size_t(T * k)), ig(size_t(T * k));
    std::vector<float> wc(size_t(T * k)), wgt(size_t(T * k));
    cpu.moe_route(logits.data(), T, E, k, renorm, ic.data(), wc.data());
    Dev lg(gpu, logits);
    gpu.moe_route(lg.f(), T, E, k, renorm, ig.data(), wgt.data());
    EXPECT_EQ(ic, ig);
    EXPECT_EQ(wc, wgt);
  }
  const auto x = random_vec(size_t(T * dim), 7), add = random_vec(size_t(4 * dim), 8);
  const std::vector<int32_t> rows = {8, 0, 3, 5};
  const std::vector<float> scales = {0.5f, -1.0f, 2.0f, 0.25f};
  std::vector<float> gathered(size_t(4 * dim)), y = x;
  cpu.gather_rows(x.data(), rows.data(), 4, dim, gathered.data());
  cpu.scatter_add_rows(y.data(), add.data(), rows.data(), scales.data(), 4, dim);
  Dev xg(gpu, x), gg(gpu, gathered.size()), ag(gpu, add);
  gpu.gather_rows(xg.f(), rows.data(), 4, dim, gg.f());
  EXPECT_EQ(rel_err(gg.get(gpu), gathered), 0.0);
  gpu.scatter_add_rows(xg.f(), ag.f(), rows.data(), scales.data(), 4, dim);
  EXPECT_LE(rel_err(xg.get(gpu), y), 1e-6);
}

struct AttnCase {
  DType kv;
  int64_t head_dim, n_heads, n_kv_heads, capacity, start, T;
};

class AttentionTest : public testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, MatchesCpu) {
  REQUIRE_GPU();
  Backend& cpu = *fx().cpu;
  Backend& gpu = *fx().gpu;
  const AttnCase c = GetParam();
  const size_t el = c.kv == DType::F16 ? 2 : 4;
  const size_t plane = size_t(c.n_kv_heads * c.capacity * c.head_dim) * el;
  std::vector<uint8_t> kh(plane), vh(plane);
  KvLayer lc{kh.data(), vh.data(), c.kv, c.n_kv_heads, c.head_dim, c.capacity};
  DeviceBuffer kd(gpu, plane), vd(gpu, plane);
  KvLayer lg{kd.get(), vd.get(), c.kv, c.n_kv_heads, c.head_dim, c.capacity};
  // Fill positions 0 .. start + T - 1 through store_kv, in two writes.
  const int64_t total = c.start + c.T, per_tok = c.n_kv_heads * c.head_dim;
  const auto k = random_vec(size_t(total * per_tok), 11), v = random_vec(size_t(total * per_tok), 12);
  for (auto [s0, n] : {std::pair<int64_t, int64_t>{0, c.start}, {c.start, c.T}}) {
    if (n == 0) continue;
    cpu.store_kv(lc, k.data() + s0 * per_tok, v.data() + s0 * per_tok, n, s0);
    std::vector<float> ks(k.begin() + s0 * per_tok, k.begin() + (s0 + n) * per_tok);
    std::vector<float> vs(v.begin() + s0 * per_tok, v.begin() + (s0 + n) * per_tok);
    Dev kg(gpu, ks), vg(gpu, vs);
    gpu.store_kv(lg, kg.f(), vg.f(), n, s0);
  }
  const auto q = random_vec(size_t(c.T * c.n_heads * c.head_dim), 13);
  AttentionParams p;
  p.n_tokens = c.T;
  p.start = c.start;
  p.n_heads = c.n_heads;
  p.scale = 1.0f / std::sqrt(float(c.head_dim));
  std::vector<float> want(q.size());
  cpu.attention(q.data(), lc, p, want.data());
  Dev qg(gpu, q), og(gpu, q.size());
  gpu.attention(qg.f(), lg, p, og.f());
  EXPECT_LE(rel_err(og.get(gpu), want), 2e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    testing::Values(AttnCase{DType::F32, 128, 16, 8, 4096, 0, 1},
                    AttnCase{DType::F32, 128, 16, 8, 4096, 1000, 1},
                    AttnCase{DType::F16, 128, 16, 8, 4096, 3001, 1},
                    AttnCase{DType::F32, 64, 4, 2, 96, 10, 1},
                    AttnCase{DType::F32, 8, 8, 4, 64, 20, 1},
                    AttnCase{DType::F32, 32, 4, 2, 128, 0, 80},
                    AttnCase{DType::F16, 128, 16, 8, 1024, 100, 37},
                    AttnCase{DType::F32, 256, 4, 1, 512, 7, 50},
                    AttnCase{DType::F32, 8, 8, 4, 64, 3, 9},
                    // Qwen3-4B decode (GQA 4, kiln bench's 656-position
                    // cache, 3 splits) at short and long contexts, and
                    // groups of 1, 2 and 8 with several splits.
                    AttnCase{DType::F16, 128, 32, 8, 656, 0, 1},
                    AttnCase{DType::F16, 128, 32, 8, 656, 63, 1},
                    AttnCase{DType::F16, 128, 32, 8, 656, 200, 1},
                    AttnCase{DType::F16, 128, 32, 8, 656, 655, 1},
                    AttnCase{DType::F32, 128, 32, 8, 8192, 5000, 1},
                    AttnCase{DType::F16, 64, 8, 8, 1024, 700, 1},
                    AttnCase{DType::F32, 128, 8, 4, 2048, 1500, 1},
                    AttnCase{DType::F16, 128, 32, 4, 1024, 333, 1},
                    // Prefill in register tiles (head_dim 64 and 128): a
                    // 512-token prompt, tiles cut by the prompt's end and
                    // by a cache already holding positions, groups 1-8.
                    AttnCase{DType::F32, 128, 32, 8, 512, 0, 512},
                    AttnCase{DType::F16, 128, 16, 2, 1024, 300, 130},
                    AttnCase{DType::F32, 64, 8, 8, 256, 5, 70},
                    AttnCase{DType::F16, 64, 8, 1, 128, 0, 65},
                    AttnCase{DType::F32, 128, 4, 4, 64, 31, 2},
                    // head_dim 256 (the hybrids' gated attention, Qwen3.5-2B's
                    // 8 heads over 2 KV heads).
                    AttnCase{DType::F16, 256, 8, 2, 1024, 0, 512},
                    AttnCase{DType::F32, 256, 8, 2, 256, 40, 100}),
    [](const auto& info) {
      const AttnCase& c = info.param;
      return cat(dtype_name(c.kv), "_hd", c.head_dim, "_h", c.n_heads, "_kv", c.n_kv_heads,
                 "_cap", c.capacity, "_start", c.start, "_T", c.T);
    });

// The greedy pick on the device: the host's argmax on every row, including
// ties (the first wins), NaNs (never win), a row of -inf and one of NaN only.
TEST(CudaOps, ArgmaxRowsMatchesHost) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  const int64_t rows = 6, cols = 151936;
  auto x = random_vec(size_t(rows * cols), 70);
  float* r1 = x.data() + cols;
  r1[1000] = r1[90000] = 50.0f;  // a tie
  float* r2 = x.data() + 2 * cols;
  r2[7] = std::nanf("");
  r2[151935] = 60.0f;  // the last element
  for (int64_t i = 0; i < cols; ++i) x[size_t(3 * cols + i)] = -INFINITY;
  for (int64_t i = 0; i < cols; ++i) x[size_t(4 * cols + i)] = std::nanf("");
  x[size_t(5 * cols + 3)] = std::nanf("");
  Dev xg(gpu, x);
  std::vector<int32_t> got(size_t(rows), -1);
  std::vector<int32_t*> outs;
  for (auto& g : got) outs.push_back(&g);
  gpu.argmax_rows(xg.f(), rows, cols, outs.data());
  for (int64_t j = 0; j < rows; ++j)
    EXPECT_EQ(got[size_t(j)], argmax(x.data() + j * cols, cols)) << "row " << j;
  EXPECT_EQ(got[1], 1000);
  EXPECT_EQ(got[2], 151935);
  EXPECT_EQ(got[3], 0);
  EXPECT_EQ(got[4], 0);
}

// A sampler's top-k on the device: the host's candidates on every row, in
// the same order once sorted (the order the host sorts them in), with ties
// from logits of a few values (the lower index wins), NaNs (never
// candidates), -inf, -0 beside +0 (equal logits), a row of -inf only, a row
// with fewer non-NaN logits than k, and k up to the backend's limit; rows
// of one block's selection and of several chunks' (4096 logits and up),
// whose candidates a second block selects from.
TEST(CudaOps, TopKRowsMatchTheHostsCandidates) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> few(-3, 3);
  for (int64_t cols :
       {int64_t(97), int64_t(4095), int64_t(4096), int64_t(4097), int64_t(5000), int64_t(151936)}) {
    const int64_t rows = 6;
    auto x = random_vec(size_t(rows * cols), uint32_t(cols), 4.0f);
    for (int64_t i = 0; i < cols; ++i) x[size_t(cols + i)] = float(few(rng));  // ties
    float* r2 = x.data() + 2 * cols;
    for (int64_t i = 0; i < cols; i += 5) r2[i] = i % 3 == 0 ? std::nanf("") : -INFINITY;
    r2[1] = -0.0f, r2[2] = 0.0f, r2[3] = -0.0f;
    for (int64_t i = 0; i < cols; ++i) x[size_t(3 * cols + i)] = -INFINITY;
    float* r4 = x.data() + 4 * cols;  // 20 logits that are not NaN
    for (int64_t i = 0; i < cols; ++i) r4[i] = i % (cols / 20 + 1) == 0 ? float(i % 7) : std::nanf("");
    float* r5 = x.data() + 5 * cols;
    for (int64_t i = 0; i < cols; ++i) r5[i] = float(i % 2);  // half tie for first
    Dev xg(gpu, x);
    for (int64_t k : {int64_t(1), int64_t(40), int64_t(96), int64_t(1024), int64_t(2048)}) {
      if (k > cols) continue;
      std::vector<std::vector<Candidate>> got(static_cast<size_t>(rows),
                                              std::vector<Candidate>(static_cast<size_t>(k)));
      std::vector<Candidate*> outs;
      for (auto& g : got) outs.push_back(g.data());
      gpu.top_k_rows(xg.f(), rows, cols, k, outs.data());
      gpu.synchronize();
      std::vector<Candidate> want;
      for (int64_t j = 0; j < rows; ++j) {
        top_k_candidates(x.data() + j * cols, cols, size_t(k), want);
        sort_candidates(got[size_t(j)]);
        ASSERT_EQ(got[size_t(j)].size(), want.size()) << "cols " << cols << " k " << k << " row " << j;
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_EQ(got[size_t(j)][i].second, want[i].second)
              << "cols " << cols << " k " << k << " row " << j << " rank " << i;
          EXPECT_TRUE(got[size_t(j)][i].first == want[i].first) << "row " << j << " rank " << i;
        }
      }
    }
  }
}

// A sampled pick drawn on the device (draw_rows: the row's candidates, put
// in order, filtered and drawn from) against the host's draw from the same
// logits, draw after draw: rows whose candidates are close enough that the
// draws spread over many of them, ties, NaN and -inf among them, a row of
// NaN only, fewer logits than k, and rows of one call asking different k.
TEST(CudaOps, DrawRowsMatchTheHostsDraw) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  struct Setting {
    float temperature, top_p, min_p;
  };
  const Setting settings[] = {{0.8f, 0.95f, 0.05f}, {1.5f, 1.0f, 0.0f}, {0.3f, 0.5f, 0.0f},
                              {2.0f, 0.99f, 0.2f}};
  for (int64_t cols : {int64_t(97), int64_t(5000), int64_t(151936)}) {
    const int64_t rows = 6;
    auto x = random_vec(size_t(rows * cols), uint32_t(cols) + 1, 0.7f);
    for (int64_t i = 0; i < cols; ++i) x[size_t(cols + i)] = float(i % 4) * 0.25f;  // ties
    float* r2 = x.data() + 2 * cols;
    for (int64_t i = 0; i < cols; i += 3) r2[i] = i % 2 == 0 ? std::nanf("") : -INFINITY;
    for (int64_t i = 0; i < cols; ++i) x[size_t(3 * cols + i)] = std::nanf("");
    float* r4 = x.data() + 4 * cols;  // 20 logits that are not NaN
    for (int64_t i = 0; i < cols; ++i)
      r4[i] = i % (cols / 20 + 1) == 0 ? float(i % 7) * 0.3f : std::nanf("");
    Dev xg(gpu, x);
    std::set<int32_t> row0;  // the draws must spread, or the comparison says little
    for (const Setting& set : settings) {
      for (uint64_t index = 0; index < 40; ++index) {
        std::vector<DrawSpec> specs(static_cast<size_t>(rows));
        for (int64_t j = 0; j < rows; ++j) {
          DrawSpec& d = specs[size_t(j)];
          d.temperature = set.temperature;
          d.top_p = set.top_p;
          d.min_p = set.min_p;
          d.top_k = int32_t(std::min<int64_t>(j == 5 ? 1024 : j == 1 ? 7 : 40, cols));
          d.seed = 11 + uint64_t(j);
          d.index = index;
        }
        std::vector<int32_t> got(static_cast<size_t>(rows), -1);
        std::vector<int32_t*> outs;
        for (auto& g : got) outs.push_back(&g);
        gpu.draw_rows(xg.f(), rows, cols, specs.data(), outs.data());
        gpu.synchronize();
        for (int64_t j = 0; j < rows; ++j)
          EXPECT_EQ(got[size_t(j)], draw_from_logits(x.data() + j * cols, cols, specs[size_t(j)]))
              << "cols " << cols << " row " << j << " temperature " << set.temperature
              << " index " << index;
        row0.insert(got[0]);
      }
    }
    EXPECT_GE(row0.size(), 10u) << "cols " << cols;
  }
}

TEST(CudaOps, CleanErrors) {
  REQUIRE_GPU();
  Backend& gpu = *fx().gpu;
  // More memory than any GPU has: a kiln::Error naming the problem, not a crash.
  try {
    gpu.alloc(size_t(1) << 50);
    FAIL() << "allocation should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
  BackendOptions o;
  o.device = 999;
  EXPECT_THROW(make_cuda_backend(o), Error);
}

}  // namespace
}  // namespace kiln
