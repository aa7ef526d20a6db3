#include "kiln/model/architectures.h"

#include <array>

namespace kiln {
namespace {

constexpr std::array kArchs = {
    ArchEntry{"llama", "llama", "llama", "LlamaForCausalLM", RopeStyle::Interleaved},
    ArchEntry{"qwen3", "qwen3", "qwen3", "Qwen3ForCausalLM", RopeStyle::Halves},
    ArchEntry{"qwen3moe", "qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", RopeStyle::Halves},
    // Qwen3-VL: a Qwen3 text model; its M-RoPE sections and vision tower come beside it.
    ArchEntry{"qwen3", "qwen3vl", "qwen3_vl_text", "Qwen3VLForConditionalGeneration",
              RopeStyle::Halves},
    ArchEntry{"smollm3", "smollm3", "smollm3", "SmolLM3ForCausalLM", RopeStyle::Interleaved},
    // Hybrids: llama.cpp runs their (partial) RoPE in NEOX order, Qwen3.5's as
    // M-RoPE whose sections all see the same position for text: half rotation.
    ArchEntry{"qwen35", "qwen35", "qwen3_5_text", "Qwen3_5ForCausalLM", RopeStyle::Halves},
    ArchEntry{"qwen35", "qwen35", "qwen3_5", "Qwen3_5ForConditionalGeneration", RopeStyle::Halves},
    ArchEntry{"qwen35moe", "qwen35moe", "qwen3_5_moe_text", "Qwen3_5MoeForCausalLM",
              RopeStyle::Halves},
    ArchEntry{"qwen35moe", "qwen35moe", "qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration",
              RopeStyle::Halves},
    ArchEntry{"qwen3next", "qwen3next", "qwen3_next", "Qwen3NextForCausalLM", RopeStyle::Halves},
    // BitNet b1.58: bitnet.cpp's 2B-4T GGUFs ("bitnet-b1.58", older "bitnet-25")
    // have q/k permuted as for Llama; llama.cpp's "bitnet" (the 1bitLLM models)
    // keeps Hugging Face's order and runs NEOX RoPE.
    ArchEntry{"bitnet", "bitnet-b1.58", "bitnet", "BitNetForCausalLM", RopeStyle::Interleaved},
    ArchEntry{"bitnet", "bitnet-25", "bitnet", "BitNetForCausalLM", RopeStyle::Interleaved},
    ArchEntry{"bitnet", "bitnet", "bitnet", "BitnetForCausalLM", RopeStyle::Halves},
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
  for (size_t i = 0; i < kArchs.size(); ++i) {
    const auto& a = kArchs[i];
    if (i > 0 && kArchs[i - 1].kiln_name == a.kiln_name) continue;  // an alias row
    if (!s.empty()) s += ", ";
    s += a.kiln_name;
  }
  return s;
}

}  // namespace kiln
