// Corrupt and truncated GGUF files: each must be refused with one clear
// kiln::Error naming the file (and the key or tensor concerned), never a
// crash or a huge allocation. Run under AddressSanitizer to prove the
// memory-safety half of that.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "io/io_test_util.h"
#include "kiln/io/gguf.h"

namespace kiln {
namespace {

using test::Bytes;
using test::expect_error;
using test::TempDir;

const std::string kStories = KILN_TEST_DATA "/../../models/stories260K.gguf";

// A hand-made GGUF: header, the given metadata and tensor-table bytes, padding
// to 32, then `data` zero bytes.
std::vector<uint8_t> gguf(uint64_t n_tensors, uint64_t n_kv, const Bytes& kv, const Bytes& table,
                          size_t data, uint32_t version = 3) {
  Bytes b;
  b.raw("GGUF").put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  b.append(kv).append(table).pad_to(32).zeros(data);
  return b.b;
}

Bytes kv_string(const std::string& key, const std::string& value) {
  Bytes b;
  b.str(key).put<uint32_t>(uint32_t(GgufType::STRING)).str(value);
  return b;
}

Bytes tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
  Bytes b;
  b.str(name).put<uint32_t>(uint32_t(ne.size()));
  for (uint64_t d : ne) b.put<uint64_t>(d);
  b.put<uint32_t>(type).put<uint64_t>(offset);
  return b;
}

class GgufMalformed : public ::testing::Test {
 protected:
  std::string write(const std::vector<uint8_t>& bytes) {
    const std::string p = dir_.file("bad.gguf");
    test::write_bytes(p, bytes);
    return p;
  }
  // Opening must fail with a message naming the file and every fragment.
  void expect_rejected(const std::vector<uint8_t>& bytes,
                       std::initializer_list<std::string> fragments) {
    const std::string p = write(bytes);
    std::string msg = expect_error([&] { GgufFile::open(p); }, fragments);
    EXPECT_NE(msg.find(p), std::string::npos) << "path not named: " << msg;
  }
  TempDir dir_;
};

TEST_F(GgufMalformed, HandMadeBaselineIsValid) {
  auto bytes = gguf(1, 1, kv_string("general.architecture", "llama"),
                    tensor("t", {4, 2}, uint32_t(DType::F32), 0), 32);
  auto g = GgufFile::open(write(bytes));
  EXPECT_EQ(g->tensors().at(0).shape, (std::vector<int64_t>{2, 4}));
  auto v2 = gguf(1, 1, kv_string("general.architecture", "llama"),
                 tensor("t", {4, 2}, uint32_t(DType::F32), 0), 32, 2);
  EXPECT_EQ(GgufFile::open(write(v2))->version(), 2u);
  // No tensors: the file may end right after the metadata.
  Bytes h;
  h.raw("GGUF").put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1).append(kv_string("k", "v"));
  EXPECT_EQ(GgufFile::open(write(h.b))->get_string("k"), "v");
}

TEST_F(GgufMalformed, MissingFileAndEmptyFile) {
  expect_error([&] { GgufFile::open(dir_.file("nope.gguf")); }, {"nope.gguf", "cannot open"});
  expect_error([&] { GgufFile::open(dir_.path()); }, {"directory"});
  expect_rejected({}, {"not a GGUF"});
  expect_rejected({'G', 'G'}, {"not a GGUF"});
}

TEST_F(GgufMalformed, BadMagic) {
  auto bytes = gguf(0, 0, {}, {}, 0);
  bytes[0] = 'P';
  expect_rejected(bytes, {"not a GGUF", "50 47 55 46"});
  std::string text = "{\"not\": \"gguf\"}";
  expect_rejected(std::vector<uint8_t>(text.begin(), text.end()), {"not a GGUF"});
}

TEST_F(GgufMalformed, UnsupportedVersions) {
  expect_rejected(gguf(0, 0, {}, {}, 0, 1), {"version 1"});
  expect_rejected(gguf(0, 0, {}, {}, 0, 4), {"version 4"});
  expect_rejected(gguf(0, 0, {}, {}, 0, 0), {"version 0"});
  expect_rejected(gguf(0, 0, {}, {}, 0, 0x03000000), {"big-endian"});
}

