// The Qwen3-VL / Qwen3.5 vision encoder: patch embedding (the Conv3d as a
// matrix product), learned position embeddings bilinearly interpolated from
// their trained grid, 2-D rotary embeddings, ViT blocks, the 2x2 spatial
// merger into the language model's width, and (Qwen3-VL) DeepStack features
// taken after some blocks for the first language-model layers.
//
// Weights are read under llama.cpp's mmproj names ("v.blk.0.attn_qkv.weight",
// "mm.0.weight"...), from an mmproj GGUF or mapped from a Hugging Face
// checkpoint's model.visual.* tensors.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/backend/backend.h"
#include "kiln/io/gguf.h"
#include "kiln/io/safetensors.h"
#include "kiln/vision/preprocess.h"

namespace kiln {

struct VisionSpec {
  int64_t hidden = 0, n_layers = 0, n_heads = 0, ffn = 0, out_hidden = 0;
  int64_t patch = 16, temporal = 2, merge = 2, in_channels = 3;
  int64_t n_pos = 0;  // learned position embeddings (a square grid)
  float eps = 1e-6f;
  float rope_theta = 10000.0f;
  bool gelu_tanh = true;               // the blocks' activation (the merger's is exact GELU)
  std::vector<int64_t> deepstack_layers;  // blocks whose output feeds a DeepStack merger
};

// What encode() returns: merged tokens for the language model and, per
// DeepStack layer, features of the same tokens (host memory).
struct VisionOutput {
  int64_t n_tokens = 0, dim = 0;
  std::vector<float> embeds;     // [n_tokens, dim]
  std::vector<float> deepstack;  // [n_deepstack, n_tokens, dim]
  int64_t n_deepstack = 0;
};

class VisionTower {
 public:
  // From a Hugging Face checkpoint (config.json's vision_config).
  static std::unique_ptr<VisionTower> from_safetensors(const SafetensorsModel& st,
                                                       const nlohmann::json& config,
                                                       Backend& backend);
  // From the mmproj GGUF llama.cpp's converter writes.
  static std::unique_ptr<VisionTower> from_gguf(const GgufFile& mmproj, Backend& backend);

  const VisionSpec& spec() const { return spec_; }
  // Encodes one image or video (its patches from preprocess_image/video).
  VisionOutput encode(const PixelValues& pixels);

 private:
  using Find = std::function<const TensorView*(const std::string&)>;
  // The tower's BF16 products keep their f32 activations (and so does the
  // language model beside it on the same backend): its patch embeddings
  // stand for the image in every later token, and with bf16-rounded
  // products the fixtures' image and video checks against transformers' f32
  // tower (1e-4) failed on an H100. An image is a few hundred patches: the
  // faster rounding buys little there.
  VisionTower(const VisionSpec& spec, Backend& backend) : spec_(spec), backend_(&backend) {
    backend.set_exact_bf16_products(true);
  }
  void load(const Find& find, const std::string& source);
  std::vector<float> position_embeddings(int64_t t, int64_t h, int64_t w) const;

  struct Block {
    DeviceBuffer ln1_w, ln1_b, ln2_w, ln2_b, bq, bk, bv, bo, b_up, b_down;
    Weight wq, wk, wv, wo, w_up, w_down;
  };
  struct Merger {
    DeviceBuffer norm_w, norm_b, b1, b2;
    Weight w1, w2;
    bool norm_after_shuffle = false;  // DeepStack mergers normalise the merged 4*hidden rows
  };
  void run_merger(const Merger& m, const float* x, int64_t n_patches, float* out);

  VisionSpec spec_;
  Backend* backend_;
  std::deque<std::vector<uint8_t>> storage_;  // re-laid-out weights
  Weight patch_w_;
  DeviceBuffer patch_b_, inv_freq_row_, inv_freq_col_;
  std::vector<float> pos_table_;  // [n_pos, hidden]
  std::vector<Block> blocks_;
  Merger merger_;
  std::map<int64_t, Merger> deepstack_;  // by block index
};

}  // namespace kiln
