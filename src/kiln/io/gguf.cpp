#include "kiln/io/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "kiln/core/error.h"

namespace kiln {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS: llama.cpp writes no more
// Arrays inside arrays are legal but nothing real nests deeply; a bound keeps
// a hostile file from exhausting the stack through recursion.
constexpr int kMaxArrayDepth = 8;
// Checking a count against the bytes left is not enough in a multi-GB model:
// a corrupt count can still point at gigabytes of tensor data, and each parsed
// element costs ~100 bytes of GgufValue. These ceilings sit far above any real
// file (the largest tokenizers have ~1M metadata array elements in total, a
// few hundred keys, tens of thousands of tensors) and bound what a corrupt
// file can make us allocate before it is refused.
constexpr uint64_t kMaxKv = uint64_t(1) << 20;
constexpr uint64_t kMaxTensors = uint64_t(1) << 22;
constexpr uint64_t kMaxArrayElements = uint64_t(1) << 23;  // all arrays of a file together
constexpr uint64_t kMaxString = uint64_t(1) << 26;          // 64 MiB; chat templates are KBs
constexpr size_t kMaxReserve = 65536;  // growth beyond this follows actual parsing

// Smallest encoding of one value of a type: bounds element counts against the
// bytes left before anything is reserved.
size_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: return 8;   // length
    case GgufType::ARRAY: return 12;   // element type + count
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= uint32_t(GgufType::F64); }

std::string describe(const GgufValue& v) {
  if (v.type == GgufType::ARRAY) return cat("array of ", gguf_type_name(v.elem_type));
  return std::string(gguf_type_name(v.type));
}

// Bounds-checked little-endian reads over the mapping. Every failure names
// the file and what was being read, so a cut file says where it was cut.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(size_t n, const std::string& what) const {
    if (n > remaining())
      fail(path_, ": truncated GGUF: file ends at byte ", size_, " while reading ", what);
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    uint64_t n = read<uint64_t>(what);
    if (n > kMaxString && n <= remaining())
      fail(path_, ": corrupt GGUF: ", what, " claims ", n, " bytes (limit ", kMaxString, ")");
    if (n > remaining())
      fail(path_, ": truncated or corrupt GGUF: ", what, " claims ", n, " bytes but only ",
           remaining(), " remain");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;

 public:
  uint64_t array_elements = 0;  // parsed so far, against kMaxArrayElements
};

