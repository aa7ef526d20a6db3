// kiln convert: a safetensors checkpoint (names mapped to llama.cpp's, q/k
// permuted where llama.cpp permutes them, experts stacked, the hybrids'
// tensors transformed as llama.cpp's converter does) or a GGUF
// (requantized as is) into a GGUF of the requested file type.
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/model/bitnet.h"
#include "kiln/model/model_file.h"

namespace kiln {
namespace convert {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<int64_t> drop_first(const std::vector<int64_t>& s) { return {s.begin() + 1, s.end()}; }

// Where rows of a stacked expert tensor (blk.L.ffn_{gate,up,down}_exps.weight,
// shape [E, R, C]) come from: one 2-D tensor per expert, or transformers 5's
// fused [E, 2I, H] gate_up tensor.
PlannedTensor plan_experts(const ModelFile& f, const TensorShape& ts, std::set<std::string>& used) {
  PlannedTensor p{ts.name, ts.shape};
  const std::string stem = ts.name.substr(0, ts.name.size() - std::string_view(".weight").size());
  const int64_t E = ts.shape[0], R = ts.shape[1];
  if (f.find(stem + ".0.weight")) {
    std::vector<const TensorView*> views;
    for (int64_t e = 0; e < E; ++e) {
      const std::string name = stem + "." + std::to_string(e) + ".weight";
      const TensorView& v = f.get(name, drop_first(ts.shape));
      KILN_CHECK(v.dtype == f.get(stem + ".0.weight").dtype, f.path(), ": experts of ", stem,
                 " have different types");
      views.push_back(&v);
      used.insert(name);
    }
    p.source_dtype = views[0]->dtype;
    p.raw_row = [views, R](int64_t r) { return views[size_t(r / R)]->row(r % R); };
    return p;
  }
  const bool gate = ends_with(stem, "ffn_gate_exps"), up = ends_with(stem, "ffn_up_exps");
  const std::string fused = stem.substr(0, stem.rfind('.') + 1) + "ffn_gate_up_exps.weight";
  const TensorView* v = (gate || up) ? f.find(fused) : nullptr;
  if (!v) fail(f.path(), ": tensor ", ts.name, " is missing (no per-expert or fused tensors either)");
  KILN_CHECK(v->shape == std::vector<int64_t>({E, 2 * R, ts.shape[2]}), f.path(), ": tensor ",
             fused, " has shape ", shape_string(v->shape), ", expected [", E, ", ", 2 * R, ", ",
             ts.shape[2], "]");
  used.insert(fused);
  const int64_t offset = gate ? 0 : R;
  p.source_dtype = v->dtype;
  p.raw_row = [v, R, offset](int64_t r) { return v->row(r / R * 2 * R + offset + r % R); };
  return p;
}

bool is_bitnet_projection(const std::string& name) {
  for (const std::string& p : bitnet_projection_names())
    if (ends_with(name, "." + p + ".weight")) return true;
  return false;
}

// A BitNet projection as llama.cpp's converter writes it: its ternary values
// times the matrix scale (from the packed checkpoint, or the master weights
// quantized the b1.58 way), q/k rows permuted like Llama's.
PlannedTensor plan_ternary(const ModelFile& f, const TensorShape& ts, bool permute,
                           std::set<std::string>& used) {
  const int64_t rows = ts.shape[0], cols = ts.shape[1];
  auto values = std::make_shared<std::vector<float>>(bitnet_ternary_values(f, ts.name, rows, cols));
  used.insert(ts.name);
  const std::string scale = ts.name.substr(0, ts.name.size() - 7) + ".weight_scale";
  if (f.find(scale)) used.insert(scale);
  const int64_t hd = f.spec().head_dim, half = hd / 2;
  PlannedTensor p{ts.name, ts.shape};
  p.generate = [values, cols, permute, hd, half](int64_t r, float* dst) {
    const int64_t src = permute ? r / hd * hd + (r % hd % 2) * half + r % hd / 2 : r;
    std::copy_n(values->data() + src * cols, cols, dst);
  };
  return p;
}

std::vector<PlannedTensor> plan_from_safetensors(const ModelFile& f, const ConvertArch& arch) {
  const ModelSpec& s = f.spec();
  std::vector<PlannedTensor> plan;
  std::set<std::string> used;
  for (const TensorShape& ts : model_tensor_shapes(s)) {
    if (ts.name == "rope_freqs.weight") {
      auto factors = std::make_shared<std::vector<float>>(llama3_rope_factors(s));
      PlannedTensor p{ts.name, ts.shape};
      p.generate = [factors](int64_t, float* dst) {
        std::copy(factors->begin(), factors->end(), dst);
      };
      plan.push_back(std::move(p));
      continue;
    }
    if (is_hybrid_arch(s.arch)) {
      PlannedTensor p;
      if (plan_hybrid_tensor(f, ts, used, p)) {
        plan.push_back(std::move(p));
        continue;
      }
    }
    const TensorView* v = f.find(ts.name);
    if (!v && ts.shape.size() == 3) {
      plan.push_back(plan_experts(f, ts, used));
      continue;
    }
    const bool q = ends_with(ts.name, ".attn_q.weight"), k = ends_with(ts.name, ".attn_k.weight");
    if (s.arch == "bitnet" && is_bitnet_projection(ts.name)) {
      plan.push_back(plan_ternary(f, ts, arch.permute_qk && (q || k), used));
      continue;
    }
    v = &f.get(ts.name, ts.shape);
    used.insert(ts.name);
    PlannedTensor p{ts.name, ts.shape, v->dtype};
    if (arch.permute_qk && (q || k)) {
      // Hugging Face rotates dimension i with i + d/2; GGML's interleaved RoPE
      // rotates 2i with 2i+1. Reordering the rows of q and k per head (row
      // 2i+j of a head comes from row j*d/2 + i) makes both compute the same.
      const int64_t hd = s.head_dim, half = hd / 2;
      p.raw_row = [v, hd, half](int64_t r) {
        const int64_t h = r / hd, w = r % hd;
        return v->row(h * hd + (w % 2) * half + w / 2);
      };
    } else {
      p.raw_row = [v](int64_t r) { return v->row(r); };
    }
    plan.push_back(std::move(p));
  }
  for (const auto& [name, view] : f.tensors())
    KILN_CHECK(used.count(name), f.path(), ": tensor ", name, " (", shape_string(view.shape),
               ") has no place in a ", s.arch, " GGUF; converting this variant is not supported yet");
  return plan;
}

std::vector<PlannedTensor> plan_from_gguf(const ModelFile& f) {
  std::vector<PlannedTensor> plan;
  for (const TensorView& t : f.gguf()->tensors()) {
    const TensorView* v = &t;
    PlannedTensor p{t.name, t.shape, t.dtype};
    if (t.dtype == DType::I2_S && t.shape.size() == 2 && f.spec().arch == "bitnet") {
      // One scale for the whole tensor, packed in the file's layout: read whole.
      const int64_t rows = t.shape[0], cols = t.shape[1];
      auto values = std::make_shared<std::vector<float>>(bitnet_ternary_values(f, t.name, rows, cols));
      p.generate = [values, cols](int64_t r, float* dst) {
        std::copy_n(values->data() + r * cols, cols, dst);
      };
      plan.push_back(std::move(p));
      continue;
    }
    p.raw_row = [v](int64_t r) { return v->row(r); };
    plan.push_back(std::move(p));
  }
  return plan;
}

std::string model_name(const ModelFile& f) {
  std::string name = f.spec().name;
  if (!name.empty()) {
    while (!name.empty() && name.back() == '/') name.pop_back();
    return fs::path(name).filename().string();
  }
  fs::path dir = fs::absolute(fs::path(f.directory())).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();
  return dir.filename().string();
}

}  // namespace

// Adds the plan to the writer with the types `ft` gives, and tells the user
// what went where.
void add_plan(GgufWriter& w, ThreadPool& pool, std::vector<PlannedTensor> plan, FileType ft,
              const ModelSpec& spec, const std::function<void(const std::string&)>& log,
              I2sLayout i2s_layout) {
  std::map<std::string, int> counts;
  for (PlannedTensor& p : plan) {
    const DType t = choose_tensor_type(ft, p.name, p.shape, spec);
    counts[std::string(dtype_name(t))]++;
    add_planned_tensor(w, pool, std::move(p), t, i2s_layout);
  }
  if (log) {
    std::string s;
    for (const auto& [type, n] : counts) s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + type;
    log(std::to_string(plan.size()) + " tensors: " + s);
  }
}

}  // namespace convert

