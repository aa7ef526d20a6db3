// kiln info: what a model is and what it needs to run.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/model/bitnet.h"
#include "kiln/model/model_file.h"
#include "kiln/runtime/system_probe.h"

namespace kiln::app {
namespace {

// "blk.12.attn_q.weight" -> "attn_q"; "token_embd.weight" -> "token_embd".
std::string tensor_kind(const std::string& name) {
  std::string s = name;
  if (s.rfind("blk.", 0) == 0) {
    size_t dot = s.find('.', 4);
    s = dot == std::string::npos ? s : s.substr(dot + 1);
  }
  for (const char* suffix : {".weight", ".bias"})
    if (s.size() > std::strlen(suffix) && s.compare(s.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
      s.resize(s.size() - std::strlen(suffix));
  // per-expert tensors of older safetensors: ffn_gate_exps.3 -> ffn_gate_exps
  if (size_t dot = s.rfind('.'); dot != std::string::npos && std::isdigit((unsigned char)s[dot + 1]))
    s.resize(dot);
  return s;
}

int info_command(const std::vector<std::string>& args) {
  std::string model;
  int ctx = 0;
  ArgParser p("kiln info", "MODEL [-c CONTEXT]",
              "Describe a model: architecture, size, tensor types, and the memory it needs.");
  p.positional("MODEL", "model file or folder", &model, true);
  p.option("-c,--ctx-size", "N", "context to size the KV cache for (default: the model's, at most 4096)", &ctx);
  if (!p.parse(args)) return p.exit_code();

  auto f = ModelFile::open(model);
  const ModelSpec& s = f->spec();
  if (ctx <= 0) ctx = int(std::min<int64_t>(s.max_context, 4096));

  double params = 0;
  size_t weight_bytes = 0;
  std::map<std::string, std::set<std::string>> kinds;
  for (const auto& [name, t] : f->tensors()) {
    params += double(t.numel());
    weight_bytes += t.nbytes;
    kinds[tensor_kind(name)].insert(std::string(dtype_name(t.dtype)));
  }
  const size_t kv_bytes = size_t(2 * s.n_layers * s.n_kv_heads * s.head_dim) * size_t(ctx) * 4;

  std::printf("model        %s\n", f->path().c_str());
  std::printf("format       %s\n", f->format() == ModelFormat::Gguf ? "GGUF" : "safetensors");
  std::printf("architecture %s (%s)%s%s\n", s.arch.c_str(), s.source_arch.c_str(),
              s.name.empty() ? "" : ", ", s.name.c_str());
  std::printf("parameters   %s\n", human_count(params).c_str());
  std::printf("file size    %s\n", human_bytes(double(f->file_bytes())).c_str());
  std::printf("layers       %lld, hidden %lld, heads %lld (kv %lld, dim %lld), ffn %lld, vocab %lld\n",
              (long long)s.n_layers, (long long)s.hidden, (long long)s.n_heads,
              (long long)s.n_kv_heads, (long long)s.head_dim, (long long)s.ffn_hidden,
              (long long)s.vocab_size);
  if (s.is_moe())
    std::printf("experts      %lld, %lld per token, expert ffn %lld\n", (long long)s.n_experts,
                (long long)s.n_experts_used, (long long)s.expert_ffn_hidden);
  if (s.arch == "bitnet") {
    // Which BitNet, and how its ternary projections are stored.
    std::string layout = "none found";
    if (const TensorView* q = f->find("blk.0.attn_q.weight")) {
      switch (q->dtype) {
        case DType::I2_S: {
          std::string source;
          const I2sLayout l = bitnet_i2s_layout(*f, &source);
          layout = "I2_S (bitnet.cpp, 2 bits, one scale per tensor), " + i2s_layout_description(l) +
                   " [" + source + "]";
          break;
        }
        case DType::TQ1_0: layout = "TQ1_0 (1.69 bits, scale per 256)"; break;
        case DType::TQ2_0: layout = "TQ2_0 (2.06 bits, scale per 256)"; break;
        case DType::U8: layout = "packed uint8 + weight_scale (transformers BitLinear)"; break;
        default:
          layout = std::string(dtype_name(q->dtype)) + " values, made ternary at load";
      }
    }
    std::printf("bitnet       %s; ternary weights: %s; int8 activations\n",
                s.ffn_squared_relu ? "BitNet b1.58 2B-4T variant (squared ReLU, SubLN)"
                                   : "1bitLLM variant (SiLU, SubLN)",
                layout.c_str());
  }
  std::printf("context      %lld trained; rope theta %g%s\n", (long long)s.max_context,
              double(s.rope_theta), s.tied_embeddings ? "; tied embeddings" : "");
  std::printf("tensor types\n");
  for (const auto& [kind, types] : kinds) {
    std::string list;
    for (const auto& t : types) list += (list.empty() ? "" : ", ") + t;
    std::printf("  %-20s %s\n", kind.c_str(), list.c_str());
  }
  const size_t need = weight_bytes + kv_bytes;
  std::printf("memory       weights %s + KV cache %s (f32, %d tokens) = %s\n",
              human_bytes(double(weight_bytes)).c_str(), human_bytes(double(kv_bytes)).c_str(), ctx,
              human_bytes(double(need)).c_str());
  // The same analysis `kiln serve` makes at start-up.
  const SystemProbe sys = probe_system();
  std::printf("this machine %s\n", sys.summary().c_str());
  const ServePlan one = plan_serving(*f, sys, ctx, 1, DType::F32, !sys.gpus.empty());
  std::printf("fit          %s\n",
              one.fits ? "fits (one sequence)"
                       : "does NOT fit (try a smaller context or a smaller quantization)");
  if (one.fits) {
    const ServePlan serve = plan_serving(*f, sys, ctx, 0, DType::F32, !sys.gpus.empty());
    std::printf("kiln serve   would run %d parallel sequences x %lld positions", serve.parallel,
                (long long)serve.context);
    if (serve.kv_positions < int64_t(serve.parallel) * serve.context)
      std::printf(", sharing a KV pool of %lld positions", (long long)serve.kv_positions);
    std::printf("\n");
    for (const auto& r : serve.reasons) std::printf("  %s\n", r.c_str());
  } else {
    for (const auto& r : one.reasons) std::printf("  %s\n", r.c_str());
  }
  return 0;
}

}  // namespace

KILN_COMMAND("info", "show a model's architecture, size, tensor types and memory needs", info_command);

}  // namespace kiln::app
