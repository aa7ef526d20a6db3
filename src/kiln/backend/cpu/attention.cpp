// Causal attention over the KV cache, flash-attention style: a work unit is
// one query head and a block of up to kQueryBlock consecutive query tokens;
// it walks the visible keys in steps of kKeyBlock rows, each step's
// K and V rows loaded (or converted from f16) once for all the unit's
// queries, with an online softmax (a running max and sum per query, the
// partial output rescaled when the max grows), so no query needs a score
// buffer as long as its context. Decode is the one-query case.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

// Query tokens per unit: their keys come from L1/L2 after the first.
constexpr int64_t kQueryBlock = 16;
// Keys per softmax step: 16 KB of K and 16 KB of V at head_dim 128, f32.
// One block of the server's paged caches (32 positions), so that a step's
// rows lie together and are read in place rather than gathered.
constexpr int64_t kKeyBlock = 32;

// Pointer to one position of one head in a cache plane (either layout).
template <class T>
const T* cache_row(const void* plane, const KvLayer& c, int64_t head, int64_t pos) {
  return static_cast<const T*>(plane) + kv_offset(c, head, pos);
}

// Rows [j, j + n) of one head of a K or V plane as f32 rows head_dim apart:
// in place when they are f32 and lie together, else gathered (and converted
// from f16) into buf, one run of adjacent rows at a time. Steps are placed
// at the same positions whatever the layout, so a paged cache gives the
// same sums, in the same order, as a contiguous one.
const float* rows_f32(const void* plane, const KvLayer& c, int64_t head, int64_t j, int64_t n,
                      float* buf) {
  if (c.dtype == DType::F32 && kv_run(c, j) >= n) return cache_row<float>(plane, c, head, j);
  for (int64_t done = 0; done < n;) {
    const int64_t m = std::min(n - done, kv_run(c, j + done));
    float* dst = buf + done * c.head_dim;
    if (c.dtype == DType::F32) {
      std::memcpy(dst, cache_row<float>(plane, c, head, j + done),
                  size_t(m * c.head_dim) * sizeof(float));
    } else {
      const uint16_t* src = cache_row<uint16_t>(plane, c, head, j + done);
      for (int64_t i = 0; i < m * c.head_dim; ++i) dst[i] = f16_to_f32(src[i]);
    }
    done += m;
  }
  return buf;
}

}  // namespace

void CpuBackend::store_kv(const KvLayer& c, const float* k, const float* v, int64_t n_tokens,
                          int64_t start) {
  KILN_CHECK(start + n_tokens <= c.capacity, "context full: ", start + n_tokens,
             " positions needed, the cache holds ", c.capacity, " (raise --ctx-size)");
  const int64_t hd = c.head_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < c.n_kv_heads; ++h) {
      const float* ks = k + (t * c.n_kv_heads + h) * hd;
      const float* vs = v + (t * c.n_kv_heads + h) * hd;
      const int64_t off = kv_offset(c, h, start + t);
      if (c.dtype == DType::F32) {
        std::memcpy(static_cast<float*>(c.k) + off, ks, hd * sizeof(float));
        std::memcpy(static_cast<float*>(c.v) + off, vs, hd * sizeof(float));
      } else {
        auto* kd = static_cast<uint16_t*>(c.k) + off;
        auto* vd = static_cast<uint16_t*>(c.v) + off;
        for (int64_t i = 0; i < hd; ++i) {
          kd[i] = f32_to_f16(ks[i]);
          vd[i] = f32_to_f16(vs[i]);
        }
      }
    }
  }
}

namespace {

// One work unit: query head h of tokens t0 .. t0 + nq - 1 (of a call whose
// first token sits at position start) over the cache's visible keys.
// scratch: unit_scratch_floats(head_dim) floats.
constexpr int64_t unit_scratch_floats(int64_t hd) {
  return 2 * kKeyBlock * hd + kKeyBlock + hd + 2 * kQueryBlock;
}

void attend_unit(const float* q, const KvLayer& c, int64_t n_heads, float scale, int64_t start,
                 int64_t h, int64_t t0, int64_t nq, float* out, float* scratch) {
  const int64_t hd = c.head_dim;
  const int64_t kvh = h / (n_heads / c.n_kv_heads);  // query heads share a key/value head
  float* kbuf = scratch;
  float* vbuf = kbuf + kKeyBlock * hd;
  float* sc = vbuf + kKeyBlock * hd;  // one query's scores of a step
  float* part = sc + kKeyBlock;       // one query's value sum of a step
  float* run_max = part + hd;         // per query of the unit
  float* run_sum = run_max + kQueryBlock;
  const int64_t n_keys = start + t0 + nq;  // the last query's view
  for (int64_t r = 0; r < nq; ++r) run_max[r] = -INFINITY, run_sum[r] = 0.0f;
  for (int64_t j = 0; j < n_keys;) {
    const int64_t n = std::min(kKeyBlock, n_keys - j);
    const float* K = rows_f32(c.k, c, kvh, j, n, kbuf);
    const float* V = rows_f32(c.v, c, kvh, j, n, vbuf);
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t t = t0 + r;
      const int64_t visible = std::min(n, start + t + 1 - j);  // causal
      if (visible <= 0) continue;
      const float* qv = q + (t * n_heads + h) * hd;
      float* o = out + (t * n_heads + h) * hd;
      dot_rows_f32_simd(K, hd, visible, qv, hd, scale, sc);
      float step_max = sc[0];
      for (int64_t i = 1; i < visible; ++i) step_max = std::max(step_max, sc[i]);
      const float new_max = std::max(run_max[r], step_max);
      const float step_sum = exp_sum_f32_simd(sc, visible, new_max);
      wsum_rows_f32_simd(V, hd, visible, sc, hd, part);
      if (run_max[r] == -INFINITY) {  // the first keys of this query
        std::memcpy(o, part, size_t(hd) * sizeof(float));
        run_sum[r] = step_sum;
      } else {
        const float rescale = std::exp(run_max[r] - new_max);
        for (int64_t i = 0; i < hd; ++i) o[i] = o[i] * rescale + part[i];
        run_sum[r] = run_sum[r] * rescale + step_sum;
      }
      run_max[r] = new_max;
    }
    j += n;
  }
  for (int64_t r = 0; r < nq; ++r) {
    float* o = out + ((t0 + r) * n_heads + h) * hd;
    const float inv = 1.0f / run_sum[r];
    for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
  }
}