void convert_model(const std::string& src, const std::string& out, const ConvertOptions& o) {
  using namespace convert;
  auto f = ModelFile::open(src);
  const ModelSpec& spec = f->spec();
  const ConvertArch& arch = require_convert_arch(spec.arch);
  ThreadPool pool(o.threads);
  GgufWriter w;
  std::vector<PlannedTensor> plan;
  if (f->format() == ModelFormat::Gguf) {
    // The source's I2_S layout says nothing about ours (set below).
    for (const auto& [key, value] : f->gguf()->metadata())
      if (key != "general.alignment" && key != kI2sLayoutKey) w.set(key, value);
    w.set_u32("general.file_type", uint32_t(o.type));
    w.set_u32("general.quantization_version", 2);
    plan = plan_from_gguf(*f);
    bool quantized = false;
    for (const auto& t : plan) quantized |= dtype_is_quantized(t.source_dtype);
    if (quantized && o.log)
      o.log("warning: " + src + " is already quantized; requantizing adds its rounding to ours");
  } else {
    write_model_metadata(w, spec, o.type, model_name(*f));
    if (is_hybrid_arch(spec.arch)) write_hybrid_metadata(w, spec, f->hf_config());
    bool have_tokenizer = false;
    try {
      have_tokenizer = write_hf_tokenizer(w, f->directory(), f->hf_config(), spec.vocab_size);
    } catch (const Error& e) {
      if (!o.allow_no_tokenizer) throw Error(std::string(e.what()) + " (--no-tokenizer converts without it)");
    }
    if (!have_tokenizer) {
      KILN_CHECK(o.allow_no_tokenizer, src, ": no usable tokenizer.json beside the model; "
                                            "--no-tokenizer writes a GGUF without one");
      if (o.log) o.log("warning: no tokenizer written; run the result with --ids");
    }
    plan = plan_from_safetensors(*f, arch);
  }
  const bool i2s = o.type == FileType::I2_S;
  KILN_CHECK(i2s || o.i2s_layout == I2sLayout::X86, "an I2_S layout applies to --type i2_s only");
  if (i2s && o.i2s_layout != I2sLayout::X86) {
    // bitnet.cpp records no layout; kiln marks the ones that are not x86.
    w.set_string(kI2sLayoutKey, i2s_layout_name(o.i2s_layout));
    if (o.log)
      o.log(std::string("I2_S in the ") + i2s_layout_description(o.i2s_layout) +
            "; bitnet.cpp reads it only when built the same way");
  }
  add_plan(w, pool, std::move(plan), o.type, spec, o.log, o.i2s_layout);
  w.write(out, o.progress);
}

}  // namespace kiln