GgufValue read_value(Cursor& in, GgufType type, const std::string& path, const std::string& key,
                     int depth) {
  const std::string what = cat("the value of metadata key '", key, "'");
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::U8: v.u = in.read<uint8_t>(what); break;
    case GgufType::I8: v.i = in.read<int8_t>(what); break;
    case GgufType::U16: v.u = in.read<uint16_t>(what); break;
    case GgufType::I16: v.i = in.read<int16_t>(what); break;
    case GgufType::U32: v.u = in.read<uint32_t>(what); break;
    case GgufType::I32: v.i = in.read<int32_t>(what); break;
    case GgufType::U64: v.u = in.read<uint64_t>(what); break;
    case GgufType::I64: v.i = in.read<int64_t>(what); break;
    case GgufType::F32: v.f = in.read<float>(what); break;
    case GgufType::F64: v.f = in.read<double>(what); break;
    case GgufType::BOOL: v.u = in.read<uint8_t>(what) != 0; break;
    case GgufType::STRING: v.str = in.read_string(what); break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        fail(path, ": metadata key '", key, "' nests arrays more than ", kMaxArrayDepth,
             " deep");
      uint32_t et = in.read<uint32_t>(what);
      if (!valid_type(et))
        fail(path, ": metadata key '", key, "' is an array of unknown GGUF type ", et);
      v.elem_type = GgufType(et);
      uint64_t n = in.read<uint64_t>(what);
      if (n > in.remaining() / min_encoded_size(v.elem_type))
        fail(path, ": truncated or corrupt GGUF: metadata key '", key, "' claims ", n,
             " elements but only ", in.remaining(), " bytes remain");
      in.array_elements += n;
      if (in.array_elements > kMaxArrayElements)
        fail(path, ": corrupt GGUF: metadata key '", key, "' brings the metadata arrays to ",
             in.array_elements, " elements (limit ", kMaxArrayElements, ")");
      v.array.reserve(std::min<size_t>(size_t(n), kMaxReserve));
      for (uint64_t k = 0; k < n; ++k)
        v.array.push_back(read_value(in, v.elem_type, path, key, depth + 1));
      break;
    }
  }
  return v;
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Bytes of a tensor of `type` with GGUF dimensions ne (innermost first);
// fails naming the tensor on a partial block or an overflowing size.
size_t tensor_bytes(const std::string& path, const std::string& name, DType type,
                    const std::vector<int64_t>& ne) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t numel = 1;
  for (int64_t d : ne) {
    if (d != 0 && numel > kMax / d)
      fail(path, ": tensor '", name, "': dimensions ", shape_string(ne),
           " overflow 64-bit element count");
    numel *= d;
  }
  int64_t cols = ne.empty() ? 1 : ne[0];
  int64_t rows = 1;
  for (size_t k = 1; k < ne.size(); ++k) rows *= ne[k];  // cannot overflow: divides numel...
  if (cols == 0) rows = 0;                             // ...unless cols is 0: nothing to store
  const DTypeInfo& info = dtype_info(type);
  uint64_t row_bytes;
  if (type == DType::I2_S) {
    // bitnet.cpp's ternary packing: 4 values a byte over the whole tensor,
    // then its f32 scale, padded to 32 bytes (what its ggml_nbytes counts).
    if (numel % 4 != 0)
      fail(path, ": tensor '", name, "': ", numel, " i2_s values are not a whole number of bytes");
    return size_t(numel / 4) + 32;
  } else {
    if (cols % info.block_size != 0)
      fail(path, ": tensor '", name, "': ", cols, " columns are not a whole number of ",
           info.name, " blocks of ", info.block_size);
    uint64_t blocks = uint64_t(cols / info.block_size);
    if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(info.type_size))
      fail(path, ": tensor '", name, "': size overflows");
    row_bytes = blocks * uint64_t(info.type_size);
  }
  if (rows != 0 && row_bytes > std::numeric_limits<size_t>::max() / uint64_t(rows))
    fail(path, ": tensor '", name, "': size overflows");
  return size_t(row_bytes * uint64_t(rows));
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16:
    case GgufType::U32: case GgufType::I32: case GgufType::U64: case GgufType::I64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_unsigned() const {
  return type == GgufType::U8 || type == GgufType::U16 || type == GgufType::U32 ||
         type == GgufType::U64 || type == GgufType::BOOL;
}

int64_t GgufValue::as_int() const {
  if (type == GgufType::BOOL) return int64_t(u != 0);
  KILN_CHECK(is_integer(), "metadata value is ", describe(*this), ", expected an integer");
  if (is_unsigned()) {
    KILN_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), "metadata value ", u,
               " does not fit a signed 64-bit integer");
    return int64_t(u);
  }
  return i;
}

double GgufValue::as_double() const {
  if (is_float()) return f;
  KILN_CHECK(is_integer(), "metadata value is ", describe(*this), ", expected a number");
  return is_unsigned() ? double(u) : double(i);
}

