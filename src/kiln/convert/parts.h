// The pieces convert and synth share: which architectures can be written,
// the tensors a model of each has, the type each tensor gets in a file type,
// the GGUF metadata, and the parallel row pipeline that fills tensors.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/convert/convert.h"
#include "kiln/core/dtype.h"
#include "kiln/core/thread_pool.h"
#include "kiln/io/gguf.h"
#include "kiln/model/model_spec.h"

namespace kiln {
class ModelFile;
}

namespace kiln::convert {

// An architecture the writers know. Adding one (bitnet, ...):
// an entry in kConvertArchs (arch_layout.cpp), its tensors in
// model_tensor_shapes, its extra metadata in write_model_metadata, and, if
// llama.cpp's converter transforms some of its tensors, the same transform
// in plan_from_safetensors.
struct ConvertArch {
  std::string_view arch;  // ModelSpec::arch
  std::string_view gguf_name;
  // llama.cpp permutes the rows of attn_q/attn_k of these so that GGML's
  // interleaved RoPE applies (ModelSpec::rope_style of its GGUFs).
  bool permute_qk;
};

// Throws kiln::Error "converting <arch> is not supported yet (...)".
const ConvertArch& require_convert_arch(const std::string& arch);

struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;  // outermost-first
};

// Every tensor a GGUF of this model holds, in llama.cpp's order: token_embd,
// rope_freqs (Llama 3 scaling), the blocks, output_norm, output.
std::vector<TensorShape> model_tensor_shapes(const ModelSpec& spec);

// The Llama 3 rope frequency divisors llama.cpp stores as rope_freqs.weight.
std::vector<float> llama3_rope_factors(const ModelSpec& spec);

// The type a tensor is stored in for file type `ft`, with llama.cpp's
// choices: norms, 1-D tensors, routers, rope_freqs and ssm_conv1d stay F32; Q4_K_M
// gives output (or tied token_embd) Q6_K and attn_v/ffn_down Q6_K on
// llama.cpp's "more bits" layers; rows that are not whole blocks fall back
// (Q4_K -> Q5_0, Q6_K -> Q8_0, then F16).
DType choose_tensor_type(FileType ft, const std::string& name, const std::vector<int64_t>& shape,
                         const ModelSpec& spec);

// general.*, <arch>.* hyper-parameters, and general.file_type.
void write_model_metadata(GgufWriter& w, const ModelSpec& spec, FileType ft,
                          const std::string& model_name);

// tokenizer.ggml.* and tokenizer.chat_template from a Hugging Face folder
// (tokenizer.json, tokenizer_config.json, config.json). Returns false, having
// written nothing, when the folder has no tokenizer.json.
bool write_hf_tokenizer(GgufWriter& w, const std::string& dir, const nlohmann::json& config,
                        int64_t vocab_size);

// One output tensor and where its rows come from: either raw rows of
// source_dtype (a pointer per row, from an mmapped source) or generated f32.
struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType source_dtype = DType::F32;
  std::function<const void*(int64_t row)> raw_row;
  std::function<void(int64_t row, float* dst)> generate;
};

// Registers t with the writer; its rows are converted to `type` in parallel
// on `pool` when the writer gets to it.
void add_planned_tensor(GgufWriter& w, ThreadPool& pool, PlannedTensor t, DType type,
                        I2sLayout i2s_layout = I2sLayout::X86);

// add_planned_tensor for each, with choose_tensor_type's types; logs a
// one-line count of tensors per type.
void add_plan(GgufWriter& w, ThreadPool& pool, std::vector<PlannedTensor> plan, FileType ft,
              const ModelSpec& spec, const std::function<void(const std::string&)>& log,
              I2sLayout i2s_layout = I2sLayout::X86);

// Qwen3.5 / Qwen3-Next (hybrid_layout.cpp): Gated DeltaNet layers between
// gated full-attention ones, with llama.cpp's names, order and transforms.
bool is_hybrid_arch(const std::string& arch);
std::vector<TensorShape> hybrid_tensor_shapes(const ModelSpec& spec);
// The hybrid-specific tensors (norms stored as 1 + w, ssm_a = -exp(A_log),
// fused projections split, Qwen3.5's value heads regrouped): fills `out`,
// records the source tensors in `used` and returns true; false for the
// tensors that convert as they are.
bool plan_hybrid_tensor(const ModelFile& f, const TensorShape& ts, std::set<std::string>& used,
                        PlannedTensor& out);
// <arch>.ssm.*, full_attention_interval, the shared expert's size and
// Qwen3.5's rope.dimension_sections (from config.json).
void write_hybrid_metadata(GgufWriter& w, const ModelSpec& spec, const nlohmann::json& config);

}  // namespace kiln::convert
