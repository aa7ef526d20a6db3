// Reading reference tensors and comparing logits with them: what every
// golden test (CPU, GPU, converted files) measures, in one place so the
// measures cannot drift apart.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/io/safetensors.h"

namespace kiln::test {

// A tensor of a reference file as a vector; a missing tensor or a wrong type
// fails the test (and gives an empty vector).
inline std::vector<float> read_f32(const SafetensorsModel& st, const std::string& name) {
  const TensorView* t = st.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  EXPECT_EQ(t->dtype, DType::F32) << name;
  const float* p = static_cast<const float*>(t->data);
  return std::vector<float>(p, p + t->numel());
}

inline std::vector<int32_t> read_i32(const SafetensorsModel& st, const std::string& name) {
  const TensorView* t = st.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  EXPECT_EQ(t->dtype, DType::I32) << name;
  const int32_t* p = static_cast<const int32_t*>(t->data);
  return std::vector<int32_t>(p, p + t->numel());
}

inline double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

// The mean over rows t < T of [T, V] logits of their cosine with the reference.
inline double mean_cosine(const std::vector<float>& a, const std::vector<float>& b, int64_t T,
                          int64_t V) {
  double sum = 0;
  for (int64_t t = 0; t < T; ++t) sum += cosine(&a[size_t(t * V)], &b[size_t(t * V)], V);
  return sum / double(T);
}

// Rows t < T of [T, V] logits whose cosine with the reference reaches threshold.
inline int positions_with_cosine(const std::vector<float>& a, const std::vector<float>& b,
                                 int64_t T, int64_t V, double threshold) {
  int n = 0;
  for (int64_t t = 0; t < T; ++t) n += cosine(&a[size_t(t * V)], &b[size_t(t * V)], V) >= threshold;
  return n;
}

// max |got[i] - want[i]| over want's elements (got holds at least as many):
// how pixel_values are compared.
inline double max_abs_error(const float* got, const TensorView& want) {
  const float* w = static_cast<const float*>(want.data);
  double diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    diff = std::max(diff, double(std::fabs(got[i] - w[i])));
  return diff;
}

// max |got - want| / max |want|.
inline double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(double(want[i])));
    max_err = std::max(max_err, std::abs(double(got[i]) - want[i]));
  }
  return max_err / max_ref;
}

// The hybrids' fixtures (Qwen3.5, Qwen3-Next) carry ref_exact.safetensors
// beside ref.safetensors: transformers run wholly in float64, since a single
// position of the float32 reference is itself 0.7-1.05e-4 from the exact
// logits (see golden_logits_test.cpp). Logits of an exact source must be
// within 5e-5 of the exact ones, and from the float32 reference no farther
// than 1e-4 plus its own distance from them. Returns the measured line.
inline std::string expect_near_exact_logits(const std::vector<float>& got,
                                            const std::vector<float>& want,
                                            const std::string& fixture_dir,
                                            double max_from_exact = 5e-5) {
  auto exact = SafetensorsModel::open(fixture_dir + "/ref_exact.safetensors");
  const std::vector<float> truth = read_f32(*exact, "logits");
  EXPECT_EQ(truth.size(), want.size());
  if (truth.size() != want.size() || got.size() != want.size()) return "sizes differ";
  const double err = max_relative_error(got, truth), ref_err = max_relative_error(want, truth);
  const double from_ref = max_relative_error(got, want);
  EXPECT_LE(err, max_from_exact) << "from the exact logits";
  EXPECT_LE(from_ref, 1e-4 + ref_err) << "from the float32 reference";
  char line[200];
  std::snprintf(line, sizeof line,
                "max relative logit error %.3g from the exact logits (the float32 reference: "
                "%.3g from them, %.3g from kiln)",
                err, ref_err, from_ref);
  return line;
}

}  // namespace kiln::test
