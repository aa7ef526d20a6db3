// The decoder-only transformer family: Llama 2/3, Qwen3 (QK-norm), Qwen3-MoE
// (routed experts), SmolLM3 (NoPE layers). One forward pass; the spec says
// which variations apply.
#pragma once

#include <memory>

#include "kiln/model/model.h"

namespace kiln {

std::unique_ptr<Model> load_transformer(const ModelFile& file, Backend& backend);

}  // namespace kiln
