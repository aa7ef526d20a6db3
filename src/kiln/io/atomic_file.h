// Writing a file so that it appears complete or not at all: the bytes go to
// "<path>.tmp", are fsynced, and the temporary is renamed over <path> only by
// commit(). If the writer is destroyed without commit() (an error, an
// exception), the temporary is removed and <path> is left as it was.
#pragma once

#include <cstddef>
#include <string>

namespace kiln {

class AtomicFile {
 public:
  // Creates (truncates) "<path>.tmp"; throws kiln::Error naming it on failure.
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  size_t written() const { return written_; }
  // fsync, close, rename over the final path, fsync the folder.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_; }

 private:
  void discard();
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

}  // namespace kiln
