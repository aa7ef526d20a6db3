#include <chrono>
#include <cstdio>
#include <memory>

#include "kiln/convert/convert.h"

namespace kiln {

std::function<void(size_t, size_t)> stderr_progress(const std::string& label) {
  using Clock = std::chrono::steady_clock;
  struct State {
    Clock::time_point start = Clock::now(), last{};
    bool shown = false, done = false;
  };
  auto st = std::make_shared<State>();
  return [st, label](size_t done, size_t total) {
    if (st->done) return;
    const auto now = Clock::now();
    const bool finished = done >= total;
    // Small files finish before a line would be worth drawing.
    if (!st->shown && now - st->start < std::chrono::milliseconds(500)) return;
    if (!finished && now - st->last < std::chrono::milliseconds(250)) return;
    st->last = now;
    st->shown = true;
    const double secs = std::chrono::duration<double>(now - st->start).count();
    const double gib = 1024.0 * 1024.0 * 1024.0;
    std::fprintf(stderr, "\r%s %3.0f%%  %.2f/%.2f GiB  %.0f MiB/s   ", label.c_str(),
                 total ? 100.0 * double(done) / double(total) : 100.0, double(done) / gib,
                 double(total) / gib, secs > 0 ? double(done) / secs / (1024.0 * 1024.0) : 0.0);
    if (finished) {
      std::fprintf(stderr, "\n");
      st->done = true;
    }
    std::fflush(stderr);
  };
}

}  // namespace kiln
