// Differential tests: each case of tests/data/chat/jinja_cases.json was
// rendered by Python Jinja2 configured as transformers configures it for chat
// templates (make_jinja_cases.py). The interpreter must produce the same
// text, byte for byte, or fail where Jinja2 fails.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/chat/jinja_eval.h"
#include "kiln/chat/jinja_parser.h"
#include "kiln/core/error.h"

using namespace kiln;
using namespace kiln::jinja;

namespace {

std::string read(const std::string& name) {
  std::ifstream in(std::string(KILN_TEST_DATA) + "/chat/" + name, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Json& cases() {
  static const Json c = [] {
    std::string text = read("jinja_cases.json");
    return text.empty() ? Json::array() : Json::parse(text);
  }();
  return c;
}

std::string template_of(const Json& c) {
  if (c.contains("template")) return c["template"].get<std::string>();
  std::string file = c["template_file"].get<std::string>();
  std::string text = read(file);
  if (file.size() > 5 && file.substr(file.size() - 5) == ".json")
    return Json::parse(text)["chat_template"].get<std::string>();
  return text;
}

class JinjaCase : public ::testing::TestWithParam<size_t> {};

TEST_P(JinjaCase, MatchesPythonJinja2) {
  const Json& c = cases()[GetParam()];
  const std::string source = template_of(c);
  SCOPED_TRACE("template: " + source.substr(0, 300));
  std::vector<std::pair<std::string, Value>> globals;
  for (auto it = c["context"].begin(); it != c["context"].end(); ++it)
    globals.emplace_back(it.key(), Value(it.value()));
  // The generator pinned the date; so does the test.
  auto fixed_date = std::make_shared<Callable>();
  fixed_date->name = "strftime_now";
  fixed_date->fn = [](CallArgs&) { return Value("01 January 2025"); };
  globals.emplace_back("strftime_now", Value::callable(fixed_date));

  if (c.value("error", false)) {
    EXPECT_THROW(render(parse(source), globals), kiln::Error) << c["message"];
    return;
  }
  std::string out;
  try {
    out = render(parse(source), globals);
  } catch (const kiln::Error& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(out, c["rendered"].get<std::string>());
}

std::vector<size_t> indices() {
  std::vector<size_t> v(cases().size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Python, JinjaCase, ::testing::ValuesIn(indices()));

TEST(JinjaCases, FilePresent) { EXPECT_GE(cases().size(), 90u); }

}  // namespace
