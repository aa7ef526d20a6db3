// kiln_bench_cuda: the decode products in isolation, and the floor of a
// dependent launch, on the GPU (no model file needed).
//
//   kiln_bench_cuda            every table below but the row sweep
//   kiln_bench_cuda floor      only the empty-kernel chains
//   kiln_bench_cuda iso [N]    only table 2 (its N-th product: for a profiler)
//   kiln_bench_cuda ops        only the other ops of a layer
//   kiln_bench_cuda step       only table 3
//   kiln_bench_cuda rows       the row sweep (4.)
//
// 1. Launch floor: a CUDA graph of 1000 empty kernels (each calls
//    griddepcontrol.launch_dependents then .wait, as every kernel of the
//    backend does), launched one after another on one stream, with and
//    without programmatic dependent launch, at 1 block and at a product's
//    grid (132 SMs x 4 blocks of 256 threads). Time per kernel = replay time
//    / 1000.
// 2. Each decode product of the Qwen3-4B shape alone (cuda::matvec_fused,
//    which launches the input preparation and the product): a graph of 100
//    calls, each on another copy of the weights so that the set (>= 256 MB)
//    is far larger than the 50 MB L2; the median of 10 replays / 100.
//    GB/s counts the weight bytes once per call.
// 3. All the products of one decode step (36 layers + the output head, the
//    types llama.cpp's Q4_K_M mix gives each tensor, or all Q8_0), as the
//    backend fuses them, in one graph: the step's time with nothing else in
//    it (no attention, no head ops), to compare with kiln bench's tg128.
// 4. One gate/up-like product at growing row counts (row_sweep): whether
//    its time steps with the pieces a warp takes or grows with the bytes.
//
// Weights are random bytes (timing only; nothing is checked here: the
// products' results are test_cuda's job). Environment knobs of the products
// (KILN_CUDA_MV, KILN_CUDA_MV_PIECE, KILN_CUDA_MV_BLOCKS) apply;
// KILN_CUDA_PDL=0 turns dependent launches off.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/core/dtype.h"

using namespace kiln;
using cuda::MatvecPrologue;

#define CK(x)                                                                     \
  do {                                                                            \
    cudaError_t e_ = (x);                                                         \
    if (e_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,              \
                   cudaGetErrorString(e_));                                       \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

namespace {

__global__ void empty_kernel(int) {
  cuda::pdl_trigger();
  cuda::pdl_wait();
}

__global__ void copy16(const uint4* __restrict__ a, uint4* __restrict__ b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    b[i] = a[i];
}

__global__ void fill_random(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    // Keep every 16-bit half a finite, modest f16 (exponent field < 0x1c):
    // the block scales then stay finite whatever their offset.
    h &= 0x6fff6fffu;
    p[i] = h;
  }
}

void* dev_random(size_t bytes, uint32_t seed) {
  void* p = nullptr;
  const size_t words = (bytes + 3) / 4;
  CK(cudaMalloc(&p, words * 4));
  fill_random<<<1024, 256>>>(static_cast<uint32_t*>(p), words, seed);
  CK(cudaGetLastError());
  return p;
}

float* dev_floats(size_t n, uint32_t seed) {
  std::vector<float> h(n);
  uint32_t s = seed;
  for (auto& v : h) {
    s = s * 1664525u + 1013904223u;
    v = float(int(s >> 9) % 2001 - 1000) / 1000.0f;
  }
  float* p = nullptr;
  CK(cudaMalloc(&p, n * 4));
  CK(cudaMemcpy(p, h.data(), n * 4, cudaMemcpyHostToDevice));
  return p;
}

struct Ctx {
  cudaStream_t s{};
  cuda::MatvecScratch scratch;
  cudaEvent_t e0{}, e1{};
};

Ctx& ctx() {
  static Ctx c = [] {
    Ctx x;
    CK(cudaStreamCreateWithFlags(&x.s, cudaStreamNonBlocking));
    CK(cudaMalloc(&x.scratch.counter, 4));
    CK(cudaMemset(x.scratch.counter, 0, 4));
    x.scratch.input_bytes = 1 << 20;
    CK(cudaMalloc(&x.scratch.input, x.scratch.input_bytes));
    CK(cudaEventCreate(&x.e0));
    CK(cudaEventCreate(&x.e1));
    return x;
  }();
  return c;
}

// Median milliseconds of `reps` replays of a graph captured from body().
template <class F>
double time_graph(F body, int reps = 10) {
  Ctx& c = ctx();
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(c.s, cudaStreamCaptureModeThreadLocal));
  body();
  CK(cudaStreamEndCapture(c.s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 2; ++i) CK(cudaGraphLaunch(ge, c.s));
  CK(cudaStreamSynchronize(c.s));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(c.e0, c.s));
    CK(cudaGraphLaunch(ge, c.s));
    CK(cudaEventRecord(c.e1, c.s));
    CK(cudaEventSynchronize(c.e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, c.e0, c.e1));
    t.push_back(ms);
  }
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void launch_floor() {
  std::printf("\n== launch floor: graph of 1000 empty dependent kernels ==\n");
  std::printf("%-28s %10s %10s\n", "grid", "pdl us", "no-pdl us");
  const bool pdl0 = cuda::pdl_enabled();
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  struct G {
    const char* name;
    unsigned blocks, threads;
  } gs[] = {{"1 x 32", 1, 32}, {"SMs x 1 x 256", unsigned(sms), 256},
            {"SMs x 4 x 256", unsigned(sms) * 4, 256}};
  for (const G& g : gs) {
    double us[2];
    for (int p = 0; p < 2; ++p) {
      cuda::set_pdl_enabled(p == 0);
      us[p] = time_graph([&] {
                for (int i = 0; i < 1000; ++i)
                  cuda::launch(empty_kernel, g.blocks, g.threads, 0, ctx().s, "empty", i);
              }) * 1000.0 / 1000;
    }
    std::printf("%-28s %10.2f %10.2f\n", g.name, us[0], us[1]);
  }
  cuda::set_pdl_enabled(pdl0);
}

