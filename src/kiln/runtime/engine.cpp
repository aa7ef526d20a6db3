#include "kiln/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

#include "kiln/core/error.h"

namespace kiln {
namespace {

double gib(double bytes) { return std::round(bytes / double(1 << 30) * 100) / 100; }

// A GPU when one is present and the model fits in its free memory (weights,
// the KV cache of one sequence of the requested context, and room for
// activations and the runtime); otherwise the CPU, saying why.
std::unique_ptr<Backend> choose_backend(const ModelFile& file, const LoadOptions& o,
                                        BackendOptions bo,
                                        const std::function<void(const std::string&)>& log) {
  if (o.force_cpu) return make_cpu_backend(bo);
  const int count = cuda_device_count();
  if (count == 0) {
    KILN_CHECK(o.device < 0, "--device ", o.device, ": no CUDA device is available (use --cpu)");
    return make_cpu_backend(bo);
  }
  const int dev = o.device < 0 ? 0 : o.device;
  KILN_CHECK(dev < count, "--device ", dev, ": there are ", count, " CUDA device(s), numbered from 0");
  const ModelSpec& s = file.spec();
  if (s.arch == "bitnet") {
    // The GPU's ternary product takes I2_S (also what the safetensors layouts
    // and TQ2_0 rows of partial blocks load as) with rows of whole 32-value
    // runs, as every released BitNet and the test models have; not TQ1_0's
    // base-3 packing, nor rows of other widths.
    std::string why;
    for (const auto& [name, t] : file.tensors())
      if (t.dtype == DType::TQ1_0) why = "its TQ1_0 weights (convert to tq2_0 or i2_s)";
    for (int64_t width : {s.hidden, s.n_heads * s.head_dim, s.ffn_hidden})
      if (width % 32 != 0) why = cat("its rows of ", width, " values (not whole 32-value runs)");
    if (!why.empty()) {
      KILN_CHECK(o.device < 0, "--device ", dev, ": this BitNet model runs on the CPU only: ", why,
                 " (use --cpu)");
      log(cat("kiln: this BitNet model runs on the CPU, the GPU's ternary product does not take ",
              why));
      return make_cpu_backend(bo);
    }
  }
  size_t weights = 0;
  for (const auto& [name, t] : file.tensors()) weights += t.nbytes;
  const int64_t ctx = o.context > 0 ? o.context : std::min<int64_t>(s.max_context, 4096);
  const double kv = 2.0 * double(s.n_layers) * double(s.n_kv_heads) * double(s.head_dim) *
                    double(ctx) * (o.kv_dtype == DType::F16 ? 2 : 4);
  // Activations of a 512-token prompt chunk, logits, scratch, CUDA's own.
  const double act = 512.0 * 4 * (6.0 * double(s.hidden) + 4.0 * double(s.n_heads * s.head_dim) +
                                  2.0 * double(std::max(s.ffn_hidden, s.expert_ffn_hidden))) +
                     16.0 * 4 * double(s.vocab_size) + double(600u << 20);
  size_t free_b = 0, total_b = 0;
  if (!cuda_memory_info(dev, &free_b, &total_b)) {
    log(cat("kiln: cannot read the memory of CUDA device ", dev, "; using the CPU"));
    return make_cpu_backend(bo);
  }
  const double need = double(weights) + kv + act;
  if (need > double(free_b)) {
    const double per_pos = kv / double(ctx);
    const double room = double(free_b) - double(weights) - act;
    std::string hint = room > per_pos * 256
                           ? cat("--ctx-size ", int64_t(room / per_pos) / 256 * 256, " would fit")
                           : std::string("the weights alone do not fit");
    const std::string msg =
        cat("the model needs ", gib(need), " GiB on the GPU (weights ", gib(double(weights)),
            ", KV cache for ", ctx, " positions ", gib(kv), "), ", cuda_device_name(dev), " has ",
            gib(double(free_b)), " GiB free: ", hint);
    KILN_CHECK(o.device < 0, msg, "; or use --cpu");
    log(cat("kiln: ", msg, "; running on the CPU"));
    return make_cpu_backend(bo);
  }
  bo.device = dev;
  if (o.device >= 0) return make_cuda_backend(bo);
  try {
    return make_cuda_backend(bo);
  } catch (const Error& e) {
    log(cat("kiln: ", e.what(), "; running on the CPU"));
    bo.device = 0;
    return make_cpu_backend(bo);
  }
}

}  // namespace

std::unique_ptr<Engine> Engine::load(const std::string& path, const LoadOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  auto e = std::make_unique<Engine>();
  e->file_ = ModelFile::open(path);
  const ModelSpec& s = e->file_->spec();

  BackendOptions bo;
  bo.threads = options.threads;
  e->backend_ = choose_backend(*e->file_, options, bo, log);
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
