#include <gtest/gtest.h>

#include "kiln/runtime/stop_strings.h"

namespace kiln {
namespace {

std::string feed(StopStrings& s, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += s.push(p);
  return out + s.flush();
}

TEST(StopStrings, CutsAtTheStopStringEvenAcrossPieces) {
  StopStrings s({"END"});
  EXPECT_EQ(feed(s, {"hello E", "N", "D and more"}), "hello ");
  EXPECT_TRUE(s.stopped());
}

TEST(StopStrings, HoldsBackOnlyWhatCouldStartAStop) {
  StopStrings s({"###"});
  EXPECT_EQ(s.push("ab#"), "ab");  // '#' might begin "###"
  EXPECT_EQ(s.push("x"), "#x");    // it did not
  EXPECT_EQ(s.flush(), "");
  EXPECT_FALSE(s.stopped());
}

TEST(StopStrings, EarliestOfSeveralWins) {
  StopStrings s({"world", "lo w"});
  EXPECT_EQ(feed(s, {"hello world"}), "hel");
}

TEST(StopStrings, NoStopsPassEverything) {
  StopStrings s({});
  EXPECT_EQ(feed(s, {"a", "b"}), "ab");
}

}  // namespace
}  // namespace kiln
