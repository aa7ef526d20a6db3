// safetensors: an 8-byte header length, a JSON header (name -> dtype, shape,
// data_offsets; optional __metadata__), then raw little-endian data. A model
// is one file or several shards listed by model.safetensors.index.json; the
// reader presents them as one set of tensors, all mmapped.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/mapped_file.h"
#include "kiln/core/tensor.h"

namespace kiln {

class SafetensorsModel {
 public:
  // path: a .safetensors file, a model.safetensors.index.json, or a folder
  // holding either. Throws kiln::Error with a one-line reason for a missing,
  // truncated or malformed file (header past the end, offsets outside the
  // data, byte count that contradicts dtype x shape, unknown dtype...).
  // Supported dtypes: F32, F16, BF16, I8, U8, I32 (others: a clear error
  // when the tensor is opened... or at load; see the .cpp).
  static std::unique_ptr<SafetensorsModel> open(const std::string& path);

  // The folder the model came from (where config.json lives).
  const std::string& directory() const { return directory_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const;
  // __metadata__ of the first shard (string -> string).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t total_bytes() const;

 private:
  SafetensorsModel() = default;
  std::string directory_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: data must stay valid until write_safetensors returns.
struct SafetensorsEntry {
  std::string name;
  DType dtype;  // F32, F16, BF16, I8, U8, I32
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes one .safetensors file atomically (temporary name, then rename).
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace kiln
