// GGUF, exactly as llama.cpp writes it (versions 2 and 3): a header, typed
// key/value metadata (scalars, strings, nested arrays), a tensor table, and
// tensor data at an aligned offset. The reader validates everything before a
// tensor is handed out and keeps the file mmapped: tensor data is never copied.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/mapped_file.h"
#include "kiln/core/tensor.h"

namespace kiln {

enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

std::string_view gguf_type_name(GgufType t);

// One metadata value. Scalars keep their GGUF type; integers are held widened.
struct GgufValue {
  GgufType type = GgufType::U8;
  // scalar payloads (which one is meaningful depends on type)
  uint64_t u = 0;  // U8..U64, BOOL
  int64_t i = 0;   // I8..I64
  double f = 0;    // F32, F64
  std::string str;
  // arrays
  GgufType elem_type = GgufType::U8;
  std::vector<GgufValue> array;

  bool is_integer() const;
  bool is_unsigned() const;  // U8, U16, U32, U64 or BOOL: the payload is in u
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
  int64_t as_int() const;      // any integer or bool; throws otherwise
  double as_double() const;    // any number; throws otherwise
  const std::string& as_string() const;  // throws unless STRING
};

class GgufFile {
 public:
  // Opens, maps and validates; throws kiln::Error with a one-line reason for a
  // missing, truncated or malformed file (bad magic, unknown version or type,
  // tensor past the end, misaligned offset, shape overflow...).
  static std::unique_ptr<GgufFile> open(const std::string& path);

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  const std::string& path() const { return file_->path(); }
  size_t file_size() const { return file_->size(); }
  // Byte offset of the data section in the file (tensor offsets count from here).
  size_t data_offset() const { return data_offset_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // find(), but a missing key throws kiln::Error naming the key and the file.
  const GgufValue& require(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters: throw kiln::Error naming the key if absent or of the wrong kind.
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<float> get_float_array(std::string_view key) const;
  // ...and with a default when absent (still throw on a wrong type).
  std::string get_string_or(std::string_view key, const std::string& fallback) const;
  int64_t get_int_or(std::string_view key, int64_t fallback) const;
  double get_float_or(std::string_view key, double fallback) const;
  bool get_bool_or(std::string_view key, bool fallback) const;

  // Tensors, in file order. TensorView::shape is outermost-first (GGUF's ne
  // reversed); data points into the mapping.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Writes a GGUF v3 file. Values and tensors are written in the order they are
// added. write() goes to "<path>.tmp" and renames at the end, so an
// interrupted write never leaves a half-written file under the final name.
class GgufWriter {
 public:
  void set(const std::string& key, const GgufValue& value);
  void set_string(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string_array(const std::string& key, const std::vector<std::string>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_alignment(size_t alignment);

  // shape outermost-first, as TensorView; data must stay valid until write().
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  const void* data, size_t nbytes);

  // A tensor whose bytes are produced during write(): fill(dst) must write
  // all dtype_row_bytes(dtype, cols) * rows bytes of it at dst. Tensors are
  // filled one at a time into one reused buffer, so a model much larger than
  // memory can be written while only its largest tensor is held. An exception
  // from fill aborts the write and leaves no file behind.
  void add_tensor_fill(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                       std::function<void(void* dst)> fill);

  // progress(bytes_written, bytes_total) is called now and then, if given.
  void write(const std::string& path,
             const std::function<void(size_t, size_t)>& progress = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t nbytes;
    std::function<void(void*)> fill;  // set for add_tensor_fill
  };
  // Shape and size checks shared by add_tensor and add_tensor_fill.
  size_t check_new_tensor(const std::string& name, DType dtype,
                          const std::vector<int64_t>& shape) const;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<PendingTensor> tensors_;
  size_t alignment_ = 32;
};

}  // namespace kiln
