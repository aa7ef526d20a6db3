// Causal attention over the KV cache, flash-attention style: a work unit is
// one query head and a block of up to kQueryBlock consecutive query tokens;
// it walks the visible keys in steps of key_step() rows, each step's
// K and V rows loaded (or converted from f16) once for all the unit's
// queries, with an online softmax (a running max and sum per query, the
// partial output rescaled when the max grows), so no query needs a score
// buffer as long as its context. Decode is the one-query case; for short
// heads (below 64 dimensions) a decode unit is a token's every head. Each
// step's arithmetic is the kernel attention_rows_f32_simd (kiln/quant/gemm.h)
// whichever way the queries are grouped, so a query gets the same bits in a
// prompt, alone or in a serving step's batch.
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

// Keys per softmax step. 32 (16 KB of K and 16 KB of V at head_dim 128,
// f32: one block of the server's paged caches, so that a step's rows lie
// together and are read in place), or 128 for the short-head kernels
// (attention_short_head, kiln/quant/gemm.h), whose step's fixed costs
// weighed on 32 keys of 8-32 floats and which read a step's pages in place
// one by one. The step depends on the head only,
// never on the cache's layout, so a paged cache gives the same sums as a
// contiguous one.
constexpr int64_t kMaxKeyStep = 128;
constexpr int64_t key_step(int64_t hd) { return attention_short_head(hd) ? kMaxKeyStep : 32; }
// Runs (pages) a short-head step may span.
constexpr int64_t kMaxRuns = kMaxKeyStep / 8;

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
      f16_to_f32_simd(cache_row<uint16_t>(plane, c, head, j + done), m * c.head_dim, dst);
    }
    done += m;
  }
  return buf;
}

// One step's keys and values for one KV head, rows [j, j + n), as
// attention_rows_f32_simd reads them: a paged f32 cache's pages in place,
// one run each, where the step spans several and the short-head kernels
// take the head; else rows_f32 (in place when the rows lie together, else
// gathered into kbuf and vbuf).
struct StepRows {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t run = 0;
  const float* k_runs[kMaxRuns];
  const float* v_runs[kMaxRuns];

  AttentionRows for_query(const float* q, int64_t visible, float* out, float* max,
                          float* sum) const {
    return AttentionRows{q, k, v, visible, out, max, sum, run, k_runs, v_runs};
  }
};

