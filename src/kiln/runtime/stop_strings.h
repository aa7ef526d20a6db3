// Stop strings on streamed text: text is passed on as soon as it cannot be
// the start of a stop string; when one appears, generation should stop and
// nothing from the stop string on is shown.
#pragma once

#include <string>
#include <vector>

namespace kiln {

class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);
  // Adds generated text; returns what can be shown now.
  std::string push(const std::string& text);
  // Whatever is still held back (call at the end; empty after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace kiln
