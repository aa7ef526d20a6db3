#include <cstring>
#include <set>

#include "kiln/core/error.h"
#include "kiln/io/atomic_file.h"
#include "kiln/io/gguf.h"

namespace kiln {
namespace {

class Buffer {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Serializes one value of `type` (the declared type: for array elements, the
// array's element type), refusing values whose own type disagrees.
void put_value(Buffer& out, const std::string& key, GgufType type, const GgufValue& v) {
  KILN_CHECK(v.type == type, "GGUF metadata '", key, "': value of type ", gguf_type_name(v.type),
             " in a place declared ", gguf_type_name(type));
  switch (type) {
    case GgufType::U8: out.put<uint8_t>(uint8_t(v.u)); break;
    case GgufType::I8: out.put<int8_t>(int8_t(v.i)); break;
    case GgufType::U16: out.put<uint16_t>(uint16_t(v.u)); break;
    case GgufType::I16: out.put<int16_t>(int16_t(v.i)); break;
    case GgufType::U32: out.put<uint32_t>(uint32_t(v.u)); break;
    case GgufType::I32: out.put<int32_t>(int32_t(v.i)); break;
    case GgufType::U64: out.put<uint64_t>(v.u); break;
    case GgufType::I64: out.put<int64_t>(v.i); break;
    case GgufType::F32: out.put<float>(float(v.f)); break;
    case GgufType::F64: out.put<double>(v.f); break;
    case GgufType::BOOL: out.put<uint8_t>(v.u != 0); break;
    case GgufType::STRING: out.put_string(v.str); break;
    case GgufType::ARRAY:
      KILN_CHECK(uint32_t(v.elem_type) <= uint32_t(GgufType::F64), "GGUF metadata '", key,
                 "': unknown array element type ", uint32_t(v.elem_type));
      out.put<uint32_t>(uint32_t(v.elem_type));
      out.put<uint64_t>(v.array.size());
      for (const GgufValue& e : v.array) put_value(out, key, v.elem_type, e);
      break;
    default:
      fail("GGUF metadata '", key, "': unknown type ", uint32_t(type));
  }
}

GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

template <class T, class Fill>
GgufValue array_of(GgufType elem, const std::vector<T>& items, Fill fill) {
  GgufValue v = scalar(GgufType::ARRAY);
  v.elem_type = elem;
  v.array.reserve(items.size());
  for (const T& x : items) {
    GgufValue e = scalar(elem);
    fill(e, x);
    v.array.push_back(std::move(e));
  }
  return v;
}

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

void GgufWriter::set(const std::string& key, const GgufValue& value) {
  if (key == "general.alignment") {
    KILN_CHECK(value.is_integer(), "general.alignment must be an integer");
    const uint64_t a = value.is_unsigned() ? value.u : uint64_t(value.i);
    KILN_CHECK(a != 0 && (a & (a - 1)) == 0 && a <= (uint64_t(1) << 30),
               "general.alignment ", a, " is not a power of two");
    alignment_ = size_t(a);
  }
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  kv_.emplace_back(key, value);
}

void GgufWriter::set_string(const std::string& key, const std::string& v) {
  GgufValue g = scalar(GgufType::STRING);
  g.str = v;
  set(key, g);
}
void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  GgufValue g = scalar(GgufType::U32);
  g.u = v;
  set(key, g);
}
void GgufWriter::set_i32(const std::string& key, int32_t v) {
  GgufValue g = scalar(GgufType::I32);
  g.i = v;
  set(key, g);
}
void GgufWriter::set_u64(const std::string& key, uint64_t v) {
  GgufValue g = scalar(GgufType::U64);
  g.u = v;
  set(key, g);
}
void GgufWriter::set_f32(const std::string& key, float v) {
  GgufValue g = scalar(GgufType::F32);
  g.f = v;
  set(key, g);
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  GgufValue g = scalar(GgufType::BOOL);
  g.u = v;
  set(key, g);
}
void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& v) {
  set(key, array_of(GgufType::STRING, v, [](GgufValue& e, const std::string& s) { e.str = s; }));
}
void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  set(key, array_of(GgufType::I32, v, [](GgufValue& e, int32_t x) { e.i = x; }));
}
void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& v) {
  set(key, array_of(GgufType::F32, v, [](GgufValue& e, float x) { e.f = x; }));
}
void GgufWriter::set_alignment(size_t alignment) { set_u32("general.alignment", uint32_t(alignment)); }