void step_rows(const KvLayer& c, int64_t head, int64_t j, int64_t n, float* kbuf, float* vbuf,
               StepRows& s) {
  s.run = 0;
  if (c.blocks && c.dtype == DType::F32 && attention_short_head(c.head_dim) && c.block % 8 == 0 &&
      j % c.block == 0 && kv_run(c, j) < n && (n + c.block - 1) / c.block <= kMaxRuns) {
    s.run = c.block;
    for (int64_t i = 0; i * c.block < n; ++i) {
      s.k_runs[i] = cache_row<float>(c.k, c, head, j + i * c.block);
      s.v_runs[i] = cache_row<float>(c.v, c, head, j + i * c.block);
    }
    s.k = s.k_runs[0];
    s.v = s.v_runs[0];
    return;
  }
  s.k = rows_f32(c.k, c, head, j, n, kbuf);
  s.v = rows_f32(c.v, c, head, j, n, vbuf);
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

// Heads below 64 dimensions decode all of a token's heads in one unit (up
// to kMaxTokenHeads of them): a step's key and value rows are read once per
// key/value head, and the kernel interleaves the heads' value sums, whose
// chains of fmas a head alone would wait on. The same kernel, fed the same
// rows, gives every query the same bits as the per-head units below.
constexpr int64_t kShortHeadDim = 64, kMaxTokenHeads = 64;

bool token_heads_unit(int64_t head_dim, int64_t n_heads) {
  return head_dim < kShortHeadDim && n_heads <= kMaxTokenHeads;
}

// out[i] /= sum, for one head of one query.
void normalise(float* out, int64_t hd, float sum) {
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

// One work unit: query heads h0 .. h0 + nh - 1, which share one key/value
// head, of tokens t0 .. t0 + nq - 1 (of a call whose first token sits at
// position start) over the cache's visible keys; nh * nq <= kQueryBlock.
// The heads of a group taken together read each step's key and value rows
// once for all of them (each query's sums are its own, so the same bits as
// a unit a head). scratch: unit_scratch_floats(head_dim) floats.
constexpr int64_t unit_scratch_floats(int64_t hd) {
  return 2 * key_step(hd) * hd + attention_rows_scratch_floats(kQueryBlock, key_step(hd), hd) +
         2 * kQueryBlock;
}

void attend_unit(const float* q, const KvLayer& c, int64_t n_heads, float scale, int64_t start,
                 int64_t h0, int64_t nh, int64_t t0, int64_t nq, float* out, float* scratch) {
  const int64_t hd = c.head_dim;
  const int64_t kvh = h0 / (n_heads / c.n_kv_heads);  // query heads share a key/value head
  const int64_t step = key_step(hd);
  float* kbuf = scratch;
  float* vbuf = kbuf + step * hd;
  float* rows_scratch = vbuf + step * hd;
  float* run_max = rows_scratch + attention_rows_scratch_floats(kQueryBlock, step, hd);
  float* run_sum = run_max + kQueryBlock;  // per query of the unit: head-major
  AttentionRows rows[kQueryBlock];
  StepRows kv;
  const int64_t n_keys = start + t0 + nq;  // the last query's view
  for (int64_t r = 0; r < nh * nq; ++r) run_max[r] = -INFINITY, run_sum[r] = 0.0f;
  for (int64_t j = 0; j < n_keys;) {
    const int64_t n = std::min(step, n_keys - j);
    step_rows(c, kvh, j, n, kbuf, vbuf, kv);
    int64_t m = 0;
    for (int64_t i = 0; i < nh; ++i)
      for (int64_t r = 0; r < nq; ++r) {
        const int64_t t = t0 + r;
        const int64_t visible = std::min(n, start + t + 1 - j);  // causal
        if (visible <= 0) continue;
        const int64_t at = (t * n_heads + h0 + i) * hd;
        const int64_t u = i * nq + r;  // head-major
        rows[m++] = kv.for_query(q + at, visible, out + at, &run_max[u], &run_sum[u]);
      }
    attention_rows_f32_simd(rows, m, hd, scale, rows_scratch);
    j += n;
  }
  for (int64_t i = 0; i < nh; ++i)
    for (int64_t r = 0; r < nq; ++r)
      normalise(out + ((t0 + r) * n_heads + h0 + i) * hd, hd, run_sum[i * nq + r]);
}

// Query heads a one-token unit takes: the group sharing a key/value head,
// where it fits a unit, else one.
int64_t heads_a_unit(int64_t n_heads, int64_t n_kv_heads) {
  const int64_t group = n_heads / n_kv_heads;
  return group <= kQueryBlock ? group : 1;
}

// One token's every head (token_heads_unit), the token at position start.
constexpr int64_t token_scratch_floats(int64_t hd, int64_t n_heads, int64_t n_kv_heads) {
  return 2 * n_kv_heads * key_step(hd) * hd +
         attention_rows_scratch_floats(n_heads, key_step(hd), hd) + 2 * n_heads;
}

void attend_token(const float* q, const KvLayer& c, int64_t n_heads, float scale, int64_t start,
                  float* out, float* scratch) {
  const int64_t hd = c.head_dim, n_kv = c.n_kv_heads, group = n_heads / n_kv;
  const int64_t step = key_step(hd);
  float* kbuf = scratch;
  float* vbuf = kbuf + n_kv * step * hd;
  float* rows_scratch = vbuf + n_kv * step * hd;
  float* run_max = rows_scratch + attention_rows_scratch_floats(n_heads, step, hd);
  float* run_sum = run_max + n_heads;
  AttentionRows rows[kMaxTokenHeads];
  StepRows kv[kMaxTokenHeads];  // per KV head (n_kv <= n_heads)
  for (int64_t h = 0; h < n_heads; ++h) run_max[h] = -INFINITY, run_sum[h] = 0.0f;
  const int64_t n_keys = start + 1;
  for (int64_t j = 0; j < n_keys;) {
    const int64_t n = std::min(step, n_keys - j);
    for (int64_t kvh = 0; kvh < n_kv; ++kvh) {
      step_rows(c, kvh, j, n, kbuf + kvh * step * hd, vbuf + kvh * step * hd, kv[kvh]);
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        rows[h] = kv[kvh].for_query(q + h * hd, n, out + h * hd, &run_max[h], &run_sum[h]);
    }
    attention_rows_f32_simd(rows, n_heads, hd, scale, rows_scratch);
    j += n;
  }
  for (int64_t h = 0; h < n_heads; ++h) normalise(out + h * hd, hd, run_sum[h]);
}

float* scratch_floats(int64_t n) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < size_t(n)) scratch.resize(size_t(n));
  return scratch.data();
}

// Below this much work (heads x queries x keys x head_dim) an attention
// call is a few microseconds: it stays on the calling thread.
constexpr int64_t kInlineWork = 1 << 15;

}  // namespace

