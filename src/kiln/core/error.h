// Errors a user can act on. Every failure that reaches the user is a
// kiln::Error carrying one line of text ("tensor blk.3.attn_q.weight has 4096
// columns, config says 2048"); the command prints it and exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kiln {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates anything streamable into one string: cat("layer ", i, " of ", n).
template <class... Parts>
std::string cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(cat(std::forward<Parts>(parts)...));
}

}  // namespace kiln

// Throws kiln::Error with the given message parts when cond is false.
#define KILN_CHECK(cond, ...)                     \
  do {                                            \
    if (!(cond)) ::kiln::fail(__VA_ARGS__);       \
  } while (0)
