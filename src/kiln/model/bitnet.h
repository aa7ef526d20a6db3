// BitNet b1.58: a Llama-shaped decoder whose projections are ternary
// BitLinear layers (int8 activations, per-token absmax), with an RMSNorm
// before the attention output and the down projection (SubLN), and a
// squared-ReLU (2B-4T) or SiLU (1bitLLM) feed-forward.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/model/model.h"

namespace kiln {

std::unique_ptr<Model> load_bitnet(const ModelFile& file, Backend& backend);

// The projections of a BitNet layer, under their canonical names.
const std::vector<std::string>& bitnet_projection_names();

// The ternary weight `name` {rows, cols} as values code * scale, from any of
// the layouts a BitNet checkpoint comes in: transformers' packed uint8 (4 rows
// a byte) with its weight_scale, TQ1_0/TQ2_0/I2_S, weights already ternary
// (a converter's output), or master weights, quantized as b1.58 trains them
// (scale = mean |W|, round, clip to [-1, 1]).
std::vector<float> bitnet_ternary_values(const ModelFile& file, const std::string& name,
                                         int64_t rows, int64_t cols);

}  // namespace kiln
