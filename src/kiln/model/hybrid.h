// Hybrid models: Gated DeltaNet (linear attention) layers interleaved with
// gated full-attention layers. Qwen3.5 (dense feed-forward), Qwen3.5-MoE and
// Qwen3-Next (routed experts plus a gated shared expert).
#pragma once

#include <memory>

#include "kiln/model/model.h"

namespace kiln {

std::unique_ptr<Model> load_hybrid(const ModelFile& file, Backend& backend);

}  // namespace kiln
