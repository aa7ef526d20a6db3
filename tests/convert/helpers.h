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
#include "support/reference.h"

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

}  // namespace kiln::test
