#include "kiln/chat/jinja_strings.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "kiln/core/error.h"

namespace kiln::jinja {
namespace {

[[noreturn]] void str_fail(const std::string& msg) { throw EvalError(msg); }

// Simple case mapping: ASCII, Latin-1, Greek and Cyrillic (the letters whose
// case pairs are a fixed offset apart); other characters are left as they are.
uint32_t map_case(uint32_t c, bool upper) {
  if (upper) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if ((c >= 0xe0 && c <= 0xfe && c != 0xf7) || (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) ||
        (c >= 0x430 && c <= 0x44f))
      return c - 32;
    if (c == 0x3c2) return 0x3a3;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
  } else {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) ||
        (c >= 0x410 && c <= 0x42f))
      return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
  }
  return c;
}

std::string change_case(std::string s, bool upper) {
  bool ascii = true;
  for (char& c : s) {
    if (static_cast<unsigned char>(c) >= 0x80)
      ascii = false;
    else
      c = char(map_case(uint32_t(static_cast<unsigned char>(c)), upper));
  }
  if (ascii) return s;
  std::string out;
  for (std::string_view ch : utf8_chars(s)) {
    if (ch.size() != 2) {  // the mapped ranges are all two-byte sequences
      out += ch;
      continue;
    }
    uint32_t c = ((uint32_t(static_cast<unsigned char>(ch[0])) & 0x1f) << 6) |
                 (uint32_t(static_cast<unsigned char>(ch[1])) & 0x3f);
    uint32_t m = map_case(c, upper);
    out += char(0xc0 | (m >> 6));
    out += char(0x80 | (m & 0x3f));
  }
  return out;
}
}  // namespace

std::string str_lower(std::string s) { return change_case(std::move(s), false); }
std::string str_upper(std::string s) { return change_case(std::move(s), true); }

// ------------------------------------------------------ Python str methods

static std::vector<std::string_view> char_set(const Value& chars) {
  return utf8_chars(chars.str());
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto cs = utf8_chars(s);
  std::vector<std::string_view> set;
  bool ws = !chars || chars->is_null() || chars->is_undefined();
  if (!ws) {
    if (!chars->is_string()) str_fail("strip arg must be None or str");
    set = char_set(*chars);
  }
  auto strip_it = [&](std::string_view ch) {
    if (ws) return is_py_space(ch);
    return std::find(set.begin(), set.end(), ch) != set.end();
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip_it(cs[b])) ++b;
  if (right)
    while (e > b && strip_it(cs[e - 1])) --e;
  if (b == e) return "";
  const char* start = cs[b].data();
  const char* end = cs[e - 1].data() + cs[e - 1].size();
  return std::string(start, end);
}

Json py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  Json out = Json::array();
  if (!sep || sep->is_null() || sep->is_undefined()) {
    // Runs of whitespace separate; leading and trailing whitespace is dropped.
    auto cs = utf8_chars(s);
    std::vector<std::pair<size_t, size_t>> words;  // [begin, end) char indices
    size_t i = 0;
    while (i < cs.size()) {
      while (i < cs.size() && is_py_space(cs[i])) ++i;
      if (i == cs.size()) break;
      size_t j = i;
      while (j < cs.size() && !is_py_space(cs[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    auto text = [&](size_t b, size_t e) {
      return std::string(cs[b].data(), cs[e - 1].data() + cs[e - 1].size());
    };
    if (maxsplit >= 0 && int64_t(words.size()) > maxsplit + 1) {
      if (!from_right) {
        for (int64_t k = 0; k < maxsplit; ++k) out.push_back(text(words[k].first, words[k].second));
        size_t last = words[size_t(maxsplit)].first;
        out.push_back(py_strip(text(last, cs.size()), nullptr, false, true));
      } else {
        size_t keep = words.size() - size_t(maxsplit);
        out.push_back(py_strip(text(0, words[keep - 1].second), nullptr, true, false));
        for (size_t k = keep; k < words.size(); ++k)
          out.push_back(text(words[k].first, words[k].second));
      }
      return out;
    }
    for (auto [b, e] : words) out.push_back(text(b, e));
    return out;
  }
  if (!sep->is_string()) str_fail("must be str or None");
  const std::string& sp = sep->str();
  if (sp.empty()) str_fail("empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0;
    int64_t splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
      size_t p = s.find(sp, start);
      if (p == std::string::npos) break;
      parts.push_back(s.substr(start, p - start));
      start = p + sp.size();
      ++splits;
    }
    parts.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    int64_t splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
      if (end < sp.size()) break;
      size_t p = s.rfind(sp, end - sp.size());
      if (p == std::string::npos) break;
      parts.insert(parts.begin(), s.substr(p + sp.size(), end - p - sp.size()));
      end = p;
      ++splits;
    }
    parts.insert(parts.begin(), s.substr(0, end));
  }
  for (auto& p : parts) out.push_back(std::move(p));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count) {
  std::string out;
  if (old.empty()) {
    int64_t done = 0;
    for (auto ch : utf8_chars(s)) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      out += ch;
    }
    if (count < 0 || done < count) out += repl;
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += repl;
    start = p + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string capitalize(const std::string& s) {
  std::string out = str_lower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = char(out[0] - 'a' + 'A');
  return out;
}

// Python's %-formatting for the conversions templates use.
std::string percent_format(const std::string& fmt, const std::vector<Value>& args) {
  std::string out;
  size_t ai = 0;
  auto next = [&]() -> const Value& {
    if (ai >= args.size()) str_fail("not enough arguments for format string");
    return args[ai++];
  };
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) str_fail("incomplete format");
    char c = fmt[i];
    if (c == '%') {
      out += '%';
    } else if (c == 's') {
      out += to_str(next());
    } else if (c == 'r') {
      out += repr(next());
    } else if (c == 'd' || c == 'i') {
      out += std::to_string(next().as_int());
    } else if (c == 'f') {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%f", next().as_double());
      out += buf;
    } else {
      str_fail(cat("unsupported format character '", c, "'"));
    }
  }
  return out;
}

// str.format() with {} / {0} / {name} fields.
std::string brace_format(const std::string& fmt, CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      size_t close = fmt.find('}', i);
      if (close == std::string::npos) str_fail("single '{' in format string");
      std::string field = fmt.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!") != std::string::npos)
        str_fail("unsupported format spec in str.format()");
      const Value* v = nullptr;
      if (field.empty()) {
        if (auto_index >= a.args.size()) str_fail("not enough arguments for str.format()");
        v = &a.args[auto_index++];
      } else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
        size_t k = std::stoul(field);
        if (k >= a.args.size()) str_fail("not enough arguments for str.format()");
        v = &a.args[k];
      } else {
        v = a.kwarg(field);
        if (!v) str_fail(cat("missing argument '", field, "' for str.format()"));
      }
      out += to_str(*v);
      i = close;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace kiln::jinja
