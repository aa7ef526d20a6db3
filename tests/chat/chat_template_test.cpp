// The ChatTemplate API, error reporting, and real templates beyond the goldens.
#include "kiln/chat/chat_template.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "kiln/core/error.h"

using namespace kiln;
using json = nlohmann::json;

namespace {

std::string data(const std::string& name) { return std::string(KILN_TEST_DATA) + "/chat/" + name; }

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string render(const std::string& src, const json& messages = json::array(),
                   ChatTemplateOptions opt = {}) {
  return ChatTemplate::parse(src).render(messages, opt);
}

// The message of the kiln::Error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& src) {
  return error_of([&] { ChatTemplate::parse(src); });
}

std::string render_error(const std::string& src, const json& messages = json::array()) {
  ChatTemplate t = ChatTemplate::parse(src);
  return error_of([&] { t.render(messages, {}); });
}

// ------------------------------------------------------------ errors

TEST(ChatTemplateErrors, UnsupportedFilterNamesLineAndFilter) {
  EXPECT_EQ(parse_error("a\nb\n{{ x | wordcount }}"),
            "chat template line 3: unsupported filter 'wordcount'");
}

TEST(ChatTemplateErrors, UnsupportedTestTagAndFunction) {
  EXPECT_EQ(parse_error("{% if x is prime %}{% endif %}"),
            "chat template line 1: unsupported test 'prime'");
  EXPECT_EQ(parse_error("\n{% include 'other.jinja' %}"),
            "chat template line 2: unsupported tag 'include'");
  EXPECT_EQ(parse_error("{% for x in y recursive %}{% endfor %}"),
            "chat template line 1: unsupported construct 'recursive' loop");
  EXPECT_EQ(render_error("\n\n{{ lipsum(2) }}"),
            "chat template line 3: unsupported function 'lipsum'");
  EXPECT_EQ(render_error("{{ 'abc'.zfill(5) }}"),
            "chat template line 1: unsupported method 'zfill' of str");
}

TEST(ChatTemplateErrors, SyntaxErrors) {
  EXPECT_EQ(parse_error("{% if x %}\nunclosed"),
            "chat template line 2: missing '{% endif %}' at the end of the template");
  EXPECT_EQ(parse_error("{{ 'abc }}"), "chat template line 1: unterminated string literal");
  EXPECT_EQ(parse_error("ok\n{{ x "), "chat template line 2: unterminated tag (no '}}')");
  EXPECT_EQ(parse_error("{# never closed"), "chat template line 1: unterminated comment");
  EXPECT_EQ(parse_error("{% endfor %}"), "chat template line 1: unexpected '{% endfor %}'");
  EXPECT_EQ(parse_error("{{ (1 + }}"), "chat template line 1: unexpected '}', expected ')'");
  EXPECT_EQ(parse_error("{% set x 1 %}"), "chat template line 1: expected '=', got '1'");
  EXPECT_EQ(parse_error("{{ a ; b }}"), "chat template line 1: unexpected character ';' in tag");
  EXPECT_EQ(parse_error("{{ 1 + 2 3 }}"), "chat template line 1: expected '}}', got '3'");
  EXPECT_EQ(parse_error("{% if %}{% endif %}"),
            "chat template line 1: expected an expression, got '%}'");
}

TEST(ChatTemplateErrors, RuntimeErrorsNameTheLine) {
  EXPECT_EQ(render_error("line1\n{{ raise_exception('Roles must alternate') }}"),
            "chat template line 2: error raised by the template: Roles must alternate");
  EXPECT_EQ(render_error("\n{{ missing + 1 }}"),
            "chat template line 2: an undefined value used with '+'");
  EXPECT_EQ(render_error("{{ 'a' + 1 }}"),
            "chat template line 1: unsupported operand types for +: 'str' and 'int'");
  EXPECT_EQ(render_error("{{ messages[0].x.y }}", json::array({json::object()})),
            "chat template line 1: 'messages[0].x' is undefined (reading its attribute 'y')");
  EXPECT_EQ(
      render_error("{% set x = 1 %}{% set x.a = 2 %}"),
      "chat template line 1: cannot set attribute 'a' of 'x': only a namespace() has assignable "
      "attributes");
  EXPECT_EQ(render_error("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}"),
            "chat template line 1: macro 'f' takes 1 arguments, got 2");
}