const std::string& GgufValue::as_string() const {
  KILN_CHECK(type == GgufType::STRING, "metadata value is ", describe(*this),
             ", expected a string");
  return str;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->file_ = std::make_unique<MappedFile>(path);
  const uint8_t* base = g->file_->data();
  const size_t size = g->file_->size();

  if (size < 4) fail(path, ": not a GGUF file (only ", size, " bytes)");
  uint32_t magic;
  std::memcpy(&magic, base, 4);
  if (magic != kMagic) {
    char shown[40];
    std::snprintf(shown, sizeof(shown), "%02x %02x %02x %02x", base[0], base[1], base[2],
                  base[3]);
    fail(path, ": not a GGUF file (starts with bytes ", shown, ", expected 'GGUF')");
  }

  Cursor in(base, size, path);
  in.read<uint32_t>("the magic");
  const uint32_t version = in.read<uint32_t>("the header (version)");
  if (version == 1) fail(path, ": GGUF version 1 is not supported (convert it again)");
  if (version != 2 && version != 3) {
    if ((version & 0xFFFF) == 0 && (version >> 16) != 0)
      fail(path, ": big-endian GGUF files are not supported");
    fail(path, ": unsupported GGUF version ", version, " (supported: 2 and 3)");
  }
  g->version_ = version;
  const uint64_t n_tensors = in.read<uint64_t>("the header (tensor count)");
  const uint64_t n_kv = in.read<uint64_t>("the header (metadata count)");
  // Each entry takes some bytes at the least: absurd counts fail here, before
  // anything is reserved for them.
  constexpr uint64_t kMinKv = 8 + 4 + 1, kMinTensor = 8 + 4 + 4 + 8;
  if (n_kv > kMaxKv || n_tensors > kMaxTensors)
    fail(path, ": corrupt GGUF: header claims ", n_kv, " metadata entries and ", n_tensors,
         " tensors (limits ", kMaxKv, " and ", kMaxTensors, ")");
  if (n_kv > in.remaining() / kMinKv || n_tensors > in.remaining() / kMinTensor ||
      n_kv * kMinKv + n_tensors * kMinTensor > in.remaining())
    fail(path, ": truncated or corrupt GGUF: header claims ", n_kv, " metadata entries and ",
         n_tensors, " tensors but only ", in.remaining(), " bytes follow");

  g->kv_.reserve(std::min<size_t>(size_t(n_kv), kMaxReserve));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = in.read_string(cat("metadata entry ", k, " of ", n_kv, " (key)"));
    const uint32_t type = in.read<uint32_t>(cat("the type of metadata key '", key, "'"));
    if (!valid_type(type))
      fail(path, ": metadata key '", key, "' has unknown GGUF type ", type);
    GgufValue v = read_value(in, GgufType(type), path, key, 0);
    if (g->kv_index_.count(key)) fail(path, ": duplicate metadata key '", key, "'");
    g->kv_index_.emplace(key, g->kv_.size());
    g->kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = g->find("general.alignment")) {
    if (!a->is_integer() || a->as_double() < 0)
      fail(path, ": general.alignment is ", describe(*a), ", expected an unsigned integer");
    uint64_t al = a->is_unsigned() ? a->u : uint64_t(a->i);
    if (!is_power_of_two(al) || al > (uint64_t(1) << 30))
      fail(path, ": general.alignment ", al, " is not a power of two (up to 2^30)");
    g->alignment_ = size_t(al);
  }

  struct Info {
    std::string name;
    std::vector<int64_t> ne;
    DType type;
    uint64_t offset;
  };
  std::vector<Info> infos;
  infos.reserve(std::min<size_t>(size_t(n_tensors), kMaxReserve));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    Info info;
    info.name = in.read_string(cat("tensor entry ", t, " of ", n_tensors, " (name)"));
    const std::string what = cat("the tensor table entry of '", info.name, "'");
    const uint32_t n_dims = in.read<uint32_t>(what);
    if (n_dims > kMaxDims)
      fail(path, ": tensor '", info.name, "' has ", n_dims, " dimensions (at most ", kMaxDims,
           ")");
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t n = in.read<uint64_t>(what);
      if (n > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(path, ": tensor '", info.name, "' has a negative or absurd dimension ", int64_t(n));
      info.ne.push_back(int64_t(n));
    }
    const uint32_t type = in.read<uint32_t>(what);
    // U8 has a kiln-only id above GGML's range: a GGUF cannot name it.
    if (!dtype_known(type) || DType(type) == DType::U8)
      fail(path, ": tensor '", info.name, "' has unknown type id ", type);
    info.type = DType(type);
    info.offset = in.read<uint64_t>(what);
    infos.push_back(std::move(info));
  }

  // The data section starts at the first aligned offset after the table.
  const uint64_t table_end = in.pos();
  const uint64_t data_start = (table_end + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  if (n_tensors > 0 && data_start > size)
    fail(path, ": truncated GGUF: the data section would start at byte ", data_start,
         " but the file has ", size, " bytes");

  g->tensors_.reserve(infos.size());
  for (Info& info : infos) {
    if (g->tensor_index_.count(info.name)) fail(path, ": duplicate tensor name '", info.name, "'");
    if (info.offset % g->alignment_ != 0)
      fail(path, ": tensor '", info.name, "' data offset ", info.offset,
           " is not a multiple of the alignment ", g->alignment_);
    const size_t nbytes = tensor_bytes(path, info.name, info.type, info.ne);
    const uint64_t room = size - data_start;
    if (info.offset > room || nbytes > room - info.offset)
      fail(path, ": tensor '", info.name, "' (", nbytes, " bytes at data offset ", info.offset,
           ") lies past the end of the file (", room, " bytes of data)");
    TensorView view;
    view.name = info.name;
    view.dtype = info.type;
    view.shape.assign(info.ne.rbegin(), info.ne.rend());
    view.data = base + data_start + info.offset;
    view.nbytes = nbytes;
    g->tensor_index_.emplace(info.name, g->tensors_.size());
    g->tensors_.push_back(std::move(view));
  }
  g->data_offset_ = size_t(data_start);
  return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorView* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path(), ": metadata key '", key, "' is missing");
  return *v;
}

