#include "kiln/server/json_constraint.h"

namespace kiln {
namespace {

bool blank(unsigned char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
bool digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool hex(unsigned char c) {
  return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr int kMaxBlankRun = 16;

}  // namespace

bool JsonPrefix::feed(const std::string& text) {
  for (unsigned char c : text)
    if (!feed(c)) return false;
  return true;
}

bool JsonPrefix::end_value() {
  if (stack_.empty()) {
    mode_ = Mode::Done;
    return true;
  }
  mode_ = Mode::After;
  return true;
}

bool JsonPrefix::number(unsigned char c) {
  switch (num_) {
    case 0:  // after '-'
      if (c == '0') return num_ = 1, true;
      if (digit(c)) return num_ = 2, true;
      return false;
    case 1:
    case 2:
      if (num_ == 2 && digit(c)) return true;
      if (c == '.') return num_ = 3, true;
      if (c == 'e' || c == 'E') return num_ = 5, true;
      break;
    case 3:
      return digit(c) ? (num_ = 4, true) : false;
    case 4:
      if (digit(c)) return true;
      if (c == 'e' || c == 'E') return num_ = 5, true;
      break;
    case 5:
      if (c == '+' || c == '-') return num_ = 6, true;
      return digit(c) ? (num_ = 7, true) : false;
    case 6:
      return digit(c) ? (num_ = 7, true) : false;
    case 7:
      if (digit(c)) return true;
      break;
  }
  // The number ended (only in a state where it may): c belongs to what follows.
  if (num_ == 0 || num_ == 3 || num_ == 5 || num_ == 6) return false;
  end_value();
  if (mode_ == Mode::Done) return false;  // a number is never the top level here
  return feed(c);
}

bool JsonPrefix::feed(unsigned char c) {
  const bool in_token = mode_ == Mode::String || mode_ == Mode::Escape ||
                        mode_ == Mode::Unicode || mode_ == Mode::Literal;
  if (!in_token && mode_ != Mode::Number && mode_ != Mode::Done && blank(c)) {
    if (++blank_run_ > kMaxBlankRun) return false;
    return true;
  }
  if (mode_ != Mode::Number) blank_run_ = 0;
  switch (mode_) {
    case Mode::Done:
      return false;
    case Mode::Start:
      if (c != '{') return false;
      stack_.push_back('{');
      mode_ = Mode::KeyFirst;
      return true;
    case Mode::KeyFirst:
    case Mode::Key:
      if (c == '"') {
        mode_ = Mode::String;
        string_is_key_ = true;
        return true;
      }
      if (c == '}' && mode_ == Mode::KeyFirst) {
        stack_.pop_back();
        return end_value();
      }
      return false;
    case Mode::Colon:
      if (c != ':') return false;
      mode_ = Mode::Value;
      return true;
    case Mode::ArrayFirst:
      if (c == ']') {
        stack_.pop_back();
        return end_value();
      }
      [[fallthrough]];
    case Mode::Value:
      if (c == '{') {
        stack_.push_back('{');
        mode_ = Mode::KeyFirst;
        return true;
      }
      if (c == '[') {
        stack_.push_back('[');
        mode_ = Mode::ArrayFirst;
        return true;
      }
      if (c == '"') {
        mode_ = Mode::String;
        string_is_key_ = false;
        return true;
      }
      if (c == '-' || digit(c)) {
        mode_ = Mode::Number;
        num_ = c == '-' ? 0 : c == '0' ? 1 : 2;
        return true;
      }
      if (c == 't' || c == 'f' || c == 'n') {
        literal_rest_ = c == 't' ? "rue" : c == 'f' ? "alse" : "ull";
        mode_ = Mode::Literal;
        return true;
      }
      return false;
    case Mode::After:
      if (c == ',') {
        mode_ = stack_.back() == '{' ? Mode::Key : Mode::Value;
        return true;
      }
      if ((c == '}' && stack_.back() == '{') || (c == ']' && stack_.back() == '[')) {
        stack_.pop_back();
        return end_value();
      }
      return false;
    case Mode::String:
      if (c == '"') {
        if (string_is_key_) {
          mode_ = Mode::Colon;
          return true;
        }
        return end_value();
      }
      if (c == '\\') {
        mode_ = Mode::Escape;
        return true;
      }
      return c >= 0x20;
    case Mode::Escape:
      if (c == 'u') {
        mode_ = Mode::Unicode;
        hex_left_ = 4;
        return true;
      }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
          c == 't') {
        mode_ = Mode::String;
        return true;
      }
      return false;
    case Mode::Unicode:
      if (!hex(c)) return false;
      if (--hex_left_ == 0) mode_ = Mode::String;
      return true;
    case Mode::Literal:
      if (literal_rest_.empty() || c != (unsigned char)literal_rest_[0]) return false;
      literal_rest_.erase(0, 1);
      if (literal_rest_.empty()) return end_value();
      return true;
    case Mode::Number:
      if (blank(c)) {
        if (num_ == 0 || num_ == 3 || num_ == 5 || num_ == 6) return false;
        end_value();
        blank_run_ = 1;
        return true;
      }
      return number(c);
  }
  return false;
}

bool JsonConstraint::allows(int32_t id) const {
  if (id < 0 || size_t(id) >= pieces_->size()) return false;
  const std::string& piece = (*pieces_)[size_t(id)];
  if (piece.empty()) return false;
  JsonPrefix copy = state_;
  return copy.feed(piece);
}

void JsonConstraint::accept(int32_t id) {
  if (id >= 0 && size_t(id) < pieces_->size()) state_.feed((*pieces_)[size_t(id)]);
}

}  // namespace kiln
