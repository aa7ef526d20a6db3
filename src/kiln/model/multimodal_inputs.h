// Pieces the forward passes share to take a vision-language prompt
// (ForwardInputs): M-RoPE rotation, the slice of the inputs that falls in one
// chunk of a long prompt, image embeddings put in place, DeepStack residuals.
#pragma once

#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/model/model.h"

namespace kiln {

// M-RoPE as three ordinary rotations: one per position component, each with
// the inverse frequencies of the other components zeroed. Rotations of
// distinct frequency pairs commute and a zero angle is exactly the identity,
// so this equals the sectioned rotation.
class MropeTables {
 public:
  void init(Backend& backend, const ModelSpec& spec, const std::vector<float>& inv_freq);
  bool enabled() const { return enabled_; }
  // x [T, n_heads, head_dim]; positions [3, T] host memory.
  void apply(Backend& backend, float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
             int64_t rot_dims, const int32_t* positions, RopeStyle style) const;

 private:
  bool enabled_ = false;
  DeviceBuffer inv_[3];
};

// The part of a call's inputs that falls in its tokens [begin, begin + n),
// rows counted from begin.
struct InputsChunk {
  ForwardInputs view;
  std::vector<int32_t> rows, positions;
  std::vector<float> embeds, deepstack;
};
InputsChunk slice_inputs(const ForwardInputs& in, int64_t n_total, int64_t begin, int64_t n,
                         int64_t hidden);

// x [T, hidden] in backend memory: the given rows replaced by the embeddings.
void place_embeddings(Backend& backend, const ForwardInputs& in, float* x, int64_t hidden);
// x += DeepStack features of `layer` at the image rows (when the call has them).
void add_deepstack(Backend& backend, const ForwardInputs& in, int64_t layer, float* x,
                   int64_t hidden);

}  // namespace kiln
