#include "kiln/model/model_file.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "kiln/core/error.h"
#include "kiln/io/json_file.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

bool starts_with_gguf_magic(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[4] = {};
  size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return n == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

bool looks_like_safetensors(const std::string& path) {
  if (path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) return true;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return true;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  unsigned char head[9] = {};
  size_t n = std::fread(head, 1, 9, f);
  std::fclose(f);
  return n == 9 && head[8] == '{';
}

}  // namespace

std::unique_ptr<ModelFile> ModelFile::open(const std::string& path) {
  std::error_code ec;
  KILN_CHECK(fs::exists(path, ec), path, ": no such file or directory");
  std::unique_ptr<ModelFile> m(new ModelFile());
  m->path_ = path;
  if (fs::is_directory(path, ec)) {
    m->format_ = ModelFormat::Safetensors;
    m->directory_ = path;
  } else if (starts_with_gguf_magic(path)) {
    m->format_ = ModelFormat::Gguf;
    m->directory_ = fs::path(path).parent_path().string();
  } else if (looks_like_safetensors(path)) {
    m->format_ = ModelFormat::Safetensors;
    m->directory_ = fs::path(path).parent_path().string();
  } else {
    fail(path, ": not a GGUF or safetensors model");
  }
  if (m->directory_.empty()) m->directory_ = ".";

  if (m->format_ == ModelFormat::Gguf) {
    m->gguf_ = GgufFile::open(path);
    m->spec_ = spec_from_gguf(*m->gguf_);
    m->index_gguf();
  } else {
    const std::string config = (fs::path(m->directory_) / "config.json").string();
    KILN_CHECK(fs::exists(config, ec), path, ": a safetensors model needs config.json beside it (",
               config, " not found)");
    m->hf_config_ = read_json_file(config);
    m->spec_ = spec_from_hf_config(m->hf_config_);
    m->st_ = SafetensorsModel::open(path);
    m->index_safetensors();
  }
  m->spec_.validate();
  return m;
}

void ModelFile::index_gguf() {
  for (const TensorView& t : gguf_->tensors()) tensors_.emplace(t.name, t);
}

void ModelFile::index_safetensors() {
  for (const TensorView& t : st_->tensors()) {
    std::string name = canonical_name_from_hf(t.name);
    if (name.empty()) continue;
    TensorView v = t;
    v.name = name;
    tensors_.emplace(name, v);
  }
  KILN_CHECK(!tensors_.empty(), path_, ": no tensors with names kiln recognises");
}

const TensorView* ModelFile::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& ModelFile::get(std::string_view name) const {
  const TensorView* t = find(name);
  if (!t) fail(path_, ": tensor ", name, " is missing");
  return *t;
}

const TensorView& ModelFile::get(std::string_view name, const std::vector<int64_t>& shape) const {
  const TensorView& t = get(name);
  if (t.shape != shape)
    fail(path_, ": tensor ", name, " has shape ", shape_string(t.shape), ", the model's settings say ",
         shape_string(shape));
  return t;
}

size_t ModelFile::file_bytes() const {
  return gguf_ ? gguf_->file_size() : st_->total_bytes();
}

}  // namespace kiln
