// An interrupted conversion must not leave "<out>.tmp" behind: destructors do
// not run on SIGINT, so the handler removes the file itself (unlink and _exit
// are async-signal-safe) before the process ends.
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include "kiln/convert/convert.h"

namespace kiln {
namespace {

char g_temp_path[4096];

extern "C" void remove_temp_and_exit(int) {
  if (g_temp_path[0]) ::unlink(g_temp_path);
  static const char msg[] = "\ninterrupted: no output written\n";
  ssize_t ignored = ::write(2, msg, sizeof(msg) - 1);
  (void)ignored;
  ::_exit(130);
}

}  // namespace

void remove_temp_on_interrupt(const std::string& path) {
  const std::string tmp = path + ".tmp";  // AtomicFile's temporary
  if (tmp.size() >= sizeof(g_temp_path)) return;
  std::memcpy(g_temp_path, tmp.c_str(), tmp.size() + 1);
  struct sigaction sa = {};
  sa.sa_handler = remove_temp_and_exit;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace kiln