// One fused product as the backend issues it.
struct Prod {
  DType t;
  int64_t K;
  std::vector<int64_t> n;
  MatvecPrologue pro;
  bool add;
  size_t row_bytes() const { return dtype_row_bytes(t, K); }
  size_t bytes() const {
    int64_t rows = 0;
    for (int64_t v : n) rows += v;
    return size_t(rows) * row_bytes();
  }
};

// Device buffers for one product: the weights (one or `copies` sets laid
// end to end) and its activations.
struct ProdBufs {
  Prod p;
  std::vector<uint8_t*> w;  // per segment, copies * n[s] * row_bytes
  float *x, *x2, *mat, *add_to;
  std::vector<float*> y;
  int copies;
};

ProdBufs make_bufs(const Prod& p, int copies, uint32_t seed) {
  ProdBufs b;
  b.p = p;
  b.copies = copies;
  for (size_t s = 0; s < p.n.size(); ++s) {
    b.w.push_back(static_cast<uint8_t*>(
        dev_random(size_t(copies) * size_t(p.n[s]) * p.row_bytes(), seed + uint32_t(s) * 7919)));
    float* y = nullptr;
    CK(cudaMalloc(&y, size_t(p.n[s]) * 4));
    b.y.push_back(y);
  }
  b.x = dev_floats(size_t(p.K), seed + 1);
  b.x2 = dev_floats(size_t(p.K), seed + 2);
  CK(cudaMalloc(&b.mat, size_t(p.K) * 4));
  b.add_to = dev_floats(size_t(p.n[0]), seed + 3);
  return b;
}

