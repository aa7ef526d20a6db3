// Decode and prefill speed of a Qwen3-shaped model with random weights, so no
// download is needed: writes the GGUF once (kiln::GgufWriter +
// kiln::quantize_row), loads it through Engine (the GPU when there is one,
// --cpu for the CPU), then times prefill of a prompt and token-by-token
// decode with logits copied back every step, as generation does.
//
//   kiln_bench_decode [--type q8_0] [--layers 28] [--hidden 1024] [--ffn 3072]
//                     [--heads 16] [--kv-heads 8] [--head-dim 128] [--vocab 151936]
//                     [--prompt 512] [--tokens 256] [--ctx 4096] [--cpu] [--out FILE]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/quant/quantize.h"
#include "kiln/runtime/engine.h"

using namespace kiln;

namespace {

struct Shape {
  int64_t layers = 28, hidden = 1024, ffn = 3072, heads = 16, kv_heads = 8, head_dim = 128,
          vocab = 151936;
};

// Uniform values in [-scale, scale) from a counter hash: fast and repeatable.
float noise(uint64_t i, float scale) {
  uint64_t z = i + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float(z >> 40) / float(1 << 24) * 2.0f - 1.0f) * scale;
}

void write_model(const std::string& path, const Shape& s, DType t) {
  GgufWriter w;
  const std::string p = "qwen3.";
  w.set_string("general.architecture", "qwen3");
  w.set_string("general.name", "synthetic");
  w.set_u32(p + "block_count", uint32_t(s.layers));
  w.set_u32(p + "context_length", 40960);
  w.set_u32(p + "embedding_length", uint32_t(s.hidden));
  w.set_u32(p + "feed_forward_length", uint32_t(s.ffn));
  w.set_u32(p + "attention.head_count", uint32_t(s.heads));
  w.set_u32(p + "attention.head_count_kv", uint32_t(s.kv_heads));
  w.set_u32(p + "attention.key_length", uint32_t(s.head_dim));
  w.set_u32(p + "attention.value_length", uint32_t(s.head_dim));
  w.set_f32(p + "rope.freq_base", 1000000.0f);
  w.set_f32(p + "attention.layer_norm_rms_epsilon", 1e-6f);
  uint64_t seed = 1;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const uint64_t base = (seed++) << 40;
    const float scale = 1.0f / std::sqrt(float(cols));
    w.add_tensor_fill(name, t, {rows, cols}, [=](void* dst) {
      const size_t rb = dtype_row_bytes(t, cols);
      const int n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
      std::vector<std::thread> pool;
      for (int th = 0; th < n_threads; ++th)
        pool.emplace_back([&, th] {
          std::vector<float> row(static_cast<size_t>(cols));
          for (int64_t r = th; r < rows; r += n_threads) {
            for (int64_t c = 0; c < cols; ++c) row[c] = noise(base + uint64_t(r * cols + c), scale);
            quantize_row(t, row.data(), static_cast<uint8_t*>(dst) + size_t(r) * rb, cols);
          }
        });
      for (auto& th : pool) th.join();
    });
  };
  std::vector<std::vector<float>> keep;
  auto vec = [&](const std::string& name, int64_t n) {
    keep.emplace_back(size_t(n));
    for (int64_t i = 0; i < n; ++i) keep.back()[i] = 1.0f + noise(uint64_t(seed * 7919 + i), 0.1f);
    ++seed;
    w.add_tensor(name, DType::F32, {n}, keep.back().data(), size_t(n) * 4);
  };
  keep.reserve(size_t(4 * s.layers + 2));
  matrix("token_embd.weight", s.vocab, s.hidden);
  vec("output_norm.weight", s.hidden);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string b = cat("blk.", i, ".");
    vec(b + "attn_norm.weight", s.hidden);
    vec(b + "ffn_norm.weight", s.hidden);
    vec(b + "attn_q_norm.weight", s.head_dim);
    vec(b + "attn_k_norm.weight", s.head_dim);
    matrix(b + "attn_q.weight", s.heads * s.head_dim, s.hidden);
    matrix(b + "attn_k.weight", s.kv_heads * s.head_dim, s.hidden);
    matrix(b + "attn_v.weight", s.kv_heads * s.head_dim, s.hidden);
    matrix(b + "attn_output.weight", s.hidden, s.heads * s.head_dim);
    matrix(b + "ffn_gate.weight", s.ffn, s.hidden);
    matrix(b + "ffn_up.weight", s.ffn, s.hidden);
    matrix(b + "ffn_down.weight", s.hidden, s.ffn);
  }
  w.write(path);
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Shape s;
    std::string type = "q8_0", out;
    int64_t prompt = 512, tokens = 256, ctx = 4096;
    bool cpu = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        KILN_CHECK(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--type") type = next();
      else if (a == "--layers") s.layers = std::stoll(next());
      else if (a == "--hidden") s.hidden = std::stoll(next());
      else if (a == "--ffn") s.ffn = std::stoll(next());
      else if (a == "--heads") s.heads = std::stoll(next());
      else if (a == "--kv-heads") s.kv_heads = std::stoll(next());
      else if (a == "--head-dim") s.head_dim = std::stoll(next());
      else if (a == "--vocab") s.vocab = std::stoll(next());
      else if (a == "--prompt") prompt = std::stoll(next());
      else if (a == "--tokens") tokens = std::stoll(next());
      else if (a == "--ctx") ctx = std::stoll(next());
      else if (a == "--cpu") cpu = true;
      else if (a == "--out") out = next();
      else fail("unknown flag ", a);
    }
    DType t;
    KILN_CHECK(dtype_from_name(type, &t), "unknown type ", type);
    if (out.empty())
      out = cat(std::filesystem::temp_directory_path().string(), "/kiln-synth-", s.layers, "x",
                s.hidden, "-", type, ".gguf");
    if (!std::filesystem::exists(out)) {
      const double t0 = now();
      write_model(out, s, t);
      std::fprintf(stderr, "wrote %s in %.1f s\n", out.c_str(), now() - t0);
    }
    LoadOptions lo;
    lo.need_tokenizer = false;
    lo.force_cpu = cpu;
    lo.context = ctx;
    lo.log = [](const std::string& l) { std::fprintf(stderr, "%s\n", l.c_str()); };
    auto engine = Engine::load(out, lo);
    Model& m = engine->model();
    StateOptions so;
    so.context = ctx;
    auto st = m.new_state(so);
    const int64_t V = engine->spec().vocab_size;
    std::vector<float> logits(static_cast<size_t>(V));
    std::vector<int32_t> ids(static_cast<size_t>(prompt));
    for (int64_t i = 0; i < prompt; ++i) ids[i] = int32_t((i * 7919 + 13) % V);

    // Prefill (after one warm-up run on a scratch state).
    {
      auto warm = m.new_state(so);
      m.forward(*warm, ids.data(), std::min<int64_t>(prompt, 64), logits.data(), false);
    }
    double t0 = now();
    m.forward(*st, ids.data(), prompt, logits.data(), false);
    const double prefill_s = now() - t0;

    // Decode: a few warm-up steps (graph capture happens here), then timed.
    int32_t tok = 1;
    auto step = [&] {
      m.forward(*st, &tok, 1, logits.data(), false);
      tok = int32_t((tok * 31 + 7) % V);
    };
    for (int i = 0; i < 8; ++i) step();
    t0 = now();
    for (int64_t i = 0; i < tokens; ++i) step();
    const double decode_s = now() - t0;
    const double tps = double(tokens) / decode_s;
    const double gbps = double(m.weight_bytes()) * tps / 1e9;
    std::printf("backend: %s\n", engine->backend().name().c_str());
    std::printf("model: qwen3 %lld layers, hidden %lld, ffn %lld, heads %lld/%lld x %lld, vocab %lld, %s, weights read per token %.1f MB\n",
                (long long)s.layers, (long long)s.hidden, (long long)s.ffn, (long long)s.heads,
                (long long)s.kv_heads, (long long)s.head_dim, (long long)s.vocab, type.c_str(),
                double(m.weight_bytes()) / 1e6);
    std::printf("prefill: %lld tokens in %.1f ms = %.0f tok/s\n", (long long)prompt,
                prefill_s * 1e3, double(prompt) / prefill_s);
    std::printf("decode: %lld tokens after position %lld: %.3f ms/token = %.1f tok/s, weights at %.0f GB/s\n",
                (long long)tokens, (long long)prompt + 8, decode_s / double(tokens) * 1e3, tps,
                gbps);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_bench_decode: %s\n", e.what());
    return 1;
  }
}
