// A model ready to run: the opened file, the backend it runs on, the weights
// made resident there, and the tokenizer that came with it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "kiln/backend/backend.h"
#include "kiln/model/model.h"
#include "kiln/model/model_file.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

struct LoadOptions {
  int threads = 0;         // CPU threads; 0 = physical cores
  bool force_cpu = false;  // never use a GPU
  int device = -1;         // GPU index; -1 = the first one
  // What the sequences will need, to decide whether the model fits on a GPU.
  int64_t context = 0;     // positions per sequence; 0 = min(model's, 4096)
  DType kv_dtype = DType::F32;
  bool need_tokenizer = true;
  // Progress/status lines for the user (stderr in the CLI); may be empty.
  std::function<void(const std::string&)> log;
};

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& path, const LoadOptions& options);

  const ModelFile& file() const { return *file_; }
  const ModelSpec& spec() const { return model_->spec(); }
  Model& model() { return *model_; }
  Backend& backend() { return *backend_; }
  // nullptr when the model has no tokenizer (a safetensors folder without
  // tokenizer.json, with need_tokenizer = false).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The tokenizer, or an error saying there is none.
  const Tokenizer& require_tokenizer() const;

 private:
  std::unique_ptr<ModelFile> file_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace kiln
