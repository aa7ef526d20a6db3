// BitNet b1.58: a Llama-shaped decoder whose projections are ternary
// BitLinear layers (int8 activations, per-token absmax), with an RMSNorm
// before the attention output and the down projection (SubLN), and a
// squared-ReLU (2B-4T) or SiLU (1bitLLM) feed-forward.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/model/model.h"
#include "kiln/quant/ternary.h"

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

// The GGUF metadata key naming the packing of a file's I2_S tensors (kiln
// writes it for the layouts other than x86; bitnet.cpp writes none).
inline constexpr const char* kI2sLayoutKey = "kiln.i2_s.layout";

// How the file's I2_S tensors are packed: its kiln.i2_s.layout key, else the
// KILN_I2S_LAYOUT environment variable (for bitnet.cpp's own files, which do
// not say), else x86. `source`, when given, gets where the answer came from.
I2sLayout bitnet_i2s_layout(const ModelFile& file, std::string* source = nullptr);

}  // namespace kiln