TEST(ChatTemplateErrors, BadMessagesAreErrorsNotCrashes) {
  EXPECT_THROW(render("{{ messages }}", json::object()), kiln::Error);
  ChatTemplateOptions opt;
  opt.extra = json::array();
  EXPECT_THROW(render("x", json::array(), opt), kiln::Error);
  // A template that recurses forever stops with an error.
  EXPECT_NE(
      render_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("recurses too deep"),
      std::string::npos);
}

// ------------------------------------------------------------ interpreter

TEST(Jinja, UndefinedRendersEmpty) {
  EXPECT_EQ(render("[{{ nothing }}][{{ nothing is defined }}][{{ nothing ~ 'x' }}]"),
            "[][False][x]");
  EXPECT_EQ(render("{% for x in nothing %}x{% endfor %}{{ nothing|length }}{{ 'a' in nothing }}"),
            "0False");
  EXPECT_EQ(render("{{ messages[5] }}|{{ messages[5] is defined }}"), "|False");
}

TEST(Jinja, TrimAndLstripBlocks) {
  EXPECT_EQ(render("<\n  {% if true %}\n  x\n  {% endif %}\n>"), "<\n  x\n>");
  EXPECT_EQ(render("  {{ 'kept' }}\n"), "  kept");  // expressions are not lstripped
}

TEST(Jinja, NamespaceAndReversedLoop) {
  const char* src =
      "{% set ns = namespace(last=-1) %}"
      "{% for m in messages[::-1] %}{% set i = (messages|length - 1) - loop.index0 %}"
      "{% if ns.last == -1 and m.role == 'user' %}{% set ns.last = i %}{% endif %}{% endfor %}"
      "{{ ns.last }}";
  json msgs =
      json::parse(R"([{"role":"user"},{"role":"assistant"},{"role":"user"},{"role":"assistant"}])");
  EXPECT_EQ(render(src, msgs), "2");
}

TEST(Jinja, ContentParts) {
  const char* src =
      "{% for m in messages %}{% if m.content is string %}{{ m.content }}"
      "{% else %}{% for p in m.content %}{% if p.type == 'image' %}<img>"
      "{% elif p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %};{% endfor %}";
  json msgs = json::parse(R"([
    {"role":"user","content":[{"type":"image","image":"a.png"},{"type":"text","text":"what?"}]},
    {"role":"assistant","content":"a cat"}])");
  EXPECT_EQ(render(src, msgs), "<img>what?;a cat;");
}

TEST(Jinja, TojsonKeepsKeyOrderOfOrderedInput) {
  auto tools =
      nlohmann::ordered_json::parse(R"([{"type":"function","function":{"name":"f","b":1,"a":2}}])");
  ChatTemplateOptions opt;
  opt.tools = tools;
  EXPECT_EQ(render("{{ tools[0] | tojson }}", json::array(), opt),
            R"({"type": "function", "function": {"name": "f", "b": 1, "a": 2}})");
}

