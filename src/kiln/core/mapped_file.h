// A whole file mapped read-only into memory. Model weights are used in place
// from the mapping: nothing is copied at load, and the OS pages in what the
// forward pass touches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln {

class MappedFile {
 public:
  // Throws kiln::Error naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kiln
