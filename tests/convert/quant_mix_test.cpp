// The per-tensor types of each file type.
#include <gtest/gtest.h>

#include "kiln/convert/parts.h"

namespace kiln {
namespace {

using convert::choose_tensor_type;

ModelSpec spec_with(int64_t layers, bool tied, int64_t experts = 0) {
  ModelSpec s;
  s.arch = "qwen3";
  s.n_layers = layers;
  s.tied_embeddings = tied;
  s.n_experts = experts;
  return s;
}

TEST(QuantMix, SmallTensorsStayF32) {
  const ModelSpec s = spec_with(28, true);
  for (FileType ft : {FileType::F16, FileType::BF16, FileType::Q8_0, FileType::Q4_K_M}) {
    EXPECT_EQ(choose_tensor_type(ft, "blk.0.attn_norm.weight", {1024}, s), DType::F32);
    EXPECT_EQ(choose_tensor_type(ft, "blk.0.attn_q_norm.weight", {128}, s), DType::F32);
    EXPECT_EQ(choose_tensor_type(ft, "blk.0.ffn_gate_inp.weight", {8, 1024}, s), DType::F32);
  }
}

TEST(QuantMix, Q4KMSpendsBitsWhereLlamaCppDoes) {
  const ModelSpec s = spec_with(28, true);
  const FileType ft = FileType::Q4_K_M;
  EXPECT_EQ(choose_tensor_type(ft, "token_embd.weight", {151936, 1024}, s), DType::Q6_K);
  EXPECT_EQ(choose_tensor_type(ft, "token_embd.weight", {151936, 1024}, spec_with(28, false)),
            DType::Q4_K);
  EXPECT_EQ(choose_tensor_type(ft, "output.weight", {151936, 1024}, spec_with(28, false)),
            DType::Q6_K);
  EXPECT_EQ(choose_tensor_type(ft, "blk.5.attn_q.weight", {2048, 1024}, s), DType::Q4_K);
  // 28 layers: more bits for layers < 3, >= 24, and (i - 3) % 3 == 2.
  for (int l = 0; l < 28; ++l) {
    const bool more = l < 3 || l >= 24 || (l - 3) % 3 == 2;
    const DType want = more ? DType::Q6_K : DType::Q4_K;
    EXPECT_EQ(choose_tensor_type(ft, "blk." + std::to_string(l) + ".attn_v.weight", {1024, 1024}, s), want) << l;
    EXPECT_EQ(choose_tensor_type(ft, "blk." + std::to_string(l) + ".ffn_down.weight", {1024, 3072}, s), want) << l;
  }
  EXPECT_EQ(choose_tensor_type(ft, "blk.5.attn_v.weight", {512, 1024}, spec_with(28, false, 8)),
            DType::Q8_0);
}

TEST(QuantMix, RowsThatAreNotWholeBlocksFallBack) {
  const ModelSpec s = spec_with(4, false);
  EXPECT_EQ(choose_tensor_type(FileType::Q4_K_M, "blk.1.ffn_up.weight", {48, 64}, s), DType::Q5_0);
  EXPECT_EQ(choose_tensor_type(FileType::Q6_K, "blk.1.ffn_up.weight", {48, 64}, s), DType::Q8_0);
  EXPECT_EQ(choose_tensor_type(FileType::Q8_0, "blk.1.ffn_down.weight", {64, 48}, s), DType::F16);
  EXPECT_EQ(choose_tensor_type(FileType::Q4_K_M, "blk.1.ffn_down.weight", {64, 48}, s), DType::F16);
  EXPECT_EQ(choose_tensor_type(FileType::Q4_0, "output.weight", {1024, 64}, s), DType::Q8_0);
}

}  // namespace
}  // namespace kiln
