// safetensors: single files, sharded models, the writer, and malformed input.
#include <gtest/gtest.h>

#include <cstring>

#include "io/io_test_util.h"
#include "kiln/io/json_file.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

using test::Bytes;
using test::expect_error;
using test::TempDir;

const std::string kLlamaDir = KILN_TEST_DATA "/hf/llama";

TEST(Safetensors, ReadsAHuggingFaceCheckpoint) {
  for (const std::string& p : {kLlamaDir, kLlamaDir + "/", kLlamaDir + "/model.safetensors"}) {
    auto m = SafetensorsModel::open(p);
    EXPECT_EQ(m->tensors().size(), 30u) << p;  // 3 + 3 layers x 9
    const TensorView* lm = m->find_tensor("lm_head.weight");
    ASSERT_NE(lm, nullptr);
    EXPECT_EQ(lm->dtype, DType::BF16);
    EXPECT_EQ(lm->shape, (std::vector<int64_t>{1024, 64}));
    EXPECT_EQ(lm->nbytes, 1024u * 64 * 2);
    const TensorView* k = m->find_tensor("model.layers.0.self_attn.k_proj.weight");
    ASSERT_NE(k, nullptr);
    EXPECT_EQ(k->shape, (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(m->find_tensor("model.layers.9.mlp.up_proj.weight"), nullptr);
    size_t sum = 0;
    for (const auto& t : m->tensors()) sum += t.nbytes;
    EXPECT_EQ(m->total_bytes(), sum);
    // The config sits beside the weights.
    auto config = read_json_file(m->directory() + "/config.json");
    EXPECT_EQ(config["hidden_size"], 64);
  }
}

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  for (size_t k = 0; k < n; ++k) v[k] = uint8_t(start + k);
  return v;
}

TEST(Safetensors, WriterRoundTripsEverySupportedDtype) {
  TempDir dir;
  auto f32 = iota_bytes(4 * 6, 1), f16 = iota_bytes(2 * 3, 2), bf16 = iota_bytes(2 * 4, 3);
  auto i8 = iota_bytes(5, 4), u8 = iota_bytes(3, 5), i32 = iota_bytes(4 * 2, 6);
  std::vector<SafetensorsEntry> in = {
      {"f32", DType::F32, {2, 3}, f32.data(), f32.size()},
      {"f16", DType::F16, {3}, f16.data(), f16.size()},
      {"bf16", DType::BF16, {2, 1, 2}, bf16.data(), bf16.size()},
      {"i8", DType::I8, {5}, i8.data(), i8.size()},
      {"u8", DType::U8, {3}, u8.data(), u8.size()},
      {"i32", DType::I32, {2}, i32.data(), i32.size()},
      {"scalar.empty", DType::F32, {0}, nullptr, 0},
  };
  const std::string path = dir.file("out.safetensors");
  write_safetensors(path, in, {{"format", "pt"}, {"note", "x"}});
  EXPECT_FALSE(test::exists(path + ".tmp"));
  auto raw = test::read_bytes(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);  // data 8-byte aligned

  auto m = SafetensorsModel::open(path);
  EXPECT_EQ(m->directory(), dir.path());
  EXPECT_EQ(m->metadata().at("format"), "pt");
  EXPECT_EQ(m->metadata().at("note"), "x");
  ASSERT_EQ(m->tensors().size(), in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    const TensorView& t = m->tensors()[k];  // written order kept
    EXPECT_EQ(t.name, in[k].name);
    EXPECT_EQ(t.dtype, in[k].dtype) << t.name;
    EXPECT_EQ(t.shape, in[k].shape) << t.name;
    ASSERT_EQ(t.nbytes, in[k].nbytes) << t.name;
    if (t.nbytes) {
      EXPECT_EQ(std::memcmp(t.data, in[k].data, t.nbytes), 0) << t.name;
    }
  }
}

TEST(Safetensors, WriterRejectsBadEntriesAndLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  std::vector<uint8_t> b(16);
  expect_error([&] { write_safetensors(path, {{"w", DType::F32, {2, 2}, b.data(), 15}}); },
               {"'w'", "15 bytes"});
  expect_error([&] { write_safetensors(path, {{"q", DType::Q8_0, {32}, b.data(), 16}}); },
               {"'q'", "q8_0"});
  expect_error(
      [&] {
        write_safetensors(path, {{"w", DType::F32, {4}, b.data(), 16},
                                 {"w", DType::F32, {4}, b.data(), 16}});
      },
      {"'w'", "twice"});
  EXPECT_FALSE(test::exists(path));
  EXPECT_FALSE(test::exists(path + ".tmp"));
}

// A sharded model: two files and the index that maps names to them.
class Sharded : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = iota_bytes(16, 10);
    b_ = iota_bytes(8, 20);
    c_ = iota_bytes(4, 30);
    write_safetensors(dir_.file("model-00001-of-00002.safetensors"),
                      {{"a", DType::F32, {2, 2}, a_.data(), 16},
                       {"b", DType::BF16, {4}, b_.data(), 8}},
                      {{"format", "pt"}});
    write_safetensors(dir_.file("model-00002-of-00002.safetensors"),
                      {{"c", DType::I8, {4}, c_.data(), 4}}, {{"format", "second"}});
  }
  void write_index(const std::string& weight_map) {
    std::string text = "{\"metadata\": {\"total_size\": 28},\n \"weight_map\": " + weight_map + "}";
    test::write_bytes(dir_.file("model.safetensors.index.json"), text.data(), text.size());
  }
  TempDir dir_;
  std::vector<uint8_t> a_, b_, c_;
};