size_t GgufWriter::check_new_tensor(const std::string& name, DType dtype,
                                   const std::vector<int64_t>& shape) const {
  KILN_CHECK(dtype != DType::U8 && dtype_known(uint32_t(dtype)), "GGUF tensor '", name,
             "': type ", dtype_name(dtype), " cannot be stored in a GGUF");
  KILN_CHECK(shape.size() <= 4, "GGUF tensor '", name, "': ", shape.size(),
             " dimensions (at most 4)");
  for (const auto& t : tensors_)
    KILN_CHECK(t.name != name, "GGUF tensor '", name, "' added twice");
  int64_t rows = 1;
  for (size_t k = 0; k + 1 < shape.size(); ++k) {
    KILN_CHECK(shape[k] >= 0, "GGUF tensor '", name, "': negative dimension");
    rows *= shape[k];
  }
  const int64_t cols = shape.empty() ? 1 : shape.back();
  KILN_CHECK(cols >= 0, "GGUF tensor '", name, "': negative dimension");
  // I2_S: the packed values, then the tensor's scale padded to 32 bytes.
  if (dtype == DType::I2_S) return dtype_row_bytes(dtype, cols) * size_t(rows) + 32;
  return dtype_row_bytes(dtype, cols) * size_t(rows);
}

void GgufWriter::add_tensor(const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape, const void* data, size_t nbytes) {
  const size_t expect = check_new_tensor(name, dtype, shape);
  KILN_CHECK(nbytes == expect, "GGUF tensor '", name, "': ", nbytes, " bytes given, ",
             dtype_name(dtype), " ", shape_string(shape), " needs ", expect);
  KILN_CHECK(data != nullptr || nbytes == 0, "GGUF tensor '", name, "': no data");
  tensors_.push_back({name, dtype, shape, data, nbytes, nullptr});
}

void GgufWriter::add_tensor_fill(const std::string& name, DType dtype,
                                 const std::vector<int64_t>& shape,
                                 std::function<void(void* dst)> fill) {
  const size_t nbytes = check_new_tensor(name, dtype, shape);
  KILN_CHECK(fill != nullptr, "GGUF tensor '", name, "': no fill function");
  tensors_.push_back({name, dtype, shape, nullptr, nbytes, std::move(fill)});
}

void GgufWriter::write(const std::string& path,
                       const std::function<void(size_t, size_t)>& progress) const {
  Buffer head;
  head.put<uint32_t>(0x46554747);  // "GGUF"
  head.put<uint32_t>(3);
  head.put<uint64_t>(tensors_.size());
  head.put<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    head.put_string(key);
    head.put<uint32_t>(uint32_t(value.type));
    put_value(head, key, value.type, value);
  }
  size_t offset = 0;
  for (const auto& t : tensors_) {
    head.put_string(t.name);
    head.put<uint32_t>(uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) head.put<uint64_t>(*it);
    head.put<uint32_t>(uint32_t(t.dtype));
    head.put<uint64_t>(offset);
    offset += align_up(t.nbytes, alignment_);
  }
  const size_t data_start = align_up(head.bytes().size(), alignment_);
  const size_t total = data_start + offset;

  AtomicFile out(path);
  out.write(head.bytes().data(), head.bytes().size());
  out.write_zeros(data_start - head.bytes().size());
  if (progress) progress(out.written(), total);
  constexpr size_t kChunk = size_t(64) << 20;
  std::vector<uint8_t> scratch;  // for add_tensor_fill, sized to the largest such tensor
  for (const auto& t : tensors_) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    if (t.fill) {
      if (scratch.size() < t.nbytes) {
        scratch.clear();
        scratch.shrink_to_fit();
        scratch.resize(t.nbytes);
      }
      t.fill(scratch.data());
      p = scratch.data();
    }
    for (size_t done = 0; done < t.nbytes; done += kChunk) {
      out.write(p + done, std::min(kChunk, t.nbytes - done));
      if (progress) progress(out.written(), total);
    }
    out.write_zeros(align_up(t.nbytes, alignment_) - t.nbytes);
  }
  out.commit();
  if (progress) progress(total, total);
}

}  // namespace kiln
