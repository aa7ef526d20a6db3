// The forward pass against Hugging Face's own numbers: for each tiny
// reference model, from safetensors and from llama.cpp's GGUF conversions,
// one prefill over the fixture prompt must give transformers' logits and the
// greedy continuation must give its ids.
//
// Tolerances:
// - f32/bf16 sources: max |logit - ref| / max |ref| <= 1e-4. The weights are
//   exactly the reference's (bf16 widens exactly to f32); what remains is f32
//   summation order, ~1e-6 relative here, so 1e-4 is loose enough to be
//   stable and tight enough to catch any wrong op (those show up at >1e-2).
// - The hybrids (Qwen3.5, Qwen3-Next): their random weights leave DeltaNet
//   heads whose output nearly cancels, and the gated RMSNorm behind them
//   (eps 1e-6 against a tiny rms) scales that up ~1000x, so a single
//   position of the float32 reference is itself 0.7-1.05e-4 from the exact
//   result. Beside ref.safetensors sits ref_exact.safetensors: transformers
//   run wholly in float64 (tests/data/hf/make_f64_reference.py; logits
//   rounded to f32 for storage, 6e-8 relative). kiln must be <= 5e-5 from
//   the exact logits (measured 1.5-2.4e-5 at every kernel level; f32 sums
//   in the DeltaNet input projections would give ~1e-4, see
//   matmul_sum_f64), and from the float32 reference no farther than 1e-4
//   plus the reference's own distance from the exact logits.
// - BitNet: 1e-3, see its cases.
// - q8_0: the weights themselves are rounded, and on these random models some
//   positions swing; judged as the fixtures' README says, by the share of
//   positions with cosine >= 0.99: at least 90%, and never fewer than
//   llama.cpp reaches on the same file (its logits are stored beside it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/io/safetensors.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/generate.h"
#include "support/reference.h"