namespace {

[[noreturn]] void wrong_kind(const std::string& path, std::string_view key, const GgufValue& v,
                             const char* expected) {
  fail(path, ": metadata key '", key, "' has type ", describe(v), ", expected ", expected);
}

bool is_number(const GgufValue& v) { return v.is_integer() || v.is_float(); }

}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::STRING) wrong_kind(path(), key, v, "a string");
  return v.str;
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = require(key);
  if (!v.is_integer() && v.type != GgufType::BOOL) wrong_kind(path(), key, v, "an integer");
  try {
    return v.as_int();
  } catch (const Error& e) {
    fail(path(), ": metadata key '", key, "': ", e.what());
  }
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue& v = require(key);
  if (!is_number(v)) wrong_kind(path(), key, v, "a number");
  return v.as_double();
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::BOOL) wrong_kind(path(), key, v, "a bool");
  return v.u != 0;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::ARRAY || v.elem_type != GgufType::STRING)
    wrong_kind(path(), key, v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(e.str);
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& v = require(key);
  GgufValue probe;
  probe.type = v.elem_type;
  if (v.type != GgufType::ARRAY || !(probe.is_integer() || v.elem_type == GgufType::BOOL))
    wrong_kind(path(), key, v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(v.array.size());
  try {
    for (const GgufValue& e : v.array) out.push_back(e.as_int());
  } catch (const Error& e) {
    fail(path(), ": metadata key '", key, "': ", e.what());
  }
  return out;
}

std::vector<float> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue& v = require(key);
  GgufValue probe;
  probe.type = v.elem_type;
  if (v.type != GgufType::ARRAY || !is_number(probe))
    wrong_kind(path(), key, v, "an array of numbers");
  std::vector<float> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(float(e.as_double()));
  return out;
}

std::string GgufFile::get_string_or(std::string_view key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}
int64_t GgufFile::get_int_or(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double GgufFile::get_float_or(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}
bool GgufFile::get_bool_or(std::string_view key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}

}  // namespace kiln
