#include "kiln/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace kiln::jinja {

const Value* Object::find(std::string_view name) const {
  for (const auto& [k, v] : attrs)
    if (k == name) return &v;
  return nullptr;
}

void Object::set(const std::string& name, Value v) {
  for (auto& [k, old] : attrs) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  attrs.emplace_back(name, std::move(v));
}

const Value* CallArgs::kwarg(std::string_view name) const {
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return nullptr;
}

Value::Value(Json j) : kind_(Kind::Json) {
  auto owned = std::make_shared<const Json>(std::move(j));
  node_ = owned.get();
  owner_ = std::move(owned);
}

Value Value::borrow(std::shared_ptr<const Json> owner, const Json* node) {
  Value v;
  v.kind_ = Kind::Json;
  v.owner_ = std::move(owner);
  v.node_ = node;
  return v;
}

Value Value::object(std::shared_ptr<Object> o) {
  Value v;
  v.kind_ = Kind::Object;
  v.object_ = std::move(o);
  return v;
}

Value Value::callable(std::shared_ptr<Callable> c) {
  Value v;
  v.kind_ = Kind::Callable;
  v.callable_ = std::move(c);
  return v;
}

int64_t Value::as_int() const {
  if (is_bool()) return node_->get<bool>() ? 1 : 0;
  if (is_int()) {
    if (node_->is_number_unsigned()) return int64_t(node_->get<uint64_t>());
    return node_->get<int64_t>();
  }
  if (is_float()) return int64_t(node_->get<double>());
  throw EvalError("expected an integer, got " + repr(*this));
}

double Value::as_double() const {
  if (is_bool()) return node_->get<bool>() ? 1.0 : 0.0;
  if (is_float()) return node_->get<double>();
  if (is_int()) return double(as_int());
  throw EvalError("expected a number, got " + repr(*this));
}

Value Value::member(const std::string& key) const {
  auto it = node_->find(key);
  if (it == node_->end()) return Value();
  return borrow(owner_, &*it);
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined:
      return false;
    case Kind::Object:
    case Kind::Callable:
      return true;
    case Kind::Json:
      break;
  }
  const Json& j = *node_;
  switch (j.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return as_int() != 0;
    case Json::value_t::number_float:
      return j.get<double>() != 0.0;
    case Json::value_t::string:
      return !j.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !j.empty();
    default:
      return true;
  }
}

Json Value::to_json() const {
  switch (kind_) {
    case Kind::Undefined:
      return Json();
    case Kind::Json:
      return *node_;
    case Kind::Object: {
      Json o = Json::object();
      for (const auto& [k, v] : object_->attrs) o[k] = v.to_json();
      return o;
    }
    case Kind::Callable:
      break;
  }
  throw EvalError("a function cannot be used as data");
}

// ---------------------------------------------------------------- UTF-8

static size_t utf8_seq_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xe) return 3;
  if ((c >> 3) == 0x1e) return 4;
  return 1;  // stray byte: a character of its own
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t n = utf8_seq_len(static_cast<unsigned char>(s[i]));
    if (i + n > s.size()) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xc0) != 0x80) ++n;
  return n;
}

static uint32_t code_point(std::string_view ch) {
  auto b = [&](size_t i) { return uint32_t(static_cast<unsigned char>(ch[i])); };
  switch (ch.size()) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1f) << 6) | (b(1) & 0x3f);
    case 3:
      return ((b(0) & 0x0f) << 12) | ((b(1) & 0x3f) << 6) | (b(2) & 0x3f);
    case 4:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3f) << 12) | ((b(2) & 0x3f) << 6) | (b(3) & 0x3f);
    default:
      return 0xfffd;
  }
}

bool is_py_space(std::string_view ch) {
  uint32_t c = code_point(ch);
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

// Python's str.isprintable(), for the characters a chat is likely to hold.
static bool py_printable(uint32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f)) return false;
  if ((c >= 0x205f && c <= 0x2064) || c == 0x3000 || c == 0xfeff) return false;
  if ((c >= 0xd800 && c <= 0xdfff) || (c >= 0xfff9 && c <= 0xfffb)) return false;
  return true;
}

// ---------------------------------------------------------------- str / repr

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  // Shortest round-trip digits, then Python's layout: positional for
  // exponents in [-4, 16), scientific otherwise.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out += digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return out;
}

