// The CUDA backend: activations and weights in device memory, every op a
// kernel on one stream.
//
// Host-side arguments (token ids, positions, the first position of a step,
// expert rows) never reach a kernel by value: they are written to a pinned
// argument area and copied to its device mirror, and kernels read them
// there. That keeps every launch's parameters fixed from one decode step to
// the next, which is what lets a step be recorded as a CUDA graph and
// replayed:
//
// An embed of at most kDeferTokens tokens (a decode step: one sequence's
// token, or one token of each sequence a server is decoding) starts a
// deferred step: ops are recorded (kind,
// pointers, sizes, offsets into the argument area) instead of launched. The
// first operation that needs the step's results (to_host, synchronize, a
// routing decision made on the host, a memory transfer) ends it: the record
// list is looked up among the graphs already built; a match replays the
// graph after refreshing the arguments, a list seen for the second time is
// captured into a new graph, anything else runs eagerly. Model code knows
// nothing of this, and a step whose ops differ (a new state, another model)
// simply gets its own graph.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "kiln/backend/backend.h"
#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/core/moe_route.h"

namespace kiln {
namespace cuda {

void fail_cuda(cudaError_t e, const char* what) {
  fail("CUDA error in ", what, ": ", cudaGetErrorString(e), " (", cudaGetErrorName(e), ")");
}

namespace {
bool g_pdl = true;
}
bool pdl_enabled() { return g_pdl; }
void set_pdl_enabled(bool on) { g_pdl = on; }

}  // namespace cuda

namespace {

using cuda::check;

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS error in ", what, ": status ", int(st));
}

constexpr double kMiB = 1024.0 * 1024.0;

// A cheap host clock for KILN_CUDA_STATS=ops (a read per recorded op):
// the time-stamp counter on x86, the steady clock elsewhere.
inline uint64_t host_ticks() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

enum class Op : uint8_t {
  Matmul, Embed, Rmsnorm, Rope, StoreKv, Attention, SiluMul, Add, FillZero, Gather, ScatterAdd,
  ToHost, Conv1dSilu, DeltaGates, DeltaRule, RmsnormGated, SigmoidMul, TernaryMatmul, Relu2Mul,
  LayerNorm, AddBias, Gelu, AttentionSegments, AttentionBatch, ArgmaxRows, TopKRows, DrawRows
};
constexpr size_t kOpCount = size_t(Op::DrawRows) + 1;  // the last op's, plus one

// One recorded op. Compared bytewise, so always built from a zeroed value.
struct Rec {
  Op op;
  uint8_t flag;
  uint32_t dtype;
  uint32_t arg, arg2;  // offsets into the argument area
  float f;
  const void* p[6];
  int64_t n[6];
};

Rec blank(Op op) {
  Rec r;
  std::memset(&r, 0, sizeof r);
  r.op = op;
  return r;
}

uint64_t hash_recs(const std::vector<Rec>& recs) {
  // FNV-1a style over 8-byte words (a step is ~40 KB of records, hashed on
  // every decode step: a byte at a time cost tens of microseconds).
  static_assert(sizeof(Rec) % 8 == 0);
  uint64_t h = 1469598103934665603ull;
  const size_t words = recs.size() * sizeof(Rec) / 8;
  const auto* b = reinterpret_cast<const uint8_t*>(recs.data());
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, b + 8 * i, 8);
    h = (h ^ w) * 1099511628211ull;
    h ^= h >> 29;
  }
  return h;
}

const char* op_name(Op op) {
  static const char* const names[] = {
      "matmul", "embed", "rmsnorm", "rope", "store_kv", "attention", "silu_mul", "add",
      "fill_zero", "gather", "scatter_add", "to_host", "conv1d_silu", "delta_gates",
      "delta_rule", "rmsnorm_gated", "sigmoid_mul", "ternary_matmul", "relu2_mul",
      "layer_norm", "add_bias", "gelu", "attention_segments", "attention_batch", "argmax_rows",
      "top_k_rows", "draw_rows"};
  static_assert(sizeof names / sizeof names[0] == kOpCount);
  return names[size_t(op)];
}

