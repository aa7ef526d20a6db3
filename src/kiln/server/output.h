// Turns a request's generated tokens into what the API returns: text that
// is valid UTF-8 at every step, the thought (reasoning_content) apart from
// the answer, stop strings cut off, and tool calls (<tool_call>{json}</tool_call>,
// the Hermes/Qwen convention) taken out of the answer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/runtime/chat_format.h"
#include "kiln/runtime/stop_strings.h"
#include "kiln/runtime/thinking.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

struct OutputDelta {
  std::string reasoning, content;
  bool empty() const { return reasoning.empty() && content.empty(); }
};

class OutputAssembler {
 public:
  // format: null for plain completions (no thought, no tools).
  OutputAssembler(const Tokenizer& tokenizer, const ChatFormat* format, bool starts_in_thought,
                  std::vector<std::string> stop_strings, bool parse_tools);
  OutputDelta push(int32_t id);
  OutputDelta finish();
  // A stop string appeared: generation should end.
  bool stopped() const { return stops_.stopped(); }

  const std::string& reasoning() const { return reasoning_; }
  // The answer; with tool parsing, the text outside the tool calls.
  std::string content() const;
  // [{id, type: function, function: {name, arguments (a JSON string)}}]; empty if none.
  nlohmann::json tool_calls() const;

 private:
  OutputDelta answer_text(const std::string& piece, bool final);

  const Tokenizer& tok_;
  const ChatFormat* format_;
  std::optional<ThoughtTracker> thought_;
  StreamingDecoder thought_text_, answer_text_;
  StopStrings stops_;
  bool parse_tools_;
  std::string reasoning_, answer_;  // all of each so far
  size_t answer_shown_ = 0;         // bytes of answer_ already passed on as content
};

// The tool calls in text, and the text without them.
nlohmann::json parse_tool_calls(const std::string& text, std::string* rest);

}  // namespace kiln
