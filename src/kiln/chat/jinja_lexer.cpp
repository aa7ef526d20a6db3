#include "kiln/chat/jinja_lexer.h"

#include <algorithm>
#include <cctype>

#include "kiln/core/error.h"

namespace kiln::jinja {
namespace {

enum class TagKind { Var, Block, Comment };

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xc0 | (c >> 6));
    out += char(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += char(0xe0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  } else {
    out += char(0xf0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3f));
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Newlines are normalized and one trailing newline dropped, as Jinja does.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    const size_t n = src_.size();
    while (true) {
      size_t t = find_opener(pos);
      size_t text_end = t == std::string::npos ? n : t;
      TagKind kind = TagKind::Var;
      char lmod = 0;
      if (t != std::string::npos) {
        kind = src_[t + 1] == '{'   ? TagKind::Var
               : src_[t + 1] == '%' ? TagKind::Block
                                    : TagKind::Comment;
        if (t + 2 < n && (src_[t + 2] == '-' || src_[t + 2] == '+')) lmod = src_[t + 2];
        text_end = strip_before(pos, text_end, kind, lmod);
      }
      if (text_end > pos) emit(TokType::Text, src_.substr(pos, text_end - pos), pos);
      if (t == std::string::npos) break;
      size_t body = t + 2 + (lmod ? 1 : 0);
      char rmod = 0;
      size_t end;
      if (kind == TagKind::Comment) {
        size_t c = src_.find("#}", body);
        if (c == std::string::npos) fail_at(t, "unterminated comment");
        if (c > body && (src_[c - 1] == '-' || src_[c - 1] == '+')) rmod = src_[c - 1];
        end = c + 2;
      } else {
        end = lex_tag(kind, t, body, &rmod);
      }
      pos = strip_after(end, kind, rmod);
      if (kind == TagKind::Block && is_raw_open()) pos = lex_raw(pos, t);
    }
    emit(TokType::Eof, "", n);
    return std::move(tokens_);
  }

