// Shared helpers for the tokenizer tests.
#pragma once

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace kiln::test {

inline const std::string kData = KILN_TEST_DATA;

inline std::string read_file(const std::string& path) {
  if (path.size() > 3 && path.substr(path.size() - 3) == ".gz") {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open " + path);
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    gzclose(f);
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json load_json(const std::string& path) {
  return nlohmann::json::parse(read_file(path));
}

// A file under the system temp folder that is removed with this object.
struct TempFile {
  explicit TempFile(const std::string& name, const std::string& contents)
      : path((std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "." + name))
                 .string()) {
    std::ofstream(path, std::ios::binary) << contents;
  }
  ~TempFile() { std::filesystem::remove(path); }
  std::string path;
};

}  // namespace kiln::test
