// Opens whatever the user pointed at (a GGUF file; a safetensors file, index
// or folder with config.json) and presents it uniformly: the hyper-parameters
// as a ModelSpec and the tensors under kiln's canonical names, which are
// llama.cpp's GGUF names ("blk.3.attn_q.weight"). Safetensors names are
// mapped on open, so model code only ever sees one naming scheme.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/tensor.h"
#include "kiln/io/gguf.h"
#include "kiln/io/safetensors.h"
#include "kiln/model/model_spec.h"

namespace kiln {

enum class ModelFormat { Gguf, Safetensors };

class ModelFile {
 public:
  // Throws kiln::Error with a one-line reason (missing, unknown format,
  // unsupported architecture, inconsistent shapes...).
  static std::unique_ptr<ModelFile> open(const std::string& path);

  ModelFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  const ModelSpec& spec() const { return spec_; }
  ModelSpec& mutable_spec() { return spec_; }

  // nullptr when absent. Canonical (GGUF) names.
  const TensorView* find(std::string_view name) const;
  // Throws kiln::Error naming the tensor when absent.
  const TensorView& get(std::string_view name) const;
  // Checks the shape too (outermost-first), naming both in the error.
  const TensorView& get(std::string_view name, const std::vector<int64_t>& shape) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }

  // The underlying containers (one of them is null).
  const GgufFile* gguf() const { return gguf_.get(); }
  const SafetensorsModel* safetensors() const { return st_.get(); }
  // config.json of a safetensors model (null json for GGUF).
  const nlohmann::json& hf_config() const { return hf_config_; }
  // Folder holding the model (tokenizer.json etc. live there for safetensors).
  const std::string& directory() const { return directory_; }
  size_t file_bytes() const;

 private:
  ModelFile() = default;
  void index_gguf();
  void index_safetensors();

  ModelFormat format_ = ModelFormat::Gguf;
  std::string path_, directory_;
  ModelSpec spec_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsModel> st_;
  nlohmann::json hf_config_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

// Hyper-parameters from GGUF metadata ("llama.embedding_length"...).
ModelSpec spec_from_gguf(const GgufFile& gguf);
// Hyper-parameters from a Hugging Face config.json, in either the
// transformers-5 form (rope_parameters) or the older one (rope_theta,
// rope_scaling); a nested text_config is used when present.
ModelSpec spec_from_hf_config(const nlohmann::json& config);
// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; empty
// string for tensors kiln does not use (rotary caches and the like).
std::string canonical_name_from_hf(const std::string& hf_name);

}  // namespace kiln
