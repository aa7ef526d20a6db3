// The architectures kiln knows, and the names files use for them. Adding an
// architecture: one entry here, its forward pass in its own file, and its
// builder registered in model.cpp.
#pragma once

#include <string>
#include <string_view>

#include "kiln/model/model_spec.h"

namespace kiln {

struct ArchEntry {
  std::string_view kiln_name;    // ModelSpec::arch
  std::string_view gguf_name;    // general.architecture
  std::string_view hf_type;      // config.json model_type
  std::string_view hf_class;     // config.json architectures[0]
  // llama.cpp's converter permutes q/k of some architectures so that GGML's
  // interleaved RoPE applies; the others keep Hugging Face's half rotation.
  RopeStyle gguf_rope;
};

// nullptr when unknown.
const ArchEntry* find_arch_by_gguf(std::string_view name);
const ArchEntry* find_arch_by_hf(std::string_view model_type, std::string_view class_name);
// "llama, qwen3, ..." for error messages.
std::string supported_arch_list();

}  // namespace kiln