TEST(Jinja, GenerationTagRendersItsBody) {
  EXPECT_EQ(render("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(Jinja, PythonReprOfValues) {
  EXPECT_EQ(render("{{ [1.5, 'x', none, true, {'k': \"it's\"}] }}"),
            "[1.5, 'x', None, True, {'k': \"it's\"}]");
  EXPECT_EQ(render("{{ 1e16 }} {{ 123456789.0 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }}"),
            "1e+16 123456789.0 0.30000000000000004 0.3333333333333333");
}

// ------------------------------------------------------------ options and files

TEST(ChatTemplate, OptionsBecomeVariables) {
  const char* src =
      "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ enable_thinking is defined }}"
      "|{{ tools is none }}|{{ custom }}";
  ChatTemplateOptions opt;
  opt.bos_token = "<s>";
  opt.eos_token = "</s>";
  opt.add_generation_prompt = false;
  opt.extra = json{{"custom", "yes"}};
  EXPECT_EQ(render(src, json::array(), opt), "<s>|</s>|False|False|True|yes");
  opt.enable_thinking = false;
  EXPECT_EQ(render("{{ enable_thinking }}", json::array(), opt), "False");
}

TEST(ChatTemplate, FindsTemplateInFolder) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("kiln_chat_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  EXPECT_FALSE(find_chat_template(dir.string()).has_value());
  {
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"chat_template": [{"name": "tool_use", "template": "T"},)"
        << R"( {"name": "default", "template": "D"}]})";
  }
  EXPECT_EQ(find_chat_template(dir.string()).value_or("?"), "D");
  { std::ofstream(dir / "chat_template.jinja") << "J"; }
  EXPECT_EQ(find_chat_template(dir.string()).value_or("?"), "J");
  fs::remove_all(dir);

  auto config = json::parse(read(data("llama3.tokenizer_config.json")));
  EXPECT_EQ(special_token_from_config(config, "bos_token"), "<|begin_of_text|>");
  EXPECT_EQ(special_token_from_config(json{{"eos_token", {{"content", "</s>"}}}}, "eos_token"),
            "</s>");
  EXPECT_EQ(special_token_from_config(json{{"bos_token", nullptr}}, "bos_token"), "");
}

// ------------------------------------------------------------ SmolLM3

TEST(SmolLM3, RendersTwoTurns) {
  ChatTemplate t = ChatTemplate::parse(read(data("smollm3-3b.chat_template.jinja")));
  json msgs = json::parse(R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"}])");
  ChatTemplateOptions opt;
  std::string out = t.render(msgs, opt);
  EXPECT_EQ(
      out.rfind("<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: ",
                0),
      0u)
      << out;
  EXPECT_NE(out.find("Reasoning Mode: /think\n\n"), std::string::npos);
  EXPECT_NE(out.find("## Custom Instructions\n\nYou are terse.\n\n"), std::string::npos);
  EXPECT_NE(out.find("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"),
            std::string::npos);
  const std::string end = "Bye<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(out.substr(out.size() - end.size()), end) << out;

  opt.enable_thinking = false;
  out = t.render(msgs, opt);
  EXPECT_NE(out.find("Reasoning Mode: /no_think"), std::string::npos);
  EXPECT_NE(out.find("<|im_start|>assistant\n<think>\n\n</think>\nHello.<|im_end|>"),
            std::string::npos);
  const std::string tail = "<|im_start|>assistant\n<think>\n\n</think>\n";
  EXPECT_EQ(out.substr(out.size() - tail.size()), tail);
}

// ------------------------------------------------------------ kiln template

TEST(TemplateCommand, PrintsExactlyTheGolden) {
  if (!std::filesystem::exists(KILN_BINARY)) GTEST_SKIP() << "kiln is not built";
  auto cases = json::parse(read(data("qwen3.chat.json")));
  const json& c = cases[2];  // generation prompt, enable_thinking=false
  ASSERT_FALSE(c["options"].value("enable_thinking", true));
  std::string msgs = (std::filesystem::temp_directory_path() /
                      ("kiln_chat_msgs_" + std::to_string(::getpid()) + ".json"))
                         .string();
  { std::ofstream(msgs) << c["messages"].dump(); }
  std::string cmd = std::string(KILN_BINARY) + " template " + data("qwen3.tokenizer_config.json") +
                    " --messages " + msgs + " --add-generation-prompt --no-think";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0);
  std::filesystem::remove(msgs);
  EXPECT_EQ(out, c["rendered"].get<std::string>());
}

}  // namespace
