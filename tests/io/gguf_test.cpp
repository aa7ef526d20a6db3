// Reading real GGUF files as llama.cpp writes them, and the writer's round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "io/io_test_util.h"
#include "kiln/core/half.h"
#include "kiln/io/gguf.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

using test::expect_error;
using test::TempDir;

const std::string kStories = KILN_TEST_DATA "/../../models/stories260K.gguf";
const std::string kLlamaF32 = KILN_TEST_DATA "/hf/llama/gguf/llama-f32.gguf";
const std::string kLlamaHf = KILN_TEST_DATA "/hf/llama";

TEST(Gguf, ReadsStories260K) {
  auto g = GgufFile::open(kStories);
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g->metadata().size(), 19u);
  EXPECT_EQ(g->metadata().front().first, "tokenizer.ggml.tokens");  // file order kept

  auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(g->get_float_array("tokenizer.ggml.scores").size(), 512u);
  auto types = g->get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), 512u);
  EXPECT_EQ(types[0], 2);  // unknown
  EXPECT_EQ(types[1], 3);  // control
  EXPECT_EQ(g->get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(g->get_int("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(g->get_int("llama.embedding_length"), 64);
  EXPECT_EQ(g->get_int("llama.block_count"), 5);
  EXPECT_GT(g->get_float("llama.attention.layer_norm_rms_epsilon"), 0.0);

  EXPECT_EQ(g->tensors().size(), 48u);  // 3 + 5 layers x 9
  const TensorView* emb = g->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::F32);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{512, 64}));  // GGUF ne {64, 512} reversed
  EXPECT_EQ(emb->nbytes, 512u * 64 * 4);
  const TensorView* down = g->find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(g->find_tensor("blk.9.attn_q.weight"), nullptr);

  // Views point into the mapping, at aligned offsets of the data section.
  const uint8_t* first = static_cast<const uint8_t*>(g->tensors().front().data);
  for (const TensorView& t : g->tensors()) {
    size_t off = static_cast<const uint8_t*>(t.data) - first;
    EXPECT_EQ(off % g->alignment(), 0u) << t.name;
    EXPECT_LE(g->data_offset() + off + t.nbytes, g->file_size()) << t.name;
  }
  EXPECT_EQ(g->data_offset() % g->alignment(), 0u);
  float v;
  std::memcpy(&v, emb->data, 4);
  EXPECT_TRUE(std::isfinite(v));
}

TEST(Gguf, TypedGettersNameTheKey) {
  auto g = GgufFile::open(kStories);
  expect_error([&] { g->get_int("general.architecture"); },
               {kStories, "general.architecture", "string", "integer"});
  expect_error([&] { g->get_string("no.such.key"); }, {"no.such.key", "missing"});
  expect_error([&] { g->get_string_array("tokenizer.ggml.scores"); },
               {"tokenizer.ggml.scores", "array of f32"});
  expect_error([&] { g->get_bool("llama.block_count"); }, {"llama.block_count", "bool"});
  EXPECT_EQ(g->get_int_or("no.such.key", 7), 7);
  EXPECT_EQ(g->get_string_or("no.such.key", "x"), "x");
  EXPECT_EQ(g->get_float_or("no.such.key", 1.5), 1.5);
  EXPECT_TRUE(g->get_bool_or("no.such.key", true));
  EXPECT_EQ(g->get_int_or("llama.block_count", 7), 5);
  EXPECT_THROW(g->get_int_or("general.architecture", 7), Error);  // present, wrong type
  EXPECT_DOUBLE_EQ(g->get_float("llama.block_count"), 5.0);  // integers read as numbers
}

