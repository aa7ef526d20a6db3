#include "kiln/io/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "kiln/core/error.h"
#include "kiln/io/atomic_file.h"
#include "kiln/io/json_file.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; so do we, which
// also bounds what a corrupt length can make us parse.
constexpr uint64_t kMaxHeader = uint64_t(100) << 20;

struct StDType {
  const char* name;
  DType dtype;
  size_t size;
};
// Only the dtypes kiln computes with: anything else is refused at open, naming
// the tensor, rather than surfacing later as a wrong-typed view.
constexpr StDType kDTypes[] = {
    {"F32", DType::F32, 4}, {"F16", DType::F16, 2}, {"BF16", DType::BF16, 2},
    {"I8", DType::I8, 1},   {"U8", DType::U8, 1},   {"I32", DType::I32, 4},
};

const StDType* st_dtype(std::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}
const StDType* st_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (t == d.dtype) return &d;
  return nullptr;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
std::string parent_of(const std::string& path) {
  std::string p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

// A JSON number that is a non-negative integer (nlohmann keeps those unsigned).
bool as_u64(const nlohmann::json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) {
    if (j.is_number_integer() && j.get<int64_t>() >= 0) {
      *out = uint64_t(j.get<int64_t>());
      return true;
    }
    return false;
  }
  *out = j.get<uint64_t>();
  return true;
}

struct ShardTensor {
  TensorView view;
  uint64_t begin, end;
};

// Parses and validates one .safetensors file; views point into `file`.
std::vector<TensorView> read_shard(const MappedFile& file,
                                   std::map<std::string, std::string>* metadata) {
  const std::string& path = file.path();
  const uint8_t* base = file.data();
  const size_t size = file.size();
  if (size < 8) fail(path, ": not a safetensors file (only ", size, " bytes)");
  uint64_t n;
  std::memcpy(&n, base, 8);
  if (n > kMaxHeader)
    fail(path, ": not a safetensors file or corrupt: header length ", n, " exceeds 100 MB");
  if (n > size - 8)
    fail(path, ": truncated safetensors: header claims ", n, " bytes but the file has only ",
         size - 8, " after the length");
  if (n < 2 || base[8] != '{')
    fail(path, ": not a safetensors file (the header is not a JSON object)");
  const uint8_t* data = base + 8 + n;
  const uint64_t data_size = size - 8 - n;

  nlohmann::json header = parse_json(
      std::string_view(reinterpret_cast<const char*>(base + 8), size_t(n)), path + " header");
  if (!header.is_object()) fail(path, ": safetensors header is not a JSON object");

  std::vector<ShardTensor> found;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, ": __metadata__ is not a JSON object");
      if (metadata)
        for (auto m = e.begin(); m != e.end(); ++m)
          (*metadata)[m.key()] = m.value().is_string() ? m.value().get<std::string>()
                                                       : m.value().dump();
      continue;
    }
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets"))
      fail(path, ": tensor '", name, "': entry needs dtype, shape and data_offsets");
    const nlohmann::json& jd = e["dtype"];
    if (!jd.is_string()) fail(path, ": tensor '", name, "': dtype is not a string");
    const std::string dname = jd.get<std::string>();
    const StDType* dt = st_dtype(dname);
    if (!dt)
      fail(path, ": tensor '", name, "' has dtype ", dname,
           ", which kiln does not read (F32, F16, BF16, I8, U8, I32)");

    const nlohmann::json& js = e["shape"];
    if (!js.is_array()) fail(path, ": tensor '", name, "': shape is not an array");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : js) {
      uint64_t v;
      if (!as_u64(d, &v) || v > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(path, ": tensor '", name, "': shape ", js.dump(), " is not non-negative integers");
      if (v != 0 && numel > uint64_t(std::numeric_limits<int64_t>::max()) / v)
        fail(path, ": tensor '", name, "': shape ", js.dump(), " overflows");
      numel *= v;
      shape.push_back(int64_t(v));
    }
    if (numel > std::numeric_limits<uint64_t>::max() / dt->size)
      fail(path, ": tensor '", name, "': shape ", js.dump(), " overflows");

    const nlohmann::json& jo = e["data_offsets"];
    uint64_t begin, end;
    if (!jo.is_array() || jo.size() != 2 || !as_u64(jo[0], &begin) || !as_u64(jo[1], &end))
      fail(path, ": tensor '", name, "': data_offsets must be [begin, end]");
    if (begin > end || end > data_size)
      fail(path, ": tensor '", name, "': data_offsets [", begin, ", ", end,
           "] lie outside the data (", data_size, " bytes)");
    if (end - begin != numel * dt->size)
      fail(path, ": tensor '", name, "': ", end - begin, " bytes of data, but ", dname, " ",
           shape_string(shape), " needs ", numel * dt->size);
    ShardTensor t;
    t.view.name = name;
    t.view.dtype = dt->dtype;
    t.view.shape = std::move(shape);
    t.view.data = data + begin;
    t.view.nbytes = size_t(end - begin);
    t.begin = begin;
    t.end = end;
    found.push_back(std::move(t));
  }

  // Tensors may leave gaps but must not share bytes.
  std::vector<const ShardTensor*> by_offset;
  for (const auto& t : found)
    if (t.end > t.begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ShardTensor* a, const ShardTensor* b) { return a->begin < b->begin; });
  for (size_t k = 1; k < by_offset.size(); ++k)
    if (by_offset[k]->begin < by_offset[k - 1]->end)
      fail(path, ": tensors '", by_offset[k - 1]->view.name, "' and '", by_offset[k]->view.name,
           "' overlap in the data");

  // Serve tensors in data order: the order they were written.
  std::stable_sort(found.begin(), found.end(),
                   [](const ShardTensor& a, const ShardTensor& b) { return a.begin < b.begin; });
  std::vector<TensorView> out;
  out.reserve(found.size());
  for (auto& t : found) out.push_back(std::move(t.view));
  return out;
}

}  // namespace

