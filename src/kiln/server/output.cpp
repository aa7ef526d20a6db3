#include "kiln/server/output.h"

#include <atomic>

namespace kiln {
namespace {

constexpr const char* kOpen = "<tool_call>";
constexpr const char* kClose = "</tool_call>";

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \n\r\t");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \n\r\t");
  return s.substr(a, b - a + 1);
}

std::string call_id() {
  static std::atomic<uint64_t> n{0};
  char buf[32];
  std::snprintf(buf, sizeof buf, "call_%08llx", (unsigned long long)(++n * 2654435761u));
  return buf;
}

}  // namespace

OutputAssembler::OutputAssembler(const Tokenizer& tok, const ChatFormat* format,
                                 bool starts_in_thought, std::vector<std::string> stops,
                                 bool parse_tools)
    : tok_(tok), format_(format), thought_text_(tok, true), answer_text_(tok, true),
      stops_(std::move(stops)), parse_tools_(parse_tools) {
  if (format && format->think_start_id >= 0) thought_.emplace(*format, starts_in_thought);
}

OutputDelta OutputAssembler::push(int32_t id) {
  OutputDelta d;
  if (stops_.stopped()) return d;
  if (thought_ && thought_->push(id)) {
    // The <think> markers themselves are not shown.
    if (id == format_->think_start_id || id == format_->think_end_id) return d;
    d.reasoning = thought_text_.push(id);
    reasoning_ += d.reasoning;
    return d;
  }
  return answer_text(stops_.push(answer_text_.push(id)), false);
}

OutputDelta OutputAssembler::finish() {
  OutputDelta d;
  d.reasoning = thought_text_.flush();
  reasoning_ += d.reasoning;
  std::string rest = stops_.push(answer_text_.flush());
  rest += stops_.flush();
  OutputDelta a = answer_text(rest, true);
  d.content = a.content;
  return d;
}

// With tool parsing, text from <tool_call> on is held back (it is returned
// as tool_calls), and so is a tail that may be the start of one.
OutputDelta OutputAssembler::answer_text(const std::string& piece, bool final) {
  OutputDelta d;
  answer_ += piece;
  size_t show = answer_.size();
  if (parse_tools_) {
    const size_t at = answer_.find(kOpen);
    if (at != std::string::npos) {
      show = at;
    } else if (!final) {
      const std::string open = kOpen;
      for (size_t n = std::min(open.size() - 1, answer_.size()); n > 0; --n)
        if (answer_.compare(answer_.size() - n, n, open, 0, n) == 0) {
          show = answer_.size() - n;
          break;
        }
    }
  }
  if (show > answer_shown_) {
    d.content = answer_.substr(answer_shown_, show - answer_shown_);
    answer_shown_ = show;
  }
  return d;
}

std::string OutputAssembler::content() const {
  if (!parse_tools_) return answer_;
  std::string rest;
  parse_tool_calls(answer_, &rest);
  return rest;
}

nlohmann::json OutputAssembler::tool_calls() const {
  if (!parse_tools_) return nlohmann::json::array();
  return parse_tool_calls(answer_, nullptr);
}

nlohmann::json parse_tool_calls(const std::string& text, std::string* rest) {
  nlohmann::json calls = nlohmann::json::array();
  std::string outside;
  size_t pos = 0;
  for (;;) {
    const size_t a = text.find(kOpen, pos);
    if (a == std::string::npos) break;
    const size_t body = a + std::string(kOpen).size();
    size_t b = text.find(kClose, body);
    const bool closed = b != std::string::npos;
    if (!closed) b = text.size();
    nlohmann::json call = nlohmann::json::parse(text.substr(body, b - body), nullptr, false);
    if (call.is_discarded() || !call.is_object() || !call.contains("name") ||
        !call["name"].is_string()) {
      // Not a call after all: keep it as text.
      outside += text.substr(pos, (closed ? b + std::string(kClose).size() : b) - pos);
      pos = closed ? b + std::string(kClose).size() : b;
      continue;
    }
    outside += text.substr(pos, a - pos);
    nlohmann::json args = call.contains("arguments") ? call["arguments"] : nlohmann::json::object();
    calls.push_back({{"id", call_id()},
                     {"type", "function"},
                     {"function",
                      {{"name", call["name"]},
                       {"arguments", args.is_string() ? args.get<std::string>() : args.dump()}}}});
    pos = closed ? b + std::string(kClose).size() : b;
  }
  outside += text.substr(std::min(pos, text.size()));
  if (rest) *rest = calls.empty() ? text : trim(outside);
  return calls;
}

}  // namespace kiln