namespace kiln {
namespace {

using test::max_relative_error;
using test::positions_with_cosine;
using test::read_f32;
using test::read_i32;

const std::string kData = KILN_TEST_DATA;

struct Case {
  std::string arch;    // folder under tests/data/hf
  std::string source;  // "" = the safetensors folder, else a file under gguf/
  bool exact;
  // q8_0: the share of positions that must reach cosine 0.99 (besides never
  // fewer than llama.cpp).
  double min_share = 0.9;
  // f32/bf16: max relative logit error.
  double max_rel = 1e-4;
  // Folder whose ref.safetensors applies ("" = arch's own).
  std::string ref_arch;
  // Judged against ref_exact.safetensors (the hybrids; see the top).
  bool exact_ref = false;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string s = info.param.arch + "_" + (info.param.source.empty() ? "safetensors" : info.param.source);
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

class GoldenLogits : public testing::TestWithParam<Case> {};

TEST_P(GoldenLogits, MatchesReference) {
  const Case& c = GetParam();
  const std::string dir = kData + "/hf/" + c.arch;
  const std::string model_path = c.source.empty() ? dir : dir + "/gguf/" + c.source;
  auto ref = SafetensorsModel::open(kData + "/hf/" + (c.ref_arch.empty() ? c.arch : c.ref_arch) +
                                    "/ref.safetensors");
  const std::vector<int32_t> ids = read_i32(*ref, "input_ids");
  const std::vector<float> want = read_f32(*ref, "logits");
  const std::vector<int32_t> greedy = read_i32(*ref, "greedy_ids");

  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(model_path, lo);
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  ASSERT_EQ(int64_t(want.size()), T * V);

  StateOptions so;
  so.context = T + 16;
  auto state = engine->model().new_state(so);
  std::vector<float> got(size_t(T * V));
  engine->model().forward(*state, ids.data(), T, got.data(), true);

  if (c.exact && c.exact_ref) {
    std::printf("[ measured ] %s: %s\n", model_path.c_str(),
                test::expect_near_exact_logits(got, want, dir).c_str());
  } else if (c.exact) {
    const double err = max_relative_error(got, want);
    EXPECT_LE(err, c.max_rel);
    std::printf("[ measured ] %s: max relative logit error %.3g\n", model_path.c_str(), err);
  } else {
    const int ours = positions_with_cosine(got, want, T, V, 0.99);
    auto peer = SafetensorsModel::open(model_path.substr(0, model_path.size() - 5) +
                                       ".llamacpp.safetensors");
    const int theirs = positions_with_cosine(read_f32(*peer, "logits"), want, T, V, 0.99);
    EXPECT_GE(ours, theirs) << "positions with cosine >= 0.99: kiln " << ours << ", llama.cpp "
                            << theirs << " of " << T;
    EXPECT_GE(ours, int(c.min_share * double(T))) << "kiln " << ours << " of " << T;
    std::printf("[ measured ] %s: cosine >= 0.99 at %d of %lld positions (llama.cpp %d)\n",
                model_path.c_str(), ours, (long long)T, theirs);
  }

  // Greedy continuation with the KV cache, token by token.
  auto st2 = engine->model().new_state(so);
  GenerateRequest req;
  req.prompt = ids;
  req.max_tokens = int(greedy.size());
  req.sampling.temperature = 0;
  auto result = generate(engine->model(), *st2, req, nullptr);
  if (c.exact) {
    EXPECT_EQ(result.tokens, greedy);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Hf, GoldenLogits,
    testing::Values(Case{"llama", "", true}, Case{"llama", "llama-f32.gguf", true},
                    Case{"llama", "llama-bf16.gguf", true}, Case{"llama", "llama-q8_0.gguf", false},
                    Case{"qwen3", "", true}, Case{"qwen3", "qwen3-f32.gguf", true},
                    Case{"qwen3", "qwen3-bf16.gguf", true}, Case{"qwen3", "qwen3-q8_0.gguf", false},
                    Case{"qwen3_moe", "", true}, Case{"qwen3_moe", "qwen3_moe-f32.gguf", true},
                    Case{"qwen3_moe", "qwen3_moe-q8_0.gguf", false},
                    Case{"smollm3", "", true}, Case{"smollm3", "smollm3-f32.gguf", true},
                    Case{"smollm3", "smollm3-q8_0.gguf", false},
                    // Hybrids: 150-token prompts, so prefill crosses 64-token chunks.
                    // On q8_0 these random models swing at many positions: llama.cpp
                    // itself keeps cosine >= 0.99 at only ~65-69% of them, so the
                    // floor is set below that and "no fewer than llama.cpp" decides.
                    Case{"qwen3_5_text", "", true, 0.9, 1e-4, "", true},
                    Case{"qwen3_5_text", "qwen3_5_text-f32.gguf", true, 0.9, 1e-4, "", true},
                    Case{"qwen3_5_text", "qwen3_5_text-bf16.gguf", true, 0.9, 1e-4, "", true},
                    Case{"qwen3_5_text", "qwen3_5_text-q8_0.gguf", false, 0.6},
                    Case{"qwen3_next", "", true, 0.9, 1e-4, "", true},
                    Case{"qwen3_next", "qwen3_next-f32.gguf", true, 0.9, 1e-4, "", true},
                    Case{"qwen3_next", "qwen3_next-q8_0.gguf", false, 0.6},
                    // BitNet b1.58: the released packed layout, and the bf16 master
                    // weights made ternary at load (bitnet's reference). Activations
                    // are rounded to int8 as in the reference; a value on a rounding
                    // boundary may fall the other way after f32 reordering, so 1e-3
                    // (measured: 3.7e-7 for both).
                    Case{"bitnet", "", true, 0.9, 1e-3},
                    Case{"bitnet_bf16", "", true, 0.9, 1e-3, "bitnet"}),
    case_name);

}  // namespace
}  // namespace kiln