std::unique_ptr<SafetensorsModel> SafetensorsModel::open(const std::string& path) {
  std::string target = path;
  if (is_dir(path)) {
    const std::string index = path + "/model.safetensors.index.json";
    const std::string single = path + "/model.safetensors";
    if (is_file(index)) {
      target = index;
    } else if (is_file(single)) {
      target = single;
    } else {
      // Some checkpoints use another base name; accept one unambiguous candidate.
      std::vector<std::string> indexes, files;
      std::error_code ec;
      for (const auto& de : fs::directory_iterator(path, ec)) {
        const std::string name = de.path().filename().string();
        if (ends_with(name, ".safetensors.index.json")) indexes.push_back(de.path().string());
        else if (ends_with(name, ".safetensors")) files.push_back(de.path().string());
      }
      if (indexes.size() == 1) target = indexes[0];
      else if (indexes.empty() && files.size() == 1) target = files[0];
      else if (indexes.empty() && files.empty())
        fail(path, ": no model.safetensors or model.safetensors.index.json in this folder");
      else
        fail(path, ": several safetensors files and no model.safetensors.index.json: "
                   "name the file to load");
    }
  } else if (!is_file(path)) {
    fail(path, ": cannot open: no such file or folder");
  }

  std::unique_ptr<SafetensorsModel> m(new SafetensorsModel());
  m->directory_ = is_dir(path) ? path : parent_of(target);

  auto add_shard = [&](const std::string& file, std::map<std::string, std::string>* meta) {
    m->files_.push_back(std::make_unique<MappedFile>(file));
    std::vector<TensorView> views = read_shard(*m->files_.back(), meta);
    for (auto& v : views) {
      if (m->index_.count(v.name))
        fail(file, ": tensor '", v.name, "' also appears in ",
             "another shard");
      m->index_.emplace(v.name, m->tensors_.size());
      m->tensors_.push_back(std::move(v));
    }
  };

  if (!ends_with(target, ".json")) {
    add_shard(target, &m->metadata_);
    return m;
  }

  const nlohmann::json index = read_json_file(target);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(target, ": no \"weight_map\" object in the safetensors index");
  // Shards in order of first mention, each opened once.
  std::vector<std::string> shards;
  std::map<std::string, std::string> expected;  // tensor -> shard
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      fail(target, ": weight_map entry '", it.key(), "' is not a file name");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos)
      fail(target, ": weight_map entry '", it.key(), "' names '", shard,
           "', not a file in the same folder");
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    expected.emplace(it.key(), shard);
  }
  const std::string dir = parent_of(target);
  std::map<std::string, std::string> where;  // tensor -> shard it was found in
  for (size_t k = 0; k < shards.size(); ++k) {
    const size_t before = m->tensors_.size();
    add_shard(dir + "/" + shards[k], k == 0 ? &m->metadata_ : nullptr);
    for (size_t t = before; t < m->tensors_.size(); ++t) where[m->tensors_[t].name] = shards[k];
  }
  for (const auto& [name, shard] : expected) {
    auto it = where.find(name);
    if (it == where.end() || it->second != shard)
      fail(target, ": tensor '", name, "' is listed in ", shard, " but is not in that file");
  }
  return m;
}

const TensorView* SafetensorsModel::find_tensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

size_t SafetensorsModel::total_bytes() const {
  size_t n = 0;
  for (const auto& t : tensors_) n += t.nbytes;
  return n;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const StDType* dt = st_dtype(t.dtype);
    KILN_CHECK(dt, path, ": tensor '", t.name, "': dtype ", dtype_name(t.dtype),
               " cannot be written to safetensors (F32, F16, BF16, I8, U8, I32)");
    KILN_CHECK(!t.name.empty() && t.name != "__metadata__", path, ": invalid tensor name '",
               t.name, "'");
    KILN_CHECK(!header.contains(t.name), path, ": tensor '", t.name, "' given twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      KILN_CHECK(d >= 0, path, ": tensor '", t.name, "': negative dimension");
      numel *= uint64_t(d);
    }
    KILN_CHECK(numel * dt->size == t.nbytes, path, ": tensor '", t.name, "': ", t.nbytes,
               " bytes given, ", dt->name, " ", shape_string(t.shape), " needs ",
               numel * dt->size);
    KILN_CHECK(t.data != nullptr || t.nbytes == 0, path, ": tensor '", t.name, "': no data");
    header[t.name] = {{"dtype", dt->name},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces (valid JSON) so the data starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();

  AtomicFile out(path);
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) out.write(t.data, t.nbytes);
  out.commit();
}

}  // namespace kiln