TEST_F(Sharded, ReadsThroughTheIndexOrTheFolder) {
  write_index(R"({"a": "model-00001-of-00002.safetensors",
                  "b": "model-00001-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"})");
  for (const std::string& p : {dir_.path(), dir_.file("model.safetensors.index.json")}) {
    auto m = SafetensorsModel::open(p);
    EXPECT_EQ(m->directory(), dir_.path());
    ASSERT_EQ(m->tensors().size(), 3u);
    EXPECT_EQ(m->metadata().at("format"), "pt");  // first shard's
    const TensorView* c = m->find_tensor("c");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->dtype, DType::I8);
    EXPECT_EQ(std::memcmp(c->data, c_.data(), 4), 0);
    EXPECT_EQ(std::memcmp(m->find_tensor("a")->data, a_.data(), 16), 0);
    EXPECT_EQ(m->total_bytes(), 28u);
  }
}

TEST_F(Sharded, IndexMustMatchTheShards) {
  write_index(R"({"a": "model-00001-of-00002.safetensors",
                  "zz": "model-00002-of-00002.safetensors"})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); },
               {"model.safetensors.index.json", "'zz'", "model-00002-of-00002.safetensors"});
  write_index(R"({"c": "model-00001-of-00002.safetensors"})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); }, {"'c'", "not in that file"});
  write_index(R"({"a": "model-00003-of-00002.safetensors"})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); },
               {"model-00003-of-00002.safetensors", "cannot open"});
  write_index(R"({"a": 5})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); }, {"'a'"});
  write_index(R"({"a": "../elsewhere.safetensors"})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); }, {"'a'", "same folder"});
  write_index("{\"a\": \"model-00001-of-00002.safetensors\",\n\n oops}");
  expect_error([&] { SafetensorsModel::open(dir_.path()); },
               {"model.safetensors.index.json", "invalid JSON at line 4"});
  std::string no_map = "{\"metadata\": {}}";
  test::write_bytes(dir_.file("model.safetensors.index.json"), no_map.data(), no_map.size());
  expect_error([&] { SafetensorsModel::open(dir_.path()); }, {"weight_map"});
}

TEST_F(Sharded, DuplicateTensorAcrossShards) {
  write_safetensors(dir_.file("model-00002-of-00002.safetensors"),
                    {{"a", DType::I8, {4}, c_.data(), 4}});
  write_index(R"({"a": "model-00001-of-00002.safetensors",
                  "b": "model-00002-of-00002.safetensors"})");
  expect_error([&] { SafetensorsModel::open(dir_.path()); }, {"'a'", "another shard"});
}

TEST(Safetensors, FolderResolution) {
  TempDir dir;
  expect_error([&] { SafetensorsModel::open(dir.path()); }, {dir.path(), "no model.safetensors"});
  expect_error([&] { SafetensorsModel::open(dir.file("missing.safetensors")); },
               {"missing.safetensors"});
  std::vector<uint8_t> b(4);
  write_safetensors(dir.file("weights.safetensors"), {{"x", DType::F32, {1}, b.data(), 4}});
  EXPECT_EQ(SafetensorsModel::open(dir.path())->tensors().size(), 1u);  // the only candidate
  write_safetensors(dir.file("other.safetensors"), {{"y", DType::F32, {1}, b.data(), 4}});
  expect_error([&] { SafetensorsModel::open(dir.path()); }, {"several"});
}

// Hand-made files: an 8-byte length, a header, then data.
std::vector<uint8_t> st_file(const std::string& header, size_t data_bytes, uint64_t claimed = 0) {
  Bytes b;
  b.put<uint64_t>(claimed ? claimed : header.size()).raw(header).zeros(data_bytes);
  return b.b;
}

class SafetensorsMalformed : public ::testing::Test {
 protected:
  void expect_rejected(const std::vector<uint8_t>& bytes,
                       std::initializer_list<std::string> fragments) {
    const std::string p = dir_.file("bad.safetensors");
    test::write_bytes(p, bytes);
    std::string msg = expect_error([&] { SafetensorsModel::open(p); }, fragments);
    EXPECT_NE(msg.find(p), std::string::npos) << "path not named: " << msg;
  }
  TempDir dir_;
};

TEST_F(SafetensorsMalformed, HeaderLength) {
  expect_rejected({1, 2, 3}, {"not a safetensors"});
  expect_rejected(st_file("{}", 0, 1000), {"truncated", "1000"});
  expect_rejected(st_file("{}", 0, uint64_t(-1)), {"header length"});
  expect_rejected(st_file("[1]", 0), {"not a JSON object"});
  expect_rejected(st_file("{\"a\": ", 0), {"invalid JSON"});
  expect_rejected(st_file("{\"a\": {}}", 0), {"'a'", "dtype, shape and data_offsets"});
  expect_rejected(st_file("{\"__metadata__\": 3}", 0), {"__metadata__"});
}

TEST_F(SafetensorsMalformed, TensorEntries) {
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return "{\"w\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape +
           ", \"data_offsets\": " + offs + "}}";
  };
  expect_rejected(st_file(entry("F64", "[2]", "[0, 16]"), 16), {"'w'", "F64"});
  expect_rejected(st_file(entry("BOOL", "[2]", "[0, 2]"), 2), {"'w'", "BOOL"});
  expect_rejected(st_file(entry("F8_E4M3", "[2]", "[0, 2]"), 2), {"'w'", "F8_E4M3"});
  expect_rejected(st_file(entry("F32", "[2]", "[0, 16]"), 8), {"'w'", "outside"});
  expect_rejected(st_file(entry("F32", "[2]", "[8, 0]"), 8), {"'w'", "outside"});
  expect_rejected(st_file(entry("F32", "[3]", "[0, 8]"), 8), {"'w'", "8 bytes", "12"});
  expect_rejected(st_file(entry("F32", "[-2]", "[0, 8]"), 8), {"'w'", "shape"});
  expect_rejected(st_file(entry("F32", "[2.5]", "[0, 8]"), 8), {"'w'", "shape"});
  expect_rejected(st_file(entry("F32", "2", "[0, 8]"), 8), {"'w'", "shape"});
  expect_rejected(st_file(entry("F32", "[4294967296, 4294967296]", "[0, 8]"), 8),
                  {"'w'", "overflow"});
  expect_rejected(st_file(entry("F32", "[2]", "[0]"), 8), {"'w'", "data_offsets"});
  expect_rejected(st_file(entry("F32", "[2]", "[-8, 0]"), 8), {"'w'", "data_offsets"});
  expect_rejected(st_file(entry("F32", "[2]", "[0, 18446744073709551615]"), 8), {"'w'"});
  expect_rejected(st_file("{\"w\": {\"dtype\": 1, \"shape\": [], \"data_offsets\": [0, 4]}}", 4),
                  {"'w'", "dtype"});
  // Two tensors sharing bytes.
  expect_rejected(st_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                          " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                          12),
                  {"'a'", "'b'", "overlap"});
  // A scalar (shape []) is one element.
  const std::string p = dir_.file("ok.safetensors");
  test::write_bytes(
      p, st_file("{\"s\": {\"dtype\": \"I32\", \"shape\": [], \"data_offsets\": [0, 4]}}", 4));
  EXPECT_EQ(SafetensorsModel::open(p)->find_tensor("s")->nbytes, 4u);
}

