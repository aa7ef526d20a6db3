#include "kiln/model/building_blocks.h"

#include <cmath>

#include "kiln/core/error.h"
#include "kiln/quant/dequantize.h"

namespace kiln {

DeviceBuffer load_vector(Backend& backend, const TensorView& t, int64_t expected_len,
                         bool unit_offset) {
  KILN_CHECK(t.numel() == expected_len, "tensor ", t.name, " has ", t.numel(),
             " values, the model's settings say ", expected_len);
  std::vector<float> host(static_cast<size_t>(expected_len));
  dequantize_row(t.dtype, t.data, host.data(), expected_len);
  if (unit_offset)
    for (float& v : host) v += 1.0f;
  DeviceBuffer buf(backend, host.size() * sizeof(float));
  backend.to_device(buf.get(), host.data(), buf.bytes());
  return buf;
}

std::vector<float> rope_inverse_frequencies(const ModelSpec& s, const TensorView* rope_freqs) {
  const int64_t half = s.rope_dims / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = float(1.0 / std::pow(double(s.rope_theta), double(2 * i) / double(s.rope_dims)));

  const RopeScaling& sc = s.rope_scaling;
  if (sc.kind == RopeScaling::Kind::Linear) {
    for (float& f : inv) f /= sc.factor;
  } else if (sc.kind == RopeScaling::Kind::Llama3 && !rope_freqs) {
    // Long wavelengths slow down by `factor`, short ones stay, the band in
    // between is blended (Llama 3.1's "llama3" rope type).
    const double low_wavelen = double(sc.original_context) / sc.low_freq_factor;
    const double high_wavelen = double(sc.original_context) / sc.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = float(f / sc.factor);
      } else {
        const double smooth = (double(sc.original_context) / wavelen - sc.low_freq_factor) /
                              (sc.high_freq_factor - sc.low_freq_factor);
        f = float((1.0 - smooth) * f / sc.factor + smooth * f);
      }
    }
  }
  if (rope_freqs) {
    // llama.cpp's converter bakes the Llama 3 scaling into per-dim divisors.
    KILN_CHECK(rope_freqs->numel() == half, "tensor rope_freqs.weight has ", rope_freqs->numel(),
               " values, expected ", half);
    std::vector<float> factors(static_cast<size_t>(half));
    dequantize_row(rope_freqs->dtype, rope_freqs->data, factors.data(), half);
    for (int64_t i = 0; i < half; ++i) inv[i] /= factors[i];
  }
  return inv;
}

KvCache::KvCache(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                 int64_t capacity, DType dtype) {
  KILN_CHECK(dtype == DType::F32 || dtype == DType::F16, "KV cache type must be f32 or f16");
  const size_t plane = size_t(n_kv_heads * capacity * head_dim) * (dtype == DType::F32 ? 4 : 2);
  for (int64_t l = 0; l < n_layers; ++l) {
    KvLayer kv;
    buffers_.emplace_back(backend, plane);
    kv.k = buffers_.back().get();
    buffers_.emplace_back(backend, plane);
    kv.v = buffers_.back().get();
    kv.dtype = dtype;
    kv.n_kv_heads = n_kv_heads;
    kv.head_dim = head_dim;
    kv.capacity = capacity;
    layers_.push_back(kv);
  }
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const auto& b : buffers_) total += b.bytes();
  return total;
}

}  // namespace kiln
