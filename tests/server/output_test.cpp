// The pieces between tokens and the API: the JSON-mode recogniser and the
// tool-call parser.
#include <gtest/gtest.h>

#include "kiln/server/json_constraint.h"
#include "kiln/server/output.h"

namespace kiln {
namespace {

bool accepts(const std::string& text) {
  JsonPrefix p;
  return p.feed(text);
}
bool complete(const std::string& text) {
  JsonPrefix p;
  return p.feed(text) && p.complete();
}

TEST(JsonPrefix, AcceptsPrefixesOfObjects) {
  for (const char* ok : {"{", " {", "{\"a\"", "{\"a\": 1", "{\"a\": -1.5e+3, \"b\": [tr",
                         "{\"k\": \"\\u00e9\\n\"", "{\"a\": {\"b\": []}", "{\"a\": nul"})
    EXPECT_TRUE(accepts(ok)) << ok;
  for (const char* bad : {"[", "1", "\"x\"", "{a", "{\"a\" 1", "{\"a\": 01", "{\"a\": 1,}",
                          "{\"a\": [1,]", "{\"a\": tru e", "{\"a\": \"\\x\"", "{}}", "{\"a\": 1]"})
    EXPECT_FALSE(accepts(bad)) << bad;
}

TEST(JsonPrefix, CompleteWhenTheObjectCloses) {
  EXPECT_TRUE(complete("{}"));
  EXPECT_TRUE(complete("{\"a\": [1, 2.5, {\"b\": null}], \"c\": false}"));
  EXPECT_FALSE(complete("{\"a\": 1"));
  JsonPrefix p;
  ASSERT_TRUE(p.feed("{\"n\": 12}"));
  EXPECT_FALSE(p.feed(" "));  // nothing may follow
}

TEST(JsonPrefix, BoundsWhitespaceRuns) {
  EXPECT_TRUE(accepts("{" + std::string(16, ' ')));
  EXPECT_FALSE(accepts("{" + std::string(17, ' ')));
}

TEST(JsonConstraint, JudgesTokensByTheirBytes) {
  auto pieces = std::make_shared<std::vector<std::string>>(
      std::vector<std::string>{"{", "\"a\"", ":", " 1", "}", "", "x"});
  JsonConstraint c(pieces);
  EXPECT_TRUE(c.allows(0));
  EXPECT_FALSE(c.allows(6));
  EXPECT_FALSE(c.allows(5));  // control tokens (no bytes) never
  for (int id : {0, 1, 2, 3}) {
    ASSERT_TRUE(c.allows(id));
    c.accept(id);
  }
  EXPECT_FALSE(c.complete());
  c.accept(4);
  EXPECT_TRUE(c.complete());
}

TEST(ToolCalls, ParsedOutOfTheText) {
  std::string rest;
  auto calls = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\"}</tool_call>",
      &rest);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(nlohmann::json::parse(calls[0]["function"]["arguments"].get<std::string>())["city"],
            "Paris");
  EXPECT_EQ(calls[1]["function"]["arguments"], "{}");
  EXPECT_NE(calls[0]["id"], calls[1]["id"]);
  EXPECT_EQ(rest, "Let me check.");
}

TEST(ToolCalls, NotACallStaysText) {
  std::string rest;
  auto calls = parse_tool_calls("a <tool_call>not json</tool_call> b", &rest);
  EXPECT_TRUE(calls.empty());
  EXPECT_EQ(rest, "a <tool_call>not json</tool_call> b");
}

}  // namespace
}  // namespace kiln