void CpuBackend::attention(const float* q, const KvLayer& c, const AttentionParams& p,
                           float* out) {
  const int64_t work = p.n_heads * p.n_tokens * (p.start + p.n_tokens) * c.head_dim;
  if (p.n_tokens == 1 && work < kInlineWork && token_heads_unit(c.head_dim, p.n_heads)) {
    attend_token(q, c, p.n_heads, p.scale, p.start, out,
                 scratch_floats(token_scratch_floats(c.head_dim, p.n_heads, c.n_kv_heads)));
    return;
  }
  const int64_t n_qblocks = (p.n_tokens + kQueryBlock - 1) / kQueryBlock;
  auto run = [&](int64_t n, auto&& fn) {
    if (work < kInlineWork) fn(int64_t(0), n, 0);
    else pool_.parallel_for(n, fn);
  };
  if (p.n_tokens == 1) {  // a decode step: a unit a group of heads
    const int64_t nh = heads_a_unit(p.n_heads, c.n_kv_heads);
    run(p.n_heads / nh, [&](int64_t w0, int64_t w1, int) {
      float* scratch = scratch_floats(unit_scratch_floats(c.head_dim));
      for (int64_t w = w0; w < w1; ++w)
        attend_unit(q, c, p.n_heads, p.scale, p.start, w * nh, nh, 0, 1, out, scratch);
    });
    return;
  }
  // Units ordered head-major: a thread's range holds consecutive query
  // blocks of the same heads, whose keys stay in its caches.
  run(p.n_heads * n_qblocks, [&](int64_t w0, int64_t w1, int) {
    float* scratch = scratch_floats(unit_scratch_floats(c.head_dim));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t h = w / n_qblocks, t0 = (w % n_qblocks) * kQueryBlock;
      attend_unit(q, c, p.n_heads, p.scale, p.start, h, 1, t0,
                  std::min(kQueryBlock, p.n_tokens - t0), out, scratch);
    }
  });
}

void CpuBackend::attention_decode_batch(const float* q, const float* k, const float* v,
                                        const KvLayer* caches, const int64_t* starts, int64_t n,
                                        int64_t n_heads, float scale, float* out) {
  if (n <= 0) return;
  // One parallel op for the whole step, not one per sequence: the units
  // (a sequence's heads, or one head each for heads of 64 dimensions and
  // more) are split over the threads by their keys, so that a thread given
  // the long contexts is not handed as many units as one given the short
  // ones.
  const int64_t hd = caches[0].head_dim;
  const bool whole_tokens = token_heads_unit(hd, n_heads);
  // A sequence's new keys and values go into its cache before any of its
  // units reads it: by its own unit when that is the sequence's only one,
  // else here, before the units start.
  auto store = [&](int64_t i) {
    const KvLayer& c = caches[i];
    store_kv(c, k + i * c.n_kv_heads * c.head_dim, v + i * c.n_kv_heads * c.head_dim, 1,
             starts[i]);
  };
  std::vector<int64_t> keys_before(size_t(n) + 1, 0);  // prefix sums of keys per sequence
  for (int64_t i = 0; i < n; ++i) {
    if (!whole_tokens) store(i);
    keys_before[size_t(i) + 1] = keys_before[size_t(i)] + starts[i] + 1;
  }
  // Units per sequence: one, or one a group of heads sharing a key/value head.
  const int64_t group = whole_tokens ? n_heads : heads_a_unit(n_heads, caches[0].n_kv_heads);
  const int64_t per_seq = n_heads / group;
  const int64_t units = n * per_seq;
  auto unit = [&](int64_t u) {
    const int64_t i = u / per_seq, h = u % per_seq;
    const KvLayer& c = caches[i];
    const int64_t q_row = n_heads * c.head_dim;
    if (whole_tokens) {
      store(i);
      attend_token(q + i * q_row, c, n_heads, scale, starts[i], out + i * q_row,
                   scratch_floats(token_scratch_floats(c.head_dim, n_heads, c.n_kv_heads)));
    } else
      attend_unit(q + i * q_row, c, n_heads, scale, starts[i], h * group, group, 0, 1,
                  out + i * q_row, scratch_floats(unit_scratch_floats(c.head_dim)));
  };
  if (n_heads * keys_before[size_t(n)] * hd < kInlineWork) {
    for (int64_t u = 0; u < units; ++u) unit(u);
    return;
  }
  // Cost of units [0, u): the keys of whole sequences before, plus units of
  // the current one; a unit also has a fixed cost, counted as 8 keys a head.
  auto cost_before = [&](int64_t u) {
    const int64_t i = u / per_seq, h = u % per_seq;
    const int64_t partial = i < n ? h * (starts[i] + 1) : 0;
    return per_seq * keys_before[size_t(i)] + partial + 8 * group * u;
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
      for (int64_t u = first[size_t(t)]; u < first[size_t(t) + 1]; ++u) unit(u);
  });
}

}  // namespace kiln
