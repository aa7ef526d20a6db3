// Pieces shared by the forward passes of several architectures: small f32
// parameter vectors, RoPE frequencies, the KV cache.
#pragma once

#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/model/model_file.h"
#include "kiln/model/model_spec.h"

namespace kiln {

// A 1-D parameter (a norm weight, a bias) as f32 in backend memory. With
// unit_offset, 1 is added to each value (zero-centred RMSNorm weights).
DeviceBuffer load_vector(Backend& backend, const TensorView& t, int64_t expected_len,
                         bool unit_offset = false);

// RoPE inverse frequencies for the rotated dims, with the spec's scaling
// applied (Llama 3, linear) and, when given, llama.cpp's rope_freqs factors.
std::vector<float> rope_inverse_frequencies(const ModelSpec& spec, const TensorView* rope_freqs);

// Attention caches of every attention layer of one sequence.
class KvCache {
 public:
  KvCache(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
          int64_t capacity, DType dtype);
  const KvLayer& layer(int64_t i) const { return layers_[size_t(i)]; }
  size_t bytes() const;

 private:
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvLayer> layers_;
};

}  // namespace kiln
