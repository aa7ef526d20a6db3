#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

#include "kiln/convert/convert.h"
#include "kiln/core/error.h"

namespace kiln {
namespace {

constexpr std::array<std::pair<std::string_view, FileType>, 10> kTypes = {{
    {"f32", FileType::F32},
    {"f16", FileType::F16},
    {"bf16", FileType::BF16},
    {"q8_0", FileType::Q8_0},
    {"q4_0", FileType::Q4_0},
    {"q4_k_m", FileType::Q4_K_M},
    {"q6_k", FileType::Q6_K},
    {"tq1_0", FileType::TQ1_0},
    {"tq2_0", FileType::TQ2_0},
    {"i2_s", FileType::I2_S},
}};

}  // namespace

std::string file_type_list() {
  std::string s;
  for (const auto& [name, t] : kTypes) s += (s.empty() ? "" : ", ") + std::string(name);
  return s;
}

FileType parse_file_type(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  for (const auto& [n, t] : kTypes)
    if (lower == n) return t;
  fail("--type ", name, ": unknown type; use one of ", file_type_list());
}

std::string file_type_name(FileType t) {
  for (const auto& [n, ft] : kTypes)
    if (ft == t) return std::string(n);
  return "?";
}

}  // namespace kiln
