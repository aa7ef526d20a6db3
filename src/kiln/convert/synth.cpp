// kiln synth: random weights in a real model's shapes, for measuring speed
// at real sizes without the real weights. Every value is a function of
// (seed, tensor name, row, column), so the output does not depend on the
// thread count, and rows are made where they are written.
#include <cmath>
#include <filesystem>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/core/splitmix.h"
#include "kiln/io/json_file.h"
#include "kiln/model/model_file.h"

namespace kiln {
namespace convert {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Approximately normal values: the sum of four 16-bit uniforms (Irwin-Hall),
// centred and scaled to unit variance. One 64-bit draw per value keeps a
// 0.6B-parameter model to a few seconds; the tails are cut at 3.5 sigma,
// which random weights for speed measurements do not miss.
void gaussian_row(uint64_t state, float stddev, float* dst, int64_t n) {
  const float scale = stddev * std::sqrt(3.0f) / 65536.0f;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = splitmix64(state);
    const uint32_t sum = uint32_t(x & 0xffff) + uint32_t((x >> 16) & 0xffff) +
                         uint32_t((x >> 32) & 0xffff) + uint32_t(x >> 48);
    dst[i] = (float(sum) - 2.0f * 65535.0f) * scale;
  }
}

}  // namespace
}  // namespace convert

void synth_model(const std::string& config_json, const std::string& out, const SynthOptions& o) {
  using namespace convert;
  const nlohmann::json config = read_json_file(config_json);
  ModelSpec spec = spec_from_hf_config(config);
  spec.validate();
  require_convert_arch(spec.arch);

  GgufWriter w;
  std::string name = config.value("_name_or_path", std::string());
  if (name.empty()) name = std::filesystem::path(config_json).stem().string();
  write_model_metadata(w, spec, o.type, name + " (random weights)");
  if (is_hybrid_arch(spec.arch)) write_hybrid_metadata(w, spec, config);
  if (!o.tokenizer_dir.empty())
    KILN_CHECK(write_hf_tokenizer(w, o.tokenizer_dir, config, spec.vocab_size), o.tokenizer_dir,
               ": no tokenizer.json there");
  w.set_u64("kiln.synth.seed", o.seed);

  std::vector<PlannedTensor> plan;
  for (const TensorShape& ts : model_tensor_shapes(spec)) {
    PlannedTensor p{ts.name, ts.shape};
    if (ts.name == "rope_freqs.weight") {
      const std::vector<float> factors = llama3_rope_factors(spec);
      p.generate = [factors](int64_t, float* dst) { std::copy(factors.begin(), factors.end(), dst); };
    } else if (ends_with(ts.name, ".ssm_a")) {
      // A = -exp(A_log) must be negative, or the DeltaNet state grows without bound.
      const int64_t n = ts.shape.back();
      p.generate = [n](int64_t, float* dst) { std::fill(dst, dst + n, -1.0f); };
    } else if (ends_with(ts.name, "_norm.weight")) {
      const int64_t n = ts.shape.back();
      p.generate = [n](int64_t, float* dst) { std::fill(dst, dst + n, 1.0f); };
    } else {
      uint64_t key_state = o.seed ^ fnv1a(ts.name);
      const uint64_t key = splitmix64(key_state);
      const int64_t n = ts.shape.back();
      const float stddev = o.stddev;
      p.generate = [key, n, stddev](int64_t row, float* dst) {
        convert::gaussian_row(key + uint64_t(row) * 0xd1b54a32d192ed03ULL, stddev, dst, n);
      };
    }
    plan.push_back(std::move(p));
  }
  ThreadPool pool(o.threads);
  add_plan(w, pool, std::move(plan), o.type, spec, o.log);
  w.write(out, o.progress);
}

}  // namespace kiln
