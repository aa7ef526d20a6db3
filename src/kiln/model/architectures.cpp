#include "kiln/model/architectures.h"

#include <array>

namespace kiln {
namespace {

constexpr std::array kArchs = {
    ArchEntry{"llama", "llama", "llama", "LlamaForCausalLM", RopeStyle::Interleaved},
    ArchEntry{"qwen3", "qwen3", "qwen3", "Qwen3ForCausalLM", RopeStyle::Halves},
    ArchEntry{"qwen3moe", "qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", RopeStyle::Halves},
    ArchEntry{"smollm3", "smollm3", "smollm3", "SmolLM3ForCausalLM", RopeStyle::Interleaved},
};

}  // namespace

const ArchEntry* find_arch_by_gguf(std::string_view name) {
  for (const auto& a : kArchs)
    if (a.gguf_name == name) return &a;
  return nullptr;
}

const ArchEntry* find_arch_by_hf(std::string_view model_type, std::string_view class_name) {
  for (const auto& a : kArchs)
    if (a.hf_type == model_type || (!class_name.empty() && a.hf_class == class_name)) return &a;
  return nullptr;
}

std::string supported_arch_list() {
  std::string s;
  for (const auto& a : kArchs) {
    if (!s.empty()) s += ", ";
    s += a.kiln_name;
  }
  return s;
}

}  // namespace kiln