void issue(const ProdBufs& b, int copy) {
  const Prod& p = b.p;
  cuda::MatvecJob j;
  j.dtype = p.t;
  j.row_bytes = p.row_bytes();
  j.K = p.K;
  j.T = 1;
  j.nseg = int(p.n.size());
  for (int s = 0; s < j.nseg; ++s) {
    j.w[s] = b.w[size_t(s)] + size_t(copy) * size_t(p.n[size_t(s)]) * p.row_bytes();
    j.y[s] = b.y[size_t(s)];
    j.n[s] = p.n[size_t(s)];
  }
  j.pro = p.pro;
  j.x = b.x;
  j.x2 = p.pro == MatvecPrologue::None ? nullptr : b.x2;
  j.eps = 1e-6f;
  j.mat = p.pro == MatvecPrologue::Rmsnorm ? b.mat : nullptr;
  j.add_to = p.add ? b.add_to : nullptr;
  // KILN_BENCH_READY=1: the input is taken as prepared already (the products
  // alone, without their preparation kernels), to tell the two apart.
  static const bool ready = cuda::env_is("KILN_BENCH_READY", "1");
  j.input_ready = ready;
  // Rmsnorm must not read the row it writes (the backend's fusion rule).
  cuda::matvec_fused(j, ctx().scratch, ctx().s);
}

void free_bufs(ProdBufs& b) {
  for (auto* p : b.w) CK(cudaFree(p));
  for (auto* p : b.y) CK(cudaFree(p));
  CK(cudaFree(b.x));
  CK(cudaFree(b.x2));
  CK(cudaFree(b.mat));
  CK(cudaFree(b.add_to));
}

std::string describe(const Prod& p) {
  std::string s(dtype_name(p.t));
  s += " ";
  s += std::to_string(p.K);
  s += "->";
  for (size_t i = 0; i < p.n.size(); ++i) {
    if (i) s += "+";
    s += std::to_string(p.n[i]);
  }
  if (p.pro == MatvecPrologue::Rmsnorm) s += " (rmsnorm)";
  if (p.pro == MatvecPrologue::SiluMul) s += " (silu_mul)";
  if (p.add) s += " (+add)";
  return s;
}

// Microseconds of product p alone (input preparation + product), the
// average of 100 launches in one graph over copies of its weights that
// together exceed L2, so that every launch reads its weights from memory.
double time_alone(const Prod& p, uint32_t seed) {
  const int copies = int(std::clamp<size_t>((size_t(256) << 20) / p.bytes() + 1, 2, 128));
  ProdBufs b = make_bufs(p, copies, seed);
  CK(cudaDeviceSynchronize());
  const int n = 100;
  const double us = time_graph([&] {
                      for (int i = 0; i < n; ++i) issue(b, i % copies);
                    }) *
                    1000.0 / n;
  free_bufs(b);
  return us;
}