// llama.cpp's converter widens the bf16 checkpoint to f32 exactly: the GGUF
// and safetensors readers must agree bit for bit.
TEST(Gguf, MatchesTheSafetensorsItWasConvertedFrom) {
  auto g = GgufFile::open(kLlamaF32);
  auto st = SafetensorsModel::open(kLlamaHf);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  const TensorView* a = g->find_tensor("token_embd.weight");
  const TensorView* b = st->find_tensor("model.embed_tokens.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(a->shape, b->shape);
  ASSERT_EQ(b->dtype, DType::BF16);
  const auto* fa = static_cast<const uint8_t*>(a->data);
  const auto* hb = static_cast<const uint8_t*>(b->data);
  for (int64_t k = 0; k < a->numel(); ++k) {
    float x;
    uint16_t h;
    std::memcpy(&x, fa + 4 * k, 4);
    std::memcpy(&h, hb + 2 * k, 2);
    ASSERT_EQ(f32_to_bits(x), f32_to_bits(bf16_to_f32(h))) << "element " << k;
  }
}

GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

void expect_same(const GgufValue& a, const GgufValue& b, const std::string& key) {
  ASSERT_EQ(a.type, b.type) << key;
  switch (a.type) {
    case GgufType::STRING: EXPECT_EQ(a.str, b.str) << key; break;
    case GgufType::F32: case GgufType::F64: EXPECT_EQ(a.f, b.f) << key; break;
    case GgufType::ARRAY:
      ASSERT_EQ(a.elem_type, b.elem_type) << key;
      ASSERT_EQ(a.array.size(), b.array.size()) << key;
      for (size_t k = 0; k < a.array.size(); ++k) expect_same(a.array[k], b.array[k], key);
      break;
    default:
      if (a.is_unsigned()) {
        EXPECT_EQ(a.u, b.u) << key;
      } else {
        EXPECT_EQ(a.i, b.i) << key;
      }
  }
}

TEST(GgufWriter, RoundTripsEveryMetadataTypeAndTensorBytes) {
  TempDir dir;
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("empty.string", "");
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -123456);
  w.set_u64("u64", 0xFFFFFFFFFFFFFFFFull);
  w.set_f32("f32", 0.125f);
  w.set_bool("bool", true);
  w.set_string_array("strs", {"a", "", "\xe2\x96\x81hello", std::string("nul\0in", 6)});
  w.set_i32_array("i32s", {1, -2, 3});
  w.set_f32_array("f32s", {1.5f, -0.25f});
  w.set_i32_array("empty.array", {});
  auto put = [&](const char* key, GgufType t, auto field, auto value) {
    GgufValue v = scalar(t);
    v.*field = value;
    w.set(key, v);
  };
  put("u8", GgufType::U8, &GgufValue::u, 255);
  put("i8", GgufType::I8, &GgufValue::i, -128);
  put("u16", GgufType::U16, &GgufValue::u, 65535);
  put("i16", GgufType::I16, &GgufValue::i, -32768);
  put("i64", GgufType::I64, &GgufValue::i, INT64_MIN);
  put("f64", GgufType::F64, &GgufValue::f, 1e300);
  put("bool.false", GgufType::BOOL, &GgufValue::u, 0);
  // Arrays of every element type, and arrays of arrays.
  for (GgufType t : {GgufType::U8, GgufType::I8, GgufType::U16, GgufType::I16, GgufType::U32,
                     GgufType::I32, GgufType::F32, GgufType::BOOL, GgufType::U64, GgufType::I64,
                     GgufType::F64}) {
    GgufValue arr = scalar(GgufType::ARRAY);
    arr.elem_type = t;
    for (int k = 0; k < 3; ++k) {
      GgufValue e = scalar(t);
      e.u = uint64_t(k) % (t == GgufType::BOOL ? 2 : 100);
      e.i = -k;
      e.f = 0.5 * k;
      arr.array.push_back(e);
    }
    w.set(std::string("arr.") + std::string(gguf_type_name(t)), arr);
  }
  GgufValue nested = scalar(GgufType::ARRAY);
  nested.elem_type = GgufType::ARRAY;
  for (int k = 0; k < 2; ++k) {
    GgufValue inner = scalar(GgufType::ARRAY);
    inner.elem_type = GgufType::STRING;
    for (int j = 0; j <= k; ++j) {
      GgufValue s = scalar(GgufType::STRING);
      s.str = "s" + std::to_string(k) + std::to_string(j);
      inner.array.push_back(s);
    }
    nested.array.push_back(inner);
  }
  w.set("nested", nested);
  w.set_u32("u32", 7);  // replaces in place, keeping the first position

  std::vector<float> f32(15);
  for (size_t k = 0; k < f32.size(); ++k) f32[k] = float(k) - 7.0f;
  std::vector<uint16_t> f16 = {0x3c00, 0xbc00, 0x0000, 0x7bff, 0x3555, 0x1234, 0x8001, 0x4000};
  std::vector<uint8_t> q8(2 * 34);
  for (size_t k = 0; k < q8.size(); ++k) q8[k] = uint8_t(k * 7);
  std::vector<int8_t> i8 = {1, -2, 3, -4, 5, -6, 7};
  float one = 42.0f;
  w.add_tensor("f32", DType::F32, {3, 5}, f32.data(), f32.size() * 4);
  w.add_tensor("f16", DType::F16, {2, 4}, f16.data(), f16.size() * 2);
  w.add_tensor("q8", DType::Q8_0, {2, 32}, q8.data(), q8.size());
  w.add_tensor("i8", DType::I8, {7}, i8.data(), i8.size());
  w.add_tensor("scalar", DType::F32, {}, &one, 4);
  w.add_tensor("empty", DType::F32, {0, 4}, nullptr, 0);
  w.add_tensor("bf16.3d", DType::BF16, {2, 2, 2}, f16.data(), 16);

  const std::string path = dir.file("all.gguf");
  std::vector<std::pair<size_t, size_t>> calls;
  w.write(path, [&](size_t done, size_t total) { calls.emplace_back(done, total); });
  EXPECT_FALSE(test::exists(path + ".tmp"));
  ASSERT_FALSE(calls.empty());
  for (size_t k = 1; k < calls.size(); ++k) EXPECT_GE(calls[k].first, calls[k - 1].first);
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_EQ(calls.back().second, test::read_bytes(path).size());

  auto g = GgufFile::open(path);
  EXPECT_EQ(g->version(), 3u);
  // Same keys, same order, same values.
  ASSERT_EQ(g->metadata().size(), 30u);
  EXPECT_EQ(g->metadata()[0].first, "general.architecture");
  EXPECT_EQ(g->metadata()[2].first, "u32");
  EXPECT_EQ(g->get_int("u32"), 7);
  EXPECT_EQ(g->get_int("i32"), -123456);
  EXPECT_EQ(g->find("u64")->u, 0xFFFFFFFFFFFFFFFFull);
  expect_error([&] { g->get_int("u64"); }, {"u64"});  // does not fit int64
  EXPECT_EQ(g->get_float("f32"), 0.125);
  EXPECT_TRUE(g->get_bool("bool"));
  EXPECT_FALSE(g->get_bool("bool.false"));
  EXPECT_EQ(g->get_string("empty.string"), "");
  EXPECT_EQ(g->get_string_array("strs"),
            (std::vector<std::string>{"a", "", "\xe2\x96\x81hello", std::string("nul\0in", 6)}));
  EXPECT_EQ(g->get_int_array("i32s"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g->get_float_array("f32s"), (std::vector<float>{1.5f, -0.25f}));
  EXPECT_TRUE(g->get_int_array("empty.array").empty());
  EXPECT_EQ(g->get_int("u8"), 255);
  EXPECT_EQ(g->get_int("i8"), -128);
  EXPECT_EQ(g->get_int("u16"), 65535);
  EXPECT_EQ(g->get_int("i16"), -32768);
  EXPECT_EQ(g->get_int("i64"), INT64_MIN);
  EXPECT_EQ(g->get_float("f64"), 1e300);
  EXPECT_EQ(g->find("u8")->type, GgufType::U8);
  EXPECT_EQ(g->find("i16")->type, GgufType::I16);
  EXPECT_EQ(g->get_int_array("arr.u64"), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(g->get_int_array("arr.i64"), (std::vector<int64_t>{0, -1, -2}));
  EXPECT_EQ(g->get_int_array("arr.bool"), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(g->get_float_array("arr.f64"), (std::vector<float>{0.0f, 0.5f, 1.0f}));
  EXPECT_EQ(g->get_float_array("arr.i16"), (std::vector<float>{0.0f, -1.0f, -2.0f}));
  const GgufValue* n = g->find("nested");
  ASSERT_NE(n, nullptr);
  expect_same(*n, nested, "nested");
  ASSERT_EQ(n->array[1].array.size(), 2u);
  EXPECT_EQ(n->array[1].array[1].str, "s11");

  ASSERT_EQ(g->tensors().size(), 7u);
  auto check = [&](const char* name, DType dt, std::vector<int64_t> shape, const void* data,
                   size_t nbytes) {
    const TensorView* t = g->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dt) << name;
    EXPECT_EQ(t->shape, shape) << name;
    ASSERT_EQ(t->nbytes, nbytes) << name;
    if (nbytes) {
      EXPECT_EQ(std::memcmp(t->data, data, nbytes), 0) << name;
    }
    EXPECT_EQ((static_cast<const uint8_t*>(t->data) -
               static_cast<const uint8_t*>(g->tensors()[0].data)) % 32, 0) << name;
  };
  check("f32", DType::F32, {3, 5}, f32.data(), 60);
  check("f16", DType::F16, {2, 4}, f16.data(), 16);
  check("q8", DType::Q8_0, {2, 32}, q8.data(), 68);
  check("i8", DType::I8, {7}, i8.data(), 7);
  check("scalar", DType::F32, {}, &one, 4);
  check("empty", DType::F32, {0, 4}, nullptr, 0);
  check("bf16.3d", DType::BF16, {2, 2, 2}, f16.data(), 16);
  EXPECT_EQ(g->tensors()[0].name, "f32");  // file order kept
  EXPECT_EQ(g->tensors()[6].name, "bf16.3d");
}

TEST(GgufWriter, HonoursAlignment) {
  TempDir dir;
  GgufWriter w;
  w.set_alignment(256);
  std::vector<uint8_t> a(3, 1), b(5, 2);
  w.add_tensor("a", DType::I8, {3}, a.data(), 3);
  w.add_tensor("b", DType::I8, {5}, b.data(), 5);
  w.write(dir.file("x.gguf"));
  auto g = GgufFile::open(dir.file("x.gguf"));
  EXPECT_EQ(g->alignment(), 256u);
  EXPECT_EQ(g->get_int("general.alignment"), 256);
  EXPECT_EQ(g->data_offset() % 256, 0u);
  EXPECT_EQ(static_cast<const uint8_t*>(g->tensors()[1].data) -
                static_cast<const uint8_t*>(g->tensors()[0].data), 256);
  EXPECT_THROW(w.set_alignment(48), Error);
}

TEST(GgufWriter, RejectsBadTensorsAndLeavesNoFileBehind) {
  TempDir dir;
  std::vector<float> x(8);
  GgufWriter w;
  expect_error([&] { w.add_tensor("t", DType::F32, {2, 4}, x.data(), 31); },
               {"'t'", "31 bytes"});
  expect_error([&] { w.add_tensor("q", DType::Q8_0, {1, 33}, x.data(), 34); }, {"q8_0"});
  expect_error([&] { w.add_tensor("u", DType::U8, {8}, x.data(), 8); }, {"'u'"});
  w.add_tensor("t", DType::F32, {2, 4}, x.data(), 32);
  expect_error([&] { w.add_tensor("t", DType::F32, {2, 4}, x.data(), 32); }, {"'t'", "twice"});

  // A value whose array elements disagree with the declared element type
  // fails the write: the target keeps its old content and no .tmp remains.
  const std::string path = dir.file("keep.gguf");
  test::write_bytes(path, std::string("old").data(), 3);
  GgufValue bad;
  bad.type = GgufType::ARRAY;
  bad.elem_type = GgufType::I32;
  GgufValue s;
  s.type = GgufType::STRING;
  bad.array.push_back(s);
  w.set("bad", bad);
  expect_error([&] { w.write(path); }, {"bad"});
  EXPECT_EQ(test::read_bytes(path).size(), 3u);
  EXPECT_FALSE(test::exists(path + ".tmp"));

  // An unwritable destination is an error naming it.
  GgufWriter ok;
  expect_error([&] { ok.write(dir.file("no/such/dir/x.gguf")); }, {"no/such/dir/x.gguf"});
}

TEST(GgufWriter, ProgressAbortLeavesNoFile) {
  TempDir dir;
  std::vector<float> x(64);
  GgufWriter w;
  w.add_tensor("t", DType::F32, {64}, x.data(), 256);
  const std::string path = dir.file("abort.gguf");
  EXPECT_THROW(w.write(path, [](size_t, size_t) { fail("cancelled"); }), Error);
  EXPECT_FALSE(test::exists(path));
  EXPECT_FALSE(test::exists(path + ".tmp"));
}

}  // namespace
}  // namespace kiln
