#include "kiln/runtime/engine.h"

#include <filesystem>

#include "kiln/core/error.h"

namespace kiln {

std::unique_ptr<Engine> Engine::load(const std::string& path, const LoadOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  auto e = std::make_unique<Engine>();
  e->file_ = ModelFile::open(path);
  const ModelSpec& s = e->file_->spec();

  BackendOptions bo;
  bo.threads = options.threads;
  e->backend_ = make_cpu_backend(bo);
  log(cat("kiln: ", s.arch, " model, ", s.n_layers, " layers, hidden ", s.hidden, ", on ",
          e->backend_->name()));
  e->model_ = load_model(*e->file_, *e->backend_);

  if (e->file_->gguf()) {
    if (e->file_->gguf()->has("tokenizer.ggml.model"))
      e->tokenizer_ = Tokenizer::from_gguf(*e->file_->gguf());
  } else {
    namespace fs = std::filesystem;
    const fs::path dir = e->file_->directory();
    if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "tokenizer.json.gz"))
      e->tokenizer_ = Tokenizer::from_hf(dir.string());
  }
  if (options.need_tokenizer && !e->tokenizer_)
    fail(path, ": the model has no tokenizer (GGUF tokenizer.ggml.* or tokenizer.json)");
  return e;
}

const Tokenizer& Engine::require_tokenizer() const {
  if (!tokenizer_) fail(file_->path(), ": the model has no tokenizer");
  return *tokenizer_;
}

}  // namespace kiln