 private:
  int line_of(size_t offset) const {
    return int(std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) -
               line_starts_.begin()) +
           1;
  }

  [[noreturn]] void fail_at(size_t offset, const std::string& what) const {
    fail("chat template line ", line_of(offset), ": ", what);
  }

  void emit(TokType type, std::string text, size_t offset) {
    tokens_.push_back({type, std::move(text), line_of(offset)});
  }

  size_t find_opener(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return std::string::npos;
  }

  // Whitespace before a tag: `-` strips all of it; otherwise lstrip_blocks
  // removes spaces and tabs between the start of the line and a block or comment.
  size_t strip_before(size_t begin, size_t end, TagKind kind, char lmod) const {
    if (lmod == '-') {
      while (end > begin && is_ws(src_[end - 1])) --end;
      return end;
    }
    if (lmod == '+' || kind == TagKind::Var) return end;
    size_t nl = src_.rfind('\n', end == 0 ? 0 : end - 1);
    size_t line_start;
    if (nl != std::string::npos && nl >= begin && end > 0)
      line_start = nl + 1;
    else if (begin == 0 || src_[begin - 1] == '\n')
      line_start = begin;
    else
      return end;
    for (size_t i = line_start; i < end; ++i)
      if (!is_ws(src_[i])) return end;
    return line_start;
  }

  // Whitespace after a tag: `-` strips all of it; otherwise trim_blocks
  // removes the newline right after a block or comment.
  size_t strip_after(size_t pos, TagKind kind, char rmod) const {
    if (rmod == '-') {
      while (pos < src_.size() && is_ws(src_[pos])) ++pos;
    } else if (rmod != '+' && kind != TagKind::Var && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    return pos;
  }

  bool is_raw_open() const {
    size_t k = tokens_.size();
    return k >= 3 && tokens_[k - 1].type == TokType::BlockEnd &&
           tokens_[k - 2].type == TokType::Name && tokens_[k - 2].text == "raw" &&
           tokens_[k - 3].type == TokType::BlockBegin;
  }

  // {% raw %}...{% endraw %}: the content is text, tags in it are not parsed.
  size_t lex_raw(size_t pos, size_t raw_tag) {
    tokens_.resize(tokens_.size() - 3);
    for (size_t t = find_opener(pos); t != std::string::npos; t = find_opener(t + 1)) {
      if (src_[t + 1] != '%') continue;
      size_t i = t + 2;
      char lmod = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) lmod = src_[i++];
      while (i < src_.size() && is_ws(src_[i])) ++i;
      if (src_.compare(i, 6, "endraw") != 0) continue;
      i += 6;
      while (i < src_.size() && is_ws(src_[i])) ++i;
      char rmod = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) rmod = src_[i++];
      if (src_.compare(i, 2, "%}") != 0) continue;
      size_t text_end = strip_before(pos, t, TagKind::Block, lmod);
      if (text_end > pos) emit(TokType::Text, src_.substr(pos, text_end - pos), pos);
      return strip_after(i + 2, TagKind::Block, rmod);
    }
    fail_at(raw_tag, "unterminated {% raw %} block (no {% endraw %})");
  }

  size_t lex_tag(TagKind kind, size_t open, size_t i, char* rmod) {
    emit(kind == TagKind::Var ? TokType::VarBegin : TokType::BlockBegin, "", open);
    const char close = kind == TagKind::Var ? '}' : '%';
    const char* close_name = kind == TagKind::Var ? "}}" : "%}";
    int depth = 0;
    std::string brackets;  // closers expected, innermost last
    const size_t n = src_.size();
    while (true) {
      while (i < n && is_ws(src_[i])) ++i;
      if (i >= n) fail_at(open, cat("unterminated tag (no '", close_name, "')"));
      char c = src_[i];
      if (depth == 0) {
        if (c == close && i + 1 < n && src_[i + 1] == '}') {
          emit(kind == TagKind::Var ? TokType::VarEnd : TokType::BlockEnd, "", i);
          return i + 2;
        }
        if ((c == '-' || c == '+') && i + 2 < n && src_[i + 1] == close && src_[i + 2] == '}') {
          *rmod = c;
          emit(kind == TagKind::Var ? TokType::VarEnd : TokType::BlockEnd, "", i);
          return i + 3;
        }
      }
      if (is_name_start(c)) {
        size_t j = i;
        while (j < n && is_name_char(src_[j])) ++j;
        emit(TokType::Name, src_.substr(i, j - i), i);
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        i = lex_number(i);
      } else if (c == '\'' || c == '"') {
        i = lex_string(i);
      } else {
        static const char* two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : two)
          if (src_.compare(i, 2, t) == 0) op = t;
        if (op.empty()) {
          if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) == std::string_view::npos)
            fail_at(i, cat("unexpected character '", c, "' in tag"));
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") {
          brackets.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (brackets.empty()) fail_at(i, cat("unexpected '", op, "'"));
          if (brackets.back() != op[0])
            fail_at(i, cat("unexpected '", op, "', expected '", brackets.back(), "'"));
          brackets.pop_back();
        }
        depth = int(brackets.size());
        emit(TokType::Op, op, i);
        i += op.size();
      }
    }
  }

  size_t lex_number(size_t i) {
    const size_t n = src_.size();
    auto digits = [&](size_t j) {
      while (j < n && (std::isdigit(static_cast<unsigned char>(src_[j])) ||
                       (src_[j] == '_' && j + 1 < n &&
                        std::isdigit(static_cast<unsigned char>(src_[j + 1])))))
        ++j;
      return j;
    };
    size_t j = digits(i);
    bool is_float = false;
    // After '.', as in messages.0, only an integer: the attribute index.
    bool after_dot =
        !tokens_.empty() && tokens_.back().type == TokType::Op && tokens_.back().text == ".";
    if (!after_dot && j + 1 < n && src_[j] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
      j = digits(j + 1);
      is_float = true;
    }
    if (!after_dot && j < n && (src_[j] == 'e' || src_[j] == 'E')) {
      size_t k = j + 1;
      if (k < n && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        j = digits(k);
        is_float = true;
      }
    }
    std::string text;
    for (size_t k = i; k < j; ++k)
      if (src_[k] != '_') text += src_[k];
    emit(is_float ? TokType::Float : TokType::Int, text, i);
    return j;
  }

  // String literals unescape like Python's: \n, \t, \xhh, \uXXXX, ...;
  // an unknown escape keeps its backslash.
  size_t lex_string(size_t i) {
    const char q = src_[i];
    const size_t n = src_.size();
    std::string out;
    size_t j = i + 1;
    auto hex = [&](size_t at, int count) -> long {
      if (at + count > n) return -1;
      long v = 0;
      for (int k = 0; k < count; ++k) {
        char h = src_[at + k];
        if (!std::isxdigit(static_cast<unsigned char>(h))) return -1;
        v = v * 16 +
            (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      return v;
    };
    while (true) {
      if (j >= n) fail_at(i, "unterminated string literal");
      char c = src_[j];
      if (c == q) break;
      if (c != '\\') {
        out += c;
        ++j;
        continue;
      }
      if (j + 1 >= n) fail_at(i, "unterminated string literal");
      char e = src_[j + 1];
      j += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          int count = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          long v = hex(j, count);
          if (v < 0) fail_at(j, cat("bad \\", e, " escape in string literal"));
          append_utf8(out, uint32_t(v));
          j += size_t(count);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = uint32_t(e - '0');
            for (int k = 0; k < 2 && j < n && src_[j] >= '0' && src_[j] <= '7'; ++k, ++j)
              v = v * 8 + uint32_t(src_[j] - '0');
            append_utf8(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    emit(TokType::String, out, i);
    return j + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace kiln::jinja
