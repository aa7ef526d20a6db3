// The progress lines of kiln convert and kiln synth.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "kiln/convert/convert.h"

namespace kiln {
namespace {

// What progress_printer writes for done = 0, 10, .., 1000 of 1000 bytes.
std::string printed(bool redraw, std::chrono::milliseconds first_after) {
  std::FILE* f = std::tmpfile();
  auto progress = progress_printer(f, redraw, "writing", first_after);
  for (size_t done = 0; done <= 1000; done += 10) progress(done, 1000);
  progress(1000, 1000);  // a second report of the end adds nothing
  std::string s(size_t(std::ftell(f)), '\0');
  std::rewind(f);
  s.resize(std::fread(s.data(), 1, s.size(), f));
  std::fclose(f);
  return s;
}

TEST(Progress, IntoALogOneLineATenth) {
  const std::string s = printed(false, std::chrono::milliseconds(0));
  EXPECT_EQ(s.find('\r'), std::string::npos) << s;
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 11) << s;  // 0%, 10%, .., 90%, 100%
  EXPECT_NE(s.find("writing  50%"), std::string::npos) << s;
  EXPECT_NE(s.find("writing 100%"), std::string::npos) << s;
}

TEST(Progress, OnATerminalOneRedrawnLine) {
  const std::string s = printed(true, std::chrono::milliseconds(0));
  EXPECT_GE(std::count(s.begin(), s.end(), '\r'), 2) << s;  // the first report and the end
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1) << s;  // only after the end
  EXPECT_EQ(s.back(), '\n');
  EXPECT_NE(s.find("writing 100%"), std::string::npos) << s;
}

TEST(Progress, QuickWorkPrintsNothing) {
  EXPECT_EQ(printed(false, std::chrono::hours(1)), "");
  EXPECT_EQ(printed(true, std::chrono::hours(1)), "");
}

}  // namespace
}  // namespace kiln
