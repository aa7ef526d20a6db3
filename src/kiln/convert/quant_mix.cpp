// Which block format each tensor gets. llama.cpp's converter keeps small and
// sensitive tensors in F32; llama-quantize's Q4_K_M spends more bits where
// errors hurt most (the output head, attn_v and ffn_down of the first and
// last eighth of the layers and every third layer between). This follows
// those rules of thumb without its per-architecture special cases beyond
// the 8-expert bump of attn_k/attn_v.
#include <cstdlib>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"

namespace kiln::convert {
namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// llama-quantize's choice of layers that get more bits.
bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  return std::strtoll(name.c_str() + 4, nullptr, 10);
}

// A type whose blocks divide a row of `cols`, as llama.cpp falls back.
DType fit_row(DType t, int64_t cols) {
  auto fits = [&](DType d) { return cols % dtype_info(d).block_size == 0; };
  if (fits(t)) return t;
  switch (t) {
    case DType::Q4_K: t = DType::Q5_0; break;
    case DType::Q6_K: t = DType::Q8_0; break;
    default: t = DType::F16; break;
  }
  return fits(t) ? t : DType::F16;
}

}  // namespace

DType choose_tensor_type(FileType ft, const std::string& name, const std::vector<int64_t>& shape,
                         const ModelSpec& spec) {
  if (shape.size() <= 1 || ends_with(name, "_norm.weight") || contains(name, "ffn_gate_inp") ||
      contains(name, "rope_freqs") || contains(name, "ssm_conv1d"))
    return DType::F32;
  const bool is_output = name == "output.weight" || (spec.tied_embeddings && name == "token_embd.weight");
  const int64_t layer = layer_of(name);
  DType t = DType::F32;
  const bool ternary = ft == FileType::TQ1_0 || ft == FileType::TQ2_0 || ft == FileType::I2_S;
  KILN_CHECK(!ternary || spec.arch == "bitnet", "ternary types hold BitNet b1.58 weights; ",
             spec.arch, " models are not ternary (use another --type)");
  if (ternary) {
    // The ternary projections take the format; embeddings and head stay F16,
    // as in bitnet.cpp's files. TQ rows must be whole 256-value blocks: other
    // rows keep their (already ternary) values in F16.
    if (layer < 0) return DType::F16;
    if (ft == FileType::I2_S) return DType::I2_S;
    const DType tq = ft == FileType::TQ1_0 ? DType::TQ1_0 : DType::TQ2_0;
    return shape.back() % 256 == 0 ? tq : DType::F16;
  }
  switch (ft) {
    case FileType::TQ1_0:
    case FileType::TQ2_0:
    case FileType::I2_S: break;  // handled above
    case FileType::F32: return DType::F32;
    case FileType::F16: return DType::F16;
    case FileType::BF16: return DType::BF16;
    case FileType::Q8_0: t = DType::Q8_0; break;
    case FileType::Q6_K: t = DType::Q6_K; break;
    case FileType::Q4_0: t = is_output ? DType::Q6_K : DType::Q4_0; break;
    case FileType::Q4_K_M:
      t = DType::Q4_K;
      if (is_output) {
        t = DType::Q6_K;
      } else if (contains(name, "attn_v.weight")) {
        if (spec.n_experts == 8)
          t = DType::Q8_0;
        else if (use_more_bits(layer, spec.n_layers))
          t = DType::Q6_K;
      } else if (contains(name, "attn_k.weight") && spec.n_experts == 8) {
        t = DType::Q8_0;
      } else if (contains(name, "ffn_down") && layer >= 0 && use_more_bits(layer, spec.n_layers)) {
        t = DType::Q6_K;
      }
      break;
  }
  return fit_row(t, shape.back());
}

}  // namespace kiln::convert
