// libFuzzer hands bytes; the readers take paths. Each input is written to a
// per-process scratch file (tmpfs when available) that the reader then maps.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace kiln::fuzz {

inline std::string write_input(const uint8_t* data, size_t size, const char* suffix) {
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string path = std::string(dir) + "/kiln_fuzz_" + std::to_string(::getpid()) + suffix;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) std::abort();
  while (size > 0) {
    ssize_t w = ::write(fd, data, size);
    if (w <= 0) std::abort();
    data += w;
    size -= size_t(w);
  }
  ::close(fd);
  return path;
}

}  // namespace kiln::fuzz