TEST_F(GgufMalformed, HugeCountsFailBeforeAllocating) {
  const uint64_t huge = std::numeric_limits<uint64_t>::max();
  expect_rejected(gguf(0, huge, {}, {}, 0), {"metadata entries"});
  expect_rejected(gguf(huge, 0, {}, {}, 0), {"tensors"});
  expect_rejected(gguf(uint64_t(1) << 40, 1, kv_string("k", "v"), {}, 64), {"tensors"});
  // A string length past the end.
  Bytes kv;
  kv.put<uint64_t>(huge);
  expect_rejected(gguf(0, 1, kv, {}, 0), {"claims"});
  Bytes kv2;
  kv2.str("key").put<uint32_t>(uint32_t(GgufType::STRING)).put<uint64_t>(1000000);
  expect_rejected(gguf(0, 1, kv2, {}, 0), {"'key'", "1000000"});
  // An array count past the end (for every element size).
  for (GgufType t : {GgufType::U8, GgufType::U32, GgufType::F64, GgufType::STRING,
                     GgufType::ARRAY}) {
    Bytes a;
    a.str("arr").put<uint32_t>(uint32_t(GgufType::ARRAY)).put<uint32_t>(uint32_t(t));
    a.put<uint64_t>(huge / 2);
    expect_rejected(gguf(0, 1, a, {}, 0), {"'arr'", "elements"});
  }
  // A tensor name length past the end.
  Bytes tn;
  tn.put<uint64_t>(huge);
  expect_rejected(gguf(1, 0, {}, tn, 64), {"claims"});
}

// A corrupt count can point into gigabytes of tensor data, where "bytes
// left" allows it: a ceiling on metadata array elements refuses it anyway.
TEST_F(GgufMalformed, ArrayCountsHaveACeiling) {
  Bytes a;
  a.str("tokenizer.ggml.precompiled_charsmap").put<uint32_t>(uint32_t(GgufType::ARRAY));
  a.put<uint32_t>(uint32_t(GgufType::U8)).put<uint64_t>((uint64_t(1) << 23) + 1);
  expect_rejected(gguf(0, 1, a, {}, (size_t(1) << 23) + 64),
                  {"'tokenizer.ggml.precompiled_charsmap'", "limit"});
}

TEST_F(GgufMalformed, UnknownMetadataTypes) {
  Bytes kv;
  kv.str("weird").put<uint32_t>(13).put<uint32_t>(0);
  expect_rejected(gguf(0, 1, kv, {}, 0), {"'weird'", "unknown GGUF type 13"});
  Bytes arr;
  arr.str("weird.arr").put<uint32_t>(uint32_t(GgufType::ARRAY)).put<uint32_t>(99);
  arr.put<uint64_t>(0);
  expect_rejected(gguf(0, 1, arr, {}, 0), {"'weird.arr'", "99"});
}

TEST_F(GgufMalformed, DeeplyNestedArraysAreBounded) {
  // Each level is an array holding one array: without a bound a small file
  // recurses without limit.
  Bytes kv;
  kv.str("deep").put<uint32_t>(uint32_t(GgufType::ARRAY));
  for (int k = 0; k < 10000; ++k) kv.put<uint32_t>(uint32_t(GgufType::ARRAY)).put<uint64_t>(1);
  expect_rejected(gguf(0, 1, kv, {}, 0), {"'deep'", "deep"});
}

TEST_F(GgufMalformed, DuplicateKeysAndTensors) {
  Bytes kv = kv_string("a", "1");
  kv.append(kv_string("a", "2"));
  expect_rejected(gguf(0, 2, kv, {}, 0), {"duplicate", "'a'"});
  Bytes table = tensor("w", {8}, uint32_t(DType::F32), 0);
  table.append(tensor("w", {8}, uint32_t(DType::F32), 32));
  expect_rejected(gguf(2, 0, {}, table, 64), {"duplicate", "'w'"});
}

TEST_F(GgufMalformed, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    Bytes kv;
    kv.str("general.alignment").put<uint32_t>(uint32_t(GgufType::U32)).put<uint32_t>(a);
    expect_rejected(gguf(0, 1, kv, {}, 0), {"general.alignment", std::to_string(a)});
  }
  Bytes kv = kv_string("general.alignment", "32");
  expect_rejected(gguf(0, 1, kv, {}, 0), {"general.alignment", "string"});
}

TEST_F(GgufMalformed, BadTensorEntries) {
  const uint32_t f32 = uint32_t(DType::F32);
  expect_rejected(gguf(1, 0, {}, tensor("blk.0.w", {8}, 200, 0), 32),
                  {"'blk.0.w'", "unknown type id 200"});
  expect_rejected(gguf(1, 0, {}, tensor("blk.0.w", {8}, 4, 0), 32),  // Q4_2: retired id
                  {"'blk.0.w'", "type id 4"});
  expect_rejected(gguf(1, 0, {}, tensor("u8", {8}, uint32_t(DType::U8), 0), 32),
                  {"'u8'", "type id 1000"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {1, 1, 1, 1, 1}, f32, 0), 32),
                  {"'w'", "5 dimensions"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {uint64_t(-8)}, f32, 0), 32), {"'w'", "-8"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {uint64_t(1) << 32, uint64_t(1) << 32}, f32, 0), 32),
                  {"'w'", "overflow"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {uint64_t(1) << 62, 2}, f32, 0), 32),
                  {"'w'", "overflow"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {uint64_t(1) << 62, 1}, f32, 0), 32),
                  {"'w'", "overflow"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {uint64_t(1) << 40}, f32, 0), 32),
                  {"'w'", "past the end"});
  expect_rejected(gguf(1, 0, {}, tensor("q", {33, 2}, uint32_t(DType::Q8_0), 0), 160),
                  {"'q'", "q8_0", "32"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {8}, f32, 4), 64), {"'w'", "offset 4", "align"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {8}, f32, 32), 32), {"'w'", "past the end"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {8}, f32, uint64_t(-32)), 32),
                  {"'w'", "past the end"});
  expect_rejected(gguf(1, 0, {}, tensor("w", {9}, f32, 0), 32), {"'w'", "past the end"});
}

