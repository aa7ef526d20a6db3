// I2_S files as bitnet.cpp writes them on ARM or without ACT_PARALLEL: the
// same type id, size and scale as its x86 files, and no metadata saying which
// packing they use. kiln's converter marks its own such files (the
// kiln.i2_s.layout key); bitnet.cpp's are read with KILN_I2S_LAYOUT. Here a
// converted file has its key removed, which leaves exactly the bytes
// bitnet.cpp's quantize_i2_s writes for that build, then is run against the
// fixture's reference (max relative logit error <= 1e-3, as the converter
// test's i2_s case).
#include <gtest/gtest.h>

#include <cstdlib>

#include "helpers.h"
#include "kiln/convert/convert.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/model/bitnet.h"
#include "kiln/model/model_file.h"

namespace kiln {
namespace {

using namespace kiln::test;

// KILN_I2S_LAYOUT set for one scope (unset before and after).
class LayoutEnv {
 public:
  explicit LayoutEnv(const char* value) {
    if (value) ::setenv("KILN_I2S_LAYOUT", value, 1);
    else ::unsetenv("KILN_I2S_LAYOUT");
  }
  ~LayoutEnv() { ::unsetenv("KILN_I2S_LAYOUT"); }
};

// `src` rewritten without the kiln.i2_s.layout key: metadata and tensor
// bytes otherwise as they are.
void strip_layout_key(const std::string& src, const std::string& out) {
  auto g = GgufFile::open(src);
  ASSERT_TRUE(g->has(kI2sLayoutKey));
  GgufWriter w;
  for (const auto& [key, value] : g->metadata())
    if (key != kI2sLayoutKey && key != "general.alignment") w.set(key, value);
  for (const TensorView& t : g->tensors()) w.add_tensor(t.name, t.dtype, t.shape, t.data, t.nbytes);
  w.write(out);
}

class BitnetCppLayout : public testing::TestWithParam<std::string> {};

TEST_P(BitnetCppLayout, ReadWithTheEnvironmentVariable) {
  const std::string layout = GetParam();
  LayoutEnv none(nullptr);
  TempDir tmp;
  const std::string marked = tmp.file("marked.gguf"), bare = tmp.file("bare.gguf");
  ConvertOptions o;
  o.type = parse_file_type("i2_s");
  o.i2s_layout = parse_i2s_layout(layout);
  convert_model(kData + "/hf/bitnet_bf16", marked, o);
  strip_layout_key(marked, bare);

  auto ref = SafetensorsModel::open(kData + "/hf/bitnet/ref.safetensors");
  const std::vector<int32_t> ids = read_i32(*ref, "input_ids");
  const std::vector<float> want = read_f32(*ref, "logits");

  {
    std::string source;
    EXPECT_EQ(bitnet_i2s_layout(*ModelFile::open(marked), &source), o.i2s_layout);
    EXPECT_EQ(source, std::string("metadata ") + kI2sLayoutKey);
    EXPECT_EQ(bitnet_i2s_layout(*ModelFile::open(bare)), I2sLayout::X86);
  }
  // Read as x86 (what a reader that does not know the build would do), the
  // codes land in the wrong places.
  EXPECT_GT(max_relative_error(prefill_logits(bare, ids), want), 1e-2);
  {
    LayoutEnv env(layout.c_str());
    std::string source;
    EXPECT_EQ(bitnet_i2s_layout(*ModelFile::open(bare), &source), o.i2s_layout);
    EXPECT_EQ(source, "KILN_I2S_LAYOUT");
    const double err = max_relative_error(prefill_logits(bare, ids), want);
    EXPECT_LE(err, 1e-3);
    std::printf("[ measured ] bitnet.cpp %s layout: max relative logit error %.3g\n",
                layout.c_str(), err);
    // kiln convert turns it into the x86 layout (no key), loadable anywhere.
    ConvertOptions x86;
    x86.type = parse_file_type("i2_s");
    x86.allow_no_tokenizer = true;
    convert_model(bare, tmp.file("x86.gguf"), x86);
  }
  EXPECT_FALSE(GgufFile::open(tmp.file("x86.gguf"))->has(kI2sLayoutKey));
  EXPECT_LE(max_relative_error(prefill_logits(tmp.file("x86.gguf"), ids), want), 1e-3);
  // The file's own key wins over the environment.
  LayoutEnv wrong("x86");
  EXPECT_LE(max_relative_error(prefill_logits(marked, ids), want), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(I2S, BitnetCppLayout, testing::Values("arm", "1x4"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param == "1x4" ? std::string("rows4") : info.param;
                         });

TEST(I2SLayout, OnlyForI2S) {
  TempDir tmp;
  ConvertOptions o;
  o.type = parse_file_type("f32");
  o.i2s_layout = I2sLayout::Arm;
  EXPECT_THROW(convert_model(kData + "/hf/bitnet_bf16", tmp.file("x.gguf"), o), Error);
}

}  // namespace
}  // namespace kiln