// only: run just the product of that index (-1: all), for a profiler.
void isolated(double copy_gbs, int only) {
  std::printf("\n== each product alone (input preparation + product), L2 defeated ==\n");
  std::printf("%-44s %9s %9s %9s %7s\n", "product", "MB", "us", "GB/s", "% copy");
  const Prod ps[] = {
      {DType::Q4_K, 2560, {4096, 1024, 1024}, MatvecPrologue::Rmsnorm, false},
      {DType::Q4_K, 2560, {4096, 1024}, MatvecPrologue::Rmsnorm, false},
      {DType::Q4_K, 2560, {4096}, MatvecPrologue::None, false},
      {DType::Q4_K, 4096, {2560}, MatvecPrologue::None, true},
      {DType::Q4_K, 2560, {9728, 9728}, MatvecPrologue::Rmsnorm, false},
      {DType::Q4_K, 2560, {9728}, MatvecPrologue::None, false},
      {DType::Q4_K, 9728, {2560}, MatvecPrologue::SiluMul, true},
      {DType::Q4_K, 2560, {64}, MatvecPrologue::None, false},
      {DType::Q6_K, 2560, {1024}, MatvecPrologue::None, false},
      {DType::Q6_K, 9728, {2560}, MatvecPrologue::SiluMul, true},
      {DType::Q6_K, 2560, {151936}, MatvecPrologue::Rmsnorm, false},
      {DType::Q8_0, 2560, {4096, 1024, 1024}, MatvecPrologue::Rmsnorm, false},
      {DType::Q8_0, 4096, {2560}, MatvecPrologue::None, true},
      {DType::Q8_0, 2560, {9728, 9728}, MatvecPrologue::Rmsnorm, false},
      {DType::Q8_0, 9728, {2560}, MatvecPrologue::SiluMul, true},
      {DType::Q8_0, 2560, {151936}, MatvecPrologue::Rmsnorm, false},
      {DType::BF16, 2560, {4096, 1024, 1024}, MatvecPrologue::Rmsnorm, false},
      {DType::BF16, 4096, {2560}, MatvecPrologue::None, true},
      {DType::BF16, 2560, {9728, 9728}, MatvecPrologue::Rmsnorm, false},
      {DType::BF16, 9728, {2560}, MatvecPrologue::SiluMul, true},
      {DType::BF16, 2560, {64}, MatvecPrologue::None, false},
      {DType::BF16, 2560, {151936}, MatvecPrologue::Rmsnorm, false},
  };
  int index = -1;
  for (const Prod& p : ps) {
    if (++index != only && only >= 0) continue;
    // The same weights whether the table runs whole or one product of it.
    const double us = time_alone(p, 1 + 101 * uint32_t(index + 1));
    const double gbs = double(p.bytes()) / (us * 1e3);
    std::printf("%-44s %9.2f %9.2f %9.0f %6.0f%%\n", describe(p).c_str(), p.bytes() / 1e6, us, gbs,
                copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
  }
}

// One product at growing row counts (gate/up-like: 2560 wide, two weights,
// rmsnorm in front), to tell apart what bounds it: if time follows the
// most pieces any warp takes (a staircase over rows / warps), the warps'
// own chains do; if it follows the bytes (a line), the SMs' or the
// memory's throughput does. With 132 SMs of 32 warps (4224): Q4_K takes
// two 2560-wide rows a piece here, Q8_0 one.
void row_sweep(double copy_gbs) {
  std::printf("\n== one product at growing row counts (2560 wide, two weights, rmsnorm) ==\n");
  std::printf("%-44s %9s %9s %9s %7s %9s\n", "product", "MB", "us", "GB/s", "% copy", "us/MB");
  struct Sweep {
    DType t;
    std::vector<int64_t> n;
  };
  const Sweep sweeps[] = {
      {DType::Q4_K, {2112, 3168, 4224, 5280, 6336, 7392, 8448, 9728, 10560, 12672}},
      {DType::Q8_0, {1056, 2112, 3168, 4224, 5280, 6336, 8448, 9728, 10560}},
  };
  uint32_t seed = 500;
  for (const Sweep& sw : sweeps)
    for (int64_t n : sw.n) {
      const Prod p{sw.t, 2560, {n, n}, MatvecPrologue::Rmsnorm, false};
      const double mb = p.bytes() / 1e6, us = time_alone(p, seed += 17);
      std::printf("%-44s %9.2f %9.2f %9.0f %6.0f%% %9.3f\n", describe(p).c_str(), mb, us,
                  mb * 1e3 / us, copy_gbs > 0 ? 100.0 * mb * 1e3 / us / copy_gbs : 0.0, us / mb);
    }
}

// The products of one decode step of Qwen3-4B in one graph.
void step(bool q8, double copy_gbs) {
  const int L = 36;
  auto more_bits = [&](int i) { return i < L / 8 || i >= 7 * L / 8 || (i - L / 8) % 3 == 2; };
  std::vector<Prod> seq;
  for (int i = 0; i < L; ++i) {
    const DType q = q8 ? DType::Q8_0 : DType::Q4_K;
    const DType hi = q8 ? DType::Q8_0 : more_bits(i) ? DType::Q6_K : DType::Q4_K;
    if (hi == q) {
      seq.push_back({q, 2560, {4096, 1024, 1024}, MatvecPrologue::Rmsnorm, false});
    } else {
      seq.push_back({q, 2560, {4096, 1024}, MatvecPrologue::Rmsnorm, false});
      seq.push_back({hi, 2560, {1024}, MatvecPrologue::None, false});
    }
    seq.push_back({q, 4096, {2560}, MatvecPrologue::None, true});
    seq.push_back({q, 2560, {9728, 9728}, MatvecPrologue::Rmsnorm, false});
    seq.push_back({hi, 9728, {2560}, MatvecPrologue::SiluMul, true});
  }
  seq.push_back({q8 ? DType::Q8_0 : DType::Q6_K, 2560, {151936}, MatvecPrologue::Rmsnorm, false});
  std::vector<ProdBufs> bufs;
  size_t bytes = 0;
  uint32_t seed = 7;
  for (const Prod& p : seq) {
    bufs.push_back(make_bufs(p, 1, seed += 13));
    bytes += p.bytes();
  }
  CK(cudaDeviceSynchronize());
  const double ms = time_graph([&] {
    for (const ProdBufs& b : bufs) issue(b, 0);
  });
  const double gbs = double(bytes) / (ms * 1e6);
  std::printf("%-10s %4zu products  %8.1f MB  %8.3f ms  %7.1f steps/s  %6.0f GB/s  %4.0f%% copy\n",
              q8 ? "Q8_0" : "Q4_K_M", seq.size(), bytes / 1e6, ms, 1000.0 / ms, gbs,
              copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
  for (auto& b : bufs) free_bufs(b);
}

// The ops between the products of a layer: q/k norms + rope + cache store
// (head_ops) and attention over the cache (split blocks + merge), at the
// Qwen3-4B shape with kiln bench's tg128 cache (656 positions; the backend's split count for it).
void layer_ops() {
  std::printf("\n== the other ops of a decode layer (Qwen3-4B; 656-position f32 cache) ==\n");
  const int H = 32, KV = 8, hd = 128, cap = 656, splits = (cap + 63) / 64, L = 36;
  float* q = dev_floats(size_t(H) * hd, 11);
  float* k = dev_floats(size_t(KV) * hd, 12);
  float* v = dev_floats(size_t(KV) * hd, 13);
  float* qn = dev_floats(hd, 14);
  float* kn = dev_floats(hd, 15);
  std::vector<float> invf(hd / 2);
  for (int i = 0; i < hd / 2; ++i) invf[size_t(i)] = std::pow(1e6f, -2.0f * float(i) / float(hd));
  float* inv_freq = nullptr;
  CK(cudaMalloc(&inv_freq, invf.size() * 4));
  CK(cudaMemcpy(inv_freq, invf.data(), invf.size() * 4, cudaMemcpyHostToDevice));
  std::vector<float*> kc(L), vc(L);
  for (int l = 0; l < L; ++l) {
    kc[size_t(l)] = dev_floats(size_t(cap) * KV * hd, 100 + l);
    vc[size_t(l)] = dev_floats(size_t(cap) * KV * hd, 200 + l);
  }
  float* out = nullptr;
  float* partial = nullptr;
  int32_t* pos = nullptr;
  CK(cudaMalloc(&out, size_t(H) * hd * 4));
  CK(cudaMalloc(&partial, size_t(splits) * H * (hd + 2) * 4));
  CK(cudaMalloc(&pos, 4));
  for (int at : {64, 127, 600}) {
    CK(cudaMemcpy(pos, &at, 4, cudaMemcpyHostToDevice));
    auto heads = [&](int l) {
      cuda::HeadOps h;
      h.q = q, h.k = k, h.v = v, h.q_norm = qn, h.k_norm = kn, h.T = 1;
      h.n_heads = H, h.n_kv_heads = KV, h.head_dim = hd, h.eps = 1e-6f;
      h.rope_half = hd / 2, h.halves = true, h.positions = pos, h.inv_freq = inv_freq;
      h.kc = kc[size_t(l)], h.vc = vc[size_t(l)], h.f16 = false, h.capacity = cap, h.start = pos;
      cuda::head_ops(h, ctx().s);
    };
    auto attn = [&](int l) {
      cuda::attention(q, kc[size_t(l)], vc[size_t(l)], false, KV, hd, cap, 1, H,
                      1.0f / std::sqrt(float(hd)), pos, splits, partial, out, ctx().s);
    };
    const double hus = time_graph([&] { for (int l = 0; l < L; ++l) heads(l); }) * 1000.0 / L;
    const double aus = time_graph([&] { for (int l = 0; l < L; ++l) attn(l); }) * 1000.0 / L;
    const double bus = time_graph([&] {
                         for (int l = 0; l < L; ++l) heads(l), attn(l);
                       }) * 1000.0 / L;
    std::printf("position %4d: head_ops %6.2f us, attention (split + merge) %6.2f us, both %6.2f "
                "us per layer (x36 = %.0f us)\n",
                at, hus, aus, bus, bus * L);
  }
}

// A sampler's top-k of a step's rows on the device (Qwen3's 151936 logits),
// against bringing one row's logits to pinned host memory, the other way.
void top_k_sweep() {
  std::printf("\n== top-k candidates of rows of 151936 logits, 20 selections a graph ==\n");
  const int64_t cols = 151936;
  const int64_t max_rows = 32, max_k = 1024;
  std::vector<float> h(size_t(max_rows * cols));
  uint32_t state = 12345;
  for (float& v : h) {
    state = state * 1664525u + 1013904223u;
    v = float(int32_t(state >> 8) % 4000000) * 1e-5f;  // ties among 4e6 values
  }
  float* x = nullptr;
  cuda::LogitId *out = nullptr, *scratch = nullptr;
  CK(cudaMalloc(&x, h.size() * sizeof(float)));
  CK(cudaMemcpy(x, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  CK(cudaMalloc(&out, size_t(max_rows * max_k) * sizeof(cuda::LogitId)));
  CK(cudaMalloc(&scratch, cuda::top_k_rows_scratch(max_rows, cols, max_k) * sizeof(cuda::LogitId)));
  std::printf("%-8s %-6s %10s\n", "rows", "k", "us");
  for (int64_t rows : {int64_t(1), int64_t(4), int64_t(32)})
    for (int64_t k : {int64_t(40), int64_t(1024)}) {
      const double ms = time_graph([&] {
        for (int i = 0; i < 20; ++i) cuda::top_k_rows(x, rows, cols, k, out, scratch, ctx().s);
      });
      std::printf("%-8lld %-6lld %10.2f\n", (long long)rows, (long long)k, ms * 1000.0 / 20);
    }
  float* pinned = nullptr;
  CK(cudaMallocHost(&pinned, size_t(cols) * sizeof(float)));
  const double ms = time_graph([&] {
    for (int i = 0; i < 20; ++i)
      CK(cudaMemcpyAsync(pinned, x, size_t(cols) * sizeof(float), cudaMemcpyDeviceToHost, ctx().s));
  });
  std::printf("one row's logits to pinned host memory: %.2f us\n", ms * 1000.0 / 20);
  CK(cudaFreeHost(pinned));
  CK(cudaFree(x));
  CK(cudaFree(out));
  CK(cudaFree(scratch));
}

double copy_bandwidth() {
  const size_t n = size_t(1) << 31;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  // A kernel of 16-byte loads and stores (cudaMemcpyAsync as a graph node
  // measured only ~2.7 TB/s here, against torch's copy_ at ~4.2 TB/s).
  const double ms = time_graph([&] {
    for (int i = 0; i < 5; ++i)
      copy16<<<132 * 8, 512, 0, ctx().s>>>(static_cast<const uint4*>(a), static_cast<uint4*>(b),
                                            n / 16);
  }, 5);
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * double(n) * 5 / (ms * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  cuda::set_pdl_enabled(!cuda::env_is("KILN_CUDA_PDL", "0"));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, L2 %d MB; dependent launches %s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20,
              cuda::pdl_enabled() ? "on" : "off");
  const double copy = copy_bandwidth();
  std::printf("copy bandwidth (read + write): %.0f GB/s\n", copy);
  if (what == "all" || what == "floor") launch_floor();
  // "iso N": only the N-th product of the table (for Nsight Compute).
  if (what == "all" || what == "iso") isolated(copy, argc > 2 ? std::atoi(argv[2]) : -1);
  if (what == "all" || what == "ops") layer_ops();
  if (what == "rows") row_sweep(copy);
  if (what == "all" || what == "topk") top_k_sweep();
  if (what == "all" || what == "step") {
    std::printf("\n== the products of one decode step (Qwen3-4B), one graph ==\n");
    step(false, copy);
    step(true, copy);
  }
  return 0;
}