// Every prefix of a valid file must be refused cleanly. The hand-made file
// has no trailing padding (its last tensor fills whole alignment units), so
// every cut removes something the file needs.
TEST_F(GgufMalformed, EveryTruncationOfAWrittenFileThrows) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "hello"});
  w.set_f32_array("tokenizer.ggml.scores", {0, 0, 0, -1.5f});
  w.set_u32("llama.block_count", 1);
  w.set_bool("b", true);
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.elem_type = GgufType::ARRAY;
  GgufValue inner;
  inner.type = GgufType::ARRAY;
  inner.elem_type = GgufType::I32;
  GgufValue one;
  one.type = GgufType::I32;
  inner.array = {one, one};
  nested.array = {inner, inner};
  w.set("nested", nested);
  std::vector<uint8_t> q8(34 * 2, 1);
  std::vector<float> f(8, 1.0f);
  w.add_tensor("q", DType::Q8_0, {2, 32}, q8.data(), q8.size());
  w.add_tensor("f", DType::F32, {8}, f.data(), 32);
  const std::string good = dir_.file("good.gguf");
  w.write(good);
  const std::vector<uint8_t> full = test::read_bytes(good);
  ASSERT_EQ(GgufFile::open(good)->tensors().size(), 2u);

  const std::string cut = dir_.file("cut.gguf");
  for (size_t n = 0; n < full.size(); ++n) {
    test::write_bytes(cut, full.data(), n);
    try {
      GgufFile::open(cut);
      ADD_FAILURE() << "a file cut at byte " << n << " of " << full.size() << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
    }
  }
}

// The same for a real file: every cut in its header and first metadata, a
// dense sample through the rest of the metadata and tensor table (cut points
// land on every field kind), and a sample of cuts in its data.
TEST_F(GgufMalformed, EveryTruncationOfStories260KThrows) {
  const std::vector<uint8_t> full = test::read_bytes(kStories);
  ASSERT_GT(full.size(), 0u);
  auto g = GgufFile::open(kStories);
  const size_t header_end = g->data_offset();
  const TensorView& last = g->tensors().back();
  const size_t data_end = static_cast<const uint8_t*>(last.data) -
                          static_cast<const uint8_t*>(g->tensors().front().data) + header_end +
                          last.nbytes;
  std::vector<size_t> cuts;
  for (size_t n = 0; n <= header_end; n += n < 2048 ? 1 : 7) cuts.push_back(n);
  for (size_t n = header_end - 64; n <= header_end; ++n) cuts.push_back(n);
  for (size_t n = header_end; n < data_end; n += 4099) cuts.push_back(n);
  cuts.push_back(data_end - 1);
  const std::string cut = dir_.file("cut.gguf");
  for (size_t n : cuts) {
    test::write_bytes(cut, full.data(), n);
    EXPECT_THROW(GgufFile::open(cut), Error) << "cut at " << n;
  }
}

// Flipping bytes of the header region anywhere must never crash; most flips
// are caught, a few land in values that are still valid.
TEST_F(GgufMalformed, ByteFlipsNeverCrash) {
  const std::vector<uint8_t> full = test::read_bytes(kStories);
  auto g = GgufFile::open(kStories);
  const size_t header_end = g->data_offset();
  uint32_t seed = 12345;
  const std::string p = dir_.file("flip.gguf");
  std::vector<uint8_t> bytes(full.begin(), full.begin() + std::min(full.size(), header_end + 64));
  for (int k = 0; k < 400; ++k) {
    std::vector<uint8_t> b = bytes;
    for (int f = 0; f < 3; ++f) {
      seed = seed * 1664525u + 1013904223u;
      b[(seed >> 8) % header_end] ^= uint8_t(1u << ((seed >> 3) % 8));
    }
    test::write_bytes(p, b);
    try {
      GgufFile::open(p);
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace kiln
