#include "kiln/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "kiln/core/error.h"

namespace kiln {

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(tmp_, ": cannot create: ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  KILN_CHECK(fd_ >= 0, tmp_, ": write after close");
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; loop on short writes as well.
    size_t chunk = n < (size_t(1) << 30) ? n : (size_t(1) << 30);
    ssize_t w = ::write(fd_, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(tmp_, ": write failed: ", std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
    written_ += size_t(w);
  }
}

void AtomicFile::write_zeros(size_t n) {
  static const uint8_t zeros[4096] = {};
  while (n > 0) {
    size_t chunk = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, chunk);
    n -= chunk;
  }
}

void AtomicFile::commit() {
  KILN_CHECK(fd_ >= 0, tmp_, ": commit after close");
  if (::fsync(fd_) != 0) fail(tmp_, ": fsync failed: ", std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail(tmp_, ": close failed: ", std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename ", tmp_, " into place: ", std::strerror(errno));
  committed_ = true;
  // Make the rename itself durable; a failure here loses nothing already written.
  size_t slash = path_.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace kiln
