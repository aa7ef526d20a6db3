#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "kiln/convert/convert.h"

namespace kiln {

std::function<void(size_t, size_t)> progress_printer(std::FILE* out, bool redraw,
                                                     const std::string& label,
                                                     std::chrono::milliseconds first_after) {
  using Clock = std::chrono::steady_clock;
  struct State {
    Clock::time_point start = Clock::now(), last{};
    bool shown = false, done = false;
    int tenths = -1;  // the last tenth printed (a line each, when not redrawing)
  };
  auto st = std::make_shared<State>();
  return [st, out, redraw, label, first_after](size_t done, size_t total) {
    if (st->done) return;
    const auto now = Clock::now();
    const bool finished = done >= total;
    // Small files finish before a line would be worth drawing.
    if (!st->shown && now - st->start < first_after) return;
    if (redraw) {
      if (!finished && now - st->last < std::chrono::milliseconds(250)) return;
    } else {
      // A log gets a line per tenth, not a redraw every quarter second.
      const int tenths = total ? int(10 * double(done) / double(total)) : 10;
      if (!finished && tenths == st->tenths) return;
      st->tenths = tenths;
    }
    st->last = now;
    st->shown = true;
    const double secs = std::chrono::duration<double>(now - st->start).count();
    const double gib = 1024.0 * 1024.0 * 1024.0;
    std::fprintf(out, "%s%s %3.0f%%  %.2f/%.2f GiB  %.0f MiB/s%s", redraw ? "\r" : "",
                 label.c_str(), total ? 100.0 * double(done) / double(total) : 100.0,
                 double(done) / gib, double(total) / gib,
                 secs > 0 ? double(done) / secs / (1024.0 * 1024.0) : 0.0, redraw ? "   " : "\n");
    if (finished) {
      if (redraw) std::fprintf(out, "\n");
      st->done = true;
    }
    std::fflush(out);
  };
}

std::function<void(size_t, size_t)> stderr_progress(const std::string& label) {
  return progress_printer(stderr, ::isatty(::fileno(stderr)) != 0, label,
                          std::chrono::milliseconds(500));
}

}  // namespace kiln
