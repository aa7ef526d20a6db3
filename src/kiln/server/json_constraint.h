// JSON mode (response_format {"type": "json_object"}): generation is kept to
// a valid JSON object. A character-level pushdown recogniser says whether a
// token's text can extend the output so far and still be the start of a
// JSON object; the output ends as soon as the object is closed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/server/scheduler.h"

namespace kiln {

class JsonPrefix {
 public:
  // Whether c can come next; if so it is taken.
  bool feed(unsigned char c);
  bool feed(const std::string& text);
  bool complete() const { return mode_ == Mode::Done; }

 private:
  enum class Mode {
    Start,        // before the top-level object
    Value,        // a value must come (after ':' or ',' in an array)
    ArrayFirst,   // after '[': a value or ']'
    KeyFirst,     // after '{': a key or '}'
    Key,          // after ',' in an object: a key
    Colon,        // after a key
    After,        // after a value: ',' or the closing bracket
    String,       // inside a string
    Escape,       // after a backslash
    Unicode,      // in \uXXXX
    Number,       // inside a number
    Literal,      // inside true/false/null
    Done,
  };
  bool end_value();  // a value has ended: what follows depends on the container
  bool number(unsigned char c);

  Mode mode_ = Mode::Start;
  std::vector<char> stack_;  // '{' or '['
  bool string_is_key_ = false;
  int hex_left_ = 0;
  std::string literal_rest_;
  // Number sub-state: 0 sign seen, 1 leading zero, 2 int digits, 3 '.', 4 frac
  // digits, 5 'e', 6 exponent sign, 7 exponent digits.
  int num_ = 0;
  int blank_run_ = 0;  // consecutive whitespace, bounded so output cannot idle forever
};

// pieces[id]: the bytes of each token; empty for tokens never allowed
// (control tokens).
class JsonConstraint final : public TokenConstraint {
 public:
  explicit JsonConstraint(std::shared_ptr<const std::vector<std::string>> pieces)
      : pieces_(std::move(pieces)) {}
  bool allows(int32_t id) const override;
  void accept(int32_t id) override;
  bool complete() const override { return state_.complete(); }

 private:
  std::shared_ptr<const std::vector<std::string>> pieces_;
  JsonPrefix state_;
};

}  // namespace kiln