TEST_F(SafetensorsMalformed, EveryTruncationThrows) {
  auto a = iota_bytes(24, 1), b = iota_bytes(6, 2);
  const std::string good = dir_.file("good.safetensors");
  write_safetensors(good, {{"a", DType::F32, {2, 3}, a.data(), 24},
                           {"b", DType::BF16, {3}, b.data(), 6}},
                    {{"format", "pt"}});
  const auto full = test::read_bytes(good);
  ASSERT_EQ(SafetensorsModel::open(good)->tensors().size(), 2u);
  const std::string cut = dir_.file("cut.safetensors");
  for (size_t n = 0; n < full.size(); ++n) {
    test::write_bytes(cut, full.data(), n);
    EXPECT_THROW(SafetensorsModel::open(cut), Error) << "cut at " << n << " of " << full.size();
  }
  // The fixture checkpoint, cut through its header and a sample of its data.
  const auto real = test::read_bytes(kLlamaDir + "/model.safetensors");
  uint64_t header;
  std::memcpy(&header, real.data(), 8);
  for (size_t n = 0; n < real.size(); n += (n < header + 16 ? 3 : 4093)) {
    test::write_bytes(cut, real.data(), n);
    EXPECT_THROW(SafetensorsModel::open(cut), Error) << "cut at " << n;
  }
}

TEST(JsonFile, ErrorsNameTheFileAndLine) {
  TempDir dir;
  expect_error([&] { read_json_file(dir.file("none.json")); }, {"none.json", "cannot open"});
  const std::string p = dir.file("bad.json");
  std::string text = "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}\n";
  test::write_bytes(p, text.data(), text.size());
  expect_error([&] { read_json_file(p); }, {p, "invalid JSON at line 3"});
  text = "{\"a\": 1";
  test::write_bytes(p, text.data(), text.size());
  expect_error([&] { read_json_file(p); }, {p, "invalid JSON at line 1"});
  text = "{\"a\": [1, 2]}";
  test::write_bytes(p, text.data(), text.size());
  EXPECT_EQ(read_json_file(p)["a"][1], 2);
  expect_error([&] { parse_json("[1,", "thing header"); }, {"thing header", "invalid JSON"});
}

}  // namespace
}  // namespace kiln
