// Our conversions against llama.cpp's own of the same fixtures
// (tests/data/hf/<arch>/gguf): the same tensor names, shapes and types, the
// same metadata, and byte-identical tensor data. For f32 that proves the
// name mapping, the q/k permutation (llama, smollm3), the expert stacking
// and the hybrids' transforms (Qwen3.5's value heads regrouped, -exp(A_log),
// norms stored as 1 + w, Qwen3-Next's qkvz split); for q8_0 the quantizer
// and the F16 fallback of rows that are not whole blocks; for bf16 the
// rounding.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "helpers.h"
#include "kiln/convert/convert.h"
#include "kiln/io/gguf.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/quantize.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

using namespace kiln::test;

bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case GgufType::STRING: return a.str == b.str;
    case GgufType::F32:
    case GgufType::F64: return a.f == b.f;
    case GgufType::ARRAY:
      if (a.elem_type != b.elem_type || a.array.size() != b.array.size()) return false;
      for (size_t i = 0; i < a.array.size(); ++i)
        if (!same_value(a.array[i], b.array[i])) return false;
      return true;
    default: return a.u == b.u && a.i == b.i;
  }
}

struct Case {
  std::string arch, type;
};

class LlamaCppParity : public testing::TestWithParam<Case> {};

TEST_P(LlamaCppParity, SameFileAsLlamaCpp) {
  const Case& c = GetParam();
  const std::string dir = kData + "/hf/" + c.arch;
  TempDir tmp;
  const std::string out = tmp.file("out.gguf");
  ConvertOptions o;
  o.type = parse_file_type(c.type);
  convert_model(dir, out, o);
  auto ours = GgufFile::open(out);
  auto theirs = GgufFile::open(dir + "/gguf/" + c.arch + "-" + c.type + ".gguf");

  // Metadata: every key llama.cpp writes, with its value; a few more keys
  // that llama.cpp also reads are allowed (it omits some for some archs).
  const std::string a = ours->get_string("general.architecture") + ".";
  const std::set<std::string> not_compared = {"general.size_label", "general.name"};
  const std::set<std::string> extra_allowed = {a + "vocab_size", a + "rope.dimension_count",
                                               a + "attention.key_length",
                                               a + "attention.value_length"};
  for (const auto& [key, value] : theirs->metadata()) {
    if (not_compared.count(key)) continue;
    const GgufValue* mine = ours->find(key);
    ASSERT_NE(mine, nullptr) << "missing metadata " << key;
    EXPECT_TRUE(same_value(*mine, value)) << "metadata " << key << " differs";
  }
  for (const auto& [key, value] : ours->metadata())
    if (!theirs->has(key) && !not_compared.count(key)) {
      EXPECT_TRUE(extra_allowed.count(key)) << "unexpected metadata " << key;
    }

  // Tensors: same set, shapes, types and bytes.
  ASSERT_EQ(ours->tensors().size(), theirs->tensors().size());
  for (const TensorView& t : theirs->tensors()) {
    const TensorView* m = ours->find_tensor(t.name);
    ASSERT_NE(m, nullptr) << "missing tensor " << t.name;
    EXPECT_EQ(m->shape, t.shape) << t.name;
    EXPECT_EQ(m->dtype, t.dtype) << t.name << ": " << dtype_name(m->dtype) << " vs "
                                 << dtype_name(t.dtype);
    if (m->nbytes == t.nbytes)
      EXPECT_EQ(std::memcmp(m->data, t.data, t.nbytes), 0) << t.name << ": bytes differ";
    else
      ADD_FAILURE() << t.name << ": " << m->nbytes << " bytes vs " << t.nbytes;
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, LlamaCppParity,
                         testing::Values(Case{"llama", "f32"}, Case{"llama", "bf16"},
                                         Case{"llama", "q8_0"}, Case{"qwen3", "f32"},
                                         Case{"qwen3", "bf16"}, Case{"qwen3", "q8_0"},
                                         Case{"qwen3_moe", "f32"}, Case{"qwen3_moe", "q8_0"},
                                         Case{"smollm3", "f32"}, Case{"smollm3", "q8_0"},
                                         Case{"qwen3_5_text", "f32"}, Case{"qwen3_5_text", "bf16"},
                                         Case{"qwen3_5_text", "q8_0"}, Case{"qwen3_next", "f32"},
                                         Case{"qwen3_next", "q8_0"}),
                         [](const testing::TestParamInfo<Case>& info) {
                           return info.param.arch + "_" + info.param.type;
                         });

// Q4_0 has no llama.cpp file among the fixtures; GGML's reference quantizer
// (which quantize_row reproduces bit for bit) applied to llama.cpp's f32
// tensors must give exactly our bytes. The hybrids' tensors are transformed
// before they are quantized, so theirs are checked too.
class Q4_0Parity : public testing::TestWithParam<std::string> {};

TEST_P(Q4_0Parity, IsGgmlsQuantizationOfLlamaCppsTensors) {
  const std::string arch = GetParam();
  TempDir tmp;
  ConvertOptions o;
  o.type = FileType::Q4_0;
  convert_model(kData + "/hf/" + arch, tmp.file("q4_0.gguf"), o);
  auto ours = GgufFile::open(tmp.file("q4_0.gguf"));
  auto f32 = GgufFile::open(kData + "/hf/" + arch + "/gguf/" + arch + "-f32.gguf");
  int checked = 0;
  for (const TensorView& t : ours->tensors()) {
    if (t.dtype != DType::Q4_0) continue;
    const TensorView* ref = f32->find_tensor(t.name);
    ASSERT_NE(ref, nullptr);
    std::vector<uint8_t> want(t.nbytes);
    for (int64_t r = 0; r < t.rows(); ++r)
      quantize_row(DType::Q4_0, reinterpret_cast<const float*>(ref->row(r)),
                   want.data() + r * t.row_bytes(), t.cols());
    EXPECT_EQ(std::memcmp(want.data(), t.data, t.nbytes), 0) << t.name;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

INSTANTIATE_TEST_SUITE_P(Hf, Q4_0Parity, testing::Values("llama", "qwen3_5_text", "qwen3_next"));

// The tokenizer written into the GGUF tokenizes as the Hugging Face one.
TEST(LlamaCppParity, TokenizerRoundTrip) {
  for (const char* arch : {"llama", "qwen3", "smollm3", "qwen3_5_text"}) {
    const std::string dir = kData + "/hf/" + arch;
    TempDir tmp;
    ConvertOptions o;
    o.type = FileType::F32;
    convert_model(dir, tmp.file("t.gguf"), o);
    auto gguf = GgufFile::open(tmp.file("t.gguf"));
    auto from_gguf = Tokenizer::from_gguf(*gguf);
    auto from_hf = Tokenizer::from_hf(dir);
    for (const char* text : {"Hello world!  123 4567", "<|im_start|>user\nHi<|im_end|>",
                             "naïve café 日本語 🙂", "  spaces\n\n\ttabs"}) {
      EXPECT_EQ(from_gguf->encode(text), from_hf->encode(text)) << arch << ": " << text;
    }
    EXPECT_EQ(from_gguf->eos_id(), from_hf->eos_id()) << arch;
    EXPECT_EQ(gguf->has("tokenizer.chat_template"), true) << arch;
  }
}

}  // namespace
}  // namespace kiln