// KILN_CUDA_PROFILE=1: where a step's GPU time goes, launch by launch. Every
// deferred step then runs eagerly (no graphs) with an event after each
// launch (a fused group of ops counts as one), and the times are summed by
// what the launch did: its ops, and for products the format, shape and
// tokens. The table goes to stderr when the backend is destroyed. An event
// between two launches costs the overlap of dependent launches and adds a
// launch gap to each (~2-4 us), so short ops read long; the table says how
// a step splits, not what it costs replayed.
class OpProfile {
 public:
  ~OpProfile() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  // A step begins; its rows are summed apart from other steps' (a serving
  // step of 32 sequences apart from one sequence's).
  void mark(const std::vector<Rec>& recs, cudaStream_t s) {
    int64_t tokens = 0;
    for (const Rec& r : recs)
      if (r.op == Op::Embed) tokens += r.n[2];
    prefix_ = cat("[", tokens, " tok] ");
    record(s);
  }
  void launched(const Rec* recs, size_t n, cudaStream_t s) {
    std::string label = prefix_;
    for (size_t k = 0; k < n; ++k) {
      const Rec& r = recs[k];
      if (k) label += " + ";
      label += op_name(r.op);
      if (r.op == Op::Matmul)
        label += cat(" ", dtype_name(DType(r.dtype)), " ", r.n[1], "x", r.n[2], " T=", r.n[3]);
      else if (r.op == Op::AttentionBatch || r.op == Op::Attention)
        label += cat(" T=", r.n[3], " cap=", r.n[2]);
    }
    labels_.push_back(std::move(label));
    record(s);
  }
  // Reads the step's times (waits for the step).
  void collect() {
    if (used_ == 0) return;
    check(cudaEventSynchronize(events_[used_ - 1]), "profile event");
    for (size_t k = 0; k + 1 < used_; ++k) {
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, events_[k], events_[k + 1]), "profile event");
      Entry& e = table_[labels_[k]];
      ++e.count;
      e.ms += ms;
      total_ms_ += ms;
    }
    ++steps_;
    labels_.clear();
    used_ = 0;
  }
  void print(FILE* f) const {
    std::vector<std::pair<std::string, Entry>> rows(table_.begin(), table_.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    std::fprintf(f, "kiln cuda profile: %lld steps, %.3f ms of launches (eager, one event each)\n",
                 (long long)steps_, total_ms_);
    std::fprintf(f, "kiln cuda profile: %8s %7s %9s %6s  %s\n", "ms", "share", "us each", "count",
                 "launch");
    for (const auto& [label, e] : rows)
      std::fprintf(f, "kiln cuda profile: %8.3f %6.1f%% %9.1f %6lld  %s\n", e.ms,
                   100.0 * e.ms / std::max(total_ms_, 1e-9), 1000.0 * e.ms / double(e.count),
                   (long long)e.count, label.c_str());
  }

 private:
  struct Entry {
    int64_t count = 0;
    double ms = 0.0;
  };
  void record(cudaStream_t s) {
    if (used_ == events_.size()) {
      cudaEvent_t e;
      check(cudaEventCreate(&e), "profile event");
      events_.push_back(e);
    }
    check(cudaEventRecord(events_[used_++], s), "profile event");
  }
  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;
  std::vector<std::string> labels_;
  std::string prefix_;
  std::map<std::string, Entry> table_;
  double total_ms_ = 0.0;
  int64_t steps_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o) : device_(o.device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      fail("no CUDA device is available (use --cpu)");
    }
    KILN_CHECK(device_ >= 0 && device_ < count, "--device ", device_, ": there are ", count,
               " CUDA device(s), numbered from 0");
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop;
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    device_name_ = prop.name;
    total_mem_ = prop.totalGlobalMem;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaHostAlloc(reinterpret_cast<void**>(&args_host_), kArgBytes, cudaHostAllocDefault),
          "pinned argument area");
    args_dev_ = static_cast<uint8_t*>(raw_alloc(kArgBytes, "argument area"));
    check(cudaHostAlloc(reinterpret_cast<void**>(&out_host_), kOutBytes, cudaHostAllocDefault),
          "pinned output area");
    partial_ = static_cast<float*>(raw_alloc(kPartialBytes, "attention scratch"));
    partial_bytes_ = kPartialBytes;
    counter_ = static_cast<unsigned*>(raw_alloc(sizeof(unsigned), "a counter"));
    check(cudaMemset(counter_, 0, sizeof(unsigned)), "a counter");
    scratch_.counter = counter_;
    scratch_.input = static_cast<uint8_t*>(raw_alloc(kInputBytes, "matvec input"));
    scratch_.input_bytes = kInputBytes;
    using cuda::env_is;
    graphs_enabled_ = !env_is("KILN_CUDA_GRAPHS", "0");
    decode_ahead_ = !env_is("KILN_CUDA_AHEAD", "0");
    if (const char* d = std::getenv("KILN_CUDA_DEFER_TOKENS"))
      defer_tokens_ = std::clamp<int64_t>(std::atoll(d), 1, kDeferTokens);
    if (env_is("KILN_CUDA_STATS", "1") || env_is("KILN_CUDA_STATS", "ops")) {
      stats_ = std::make_unique<Stats>();
      stats_->by_op = env_is("KILN_CUDA_STATS", "ops");
      stats_->made = std::chrono::steady_clock::now();
      stats_->made_ticks = host_ticks();
    }
    if (env_is("KILN_CUDA_PROFILE", "1")) profile_ = std::make_unique<OpProfile>();
    f16_prefill_ = !env_is("KILN_CUDA_PREFILL", "tf32");
    bf16_tensor_ = !env_is("KILN_CUDA_BF16", "f32");
    fuse_enabled_ = !env_is("KILN_CUDA_FUSE", "0");
    reuse_input_ = !env_is("KILN_CUDA_MV_REUSE", "0");
    fuse_mixed_ = !env_is("KILN_CUDA_MV_MIXED", "0");
    fold_combine_ = !env_is("KILN_CUDA_FOLD_COMBINE", "0");
    honour_invariant_ = !env_is("KILN_CUDA_BATCH_INVARIANT", "0");
    // Programmatic dependent launch needs compute capability 9.0 (Hopper).
    cuda::set_pdl_enabled(prop.major >= 9 && !env_is("KILN_CUDA_PDL", "0"));
  }

  ~CudaBackend() override {
    if (stats_) {
      std::fprintf(stderr,
                   "kiln cuda stats: steps replayed %lld, captured %lld, capture failed %lld, "
                   "run eagerly %lld (%lld ops); ops outside steps %lld\n",
                   (long long)stats_->replayed, (long long)stats_->captured,
                   (long long)stats_->capture_failed, (long long)stats_->eager_steps,
                   (long long)stats_->eager_step_ops, (long long)stats_->direct_ops);
      for (const auto& [why, n] : stats_->ended_by)
        std::fprintf(stderr, "kiln cuda stats: %lld steps ended by %s\n", (long long)n,
                     why.c_str());
      if (stats_->timed)
        std::fprintf(stderr,
                     "kiln cuda stats: replayed steps: GPU %.1f us each (%lld timed), launch to "
                     "launch %.1f us\n",
                     1000.0 * stats_->gpu_ms / double(stats_->timed), (long long)stats_->timed,
                     stats_->periods ? 1000.0 * stats_->period_ms / double(stats_->periods) : 0.0);
      if (stats_->timed) {
        const double n = double(stats_->timed) / 1000.0;
        std::fprintf(stderr,
                     "kiln cuda stats: host per replayed step: recording %.1f us, matching %.1f "
                     "us, graph launch %.1f us, waiting for the GPU %.1f us, output copy %.1f us, "
                     "caller between steps %.1f us\n",
                     stats_->record_ms / n, stats_->match_ms / n, stats_->launch_ms / n,
                     stats_->wait_ms / n, stats_->copy_ms / n, stats_->between_ms / n);
      }
      if (stats_->timed && stats_->by_op) {
        // Ticks to microseconds by the clock over the backend's life.
        const double us = std::chrono::duration<double, std::micro>(
                              std::chrono::steady_clock::now() - stats_->made)
                              .count();
        const double per_us = double(host_ticks() - stats_->made_ticks) / us;
        for (size_t o = 0; o < stats_->op_ticks.size(); ++o)
          if (stats_->op_n[o])
            std::fprintf(stderr,
                         "kiln cuda stats: recording, up to each %s: %.1f a step, %.3f us "
                         "each, %.2f us a step\n",
                         op_name(Op(o)), double(stats_->op_n[o]) / double(stats_->timed),
                         double(stats_->op_ticks[o]) / per_us / double(stats_->op_n[o]),
                         double(stats_->op_ticks[o]) / per_us / double(stats_->timed));
      }
      if (!stats_->last_failure.empty())
        std::fprintf(stderr, "kiln cuda stats: last capture failure: %s\n",
                     stats_->last_failure.c_str());
    }
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    if (profile_) profile_->print(stderr);
    profile_.reset();
    if (stats_ && stats_->e0) cudaEventDestroy(stats_->e0), cudaEventDestroy(stats_->e1);
    for (Flight& f : flights_)
      if (f.done) cudaEventDestroy(f.start), cudaEventDestroy(f.done);
    for (auto& [h, g] : graphs_) cudaGraphExecDestroy(g.exec);
    if (blas_) cublasDestroy(blas_);
    for (void* c : chunks_) cudaFree(c);
    if (dq_) cudaFree(dq_);
    if (xh_) cudaFree(xh_);
    if (xb_) cudaFree(xb_);
    if (ternary_) cudaFree(ternary_);
    if (delta_) cudaFree(delta_);
    if (argmax_dev_) cudaFree(argmax_dev_);
    if (top_dev_) cudaFree(top_dev_);
    for (void* p : retired_) cudaFree(p);
    cudaFree(partial_);
    cudaFree(counter_);
    cudaFree(scratch_.input);
    cudaFree(args_dev_);
    cudaFreeHost(args_host_);
    cudaFreeHost(out_host_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override {
    return cat("CUDA ", device_, " (", device_name_, ", ", int(total_mem_ / (kMiB * 1024) + 0.5),
               " GiB)");
  }

  // ------------------------------------------------------------------ memory

  void* alloc(size_t bytes) override {
    flush("alloc");
    return raw_alloc(bytes, "a buffer");
  }
  // Called from destructors, also while an error unwinds: never throws. A
  // failed free after a kernel fault changes nothing for the user, who is
  // already getting that fault's message.
  void free(void* p) override {
    try {
      flush("free");
    } catch (const Error&) {
    }
    // A graph may hold nodes on this memory (a copy, a memset): a new buffer
    // at the same address would match its records but not its allocation.
    drop_graphs();
    xh_src_ = nullptr;
    if (p && cudaFree(p) != cudaSuccess) cudaGetLastError();
  }
  void* alloc_host(size_t bytes) override {
    void* p = nullptr;
    check(cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault), "pinned host memory");
    pinned_[reinterpret_cast<uintptr_t>(p)] = bytes;
    return p;
  }
  void free_host(void* p) override {
    if (!p) return;
    try {
      flush("free_host");
    } catch (const Error&) {
    }
    drop_graphs();  // a graph may copy into it
    pinned_.erase(reinterpret_cast<uintptr_t>(p));
    if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
  }
  // Whether [p, p + bytes) lies in memory from alloc_host.
  bool pinned(const void* p, size_t bytes) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = pinned_.upper_bound(a);
    if (it == pinned_.begin()) return false;
    --it;
    return a + bytes <= it->first + it->second;
  }
  void to_device(void* dst, const void* host, size_t bytes) override {
    flush("to_device");
    xh_src_ = nullptr;
    check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_), "copy to the GPU");
    check(cudaStreamSynchronize(stream_), "copy to the GPU");
  }
  void to_host(void* host, const void* src, size_t bytes) override {
    if (deferring_ && out_used_ + bytes <= out_limit_) {
      Rec r = blank(Op::ToHost);
      r.p[0] = src;
      r.n[0] = int64_t(bytes);
      r.n[1] = int64_t(out_used_);
      copy_out_.push_back({host, out_used_, bytes});
      out_used_ += (bytes + 255) / 256 * 256;
      record(r);
      flush("to_host");
      return;
    }
    flush("to_host (too large to stage)");
    check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy from the GPU");
    check(cudaStreamSynchronize(stream_), "copy from the GPU");
  }
  void to_host_rows(void* const* hosts, const void* src, size_t row_bytes,
                    int64_t rows) override {
    const size_t padded = (row_bytes + 255) / 256 * 256;
    if (!deferring_ || out_used_ + padded * size_t(rows) > out_limit_)
      return Backend::to_host_rows(hosts, src, row_bytes, rows);
    // Every row in the step, then one wait (not a wait per row): straight
    // into pinned destinations, else staged in the pinned output area.
    for (int64_t j = 0; j < rows; ++j) {
      Rec r = blank(Op::ToHost);
      r.p[0] = static_cast<const uint8_t*>(src) + size_t(j) * row_bytes;
      r.n[0] = int64_t(row_bytes);
      if (pinned(hosts[j], row_bytes)) {
        r.flag = 1;
        r.p[1] = hosts[j];
        direct_out_ = true;
      } else {
        r.n[1] = int64_t(out_used_);
        copy_out_.push_back({hosts[j], out_used_, row_bytes});
        out_used_ += padded;
      }
      record(r);
    }
    flush("to_host");
  }
  void argmax_rows(const float* src, int64_t rows, int64_t cols,
                   int32_t* const* outs) override {
    if (rows <= 0) return;
    grow_scratch(argmax_dev_, argmax_bytes_, size_t(rows) * sizeof(int32_t), "argmax indices",
                 64 * sizeof(int32_t));
    Rec r = blank(Op::ArgmaxRows);
    r.p[0] = src;
    r.p[1] = argmax_dev_;
    r.n[0] = rows;
    r.n[1] = cols;
    submit(r);
    end_with_picks(rows, outs);
  }
  void draw_rows(const float* src, int64_t rows, int64_t cols, const DrawSpec* draws,
                 int32_t* const* outs) override {
    if (rows <= 0) return;
    int64_t k = 0;  // each row's top_k are the first of the most any row asks for
    for (int64_t j = 0; j < rows; ++j) k = std::max<int64_t>(k, draws[j].top_k);
    KILN_CHECK(k > 0 && k <= cols && k <= kDrawMaxTopK, "draw_rows: ", k,
               " candidates of rows of ", cols);
    grow_scratch(argmax_dev_, argmax_bytes_, size_t(rows) * sizeof(int32_t), "argmax indices",
                 64 * sizeof(int32_t));
    submit_top_k(src, rows, cols, k);
    Rec r = blank(Op::DrawRows);
    r.p[0] = top_dev_;
    r.p[1] = argmax_dev_;
    r.n[0] = rows;
    r.n[1] = k;
    r.arg = push_args(draws, size_t(rows) * sizeof(DrawSpec));
    submit(r);
    end_with_picks(rows, outs);
  }
  // After argmax_rows' or draw_rows' op: the picks come back with the step,
  // one 4-byte row per sequence, and end it (a step's last op): at
  // await_step() for a step launched ahead.
  void end_with_picks(int64_t rows, int32_t* const* outs) {
    if (rows_with_step(argmax_dev_, rows, 1, outs)) flush("to_host", /*may_run_on=*/true);
    ahead_next_ = false;  // (a step that was not recorded ran as called)
  }

  bool decodes_ahead() const override { return decode_ahead_; }
  void step_ahead() override { ahead_next_ = true; }
  void await_step() override {
    if (Flight* f = oldest_flight()) finish(*f);
  }
  void embed_last_pick(const Weight& table, float* out) override {
    KILN_CHECK(argmax_dev_, "no pick to embed: argmax_rows has not run");
    Rec r = embed_rec(table, 1, out);
    r.flag = 1;  // the id is argmax_rows' first, on the device
    r.p[2] = argmax_dev_;
    submit(r);
  }
  // Brings rows x width values of T on the device (dev) back to outs[j],
  // row j's: with the step being recorded when it has room for them (true),
  // else now.
  template <class T>
  bool rows_with_step(const void* dev, int64_t rows, int64_t width, T* const* outs) {
    const size_t row_bytes = size_t(width) * sizeof(T), bytes = size_t(rows) * row_bytes;
    if (deferring_ && out_used_ + bytes <= out_limit_) {
      Rec t = blank(Op::ToHost);
      t.p[0] = dev;
      t.n[0] = int64_t(bytes);
      t.n[1] = int64_t(out_used_);
      record(t);
      for (int64_t j = 0; j < rows; ++j)
        copy_out_.push_back({outs[j], out_used_ + size_t(j) * row_bytes, row_bytes});
      out_used_ += (bytes + 255) / 256 * 256;
      return true;
    }
    std::vector<T> all(size_t(rows * width));
    to_host(all.data(), dev, bytes);
    for (int64_t j = 0; j < rows; ++j) std::copy_n(all.begin() + j * width, width, outs[j]);
    return false;
  }
  // A row's selection (Qwen3's 151936 logits: 74 chunks, then their
  // candidates) takes ~20 us at k = 40 on an H100 (32 rows ~59 us), less
  // than bringing its logits over (~13 us) and scanning them on the host
  // (~21 us), from one row on.
  int64_t top_k_rows_from() const override { return 1; }
  void top_k_rows(const float* src, int64_t rows, int64_t cols, int64_t k,
                  Candidate* const* outs) override {
    if (rows <= 0 || k <= 0) return;
    submit_top_k(src, rows, cols, k);
    // They come back with the step (the caller's synchronize() or the
    // argmax after them ends it).
    rows_with_step(top_dev_, rows, k, outs);
  }
  // The op making each row's k candidates at top_dev_ (k a row, in no order).
  void submit_top_k(const float* src, int64_t rows, int64_t cols, int64_t k) {
    static_assert(sizeof(Candidate) == sizeof(cuda::LogitId));
    KILN_CHECK(k <= cols && k <= cuda::kTopKMax, "top_k_rows: ", k, " candidates of rows of ",
               cols);
    const size_t bytes = size_t(rows) * size_t(k) * sizeof(Candidate);
    // The candidates, then the first stage's per chunk (long rows).
    const size_t scratch = cuda::top_k_rows_scratch(rows, cols, k) * sizeof(Candidate);
    grow_scratch(top_dev_, top_bytes_, bytes + scratch, "top-k candidates",
                 64 * 64 * sizeof(Candidate));
    Rec r = blank(Op::TopKRows);
    r.p[0] = src;
    r.p[1] = top_dev_;
    r.p[2] = static_cast<char*>(top_dev_) + bytes;
    r.n[0] = rows;
    r.n[1] = cols;
    r.n[2] = k;
    submit(r);
  }
  void fill_zero(void* dst, size_t bytes) override {
    Rec r = blank(Op::FillZero);
    r.p[0] = dst;
    r.n[0] = int64_t(bytes);
    submit(r);
  }
  void synchronize() override {
    flush("synchronize");
    check(cudaStreamSynchronize(stream_), "synchronize");
    finish_flights();
  }

  Weight load_weight(const TensorView& view) override {
    flush("load_weight");
    KILN_CHECK(cuda::format_supported(view.dtype) || view.dtype == DType::I2_S ||
                   view.dtype == DType::TQ2_0,
               "tensor ", view.name, ": block type ",
               dtype_name(view.dtype), " is not supported by the CUDA backend");
    Weight w;
    w.view = view;
    // Weights live in large chunks; the 64 bytes of slack after each let the
    // matvec kernel's aligned 16-byte loads run past a row's last block.
    const size_t need = (view.nbytes + 64 + 255) / 256 * 256;
    if (chunk_left_ < need) {
      const size_t size = std::max(need, kChunkBytes);
      chunk_ = static_cast<uint8_t*>(raw_alloc(size, view.name.c_str()));
      chunks_.push_back(chunk_);
      chunk_left_ = size;
    }
    void* dst = chunk_;
    chunk_ += need;
    chunk_left_ -= need;
    check(cudaMemcpyAsync(dst, view.data, view.nbytes, cudaMemcpyHostToDevice, stream_),
          "uploading a weight");
    check(cudaStreamSynchronize(stream_), "uploading a weight");
    w.data = dst;
    return w;
  }

  // --------------------------------------------------------------------- ops

  void set_batch_invariant(bool on) override { batch_invariant_ = on && honour_invariant_; }
  void set_exact_bf16_products(bool on) override { exact_bf16_ = on; }

  void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) override {
    Rec r = blank(Op::Matmul);
    r.p[0] = w.data;
    r.dtype = uint32_t(w.view.dtype);
    r.n[0] = int64_t(w.view.row_bytes());
    r.n[1] = w.rows();
    r.n[2] = w.cols();
    r.p[1] = x;
    r.n[3] = n_tokens;
    r.p[2] = y;
    submit(r);
  }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override {
    Rec r = embed_rec(table, n, out);
    r.arg = push_args(ids, size_t(n) * sizeof(int32_t), sizeof(int32_t));
    submit(r);
  }
  // An embed of n rows of table into out, its ids not yet named; a decode
  // step's embed starts the step's recording.
  Rec embed_rec(const Weight& table, int64_t n, float* out) {
    if (n <= defer_tokens_ && graphs_enabled_ && !deferring_) begin_deferred();
    Rec r = blank(Op::Embed);
    r.p[0] = table.data;
    r.dtype = uint32_t(table.view.dtype);
    r.n[0] = int64_t(table.view.row_bytes());
    r.n[1] = table.cols();
    r.n[2] = n;
    r.p[1] = out;
    return r;
  }

  void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
               float* y) override {
    Rec r = blank(Op::Rmsnorm);
    r.p[0] = x;
    r.p[1] = w;
    r.n[0] = rows;
    r.n[1] = dim;
    r.f = eps;
    r.p[2] = y;
    submit(r);
  }

  void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rot_dims,
            const int32_t* positions, const float* inv_freq, RopeStyle style) override {
    Rec r = blank(Op::Rope);
    r.p[0] = x;
    r.n[0] = n_tokens;
    r.n[1] = n_heads;
    r.n[2] = head_dim;
    r.n[3] = rot_dims;
    r.p[1] = inv_freq;
    r.flag = uint8_t(style);
    r.arg = push_args(positions, size_t(n_tokens) * sizeof(int32_t));
    submit(r);
  }

  void store_kv(const KvLayer& c, const float* k, const float* v, int64_t n_tokens,
                int64_t start) override {
    KILN_CHECK(!c.blocks, "the CUDA backend keeps each sequence's KV cache contiguous, not paged");
    KILN_CHECK(start + n_tokens <= c.capacity, "context full: ", start + n_tokens,
               " positions needed, the cache holds ", c.capacity, " (raise --ctx-size)");
    Rec r = blank(Op::StoreKv);
    r.p[0] = c.k;
    r.p[1] = c.v;
    r.flag = c.dtype == DType::F16;
    r.n[0] = c.n_kv_heads;
    r.n[1] = c.head_dim;
    r.n[2] = c.capacity;
    r.p[2] = k;
    r.p[3] = v;
    r.n[3] = n_tokens;
    const int32_t s = int32_t(start);
    r.arg = push_args(&s, sizeof s);
    submit(r);
  }

  void attention(const float* q, const KvLayer& c, const AttentionParams& p,
                 float* out) override {
    KILN_CHECK(!c.blocks, "the CUDA backend keeps each sequence's KV cache contiguous, not paged");
    KILN_CHECK(c.head_dim <= 256, "attention: head_dim ", c.head_dim,
               " is over the CUDA backend's limit of 256");
    Rec r = blank(Op::Attention);
    r.p[0] = q;
    r.p[1] = c.k;
    r.p[2] = c.v;
    r.flag = c.dtype == DType::F16;
    r.n[0] = c.n_kv_heads;
    r.n[1] = c.head_dim;
    r.n[2] = c.capacity;
    r.n[3] = p.n_tokens;
    r.n[4] = p.n_heads;
    r.f = p.scale;
    r.p[3] = out;
    r.arg2 = uint32_t(p.n_tokens == 1 ? decode_splits(c.capacity, 1, p.n_heads, c.head_dim) : 1);
    const int32_t s = int32_t(p.start);
    r.arg = push_args(&s, sizeof s);
    submit(r);
  }

  // Flash-decoding splits for `rows` one-token queries of n_heads heads over
  // caches of `capacity` positions: one split per 64 positions (at most 32;
  // a short sequence uses the first few, a split taking >= 32 keys, a long
  // one spreads over enough blocks to fill the GPU), halved until the
  // partials fit. By capacity, not position, so that a recorded step stays
  // valid as the sequences grow (blocks past the last key exit early).
  // Serving (batch_invariant_): a row gets the splits it gets alone, since
  // they set its order of summation, and the partials grow to fit instead.
  int decode_splits(int64_t capacity, int64_t rows, int64_t n_heads, int64_t head_dim) {
    // KILN_CUDA_ATTN_SPLIT: positions a split (default 64), to compare.
    static const int64_t per_split = cuda::env_int("KILN_CUDA_ATTN_SPLIT", 64, 32, 1 << 20);
    int splits = int(std::clamp<int64_t>((capacity + per_split - 1) / per_split, 1, 32));
    const size_t per_row = size_t(n_heads) * size_t(head_dim + 2) * sizeof(float);
    if (batch_invariant_) {
      while (splits > 1 && per_row * size_t(splits) > kPartialBytes) splits /= 2;
      grow_scratch(partial_, partial_bytes_, per_row * size_t(rows * splits), "attention scratch");
      return splits;
    }
    while (splits > 1 && per_row * size_t(rows * splits) > partial_bytes_) splits /= 2;
    return splits;
  }

  void attention_decode_batch(const float* q, const float* k, const float* v,
                              const KvLayer* caches, const int64_t* starts, int64_t n,
                              int64_t n_heads, float scale, float* out) override {
    const KvLayer& c0 = caches[0];
    bool one_kernel = n > 0 && n_heads % c0.n_kv_heads == 0 &&
                      cuda::decode_batch_supported(c0.head_dim, n_heads / c0.n_kv_heads);
    for (int64_t i = 0; i < n && one_kernel; ++i) {
      const KvLayer& c = caches[i];
      one_kernel = !c.blocks && c.dtype == c0.dtype && c.n_kv_heads == c0.n_kv_heads &&
                   c.head_dim == c0.head_dim && c.capacity == c0.capacity;
    }
    if (!one_kernel)
      return Backend::attention_decode_batch(q, k, v, caches, starts, n, n_heads, scale, out);
    std::vector<cuda::KvItem> items(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      KILN_CHECK(starts[i] < caches[i].capacity, "context full: ", starts[i] + 1,
                 " positions needed, the cache holds ", caches[i].capacity,
                 " (raise --ctx-size)");
      items[size_t(i)] = {caches[i].k, caches[i].v, starts[i]};
    }
    Rec r = blank(Op::AttentionBatch);
    r.p[0] = q;
    r.p[1] = k;
    r.p[2] = v;
    r.p[3] = out;
    r.flag = c0.dtype == DType::F16;
    r.n[0] = c0.n_kv_heads;
    r.n[1] = c0.head_dim;
    r.n[2] = c0.capacity;
    r.n[3] = n;
    r.n[4] = n_heads;
    r.f = scale;
    r.arg2 = uint32_t(decode_splits(c0.capacity, n, n_heads, c0.head_dim));
    r.arg = push_args(items.data(), items.size() * sizeof(cuda::KvItem));
    submit(r);
  }

  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override {
    Rec r = blank(Op::SiluMul);
    r.p[0] = gate;
    r.p[1] = up;
    r.n[0] = n;
    r.p[2] = out;
    submit(r);
  }

  void add(float* x, const float* y, int64_t n) override {
    Rec r = blank(Op::Add);
    r.p[0] = x;
    r.p[1] = y;
    r.n[0] = n;
    submit(r);
  }

  // Routing is decided on the host (its results are host memory by contract),
  // by the CPU backend's own function.
  void moe_route(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                 bool renormalise, int32_t* ids, float* weights) override {
    route_buf_.resize(size_t(n_tokens * n_experts));
    to_host(route_buf_.data(), logits, route_buf_.size() * sizeof(float));
    route_experts(route_buf_.data(), n_tokens, n_experts, k, renormalise, ids, weights);
  }

  void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t dim,
                   float* out) override {
    Rec r = blank(Op::Gather);
    r.p[0] = x;
    r.n[0] = n;
    r.n[1] = dim;
    r.p[1] = out;
    r.arg = push_args(rows, size_t(n) * sizeof(int32_t));
    submit(r);
  }

  void scatter_add_rows(float* y, const float* x, const int32_t* rows, const float* scales,
                        int64_t n, int64_t dim) override {
    Rec r = blank(Op::ScatterAdd);
    r.p[0] = y;
    r.p[1] = x;
    r.n[0] = n;
    r.n[1] = dim;
    r.arg = push_args(rows, size_t(n) * sizeof(int32_t));
    r.arg2 = push_args(scales, size_t(n) * sizeof(float));
    submit(r);
  }

  // ------------------------------------------------- Gated DeltaNet (hybrids)

  void conv1d_silu(const float* x, int64_t n_tokens, int64_t channels, const float* weight,
                   int64_t kernel, float* state, float* out) override {
    Rec r = blank(Op::Conv1dSilu);
    r.p[0] = x;
    r.p[1] = weight;
    r.p[2] = state;
    r.p[3] = out;
    r.n[0] = n_tokens;
    r.n[1] = channels;
    r.n[2] = kernel;
    submit(r);
  }

  void deltanet_gates(const float* a, const float* b, const float* A, const float* dt_bias,
                      int64_t n_tokens, int64_t n_heads, float* g, float* beta) override {
    Rec r = blank(Op::DeltaGates);
    r.p[0] = a;
    r.p[1] = b;
    r.p[2] = A;
    r.p[3] = dt_bias;
    r.p[4] = g;
    r.p[5] = beta;
    r.n[0] = n_tokens;
    r.n[1] = n_heads;
    submit(r);
  }

  void gated_delta_rule(const float* qkv, const float* g, const float* beta, float* state,
                        const DeltaRuleParams& dp, float* out) override {
    KILN_CHECK(dp.n_k_heads > 0 && dp.n_v_heads % dp.n_k_heads == 0, "gated delta rule: ",
               dp.n_v_heads, " value heads are not a multiple of ", dp.n_k_heads, " key heads");
    Rec r = blank(Op::DeltaRule);
    r.p[0] = qkv;
    r.p[1] = g;
    r.p[2] = beta;
    r.p[3] = state;
    r.p[4] = out;
    r.n[0] = dp.n_tokens;
    r.n[1] = dp.n_k_heads;
    r.n[2] = dp.n_v_heads;
    r.n[3] = dp.head_k_dim;
    r.n[4] = dp.head_v_dim;
    r.flag = dp.tiled_heads;
    // Scratch for a prompt's chunked form, sized here as the ternary
    // activations' are (outgrown buffers stay allocated for recorded ops).
    const size_t need = cuda::delta_rule_scratch_bytes(dp.n_tokens, dp.n_v_heads, dp.head_k_dim,
                                                       dp.head_v_dim);
    grow_scratch(delta_, delta_bytes_, need, "the delta rule's chunk scratch");
    r.p[5] = need ? delta_ : nullptr;
    r.n[5] = int64_t(need);
    submit(r);
  }

  void rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows, int64_t dim,
                     float eps, float* y) override {
    Rec r = blank(Op::RmsnormGated);
    r.p[0] = x;
    r.p[1] = w;
    r.p[2] = z;
    r.p[3] = y;
    r.n[0] = rows;
    r.n[1] = dim;
    r.f = eps;
    submit(r);
  }

  // ---------------------------------------------------- BitNet b1.58

  void ternary_matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) override {
    const DType t = w.view.dtype;
    const int64_t N = w.rows(), K = w.cols();
    KILN_CHECK(cuda::ternary_supported(t, K), "tensor ", w.view.name, ": the CUDA backend's ",
               "ternary product takes I2_S (rows of whole 32-value runs) and TQ2_0, not ",
               dtype_name(t), " (use --cpu)");
    // Scratch for the int8 activations, sized here, outside any recorded
    // step; outgrown buffers stay allocated, since recorded ops may name them.
    const size_t need = size_t(n_tokens * K) + size_t(n_tokens) * sizeof(float) + 256;
    grow_scratch(ternary_, ternary_bytes_, need, "ternary scratch", size_t(1) << 20);
    Rec r = blank(Op::TernaryMatmul);
    r.p[0] = w.data;
    r.dtype = uint32_t(t);
    r.n[0] = N;
    r.n[1] = K;
    r.p[1] = x;
    r.n[2] = n_tokens;
    r.p[2] = y;
    r.p[3] = ternary_;
    r.n[3] = int64_t((size_t(n_tokens * K) + 255) / 256 * 256);  // offset of the scales
    submit(r);
  }

  void relu2_mul(const float* gate, const float* up, int64_t n, float* out) override {
    Rec r = blank(Op::Relu2Mul);
    r.p[0] = gate;
    r.p[1] = up;
    r.n[0] = n;
    r.p[2] = out;
    submit(r);
  }

  void sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim,
                   bool per_row) override {
    Rec r = blank(Op::SigmoidMul);
    r.p[0] = x;
    r.p[1] = gate;
    r.n[0] = rows;
    r.n[1] = dim;
    r.flag = per_row;
    submit(r);
  }

  // ------------------------------------------------- vision encoders

  void layernorm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim,
                 float eps, float* y) override {
    Rec r = blank(Op::LayerNorm);
    r.p[0] = x;
    r.p[1] = w;
    r.p[2] = b;
    r.p[3] = y;
    r.n[0] = rows;
    r.n[1] = dim;
    r.f = eps;
    submit(r);
  }

  void add_bias(float* x, const float* bias, int64_t rows, int64_t dim) override {
    Rec r = blank(Op::AddBias);
    r.p[0] = x;
    r.p[1] = bias;
    r.n[0] = rows;
    r.n[1] = dim;
    submit(r);
  }

  void gelu(float* x, int64_t n, bool tanh_approx) override {
    Rec r = blank(Op::Gelu);
    r.p[0] = x;
    r.n[0] = n;
    r.flag = tanh_approx;
    submit(r);
  }

  void attention_segments(const float* q, const float* k, const float* v, int64_t n_tokens,
                          int64_t n_heads, int64_t head_dim, const int32_t* bounds,
                          int64_t n_segments, float scale, float* out) override {
    KILN_CHECK(head_dim <= 128, "attention_segments: head_dim ", head_dim,
               " is over the CUDA backend's limit of 128");
    KILN_CHECK(n_segments >= 1 && bounds[0] == 0 && bounds[n_segments] == n_tokens,
               "attention_segments: the segments do not cover the ", n_tokens, " tokens");
    Rec r = blank(Op::AttentionSegments);
    r.p[0] = q;
    r.p[1] = k;
    r.p[2] = v;
    r.p[3] = out;
    r.n[0] = n_tokens;
    r.n[1] = n_heads;
    r.n[2] = head_dim;
    r.n[3] = n_segments;
    r.f = scale;
    r.arg = push_args(bounds, size_t(n_segments + 1) * sizeof(int32_t));
    submit(r);
  }

 private:
  static constexpr size_t kArgBytes = 4 << 20;      // argument area, pinned + device
  static constexpr size_t kStepArgBytes = 1 << 20;  // its first part: a deferred step's
  // Pinned staging of a step's outputs: a serving step's 64 rows of logits
  // of a 151936-token vocabulary.
  static constexpr size_t kOutBytes = 40 << 20;
  static constexpr size_t kPartialBytes = 8 << 20;  // flash-decoding partials
  static constexpr size_t kInputBytes = 2 << 20;    // a fused product's prepared input
  static constexpr size_t kChunkBytes = 256 << 20;  // weight chunk
  static constexpr size_t kDequantBytes = 64 << 20; // prefill dequantization tile
  static constexpr size_t kMaxGraphs = 64;  // a serving batch of each size, and more
  // The largest step recorded and replayed as a graph: a serving batch of
  // 64 one-token sequences (a longer prompt's ops vary from call to call,
  // and its launches are long enough that their overhead does not count).
  static constexpr int64_t kDeferTokens = 64;

  struct CopyOut {
    void* host;
    size_t offset, bytes;
  };
  // Decoding ahead (step_ahead): a step launched and not yet waited for,
  // which used the halves of the argument and output areas of its index.
  struct Flight {
    cudaEvent_t start = nullptr, done = nullptr;  // start: timed steps only (KILN_CUDA_STATS)
    std::vector<CopyOut> outs;
    int64_t seq = 0;  // launch order
    bool busy = false, timed = false;
  };
  struct Graph {
    std::vector<Rec> recs;
    size_t arg_bytes = 0;
    cudaGraphExec_t exec = nullptr;
  };

  // Grows a scratch buffer to at least need bytes (no fewer than floor);
  // the outgrown one stays allocated until the backend goes, since recorded
  // ops may still name it. True when the buffer was replaced.
  template <class T>
  bool grow_scratch(T*& buf, size_t& have, size_t need, const char* what, size_t floor = 0) {
    if (have >= need) return false;
    if (buf) retired_.push_back(buf);
    have = std::max(need, floor);
    buf = static_cast<T*>(raw_alloc(have, what));
    return true;
  }

  void* raw_alloc(size_t bytes, const char* what) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("out of GPU memory allocating ", what, ": ", int64_t(double(bytes) / kMiB + 0.5),
           " MiB needed, ", int64_t(double(free_b) / kMiB), " MiB free of ",
           int64_t(double(total_b) / kMiB), " MiB on ", device_name_,
           " (try a smaller --ctx-size, or --cpu)");
    }
    check(e, "cudaMalloc");
    return p;
  }

  // Host arguments to device memory; returns their offset in the area.
  // align (a deferred step's arguments only; 16 otherwise): 4 lets the
  // token ids of consecutive embeds follow each other, so that they run as
  // one gather (fuse_embeds_at).
  uint32_t push_args(const void* src, size_t bytes, size_t align = 16) {
    const size_t padded = (bytes + 15) / 16 * 16;
    KILN_CHECK(padded <= kArgBytes - kStepArgBytes, "CUDA backend: ", bytes,
               " bytes of op arguments is more than the argument area holds");
    if (deferring_) {
      const size_t off = (step_used_ + align - 1) / align * align;
      if (off + bytes <= step_limit_) {
        std::memcpy(args_host_ + off, src, bytes);
        step_used_ = off + bytes;
        return uint32_t(off);
      }
      flush("argument area full");  // an unusually large step: run it eagerly
    }
    if (ring_ + padded > kArgBytes) {
      // The pinned ring wraps: earlier copies out of it must have finished.
      check(cudaStreamSynchronize(stream_), "argument copy");
      ring_ = kStepArgBytes;
    }
    const size_t off = ring_;
    std::memcpy(args_host_ + off, src, bytes);
    check(cudaMemcpyAsync(args_dev_ + off, args_host_ + off, bytes, cudaMemcpyHostToDevice,
                          stream_),
          "argument copy");
    ring_ += padded;
    return uint32_t(off);
  }

  void submit(const Rec& r) {
    if (deferring_) {
      record(r);
    } else {
      if (stats_) ++stats_->direct_ops;
      execute(r);
    }
  }

  // A step's record, compared as it is made with the record at the same
  // place in the graph the last step ran (while both are in cache): a
  // decode step that matches it all the way replays that graph without
  // hashing and comparing its ~80 KB of records at the end (~20 us of host
  // time a step, with the GPU idle).
  void record(const Rec& r) {
    if (stats_ && stats_->by_op) {
      const uint64_t now = host_ticks();
      stats_->step_ticks[size_t(r.op)] += now - stats_->last_tick;
      ++stats_->step_n[size_t(r.op)];
      stats_->last_tick = now;
    }
    if (tracking_) {
      const size_t i = recs_.size();
      tracking_ = i < last_graph_->recs.size() &&
                  std::memcmp(&last_graph_->recs[i], &r, sizeof r) == 0;
    }
    recs_.push_back(r);
  }

  void begin_deferred() {
    // The previous step's graph may still be reading the step's arguments.
    if (launched_) {
      check(cudaStreamSynchronize(stream_), "graph replay");
      launched_ = false;
    }
    // A step launched ahead takes the halves of the argument and output
    // areas that the step before it did not, once the step that last used
    // them is done and its outputs are delivered; any other step takes the
    // whole areas, once every step in flight is.
    ahead_step_ = std::exchange(ahead_next_, false);
    if (ahead_step_) {
      area_ ^= 1;
      if (flights_[area_].busy) finish(flights_[area_]);
    } else {
      finish_flights();
      area_ = 0;
    }
    step_base_ = ahead_step_ ? size_t(area_) * (kStepArgBytes / 2) : 0;
    step_limit_ = ahead_step_ ? step_base_ + kStepArgBytes / 2 : kStepArgBytes;
    out_base_ = ahead_step_ ? size_t(area_) * (kOutBytes / 2) : 0;
    out_limit_ = ahead_step_ ? out_base_ + kOutBytes / 2 : kOutBytes;
    last_graph_ = area_graph_[area_];
    deferring_ = true;
    tracking_ = last_graph_ != nullptr;
    if (stats_) {
      stats_->step_begin = std::chrono::steady_clock::now();
      stats_->last_tick = host_ticks();
      stats_->step_ticks.fill(0);
      stats_->step_n.fill(0);
    }
    recs_.clear();
    copy_out_.clear();
    step_used_ = step_base_;
    out_used_ = out_base_;
  }

  // Ends a deferred step: replays a matching graph, captures one for a
  // step seen before, or runs the ops eagerly. may_run_on: the step's
  // outputs may wait for await_step() where it was launched ahead
  // (step_ahead); otherwise they are in place on return.
  void flush(const char* why = "an op outside the step", bool may_run_on = false) {
    if (!deferring_) return;
    deferring_ = false;
    const bool ahead = std::exchange(ahead_step_, false) && may_run_on;
    if (recs_.empty()) return;
    if (stats_) ++stats_->ended_by[why];
    using clock = std::chrono::steady_clock;
    const clock::time_point t_flush = clock::now();
    clock::time_point t_launch{}, t_wait{};
    // The graph to replay: the last one, where every record matched it as
    // it was made (record), else one found by the records' hash. Profiling
    // runs every step eagerly, each launch between two events (OpProfile):
    // no graph is replayed or captured.
    Graph* graph = nullptr;
    uint64_t h = 0;
    if (!profile_ && tracking_ && recs_.size() == last_graph_->recs.size()) {
      graph = last_graph_;
    } else if (!profile_) {
      h = hash_recs(recs_);
      const auto it = graphs_.find(h);
      if (it != graphs_.end() && it->second.recs.size() == recs_.size() &&
          std::memcmp(it->second.recs.data(), recs_.data(), recs_.size() * sizeof(Rec)) == 0)
        graph = &it->second;
    }
    bool ran = false, timed_replay = false;
    Flight& flight = flights_[area_];
    if (graph) {
      set_last_graph(graph);
      // The graph's first node copies the arguments it was captured with
      // (capture): a second copy before it would only cost a call and a
      // transfer. Only a step with more argument bytes than that needs one.
      if (step_used_ > std::max<size_t>(graph->arg_bytes, step_base_ + 16)) copy_step_args();
      if (stats_) {
        if (!stats_->e0) {
          check(cudaEventCreate(&stats_->e0), "stats event");
          check(cudaEventCreate(&stats_->e1), "stats event");
        }
        const auto now = std::chrono::steady_clock::now();
        if (stats_->replayed > 0) {
          stats_->period_ms +=
              std::chrono::duration<double, std::milli>(now - stats_->last_launch).count();
          ++stats_->periods;
        }
        stats_->last_launch = now;
        if (ahead) make_flight_events(flight);
        check(cudaEventRecord(ahead ? flight.start : stats_->e0, stream_), "stats event");
        t_launch = clock::now();
      }
      check(cudaGraphLaunch(graph->exec, stream_), "graph replay");
      if (stats_) {
        if (!ahead) check(cudaEventRecord(stats_->e1, stream_), "stats event");
        t_wait = clock::now();
      }
      timed_replay = stats_ != nullptr;
      ran = true;
      if (stats_) ++stats_->replayed;
    } else if (!profile_ && seen_.count(h)) {
      ran = capture(h);
      if (stats_) ++(ran ? stats_->captured : stats_->capture_failed);
    }
    if (!ran) {
      if (stats_) ++stats_->eager_steps, stats_->eager_step_ops += recs_.size();
      seen_.insert(h);
      if (seen_.size() > 1024) seen_.clear();
      copy_step_args();
      run_recs();
    }
    launched_ = true;
    if (ahead && !copy_out_.empty() && !direct_out_) {
      // Left running: its outputs are copied out at await_step(), and the
      // next step takes the other halves of the areas (begin_deferred).
      make_flight_events(flight);
      check(cudaEventRecord(flight.done, stream_), "a step's event");
      flight.outs.swap(copy_out_);
      flight.busy = true;
      flight.seq = ++flight_seq_;
      flight.timed = timed_replay;
      launched_ = false;
      if (timed_replay) count_host_share(t_flush, t_launch, t_wait);
    } else if (!copy_out_.empty() || direct_out_) {
      direct_out_ = false;
      check(cudaStreamSynchronize(stream_), "decode step");
      launched_ = false;
      const clock::time_point t_copy = clock::now();
      for (const CopyOut& c : copy_out_) std::memcpy(c.host, out_host_ + c.offset, c.bytes);
      if (timed_replay) {
        count_host_share(t_flush, t_launch, t_wait);
        count_completion(stats_->e0, stats_->e1, ms_between(t_wait, t_copy),
                         ms_between(t_copy, clock::now()));
        if (stats_->step_end != clock::time_point{})
          stats_->between_ms += ms_between(stats_->step_end, stats_->step_begin);
        stats_->step_end = clock::now();
      }
    }
    recs_.clear();
    copy_out_.clear();
  }

  void copy_step_args() {
    if (step_used_ > step_base_)
      check(cudaMemcpyAsync(args_dev_ + step_base_, args_host_ + step_base_,
                            step_used_ - step_base_, cudaMemcpyHostToDevice, stream_),
            "argument copy");
  }

  // The graph the step's records are compared with as they are made: the
  // last one run from the same halves of the areas.
  void set_last_graph(Graph* g) { last_graph_ = area_graph_[area_] = g; }

  void make_flight_events(Flight& f) {
    if (f.done) return;
    check(cudaEventCreate(&f.start), "a step's event");
    check(cudaEventCreate(&f.done), "a step's event");
  }
  // Waits for a step launched ahead and copies its outputs to the caller.
  void finish(Flight& f) {
    if (!f.busy) return;
    using clock = std::chrono::steady_clock;
    const clock::time_point t0 = clock::now();
    check(cudaEventSynchronize(f.done), "decode step");
    const clock::time_point t1 = clock::now();
    for (const CopyOut& c : f.outs) std::memcpy(c.host, out_host_ + c.offset, c.bytes);
    f.outs.clear();
    f.busy = false;
    if (f.timed && stats_)
      count_completion(f.start, f.done, ms_between(t0, t1), ms_between(t1, clock::now()));
  }

  static double ms_between(std::chrono::steady_clock::time_point a,
                           std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  }
  // KILN_CUDA_STATS: a timed replayed step's host share up to its launch
  // (recording, matching, the launch call, and the ops' ticks)...
  void count_host_share(std::chrono::steady_clock::time_point t_flush,
                        std::chrono::steady_clock::time_point t_launch,
                        std::chrono::steady_clock::time_point t_wait) {
    stats_->record_ms += ms_between(stats_->step_begin, t_flush);
    stats_->match_ms += ms_between(t_flush, t_launch);
    stats_->launch_ms += ms_between(t_launch, t_wait);
    for (size_t o = 0; o < Stats::kOps; ++o) {
      stats_->op_ticks[o] += stats_->step_ticks[o];
      stats_->op_n[o] += stats_->step_n[o];
    }
  }
  // ... and, once it has completed, its GPU time between events e0 and e1
  // and the host's wait for it and copy of its outputs.
  void count_completion(cudaEvent_t e0, cudaEvent_t e1, double wait_ms, double copy_ms) {
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, e0, e1), "stats event");
    stats_->gpu_ms += ms;
    ++stats_->timed;
    stats_->wait_ms += wait_ms;
    stats_->copy_ms += copy_ms;
  }
  void finish_flights() {
    while (Flight* f = oldest_flight()) finish(*f);
  }
  // The step launched ahead longest ago and not yet waited for, or null.
  Flight* oldest_flight() {
    Flight* oldest = nullptr;
    for (Flight& f : flights_)
      if (f.busy && (!oldest || f.seq < oldest->seq)) oldest = &f;
    return oldest;
  }

  void drop_graphs() {
    if (graphs_.empty()) return;
    cudaStreamSynchronize(stream_);
    launched_ = false;
    for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g.exec);
    graphs_.clear();
    last_graph_ = area_graph_[0] = area_graph_[1] = nullptr;
    seen_.clear();
  }

  bool capture(uint64_t h) {
    if (graphs_.size() >= kMaxGraphs) drop_graphs();
    cudaGraph_t graph = nullptr;
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "graph capture");
    try {
      // The argument copy is a node of the graph: every replay reads the
      // pinned area afresh (its half of it, for a step launched ahead).
      check(cudaMemcpyAsync(args_dev_ + step_base_, args_host_ + step_base_,
                            std::max<size_t>(step_used_ - step_base_, 16),
                            cudaMemcpyHostToDevice, stream_),
            "argument copy");
      run_recs();
    } catch (const std::exception& ex) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      if (stats_) stats_->last_failure = ex.what();
      return false;
    }
    check(cudaStreamEndCapture(stream_, &graph), "graph capture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
      cudaGetLastError();
      if (stats_) stats_->last_failure = cat("cudaGraphInstantiate: ", cudaGetErrorString(e));
      return false;
    }
    Graph g;
    g.recs = recs_;
    g.arg_bytes = step_used_;
    g.exec = exec;
    Graph& kept = graphs_[h];
    if (kept.exec) cudaGraphExecDestroy(kept.exec);  // (a hash collision's older graph)
    kept = std::move(g);
    set_last_graph(&kept);
    check(cudaGraphLaunch(exec, stream_), "graph replay");
    return true;
  }

  const int32_t* arg_ptr(uint32_t off) const {
    return reinterpret_cast<const int32_t*>(args_dev_ + off);
  }

  // Runs a recorded step, folding neighbours into single launches where
  // their pointers allow it: rmsnorm or silu_mul in front of products that
  // read its output, consecutive products of one input (q/k/v, gate/up),
  // and the residual add behind a product.
  void run_recs() {
    prep_ = {};
    xh_src_ = nullptr;
    if (profile_) profile_->mark(recs_, stream_);
    for (size_t i = 0; i < recs_.size();) {
      // What the product just before prepared (valid only for the next op).
      const Prepared before = prep_;
      prep_ = {};
      size_t used = fuse_enabled_ ? fuse_heads_at(i) : 0;
      if (!used && fuse_enabled_) used = fuse_at(i, before);
      if (!used && fuse_enabled_) used = fuse_embeds_at(i);
      if (used) xh_src_ = nullptr;  // a fused launch may write the f16 copy's source
      if (!used) {
        execute(recs_[i]);
        used = 1;
      }
      if (profile_) profile_->launched(recs_.data() + i, used, stream_);
      i += used;
    }
    if (profile_) profile_->collect();
  }

  // Embeds of consecutive rows from one table, their ids one after another
  // in the argument area (a serving step's sequences each embed their
  // token), as one gather. Two or more, else 0.
  size_t fuse_embeds_at(size_t i) {
    const Rec& r = recs_[i];
    if (r.op != Op::Embed || r.flag) return 0;
    int64_t n = r.n[2];
    size_t j = i + 1;
    for (; j < recs_.size(); ++j) {
      const Rec& e = recs_[j];
      if (e.op != Op::Embed || e.flag || e.p[0] != r.p[0] || e.dtype != r.dtype || e.n[0] != r.n[0] ||
          e.n[1] != r.n[1] || e.arg != r.arg + uint32_t(n) * sizeof(int32_t) ||
          e.p[1] != static_cast<const float*>(r.p[1]) + n * r.n[1])
        break;
      n += e.n[2];
    }
    if (j == i + 1) return 0;
    cuda::dequant_rows(DType(r.dtype), r.p[0], size_t(r.n[0]), 0, n, r.n[1], arg_ptr(r.arg),
                       static_cast<float*>(const_cast<void*>(r.p[1])), stream_);
    return j - i;
  }

  // [rmsnorm q, rmsnorm k (in place, per head)], rope q, rope k, [store_kv]:
  // the per-head ops between the products and attention, as one launch.
  size_t fuse_heads_at(size_t i) {
    const size_t n = recs_.size();
    size_t at = i;
    const Rec* nq = nullptr;
    const Rec* nk = nullptr;
    if (at + 1 < n && recs_[at].op == Op::Rmsnorm && recs_[at + 1].op == Op::Rmsnorm) {
      nq = &recs_[at];
      nk = &recs_[at + 1];
      if (nq->p[0] != nq->p[2] || nk->p[0] != nk->p[2] || nq->n[1] != nk->n[1]) return 0;
      at += 2;
    }
    if (at + 1 >= n) return 0;
    const Rec& rq = recs_[at];
    const Rec& rk = recs_[at + 1];
    if (rq.op != Op::Rope || rk.op != Op::Rope) return 0;
    const int64_t T = rq.n[0], hd = rq.n[2];
    if (rk.n[0] != T || rk.n[2] != hd || rk.n[3] != rq.n[3] || rk.p[1] != rq.p[1] ||
        rk.flag != rq.flag || hd > cuda::kMaxHeadDim || rq.n[3] % 2 != 0)
      return 0;
    if (std::memcmp(args_host_ + rq.arg, args_host_ + rk.arg, size_t(T) * sizeof(int32_t)) != 0)
      return 0;
    // The store into the cache, unless the attention after stores (a
    // serving step's batched decode attention).
    const Rec* st = at + 2 < n && recs_[at + 2].op == Op::StoreKv ? &recs_[at + 2] : nullptr;
    if (st && (st->p[2] != rk.p[0] || st->n[3] != T || st->n[0] != rk.n[1] || st->n[1] != hd))
      return 0;
    if (nq && (nq->p[0] != rq.p[0] || nk->p[0] != rk.p[0] || nq->n[1] != hd ||
               nq->n[0] != T * rq.n[1] || nk->n[0] != T * rk.n[1]))
      return 0;
    cuda::HeadOps h;
    h.q = static_cast<float*>(const_cast<void*>(rq.p[0]));
    h.k = static_cast<float*>(const_cast<void*>(rk.p[0]));
    if (nq) {
      h.q_norm = static_cast<const float*>(nq->p[1]);
      h.k_norm = static_cast<const float*>(nk->p[1]);
      if (nq->f != nk->f) return 0;
      h.eps = nq->f;
    }
    h.T = T;
    h.n_heads = int(rq.n[1]);
    h.n_kv_heads = int(rk.n[1]);
    h.head_dim = int(hd);
    h.rope_half = int(rq.n[3] / 2);
    h.halves = RopeStyle(rq.flag) == RopeStyle::Halves;
    h.positions = arg_ptr(rq.arg);
    h.inv_freq = static_cast<const float*>(rq.p[1]);
    if (st) {
      h.v = static_cast<const float*>(st->p[3]);
      h.kc = const_cast<void*>(st->p[0]);
      h.vc = const_cast<void*>(st->p[1]);
      h.f16 = st->flag != 0;
      h.capacity = st->n[2];
      h.start = arg_ptr(st->arg);
    }
    cuda::head_ops(h, stream_);
    return at + (st ? 3 : 2) - i;
  }

  // The input a fused product left prepared in scratch_.input: the values
  // (the prologue's output row, or the plain input), width, tokens, kind.
  struct Prepared {
    const float* values = nullptr;
    int64_t K = 0, T = 0;
    bool plain = false;
  };
  Prepared prep_;

  static bool plain_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

  size_t fuse_at(size_t i, const Prepared& before) {
    const size_t n = recs_.size();
    const Rec& r = recs_[i];
    cuda::MatvecJob j;
    const Rec* attn = nullptr;  // an attention whose splits the product merges
    size_t m = i;
    auto is_mm_reading = [&](size_t q, const void* x) {
      return q < n && recs_[q].op == Op::Matmul && recs_[q].p[1] == x;
    };
    if (r.op == Op::Rmsnorm && r.p[0] != r.p[2] && is_mm_reading(i + 1, r.p[2]) &&
        recs_[i + 1].n[3] == r.n[0] && recs_[i + 1].n[2] == r.n[1]) {
      j.pro = cuda::MatvecPrologue::Rmsnorm;
      j.x = static_cast<const float*>(r.p[0]);
      j.x2 = static_cast<const float*>(r.p[1]);
      j.eps = r.f;
      j.mat = static_cast<float*>(const_cast<void*>(r.p[2]));
      m = i + 1;
    } else if (r.op == Op::SiluMul && is_mm_reading(i + 1, r.p[2]) &&
               recs_[i + 1].n[3] * recs_[i + 1].n[2] == r.n[0]) {
      j.pro = cuda::MatvecPrologue::SiluMul;
      j.x = static_cast<const float*>(r.p[0]);
      j.x2 = static_cast<const float*>(r.p[1]);
      j.mat = static_cast<float*>(const_cast<void*>(r.p[2]));
      m = i + 1;
    } else if (r.op == Op::Attention && fold_combine_ && r.n[3] == 1 && r.arg2 > 1 &&
               is_mm_reading(i + 1, r.p[3]) && recs_[i + 1].n[3] == 1 &&
               recs_[i + 1].n[2] == r.n[4] * r.n[1]) {
      // One token's attention over several splits, into the output
      // projection: the product merges the splits in its prologue, which
      // saves the combine kernel and its dependent launch.
      attn = &r;
      j.pro = cuda::MatvecPrologue::AttnCombine;
      j.x = partial_;
      j.mat = static_cast<float*>(const_cast<void*>(r.p[3]));
      j.attn_head_dim = r.n[1];
      j.attn_splits = int(r.arg2);
      m = i + 1;
    } else if (r.op == Op::Matmul) {
      j.x = static_cast<const float*>(r.p[1]);
    } else {
      return 0;
    }
    const Rec& f = recs_[m];
    j.dtype = DType(f.dtype);
    j.row_bytes = size_t(f.n[0]);
    j.K = f.n[2];
    j.T = f.n[3];
    if (!cuda::matvec_fused_ok(j.dtype, j.K, j.T, j.row_bytes, scratch_.input_bytes)) return 0;
    auto clashes = [&](const void* p) {
      if (p == f.p[1] || p == j.x || p == j.x2 || (j.mat && p == j.mat)) return true;
      for (int s = 0; s < j.nseg; ++s)
        if (p == j.y[s]) return true;
      return false;
    };
    size_t q = m;
    for (; q < n && j.nseg < cuda::kMaxMatvecSegs; ++q) {
      const Rec& g = recs_[q];
      if (g.op != Op::Matmul || g.p[1] != f.p[1] || g.n[2] != j.K || g.n[3] != j.T ||
          clashes(g.p[2]))
        break;
      // A last weight of another format (v in Q6_K after q/k in Q4_K) in
      // the same launch where the kernels have the pair.
      const bool other = g.dtype != f.dtype || g.n[0] != f.n[0];
      if (other && !(fuse_mixed_ && j.nseg > 0 && g.dtype != f.dtype &&
                     cuda::matvec_mixed_ok(j.dtype, DType(g.dtype), j.K, j.T, j.row_bytes,
                                           size_t(g.n[0]), j.pro, scratch_.input_bytes)))
        break;
      j.w[j.nseg] = g.p[0];
      j.y[j.nseg] = static_cast<float*>(const_cast<void*>(g.p[2]));
      j.n[j.nseg] = g.n[1];
      ++j.nseg;
      if (other) {
        j.dtype2 = DType(g.dtype);
        j.row_bytes2 = size_t(g.n[0]);
        ++q;
        break;
      }
    }
    if (q < n && j.nseg == 1 && recs_[q].op == Op::Add && recs_[q].p[1] == j.y[0] &&
        recs_[q].n[0] == j.T * j.n[0] && !clashes(recs_[q].p[0])) {
      j.add_to = static_cast<float*>(const_cast<void*>(recs_[q].p[0]));
      ++q;
    }
    // A product reading the row the product before it normed (v after q/k
    // when v has another format) needs no input preparation of its own.
    // (A launch with a last weight of another format makes its input itself.)
    j.input_ready = reuse_input_ && j.pro == cuda::MatvecPrologue::None && before.values &&
                    j.row_bytes2 == 0 && before.values == j.x &&
                    before.K == j.K && before.T == j.T && before.plain == plain_type(j.dtype);
    if (attn) decode_attention(*attn, /*combine=*/false);
    cuda::matvec_fused(j, scratch_, stream_);
    if (cuda::matvec_fused_prepares(j.dtype, j.K, j.T, scratch_.input_bytes))
      prep_ = {j.pro == cuda::MatvecPrologue::None ? j.x : j.mat, j.K, j.T, plain_type(j.dtype)};
    return q - i;
  }

  // An Attention record through the split (flash-decoding) kernels; with
  // combine false the splits are left in partial_ for the product after it
  // to merge (fuse_at).
  void decode_attention(const Rec& r, bool combine) {
    cuda::attention(static_cast<const float*>(r.p[0]), r.p[1], r.p[2], r.flag, r.n[0], r.n[1],
                    r.n[2], r.n[3], r.n[4], r.f, arg_ptr(r.arg), int(r.arg2), partial_,
                    static_cast<float*>(const_cast<void*>(r.p[3])), stream_, combine);
  }

  void execute(const Rec& r) {
    cudaStream_t s = stream_;
    // Any op but a product may write the f16 copy's source.
    if (r.op != Op::Matmul) xh_src_ = nullptr;
    switch (r.op) {
      case Op::Matmul: {
        const DType t = DType(r.dtype);
        const int64_t N = r.n[1], K = r.n[2], T = r.n[3];
        const auto* x = static_cast<const float*>(r.p[1]);
        auto* y = static_cast<float*>(const_cast<void*>(r.p[2]));
        const bool whole = cuda::matvec_fused_ok(t, K, T, size_t(r.n[0]), scratch_.input_bytes);
        const int64_t chunk = !whole && batch_invariant_ ? invariant_chunk(t, K, T, size_t(r.n[0])) : 0;
        if (whole || chunk > 0) {
          // Serving (batch_invariant_): every token through the kernel that
          // takes it alone, chunk tokens at a time.
          const int64_t step = whole ? T : chunk;
          for (int64_t t0 = 0; t0 < T; t0 += step) {
            cuda::MatvecJob j;
            j.dtype = t;
            j.row_bytes = size_t(r.n[0]);
            j.K = K;
            j.T = std::min(step, T - t0);
            j.w[0] = r.p[0];
            j.y[0] = y + t0 * N;
            j.n[0] = N;
            j.nseg = 1;
            j.x = x + t0 * K;
            cuda::matvec_fused(j, scratch_, s);
          }
        } else if (T <= cuda::kMaxMatvecTokens) {
          cuda::matvec(t, r.p[0], size_t(r.n[0]), N, K, x, T, y, s);
        } else {
          gemm(t, r.p[0], size_t(r.n[0]), N, K, x, T, y);
        }
        if (xh_src_ && y < xh_src_ + xh_n_ && xh_src_ < y + T * N) xh_src_ = nullptr;
        break;
      }
      case Op::Embed:  // ids in the argument area, or (flag) the last argmax's on the device
        cuda::dequant_rows(DType(r.dtype), r.p[0], size_t(r.n[0]), 0, r.n[2], r.n[1],
                           r.flag ? static_cast<const int32_t*>(r.p[2]) : arg_ptr(r.arg),
                           static_cast<float*>(const_cast<void*>(r.p[1])), s);
        break;
      case Op::Rmsnorm:
        cuda::rmsnorm(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                      r.n[0], r.n[1], r.f, static_cast<float*>(const_cast<void*>(r.p[2])), s);
        break;
      case Op::Rope:
        cuda::rope(static_cast<float*>(const_cast<void*>(r.p[0])), r.n[0], r.n[1], r.n[2],
                   r.n[3], arg_ptr(r.arg), static_cast<const float*>(r.p[1]), RopeStyle(r.flag),
                   s);
        break;
      case Op::StoreKv:
        cuda::store_kv(const_cast<void*>(r.p[0]), const_cast<void*>(r.p[1]), r.flag, r.n[0],
                       r.n[1], r.n[2], static_cast<const float*>(r.p[2]),
                       static_cast<const float*>(r.p[3]), r.n[3], arg_ptr(r.arg), s);
        break;
      case Op::Attention:
        if (r.n[3] == 1 || !prefill_attention_)
          decode_attention(r, /*combine=*/true);
        else
          cuda::attention_prefill(static_cast<const float*>(r.p[0]), r.p[1], r.p[2], r.flag,
                                  r.n[0], r.n[1], r.n[2], r.n[3], r.n[4], r.f, arg_ptr(r.arg),
                                  static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::ArgmaxRows:
        cuda::argmax_rows(static_cast<const float*>(r.p[0]), r.n[0], r.n[1],
                          static_cast<int32_t*>(const_cast<void*>(r.p[1])), s);
        break;
      case Op::TopKRows:
        cuda::top_k_rows(static_cast<const float*>(r.p[0]), r.n[0], r.n[1], r.n[2],
                         static_cast<cuda::LogitId*>(const_cast<void*>(r.p[1])),
                         static_cast<cuda::LogitId*>(const_cast<void*>(r.p[2])), s);
        break;
      case Op::DrawRows:
        cuda::draw_rows(static_cast<const cuda::LogitId*>(r.p[0]), r.n[0], r.n[1],
                        reinterpret_cast<const DrawSpec*>(arg_ptr(r.arg)),
                        static_cast<int32_t*>(const_cast<void*>(r.p[1])), s);
        break;
      case Op::AttentionBatch:
        cuda::attention_decode_batch(
            static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
            static_cast<const float*>(r.p[2]), r.flag != 0, r.n[0], r.n[1], r.n[2], r.n[3], r.n[4],
            r.f, reinterpret_cast<const cuda::KvItem*>(arg_ptr(r.arg)), int(r.arg2), partial_,
            static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::SiluMul:
        cuda::silu_mul(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                       r.n[0], static_cast<float*>(const_cast<void*>(r.p[2])), s);
        break;
      case Op::Add:
        cuda::add(static_cast<float*>(const_cast<void*>(r.p[0])),
                  static_cast<const float*>(r.p[1]), r.n[0], s);
        break;
      case Op::FillZero:
        check(cudaMemsetAsync(const_cast<void*>(r.p[0]), 0, size_t(r.n[0]), s), "fill_zero");
        break;
      case Op::Gather:
        cuda::gather_rows(static_cast<const float*>(r.p[0]), arg_ptr(r.arg), r.n[0], r.n[1],
                          static_cast<float*>(const_cast<void*>(r.p[1])), s);
        break;
      case Op::ScatterAdd:
        cuda::scatter_add_rows(static_cast<float*>(const_cast<void*>(r.p[0])),
                               static_cast<const float*>(r.p[1]), arg_ptr(r.arg),
                               reinterpret_cast<const float*>(arg_ptr(r.arg2)), r.n[0], r.n[1], s);
        break;
      case Op::Conv1dSilu:
        cuda::conv1d_silu(static_cast<const float*>(r.p[0]), r.n[0], r.n[1],
                          static_cast<const float*>(r.p[1]), r.n[2],
                          static_cast<float*>(const_cast<void*>(r.p[2])),
                          static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::DeltaGates:
        cuda::deltanet_gates(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                             static_cast<const float*>(r.p[2]), static_cast<const float*>(r.p[3]),
                             r.n[0], r.n[1], static_cast<float*>(const_cast<void*>(r.p[4])),
                             static_cast<float*>(const_cast<void*>(r.p[5])), s);
        break;
      case Op::DeltaRule:
        cuda::gated_delta_rule(static_cast<const float*>(r.p[0]),
                               static_cast<const float*>(r.p[1]),
                               static_cast<const float*>(r.p[2]),
                               static_cast<float*>(const_cast<void*>(r.p[3])), r.n[0], r.n[1],
                               r.n[2], r.n[3], r.n[4], r.flag != 0,
                               static_cast<float*>(const_cast<void*>(r.p[4])),
                               const_cast<void*>(r.p[5]), size_t(r.n[5]), s);
        break;
      case Op::RmsnormGated:
        cuda::rmsnorm_gated(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                            static_cast<const float*>(r.p[2]), r.n[0], r.n[1], r.f,
                            static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::SigmoidMul:
        cuda::sigmoid_mul(static_cast<float*>(const_cast<void*>(r.p[0])),
                          static_cast<const float*>(r.p[1]), r.n[0], r.n[1], r.flag != 0, s);
        break;
      case Op::TernaryMatmul: {
        auto* scratch = static_cast<uint8_t*>(const_cast<void*>(r.p[3]));
        cuda::ternary_matmul(DType(r.dtype), r.p[0], r.n[0], r.n[1],
                             static_cast<const float*>(r.p[1]), r.n[2],
                             reinterpret_cast<int8_t*>(scratch),
                             reinterpret_cast<float*>(scratch + r.n[3]),
                             static_cast<float*>(const_cast<void*>(r.p[2])), s);
        break;
      }
      case Op::Relu2Mul:
        cuda::relu2_mul(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                        r.n[0], static_cast<float*>(const_cast<void*>(r.p[2])), s);
        break;
      case Op::LayerNorm:
        cuda::layernorm(static_cast<const float*>(r.p[0]), static_cast<const float*>(r.p[1]),
                        static_cast<const float*>(r.p[2]), r.n[0], r.n[1], r.f,
                        static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::AddBias:
        cuda::add_bias(static_cast<float*>(const_cast<void*>(r.p[0])),
                       static_cast<const float*>(r.p[1]), r.n[0], r.n[1], s);
        break;
      case Op::Gelu:
        cuda::gelu(static_cast<float*>(const_cast<void*>(r.p[0])), r.n[0], r.flag != 0, s);
        break;
      case Op::AttentionSegments:
        cuda::attention_segments(static_cast<const float*>(r.p[0]),
                                 static_cast<const float*>(r.p[1]),
                                 static_cast<const float*>(r.p[2]), r.n[0], r.n[1], r.n[2],
                                 arg_ptr(r.arg), r.n[3], r.f,
                                 static_cast<float*>(const_cast<void*>(r.p[3])), s);
        break;
      case Op::ToHost:
        check(cudaMemcpyAsync(r.flag ? static_cast<uint8_t*>(const_cast<void*>(r.p[1]))
                                     : out_host_ + r.n[1],
                              r.p[0], size_t(r.n[0]), cudaMemcpyDeviceToHost,
                              s),
              "copy from the GPU");
        break;
    }
  }

  // With batch_invariant_, the tokens per launch for a product of T tokens
  // that the fused kernels cannot take whole (0: they cannot take even one
  // token): the most that the kernel a token alone takes (bulk-copy or
  // staged) takes too, so every token keeps its alone bits.
  int64_t invariant_chunk(DType t, int64_t K, int64_t T, size_t row_bytes) const {
    const size_t in = scratch_.input_bytes;
    if (!cuda::matvec_fused_ok(t, K, 1, row_bytes, in)) return 0;
    const bool bulk = cuda::matvec_fused_prepares(t, K, 1, in);
    for (int64_t c = std::min<int64_t>(T, cuda::kMaxBulkMatvecTokens); c > 1; --c)
      if (cuda::matvec_fused_ok(t, K, c, row_bytes, in) && cuda::matvec_fused_prepares(t, K, c, in) == bulk)
        return c;
    return 1;
  }

  // Prefill: cuBLAS SGEMM (full f32, as the CPU) on tiles of rows
  // dequantized into a scratch buffer; f32 weights are used in place.
  void gemm(DType t, const void* w, size_t row_bytes, int64_t N, int64_t K, const float* x,
            int64_t T, float* y) {
    if (!blas_) {
      check_blas(cublasCreate(&blas_), "cublasCreate");
      check_blas(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    }
    check_blas(cublasSetStream(blas_, stream_), "cublasSetStream");
    // Block-format weights are already rounded far more than TF32 rounds
    // (and their activations are int8 in the decode path, as on the CPU):
    // they take the tensor cores. F32/F16 weights keep full f32; BF16 takes
    // the bf16 tensor cores (gemm_bf16).
    const bool quantized = t != DType::F32 && t != DType::F16 && t != DType::BF16;
    check_blas(cublasSetMathMode(blas_, quantized ? CUBLAS_TF32_TENSOR_OP_MATH
                                                  : CUBLAS_PEDANTIC_MATH),
               "cublasSetMathMode");
    const float one = 1.0f, zero = 0.0f;
    if (t == DType::F32) {
      check_blas(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one,
                             static_cast<const float*>(w), int(K), x, int(K), &zero, y, int(N)),
                 "cublasSgemm");
      return;
    }
    if (quantized && f16_prefill_) {
      gemm_f16(t, w, row_bytes, N, K, x, T, y);
      return;
    }
    if (t == DType::BF16 && bf16_tensor_) {
      gemm_bf16(w, N, K, x, T, y);
      return;
    }
    if (!dq_) dq_ = static_cast<float*>(raw_alloc(kDequantBytes, "the dequantization tile"));
    const int64_t tile = std::max<int64_t>(1, int64_t(kDequantBytes / sizeof(float)) / K);
    for (int64_t r0 = 0; r0 < N; r0 += tile) {
      const int64_t rows = std::min(tile, N - r0);
      cuda::dequant_rows(t, w, row_bytes, r0, rows, K, nullptr, dq_, stream_);
      check_blas(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(K), &one,
                             dq_, int(K), x, int(K), &zero, y + r0, int(N)),
                 "cublasSgemm");
    }
  }

  // Block formats in prefill: weights dequantized to f16 tiles and the
  // activations rounded to f16 (11-bit significands, as TF32's), multiplied on
  // the f16 tensor cores with f32 accumulation: half the tile bytes of f32
  // and twice TF32's rate. Activations beyond f16's range (65504) would
  // overflow; KILN_CUDA_PREFILL=tf32 keeps the f32 tiles.
  void gemm_f16(DType t, const void* w, size_t row_bytes, int64_t N, int64_t K, const float* x,
                int64_t T, float* y) {
    if (!dq_) dq_ = static_cast<float*>(raw_alloc(kDequantBytes, "the dequantization tile"));
    const size_t xh_need = size_t(T * K) * sizeof(__half);
    if (grow_scratch(xh_, xh_bytes_, xh_need, "the f16 activations")) xh_src_ = nullptr;
    // q/k/v (and gate/up) read the same activations: convert them once.
    if (x != xh_src_ || T * K != xh_n_) {
      cuda::to_half(x, T * K, xh_, stream_);
      xh_src_ = x;
      xh_n_ = T * K;
    }
    auto* tile_buf = reinterpret_cast<__half*>(dq_);
    const int64_t tile = std::max<int64_t>(1, int64_t(kDequantBytes / sizeof(__half)) / K);
    const float one = 1.0f, zero = 0.0f;
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    for (int64_t r0 = 0; r0 < N; r0 += tile) {
      const int64_t rows = std::min(tile, N - r0);
      cuda::dequant_rows_f16(t, w, row_bytes, r0, rows, K, tile_buf, stream_);
      check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(T), int(K), &one,
                              tile_buf, CUDA_R_16F, int(K), xh_, CUDA_R_16F, int(K), &zero,
                              y + r0, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
    }
  }

  // BF16 weights in prefill, used in place on the bf16 tensor cores with f32
  // accumulation. The activations are rounded to bf16 (8-bit significands,
  // the input rounding of PyTorch's bf16 inference; llama.cpp's F16 path
  // rounds to f16): one product. With set_exact_bf16_products (the
  // hybrids), the f32 activations are split into three bf16 parts (all 24
  // significand bits), each multiplied by the exact weights and summed into
  // y, an f32-exact product at a third of the speed. H100, Qwen3-4B pp512:
  // 25.6k tok/s with one part, 18.7k with two, 14.8k with three; one
  // full-f32 SGEMM over dequantized tiles (KILN_CUDA_BF16=f32) was a fifth
  // of llama.cpp's f16 prefill. KILN_CUDA_BF16_PARTS=1|2|3 overrides the
  // parts, to compare.
  void gemm_bf16(const void* w, int64_t N, int64_t K, const float* x, int64_t T, float* y) {
    static const int forced = cuda::env_int("KILN_CUDA_BF16_PARTS", 0, 1, cuda::kBf16Parts);
    const int parts = forced ? forced : exact_bf16_ ? cuda::kBf16Parts : 1;
    const size_t need = size_t(parts) * size_t(T * K) * sizeof(__nv_bfloat16);
    grow_scratch(xb_, xb_bytes_, need, "the bf16 activations");
    cuda::split_bf16(x, T * K, parts, xb_, stream_);
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    const float one = 1.0f, zero = 0.0f;
    for (int k = 0; k < parts; ++k)
      check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, w,
                              CUDA_R_16BF, int(K), xb_ + size_t(k) * size_t(T * K), CUDA_R_16BF,
                              int(K), k == 0 ? &zero : &one, y, CUDA_R_32F, int(N),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  }

  int device_ = 0;
  std::string device_name_;
  size_t total_mem_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;

  uint8_t* args_host_ = nullptr;
  uint8_t* args_dev_ = nullptr;
  size_t ring_ = kStepArgBytes;
  uint8_t* out_host_ = nullptr;
  std::map<uintptr_t, size_t> pinned_;  // alloc_host's blocks: start -> bytes
  bool direct_out_ = false;             // the step copies straight into pinned memory
  float* partial_ = nullptr;  // flash-decoding partials (decode_splits)
  size_t partial_bytes_ = 0;
  unsigned* counter_ = nullptr;  // matvec_fused's ticket
  cuda::MatvecScratch scratch_;
  float* dq_ = nullptr;
  __half* xh_ = nullptr;
  uint8_t* ternary_ = nullptr;  // BitNet activations: int8 values, then scales
  size_t ternary_bytes_ = 0;
  std::vector<void*> retired_;
  void* argmax_dev_ = nullptr;  // argmax_rows' indices on the device
  size_t argmax_bytes_ = 0;
  void* top_dev_ = nullptr;  // top_k_rows' candidates on the device
  size_t top_bytes_ = 0;
  void* delta_ = nullptr;  // the delta rule's chunk scratch
  size_t delta_bytes_ = 0;
  size_t xh_bytes_ = 0;
  // What xh_ holds: the f16 copy of xh_n_ floats at xh_src_ (null: nothing
  // valid). Cleared by every op but a product not writing into it, by a
  // step's replay, and by frees and host copies.
  const float* xh_src_ = nullptr;
  int64_t xh_n_ = 0;
  __nv_bfloat16* xb_ = nullptr;  // gemm_bf16's split activations
  size_t xb_bytes_ = 0;
  bool f16_prefill_ = true;
  bool bf16_tensor_ = true;  // KILN_CUDA_BF16=f32 turns gemm_bf16 off
  bool exact_bf16_ = false;   // set_exact_bf16_products: gemm_bf16 splits into kBf16Parts
  std::vector<float> route_buf_;
  bool prefill_attention_ = true;

  std::vector<void*> chunks_;
  uint8_t* chunk_ = nullptr;
  size_t chunk_left_ = 0;

  // KILN_CUDA_STATS=1: how decode steps ran (printed when the backend ends).
  struct Stats {
    int64_t replayed = 0, captured = 0, capture_failed = 0, eager_steps = 0, eager_step_ops = 0,
            direct_ops = 0;
    std::map<std::string, int64_t> ended_by;
    std::string last_failure;
    // Replayed steps that ended by a copy to the host: the GPU's time from
    // the graph launch to its end (events), and the host's time from one
    // such launch to the next (the whole step as the caller sees it).
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    int64_t timed = 0, periods = 0;
    double gpu_ms = 0.0, period_ms = 0.0;
    std::chrono::steady_clock::time_point last_launch{};
    // Where the host's share of a replayed step goes (milliseconds summed
    // over the timed steps): recording the ops (the step's start to its
    // flush), matching them to a graph (hash + compare + argument copy), the
    // graph launch call, waiting for the GPU, copying outputs out, and the
    // caller's own work between one step's end and the next one's start.
    double record_ms = 0.0, match_ms = 0.0, launch_ms = 0.0, wait_ms = 0.0, copy_ms = 0.0,
           between_ms = 0.0;
    std::chrono::steady_clock::time_point step_begin{}, step_end{};
    // KILN_CUDA_STATS=ops: the recording's host time split by the op each
    // stretch ends in (the model's work and the backend's up to that op's
    // record), in host_ticks(), summed over the timed steps.
    bool by_op = false;
    std::chrono::steady_clock::time_point made{};
    uint64_t made_ticks = 0, last_tick = 0;
    static constexpr size_t kOps = kOpCount;
    std::array<uint64_t, kOps> op_ticks{}, step_ticks{};
    std::array<int64_t, kOps> op_n{}, step_n{};
  };
  std::unique_ptr<Stats> stats_;
  std::unique_ptr<OpProfile> profile_;  // KILN_CUDA_PROFILE=1

  bool graphs_enabled_ = true;
  bool decode_ahead_ = true;  // KILN_CUDA_AHEAD=0: generate() waits for every step
  int64_t defer_tokens_ = kDeferTokens;  // KILN_CUDA_DEFER_TOKENS=1: one-token steps only
  bool fuse_enabled_ = true;  // KILN_CUDA_FUSE=0 runs each recorded op alone
  bool batch_invariant_ = false;  // set_batch_invariant (serving)
  bool honour_invariant_ = true;  // KILN_CUDA_BATCH_INVARIANT=0: ignore it, to compare
  bool reuse_input_ = true;   // KILN_CUDA_MV_REUSE=0: every fused product prepares its input
  bool fuse_mixed_ = true;    // KILN_CUDA_MV_MIXED=0: v of another format than q/k in its own launch
  bool fold_combine_ = true;  // KILN_CUDA_FOLD_COMBINE=0: attention's splits merged by their own kernel
  bool deferring_ = false;
  bool launched_ = false;
  size_t step_used_ = 0, out_used_ = 0;
  std::vector<Rec> recs_;
  Graph* last_graph_ = nullptr;  // the graph the last step ran (record)
  Graph* area_graph_[2] = {nullptr, nullptr};  // ... from each halves of the areas
  Flight flights_[2];
  int64_t flight_seq_ = 0;
  bool ahead_next_ = false;  // step_ahead() called; its step has not begun
  bool ahead_step_ = false;  // the step being recorded is launched ahead
  int area_ = 0;             // the halves it uses (0 for every other step)
  size_t step_base_ = 0, step_limit_ = kStepArgBytes, out_base_ = 0, out_limit_ = kOutBytes;
  bool tracking_ = false;        // every record of this step has matched it so far
  std::vector<CopyOut> copy_out_;
  std::unordered_map<uint64_t, Graph> graphs_;
  std::unordered_set<uint64_t> seen_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

bool cuda_memory_info(int device, size_t* free_bytes, size_t* total_bytes) {
  int prev = 0;
  if (cudaGetDevice(&prev) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool ok = cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess;
  if (!ok) cudaGetLastError();
  cudaSetDevice(prev);
  return ok;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return "unknown GPU";
  }
  return prop.name;
}

}  // namespace kiln
