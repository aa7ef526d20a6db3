// Shared by the convert tests: temporary output folders, running the forward
// pass over a fixture's prompt, comparing logits.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/io/safetensors.h"
#include "kiln/runtime/engine.h"

namespace kiln::test {

inline const std::string kData = KILN_TEST_DATA;

// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("kiln-convert-") + (info ? info->name() : "x") + "-" +
                       std::to_string(::getpid());
    for (char& c : name)
      if (c == '/') c = '_';
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::vector<float> read_f32(const SafetensorsModel& st, const std::string& name) {
  const TensorView* t = st.find_tensor(name);
  if (!t) return {};
  const float* p = static_cast<const float*>(t->data);
  return std::vector<float>(p, p + t->numel());
}

inline std::vector<int32_t> read_i32(const SafetensorsModel& st, const std::string& name) {
  const TensorView* t = st.find_tensor(name);
  if (!t) return {};
  const int32_t* p = static_cast<const int32_t*>(t->data);
  return std::vector<int32_t>(p, p + t->numel());
}

// Logits of every position of one prefill over ids.
inline std::vector<float> prefill_logits(const std::string& model, const std::vector<int32_t>& ids,
                                         int64_t* vocab = nullptr) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(model, lo);
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  StateOptions so;
  so.context = T + 16;
  auto state = engine->model().new_state(so);
  std::vector<float> out(size_t(T * V));
  engine->model().forward(*state, ids.data(), T, out.data(), true);
  if (vocab) *vocab = V;
  return out;
}

inline double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

inline int positions_with_cosine(const std::vector<float>& a, const std::vector<float>& b,
                                 int64_t T, int64_t V, double threshold) {
  int n = 0;
  for (int64_t t = 0; t < T; ++t) n += cosine(&a[size_t(t * V)], &b[size_t(t * V)], V) >= threshold;
  return n;
}

inline double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(double(want[i])));
    max_err = std::max(max_err, std::abs(double(got[i]) - want[i]));
  }
  return max_err / max_ref;
}

}  // namespace kiln::test
