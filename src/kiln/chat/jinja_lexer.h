// Splits a Jinja template into text and the tokens of its {{ }} and {% %}
// tags, applying whitespace control as Hugging Face configures Jinja for chat
// templates: trim_blocks and lstrip_blocks on, `-` and `+` modifiers on tags,
// comments dropped, one trailing newline of the template removed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::jinja {

enum class TokType {
  Text,
  VarBegin,
  VarEnd,
  BlockBegin,
  BlockEnd,
  Name,
  String,
  Int,
  Float,
  Op,
  Eof
};

struct Token {
  TokType type;
  std::string text;  // text, name, operator, unescaped string, number spelling
  int line;
};

// Throws kiln::Error ("chat template line N: ...") on an unterminated tag,
// comment or string, or a character that starts no token.
std::vector<Token> tokenize(std::string_view source);

}  // namespace kiln::jinja