std::string py_repr_string(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (std::string_view ch : utf8_chars(s)) {
    uint32_t c = code_point(ch);
    char buf[16];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == uint32_t(quote)) {
      out += '\\';
      out += quote;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_printable(c)) {
      if (c < 0x100)
        std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(c));
      else
        std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      out += buf;
    } else {
      out += ch;
    }
  }
  out += quote;
  return out;
}

static void repr_json(const Json& j, std::string& out, bool top_str);

static void str_json(const Json& j, std::string& out) { repr_json(j, out, true); }

static void repr_json(const Json& j, std::string& out, bool top_str) {
  switch (j.type()) {
    case Json::value_t::null:
      out += "None";
      return;
    case Json::value_t::boolean:
      out += j.get<bool>() ? "True" : "False";
      return;
    case Json::value_t::number_integer:
      out += std::to_string(j.get<int64_t>());
      return;
    case Json::value_t::number_unsigned:
      out += std::to_string(j.get<uint64_t>());
      return;
    case Json::value_t::number_float:
      out += py_float_repr(j.get<double>());
      return;
    case Json::value_t::string:
      if (top_str)
        out += j.get_ref<const std::string&>();
      else
        out += py_repr_string(j.get_ref<const std::string&>());
      return;
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& x : j) {
        if (!first) out += ", ";
        first = false;
        repr_json(x, out, false);
      }
      out += ']';
      return;
    }
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(it.key());
        out += ": ";
        repr_json(it.value(), out, false);
      }
      out += '}';
      return;
    }
    default:
      out += "<binary>";
  }
}

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return "";
    case Value::Kind::Json: {
      if (v.is_string()) return v.str();
      std::string out;
      str_json(v.json(), out);
      return out;
    }
    case Value::Kind::Object: {
      std::string out = v.object().is_namespace ? "<Namespace {" : "<LoopContext {";
      bool first = true;
      for (const auto& [k, x] : v.object().attrs) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(k) + ": " + repr(x);
      }
      return out + "}>";
    }
    case Value::Kind::Callable:
      return "<function " + v.callable().name + ">";
  }
  return "";
}

std::string repr(const Value& v) {
  if (v.is_json()) {
    std::string out;
    repr_json(v.json(), out, false);
    return out;
  }
  if (v.is_undefined()) return "Undefined";
  return to_str(v);
}

// ---------------------------------------------------------------- tojson

static void json_string(std::string_view s, std::string& out) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

static void dump(const Json& j, int indent, bool sort_keys, int depth, std::string& out) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(size_t(indent) * size_t(d), ' ');
  };
  switch (j.type()) {
    case Json::value_t::null:
      out += "null";
      return;
    case Json::value_t::boolean:
      out += j.get<bool>() ? "true" : "false";
      return;
    case Json::value_t::number_integer:
      out += std::to_string(j.get<int64_t>());
      return;
    case Json::value_t::number_unsigned:
      out += std::to_string(j.get<uint64_t>());
      return;
    case Json::value_t::number_float: {
      double d = j.get<double>();
      if (std::isnan(d))
        out += "NaN";
      else if (std::isinf(d))
        out += d < 0 ? "-Infinity" : "Infinity";
      else
        out += py_float_repr(d);
      return;
    }
    case Json::value_t::string:
      json_string(j.get_ref<const std::string&>(), out);
      return;
    case Json::value_t::array: {
      if (j.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const auto& x : j) {
        if (!first) out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(depth + 1);
        dump(x, indent, sort_keys, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Json::value_t::object: {
      if (j.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<const std::string*, const Json*>> items;
      for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(&it.key(), &it.value());
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return *a.first < *b.first; });
      out += '{';
      bool first = true;
      for (const auto& [k, v] : items) {
        if (!first) out += indent >= 0 ? "," : ", ";
        first = false;
        if (indent >= 0) newline(depth + 1);
        json_string(*k, out);
        out += ": ";
        dump(*v, indent, sort_keys, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
    default:
      out += "null";
  }
}

std::string to_json_text(const Json& j, int indent, bool sort_keys) {
  std::string out;
  dump(j, indent, sort_keys, 0, out);
  return out;
}

}  // namespace kiln::jinja