float* unit_scratch(int64_t hd) {
  thread_local std::vector<float> scratch;
  scratch.resize(size_t(unit_scratch_floats(hd)));
  return scratch.data();
}

}  // namespace

void CpuBackend::attention(const float* q, const KvLayer& c, const AttentionParams& p,
                           float* out) {
  const int64_t n_qblocks = (p.n_tokens + kQueryBlock - 1) / kQueryBlock;
  // Units ordered head-major: a thread's range holds consecutive query
  // blocks of the same heads, whose keys stay in its caches. A call of a
  // few microseconds' work (a short head's decode) stays on this thread.
  const int64_t work = p.n_heads * p.n_tokens * (p.start + p.n_tokens) * c.head_dim;
  auto run = [&](int64_t n, auto&& fn) {
    if (work < (1 << 15)) fn(int64_t(0), n, 0);
    else pool_.parallel_for(n, fn);
  };
  run(p.n_heads * n_qblocks, [&](int64_t w0, int64_t w1, int) {
    float* scratch = unit_scratch(c.head_dim);
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t h = w / n_qblocks, t0 = (w % n_qblocks) * kQueryBlock;
      attend_unit(q, c, p.n_heads, p.scale, p.start, h, t0,
                  std::min(kQueryBlock, p.n_tokens - t0), out, scratch);
    }
  });
}

void CpuBackend::attention_decode_batch(const float* q, const float* k, const float* v,
                                        const KvLayer* caches, const int64_t* starts, int64_t n,
                                        int64_t n_heads, float scale, float* out) {
  if (n <= 0) return;
  // One parallel op for the whole step, not one per sequence: the units
  // (sequence, head) are split over the threads by their keys, so that a
  // thread given the long contexts is not handed as many units as one given
  // the short ones.
  std::vector<int64_t> keys_before(size_t(n) + 1, 0);  // prefix sums of keys per sequence
  for (int64_t i = 0; i < n; ++i) {
    const KvLayer& c = caches[i];
    store_kv(c, k + i * c.n_kv_heads * c.head_dim, v + i * c.n_kv_heads * c.head_dim, 1,
             starts[i]);
    keys_before[size_t(i) + 1] = keys_before[size_t(i)] + starts[i] + 1;
  }
  const int64_t units = n * n_heads;
  // Cost of units [0, u): the keys of whole sequences before, plus heads of
  // the current one; a unit also has a fixed cost, counted as 8 keys.
  auto cost_before = [&](int64_t u) {
    const int64_t i = u / n_heads, h = u % n_heads;
    const int64_t partial = i < n ? h * (starts[i] + 1) : 0;
    return n_heads * keys_before[size_t(i)] + partial + 8 * u;
  };
  const int64_t total = cost_before(units);
  const int threads = int(std::min<int64_t>(pool_.size(), units));
  // First unit of each thread's range: where the cost passes its share.
  std::vector<int64_t> first(size_t(threads) + 1, units);
  first[0] = 0;
  for (int t = 1, u = 0; t < threads; ++t) {
    const int64_t goal = total * t / threads;
    while (u < units && cost_before(u) < goal) ++u;
    first[size_t(t)] = u;
  }
  pool_.parallel_for(threads, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t u = first[size_t(t)]; u < first[size_t(t) + 1]; ++u) {
        const int64_t i = u / n_heads, h = u % n_heads;
        const KvLayer& c = caches[i];
        const int64_t q_row = n_heads * c.head_dim;
        attend_unit(q + i * q_row, c, n_heads, scale, starts[i], h, 0, 1, out + i * q_row,
                    unit_scratch(c.head_dim));
      }
  });
}

}  // namespace kiln
