#include "kiln/chat/jinja_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <set>
#include <unordered_map>

#include "kiln/chat/jinja_strings.h"
#include "kiln/core/error.h"

namespace kiln::jinja {
namespace {

// ---------------------------------------------------------------- names

const std::set<std::string, std::less<>>& known_filters() {
  static const std::set<std::string, std::less<>> s = {
      "abs",    "attr",   "capitalize", "count",      "d",          "default", "dictsort",
      "e",      "escape", "first",      "float",      "format",     "indent",  "int",
      "items",  "join",   "last",       "length",     "list",       "lower",   "map",
      "max",    "min",    "reject",     "rejectattr", "replace",    "reverse", "round",
      "safe",   "select", "selectattr", "sort",       "string",     "sum",     "title",
      "tojson", "trim",   "unique",     "upper",      "forceescape"};
  return s;
}

const std::set<std::string, std::less<>>& known_tests() {
  static const std::set<std::string, std::less<>> s = {
      "defined",     "undefined", "none",    "boolean",  "true",     "false",    "integer", "float",
      "number",      "string",    "mapping", "iterable", "sequence", "callable", "odd",     "even",
      "divisibleby", "eq",        "equalto", "ne",       "lt",       "lessthan", "le",      "gt",
      "greaterthan", "ge",        "in",      "sameas",   "lower",    "upper"};
  return s;
}

// ---------------------------------------------------------------- helpers

[[noreturn]] void eval_fail(const std::string& msg) { throw EvalError(msg); }

std::string type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return "Undefined";
    case Value::Kind::Object:
      return v.object().is_namespace ? "namespace" : "LoopContext";
    case Value::Kind::Callable:
      return "function";
    case Value::Kind::Json:
      break;
  }
  if (v.is_null()) return "NoneType";
  if (v.is_bool()) return "bool";
  if (v.is_int()) return "int";
  if (v.is_float()) return "float";
  if (v.is_string()) return "str";
  if (v.is_array()) return "list";
  if (v.is_dict()) return "dict";
  return "object";
}

bool is_numeric(const Value& v) { return v.is_number() || v.is_bool(); }
bool is_integral(const Value& v) { return v.is_int() || v.is_bool(); }

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool equals(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_json() && b.is_json()) {
    if (is_numeric(a) && is_numeric(b)) {
      if (is_integral(a) && is_integral(b)) return a.as_int() == b.as_int();
      return a.as_double() == b.as_double();
    }
    return a.json() == b.json();
  }
  if (a.is_object() && b.is_object()) return a.object_ptr() == b.object_ptr();
  return false;
}

// -1, 0, 1 like Python's ordering of numbers, strings and lists.
int compare(const Value& a, const Value& b, const char* op) {
  if (is_numeric(a) && is_numeric(b)) {
    if (is_integral(a) && is_integral(b)) {
      int64_t x = a.as_int(), y = b.as_int();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.str().compare(b.str());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && b.is_array()) {
    size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n; ++i) {
      Value x = a.at(i), y = b.at(i);
      if (!equals(x, y)) return compare(x, y, op);
    }
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
  }
  eval_fail(cat("'", op, "' not supported between '", type_name(a), "' and '", type_name(b), "'"));
}

std::vector<Value> iterate(const Value& v) {
  std::vector<Value> out;
  if (v.is_undefined()) return out;
  if (v.is_array()) {
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back(v.at(i));
    return out;
  }
  if (v.is_dict()) {
    for (auto it = v.json().begin(); it != v.json().end(); ++it) out.emplace_back(it.key());
    return out;
  }
  if (v.is_string()) {
    for (auto ch : utf8_chars(v.str())) out.emplace_back(std::string(ch));
    return out;
  }
  eval_fail(cat("'", type_name(v), "' object is not iterable"));
}

Value make_list(const std::vector<Value>& items) {
  Json arr = Json::array();
  for (const auto& x : items) arr.push_back(x.to_json());
  return Value(std::move(arr));
}

int64_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return int64_t(utf8_length(v.str()));
  if (v.is_array() || v.is_dict()) return int64_t(v.size());
  if (v.is_object()) return int64_t(v.object().attrs.size());
  eval_fail(cat("object of type '", type_name(v), "' has no len()"));
}

bool contains(const Value& container, const Value& item) {
  if (container.is_undefined()) return false;
  if (container.is_string()) {
    if (!item.is_string())
      eval_fail(cat("'in <string>' requires a string on the left, not '", type_name(item), "'"));
    return container.str().find(item.str()) != std::string::npos;
  }
  if (container.is_array()) {
    for (size_t i = 0; i < container.size(); ++i)
      if (equals(container.at(i), item)) return true;
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.json().contains(item.str());
  if (container.is_object()) return item.is_string() && container.object().find(item.str());
  eval_fail(cat("argument of type '", type_name(container), "' is not iterable"));
}

// Python slice semantics over a sequence of length n.
std::vector<size_t> slice_indices(int64_t n, const Value& start_v, const Value& stop_v,
                                  const Value& step_v) {
  int64_t step = step_v.is_undefined() || step_v.is_null() ? 1 : step_v.as_int();
  if (step == 0) eval_fail("slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t def) {
    if (v.is_undefined() || v.is_null()) return def;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  std::vector<size_t> out;
  if (step > 0)
    for (int64_t i = start; i < stop; i += step) out.push_back(size_t(i));
  else
    for (int64_t i = start; i > stop; i += step) out.push_back(size_t(i));
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------- scopes

struct Scope {
  std::unordered_map<std::string, Value> vars;
  Scope* parent = nullptr;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

// Positional or keyword argument `i`/`name` of a call, or nullptr.
const Value* arg(const CallArgs& a, size_t i, std::string_view name) {
  if (i < a.args.size()) return &a.args[i];
  return a.kwarg(name);
}

class Renderer {
 public:
  explicit Renderer(const std::vector<std::pair<std::string, Value>>& globals) {
    install_builtins();
    root_.parent = &builtins_;
    for (const auto& [k, v] : globals) root_.vars[k] = v;
  }

  std::string run(const Body& body) {
    std::string out;
    try {
      exec_body(body, root_, out);
    } catch (const EvalError& e) {
      fail("chat template line ", line_, ": ", e.what());
    } catch (const nlohmann::json::exception& e) {
      fail("chat template line ", line_, ": ", e.what());
    }
    return out;
  }

 private:
  // ------------------------------------------------------------ statements

  Flow exec_body(const Body& body, Scope& s, std::string& out) {
    for (const auto& n : body) {
      Flow f = exec(*n, s, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, Scope& s, std::string& out) {
    line_ = n.line;
    switch (n.kind) {
      case Node::Kind::Text:
        out += n.text;
        return Flow::Normal;
      case Node::Kind::Output:
        out += to_str(eval(*n.expr, s));
        return Flow::Normal;
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || eval(*cond, s).truthy()) return exec_body(body, s, out);
        }
        return Flow::Normal;
      case Node::Kind::For:
        exec_for(n, s, out);
        return Flow::Normal;
      case Node::Kind::Set: {
        Value v = eval(*n.expr, s);
        if (!n.attr.empty()) {
          const Value* target = s.find(n.targets[0]);
          if (!target || !target->is_object() || !target->object().is_namespace)
            eval_fail(cat("cannot set attribute '", n.attr, "' of '", n.targets[0],
                          "': only a namespace() has assignable attributes"));
          target->object().set(n.attr, std::move(v));
        } else {
          assign(n.targets, v, s);
        }
        return Flow::Normal;
      }
      case Node::Kind::SetBlock: {
        std::string captured;
        exec_body(n.body, s, captured);
        s.vars[n.targets[0]] = Value(std::move(captured));
        return Flow::Normal;
      }
      case Node::Kind::Macro:
        s.vars[n.name] = make_macro(n);
        return Flow::Normal;
      case Node::Kind::Break:
        return Flow::Break;
      case Node::Kind::Continue:
        return Flow::Continue;
      case Node::Kind::Block:
        return exec_body(n.body, s, out);
      case Node::Kind::FilterBlock: {
        std::string captured;
        Flow f = exec_body(n.body, s, captured);
        line_ = n.line;
        CallArgs a = eval_args(*n.expr, s, 1);
        out += to_str(apply_filter(n.expr->name, Value(std::move(captured)), a, s));
        return f;
      }
    }
    return Flow::Normal;
  }

  void assign(const std::vector<std::string>& targets, const Value& v, Scope& s) {
    if (targets.size() == 1) {
      s.vars[targets[0]] = v;
      return;
    }
    std::vector<Value> items = iterate(v);
    if (items.size() != targets.size())
      eval_fail(cat("cannot unpack ", items.size(), " values into ", targets.size(), " names"));
    for (size_t i = 0; i < targets.size(); ++i) s.vars[targets[i]] = items[i];
  }

  void exec_for(const Node& n, Scope& s, std::string& out) {
    std::vector<Value> items = iterate(eval(*n.expr, s));
    Scope loop_scope;
    loop_scope.parent = &s;
    if (n.filter) {
      std::vector<Value> kept;
      for (auto& item : items) {
        assign(n.targets, item, loop_scope);
        if (eval(*n.filter, loop_scope).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const int64_t len = int64_t(items.size());
    for (int64_t i = 0; i < len; ++i) {
      // Each iteration starts from the enclosing variables, as in Jinja: a
      // `set` in the body does not carry over to the next iteration.
      loop_scope.vars.clear();
      auto loop = std::make_shared<Object>();
      loop->attrs = {{"index", Value(i + 1)},
                     {"index0", Value(i)},
                     {"revindex", Value(len - i)},
                     {"revindex0", Value(len - i - 1)},
                     {"first", Value(i == 0)},
                     {"last", Value(i == len - 1)},
                     {"length", Value(len)},
                     {"depth", Value(1)},
                     {"depth0", Value(0)},
                     {"previtem", i > 0 ? items[size_t(i - 1)] : Value()},
                     {"nextitem", i + 1 < len ? items[size_t(i + 1)] : Value()}};
      auto cycle = std::make_shared<Callable>();
      cycle->name = "loop.cycle";
      cycle->fn = [i](CallArgs& a) -> Value {
        if (a.args.empty()) eval_fail("loop.cycle() needs at least one argument");
        return a.args[size_t(i) % a.args.size()];
      };
      loop->attrs.emplace_back("cycle", Value::callable(cycle));
      loop_scope.vars["loop"] = Value::object(loop);
      assign(n.targets, items[size_t(i)], loop_scope);
      Flow f = exec_body(n.body, loop_scope, out);
      if (f == Flow::Break) break;
    }
    if (len == 0 && !n.else_body.empty()) exec_body(n.else_body, s, out);
  }

  Value make_macro(const Node& n) {
    auto c = std::make_shared<Callable>();
    c->name = n.name;
    const Node* def = &n;
    c->fn = [this, def](CallArgs& a) -> Value {
      if (++depth_ > 256) eval_fail(cat("macro '", def->name, "' recurses too deep"));
      if (a.args.size() > def->params.size())
        eval_fail(cat("macro '", def->name, "' takes ", def->params.size(), " arguments, got ",
                      a.args.size()));
      Scope scope;
      scope.parent = &root_;
      for (size_t i = 0; i < def->params.size(); ++i) {
        const auto& [pname, pdefault] = def->params[i];
        if (i < a.args.size()) {
          scope.vars[pname] = a.args[i];
        } else if (const Value* kv = a.kwarg(pname)) {
          scope.vars[pname] = *kv;
        } else if (pdefault) {
          scope.vars[pname] = eval(*pdefault, scope);
        } else {
          scope.vars[pname] = Value();
        }
      }
      for (const auto& [k, v] : a.kwargs) {
        bool known = false;
        for (const auto& p : def->params) known = known || p.first == k;
        if (!known) eval_fail(cat("macro '", def->name, "' has no parameter '", k, "'"));
      }
      std::string out;
      int saved = line_;
      exec_body(def->body, scope, out);
      line_ = saved;
      --depth_;
      return Value(std::move(out));
    };
    return Value::callable(c);
  }

  // ------------------------------------------------------------ expressions

  CallArgs eval_args(const Expr& e, Scope& s, size_t first) {
    CallArgs a;
    for (size_t i = first; i < e.args.size(); ++i) a.args.push_back(eval(*e.args[i], s));
    for (const auto& [k, v] : e.kwargs) a.kwargs.emplace_back(k, eval(*v, s));
    return a;
  }

  Value eval(const Expr& e, Scope& s) {
    line_ = e.line;
    switch (e.kind) {
      case Expr::Kind::Literal:
        return Value(e.literal);
      case Expr::Kind::Name: {
        const Value* v = s.find(e.name);
        return v ? *v : Value();
      }
      case Expr::Kind::Attr: {
        Value obj = eval(*e.args[0], s);
        line_ = e.line;
        return get_attr(obj, e.name, *e.args[0]);
      }
      case Expr::Kind::Item: {
        Value obj = eval(*e.args[0], s);
        Value key = eval(*e.args[1], s);
        line_ = e.line;
        return get_item(obj, key, *e.args[0]);
      }
      case Expr::Kind::Slice: {
        Value obj = eval(*e.args[0], s);
        Value parts[3];
        for (int i = 0; i < 3; ++i)
          if (e.args[size_t(i) + 1]) parts[i] = eval(*e.args[size_t(i) + 1], s);
        line_ = e.line;
        return slice(obj, parts[0], parts[1], parts[2]);
      }
      case Expr::Kind::Call:
        return call(e, s);
      case Expr::Kind::Filter: {
        Value subject = eval(*e.args[0], s);
        CallArgs a = eval_args(e, s, 1);
        line_ = e.line;
        return apply_filter(e.name, subject, a, s);
      }
      case Expr::Kind::Test: {
        Value subject = eval(*e.args[0], s);
        CallArgs a = eval_args(e, s, 1);
        line_ = e.line;
        bool r = apply_test(e.name, subject, a);
        return Value(e.negated ? !r : r);
      }
      case Expr::Kind::Unary: {
        Value v = eval(*e.args[0], s);
        line_ = e.line;
        if (e.name == "not") return Value(!v.truthy());
        if (!is_numeric(v))
          eval_fail(cat("bad operand type for unary ", e.name, ": '", type_name(v), "'"));
        if (e.name == "+") return is_integral(v) ? Value(v.as_int()) : Value(v.as_double());
        return is_integral(v) ? Value(-v.as_int()) : Value(-v.as_double());
      }
      case Expr::Kind::Binary:
        return binary(e, s);
      case Expr::Kind::Cond: {
        if (eval(*e.args[1], s).truthy()) return eval(*e.args[0], s);
        return e.args[2] ? eval(*e.args[2], s) : Value();
      }
      case Expr::Kind::List:
      case Expr::Kind::Tuple: {
        Json arr = Json::array();
        for (const auto& x : e.args) arr.push_back(eval(*x, s).to_json());
        return Value(std::move(arr));
      }
      case Expr::Kind::Dict: {
        Json obj = Json::object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], s);
          if (!k.is_string()) eval_fail("dict keys must be strings in a chat template");
          obj[k.str()] = eval(*e.args[i + 1], s).to_json();
        }
        return Value(std::move(obj));
      }
    }
    return Value();
  }

  // The source spelling of simple expressions, for error messages.
  static std::string spelling(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Name:
        return e.name;
      case Expr::Kind::Attr:
        return spelling(*e.args[0]) + "." + e.name;
      case Expr::Kind::Item:
        if (e.args[1]->kind == Expr::Kind::Literal)
          return spelling(*e.args[0]) + "[" + repr(Value(e.args[1]->literal)) + "]";
        return spelling(*e.args[0]) + "[...]";
      default:
        return "(...)";
    }
  }
  static std::string describe(const Expr& e) { return "'" + spelling(e) + "'"; }

  Value get_attr(const Value& obj, const std::string& name, const Expr& obj_expr) {
    if (obj.is_dict()) return obj.member(name);
    if (obj.is_object()) {
      const Value* v = obj.object().find(name);
      return v ? *v : Value();
    }
    if (obj.is_undefined())
      eval_fail(cat(describe(obj_expr), " is undefined (reading its attribute '", name, "')"));
    return Value();
  }

  Value get_item(const Value& obj, const Value& key, const Expr& obj_expr) {
    if (obj.is_dict()) return key.is_string() ? obj.member(key.str()) : Value();
    if (obj.is_array() || obj.is_string()) {
      if (!is_integral(key)) {
        if (key.is_string() && obj.is_array()) return Value();
        eval_fail(cat(type_name(obj), " indices must be integers, not ", type_name(key)));
      }
      int64_t i = key.as_int();
      if (obj.is_array()) {
        int64_t n = int64_t(obj.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value();
        return obj.at(size_t(i));
      }
      auto cs = utf8_chars(obj.str());
      int64_t n = int64_t(cs.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return Value(std::string(cs[size_t(i)]));
    }
    if (obj.is_object()) {
      if (!key.is_string()) return Value();
      const Value* v = obj.object().find(key.str());
      return v ? *v : Value();
    }
    if (obj.is_undefined())
      eval_fail(cat(describe(obj_expr), " is undefined (reading its item ", repr(key), ")"));
    return Value();
  }

  Value slice(const Value& obj, const Value& a, const Value& b, const Value& c) {
    if (obj.is_array()) {
      Json out = Json::array();
      for (size_t i : slice_indices(int64_t(obj.size()), a, b, c)) out.push_back(obj.json()[i]);
      return Value(std::move(out));
    }
    if (obj.is_string()) {
      auto cs = utf8_chars(obj.str());
      std::string out;
      for (size_t i : slice_indices(int64_t(cs.size()), a, b, c)) out += cs[i];
      return Value(std::move(out));
    }
    if (obj.is_undefined()) return Value();
    eval_fail(cat("'", type_name(obj), "' object cannot be sliced"));
  }

  Value binary(const Expr& e, Scope& s) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0], s);
      return a.truthy() ? eval(*e.args[1], s) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0], s);
      return a.truthy() ? a : eval(*e.args[1], s);
    }
    Value a = eval(*e.args[0], s);
    Value b = eval(*e.args[1], s);
    line_ = e.line;
    if (op == "~") return Value(to_str(a) + to_str(b));
    if (op == "==") return Value(equals(a, b));
    if (op == "!=") return Value(!equals(a, b));
    if (op == "<") return Value(compare(a, b, "<") < 0);
    if (op == ">") return Value(compare(a, b, ">") > 0);
    if (op == "<=") return Value(compare(a, b, "<=") <= 0);
    if (op == ">=") return Value(compare(a, b, ">=") >= 0);
    if (op == "in") return Value(contains(b, a));
    if (op == "not in") return Value(!contains(b, a));
    return arithmetic(op, a, b);
  }

  static Value arithmetic(const std::string& op, const Value& a, const Value& b) {
    auto bad = [&]() -> Value {
      if (a.is_undefined() || b.is_undefined())
        eval_fail(cat("an undefined value used with '", op, "'"));
      eval_fail(cat("unsupported operand types for ", op, ": '", type_name(a), "' and '",
                    type_name(b), "'"));
    };
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_array() && b.is_array()) {
        Json out = a.json();
        for (const auto& x : b.json()) out.push_back(x);
        return Value(std::move(out));
      }
    }
    if (op == "*") {
      const Value* seq = a.is_string() || a.is_array()   ? &a
                         : b.is_string() || b.is_array() ? &b
                                                         : nullptr;
      const Value* times = seq == &a ? &b : &a;
      if (seq && is_integral(*times)) {
        int64_t k = std::max<int64_t>(0, times->as_int());
        if (seq->is_string()) {
          std::string out;
          for (int64_t i = 0; i < k; ++i) out += seq->str();
          return Value(std::move(out));
        }
        Json out = Json::array();
        for (int64_t i = 0; i < k; ++i)
          for (const auto& x : seq->json()) out.push_back(x);
        return Value(std::move(out));
      }
    }
    if (op == "%" && a.is_string()) {
      std::vector<Value> args = b.is_array() ? iterate(b) : std::vector<Value>{b};
      return Value(percent_format(a.str(), args));
    }
    if (!is_numeric(a) || !is_numeric(b)) return bad();
    const bool ints = is_integral(a) && is_integral(b);
    if (ints) {
      int64_t x = a.as_int(), y = b.as_int();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (op == "//" || op == "%") {
        if (y == 0) eval_fail("integer division or modulo by zero");
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {
          --q;
          r += y;
        }
        return op == "//" ? Value(q) : Value(r);
      }
      if (op == "**" && y >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < y; ++i) r *= x;
        return Value(r);
      }
    }
    double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "/") {
      if (y == 0) eval_fail("division by zero");
      return Value(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) eval_fail("float division or modulo by zero");
      double q = std::floor(x / y);
      return op == "//" ? Value(q) : Value(x - q * y);
    }
    if (op == "**") return Value(std::pow(x, y));
    return bad();
  }

  // ------------------------------------------------------------ calls

  Value call(const Expr& e, Scope& s) {
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::Kind::Attr) {
      Value obj = eval(*callee.args[0], s);
      CallArgs a = eval_args(e, s, 1);
      line_ = e.line;
      Value result;
      if (call_method(obj, callee.name, a, &result)) return result;
      Value fn = get_attr(obj, callee.name, *callee.args[0]);
      if (fn.is_callable()) return fn.callable().fn(a);
      if (obj.is_string() || obj.is_array() || obj.is_dict())
        eval_fail(cat("unsupported method '", callee.name, "' of ", type_name(obj)));
      eval_fail(cat(describe(callee), " is not callable"));
    }
    Value fn = eval(callee, s);
    CallArgs a = eval_args(e, s, 1);
    line_ = e.line;
    if (fn.is_callable()) return fn.callable().fn(a);
    if (fn.is_undefined() && callee.kind == Expr::Kind::Name)
      eval_fail(cat("unsupported function '", callee.name, "'"));
    eval_fail(cat(describe(callee), " is not callable"));
  }

  bool call_method(const Value& obj, const std::string& m, CallArgs& a, Value* result) {
    if (obj.is_string()) return string_method(obj.str(), m, a, result);
    if (obj.is_dict()) {
      const Json& d = obj.json();
      if (m == "items") {
        Json out = Json::array();
        for (auto it = d.begin(); it != d.end(); ++it)
          out.push_back(Json::array({it.key(), it.value()}));
        *result = Value(std::move(out));
      } else if (m == "keys") {
        Json out = Json::array();
        for (auto it = d.begin(); it != d.end(); ++it) out.push_back(it.key());
        *result = Value(std::move(out));
      } else if (m == "values") {
        Json out = Json::array();
        for (auto it = d.begin(); it != d.end(); ++it) out.push_back(it.value());
        *result = Value(std::move(out));
      } else if (m == "get") {
        const Value* k = arg(a, 0, "key");
        if (!k) eval_fail("get() needs a key");
        Value v = k->is_string() ? obj.member(k->str()) : Value();
        if (v.is_undefined()) {
          const Value* def = arg(a, 1, "default");
          v = def ? *def : Value(Json());
        }
        *result = v;
      } else {
        return false;
      }
      return true;
    }
    return false;
  }

  static int64_t int_arg(const CallArgs& a, size_t i, std::string_view name, int64_t def) {
    const Value* v = arg(a, i, name);
    return v && !v->is_null() ? v->as_int() : def;
  }

  static const std::string& str_arg(const CallArgs& a, size_t i, std::string_view name,
                                    const char* method) {
    const Value* v = arg(a, i, name);
    if (!v || !v->is_string()) eval_fail(cat(method, "() needs a string argument"));
    return v->str();
  }

  bool string_method(const std::string& s, const std::string& m, CallArgs& a, Value* result) {
    auto affix = [&](bool prefix) {
      const Value* v = arg(a, 0, "prefix");
      if (!v) eval_fail(cat(m, "() needs an argument"));
      std::vector<Value> options = v->is_array() ? iterate(*v) : std::vector<Value>{*v};
      for (const auto& o : options) {
        if (!o.is_string()) eval_fail(cat(m, "() arguments must be strings"));
        const std::string& p = o.str();
        if (p.size() <= s.size() && (prefix ? s.compare(0, p.size(), p) == 0
                                            : s.compare(s.size() - p.size(), p.size(), p) == 0))
          return true;
      }
      return false;
    };
    if (m == "startswith") {
      *result = Value(affix(true));
    } else if (m == "endswith") {
      *result = Value(affix(false));
    } else if (m == "strip" || m == "lstrip" || m == "rstrip") {
      *result = Value(py_strip(s, arg(a, 0, "chars"), m != "rstrip", m != "lstrip"));
    } else if (m == "split" || m == "rsplit") {
      *result = Value(py_split(s, arg(a, 0, "sep"), int_arg(a, 1, "maxsplit", -1), m == "rsplit"));
    } else if (m == "replace") {
      *result = Value(py_replace(s, str_arg(a, 0, "old", "replace"),
                                 str_arg(a, 1, "new", "replace"), int_arg(a, 2, "count", -1)));
    } else if (m == "lower") {
      *result = Value(str_lower(s));
    } else if (m == "upper") {
      *result = Value(str_upper(s));
    } else if (m == "capitalize") {
      *result = Value(capitalize(s));
    } else if (m == "title") {
      std::string out = s;
      bool prev_alpha = false;
      for (char& c : out) {
        if (is_alpha(c)) {
          c = prev_alpha ? str_lower(std::string(1, c))[0] : str_upper(std::string(1, c))[0];
          prev_alpha = true;
        } else {
          prev_alpha = false;
        }
      }
      *result = Value(out);
    } else if (m == "find" || m == "rfind" || m == "index" || m == "rindex") {
      const std::string& sub = str_arg(a, 0, "sub", m.c_str());
      size_t p = m[0] == 'r' ? s.rfind(sub) : s.find(sub);
      if (p == std::string::npos) {
        if (m.find("index") != std::string::npos) eval_fail("substring not found");
        *result = Value(int64_t(-1));
      } else {
        *result = Value(int64_t(utf8_length(std::string_view(s).substr(0, p))));
      }
    } else if (m == "count") {
      const std::string& sub = str_arg(a, 0, "sub", "count");
      int64_t n = 0;
      if (sub.empty()) {
        n = int64_t(utf8_length(s)) + 1;
      } else {
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      }
      *result = Value(n);
    } else if (m == "join") {
      const Value* v = arg(a, 0, "iterable");
      if (!v) eval_fail("join() needs an argument");
      std::string out;
      bool first = true;
      for (const auto& x : iterate(*v)) {
        if (!x.is_string()) eval_fail(cat("join() expects strings, got '", type_name(x), "'"));
        if (!first) out += s;
        first = false;
        out += x.str();
      }
      *result = Value(out);
    } else if (m == "removeprefix" || m == "removesuffix") {
      const std::string& p = str_arg(a, 0, "fix", m.c_str());
      std::string out = s;
      if (m == "removeprefix" && s.compare(0, p.size(), p) == 0) out = s.substr(p.size());
      if (m == "removesuffix" && p.size() <= s.size() &&
          s.compare(s.size() - p.size(), p.size(), p) == 0)
        out = s.substr(0, s.size() - p.size());
      *result = Value(out);
    } else if (m == "splitlines") {
      Json out = Json::array();
      size_t start = 0;
      while (start < s.size()) {
        size_t p = s.find('\n', start);
        if (p == std::string::npos) {
          out.push_back(s.substr(start));
          break;
        }
        std::string line = s.substr(start, p - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        out.push_back(line);
        start = p + 1;
      }
      *result = Value(std::move(out));
    } else if (m == "isdigit" || m == "isalpha" || m == "isalnum" || m == "isspace" ||
               m == "islower" || m == "isupper") {
      bool ok = !s.empty();
      bool cased = false;
      for (char c : s) {
        unsigned char u = static_cast<unsigned char>(c);
        if (m == "isdigit") ok = ok && std::isdigit(u);
        if (m == "isalpha") ok = ok && std::isalpha(u);
        if (m == "isalnum") ok = ok && std::isalnum(u);
        if (m == "isspace") ok = ok && std::isspace(u);
        if (m == "islower") ok = ok && !std::isupper(u), cased = cased || std::islower(u);
        if (m == "isupper") ok = ok && !std::islower(u), cased = cased || std::isupper(u);
      }
      if (m == "islower" || m == "isupper") ok = ok && cased;
      *result = Value(ok);
    } else if (m == "format") {
      *result = Value(brace_format(s, a));
    } else {
      return false;
    }
    return true;
  }

  void install_builtins() {
    auto add = [&](const std::string& name, std::function<Value(CallArgs&)> fn) {
      auto c = std::make_shared<Callable>();
      c->name = name;
      c->fn = std::move(fn);
      builtins_.vars[name] = Value::callable(c);
    };
    add("namespace", [](CallArgs& a) -> Value {
      auto o = std::make_shared<Object>();
      o->is_namespace = true;
      for (const auto& x : a.args) {
        if (!x.is_dict()) eval_fail("namespace() takes a dict or keyword arguments");
        for (auto it = x.json().begin(); it != x.json().end(); ++it)
          o->set(it.key(), Value(it.value()));
      }
      for (const auto& [k, v] : a.kwargs) o->set(k, v);
      return Value::object(o);
    });
    add("raise_exception", [](CallArgs& a) -> Value {
      eval_fail("error raised by the template: " +
                (a.args.empty() ? std::string() : to_str(a.args[0])));
    });
    add("strftime_now", [](CallArgs& a) -> Value {
      if (a.args.empty() || !a.args[0].is_string())
        eval_fail("strftime_now() needs a format string");
      std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      size_t n = std::strftime(buf, sizeof buf, a.args[0].str().c_str(), &tm);
      return Value(std::string(buf, n));
    });
    add("range", [](CallArgs& a) -> Value {
      if (a.args.empty() || a.args.size() > 3) eval_fail("range() takes 1 to 3 arguments");
      int64_t start = 0, stop, step = 1;
      if (a.args.size() == 1) {
        stop = a.args[0].as_int();
      } else {
        start = a.args[0].as_int();
        stop = a.args[1].as_int();
        if (a.args.size() == 3) step = a.args[2].as_int();
      }
      if (step == 0) eval_fail("range() step must not be zero");
      Json out = Json::array();
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        out.push_back(i);
        if (out.size() > 1000000) eval_fail("range() too long");
      }
      return Value(std::move(out));
    });
    add("dict", [](CallArgs& a) -> Value {
      Json out = Json::object();
      for (const auto& x : a.args) {
        if (!x.is_dict()) eval_fail("dict() takes a dict or keyword arguments");
        for (auto it = x.json().begin(); it != x.json().end(); ++it) out[it.key()] = it.value();
      }
      for (const auto& [k, v] : a.kwargs) out[k] = v.to_json();
      return Value(std::move(out));
    });
  }

  // ------------------------------------------------------------ filters

  // Applies a named test, as selectattr/select do.
  bool run_test_by_name(const Value& name, const Value& subject, std::vector<Value> extra) {
    if (!name.is_string()) eval_fail("a test name must be a string");
    if (!is_known_test(name.str())) eval_fail(cat("unsupported test '", name.str(), "'"));
    CallArgs a;
    a.args = std::move(extra);
    return apply_test(name.str(), subject, a);
  }

  std::vector<Value> select_items(const std::string& f, const Value& seq, CallArgs& a) {
    bool by_attr = f == "selectattr" || f == "rejectattr";
    bool keep_when = f == "select" || f == "selectattr";
    std::vector<Value> out;
    size_t first_test_arg = by_attr ? 1 : 0;
    std::string attr_name;
    if (by_attr) {
      if (a.args.empty() || !a.args[0].is_string()) eval_fail(cat(f, "() needs an attribute name"));
      attr_name = a.args[0].str();
    }
    for (const auto& item : iterate(seq)) {
      Value subject = item;
      if (by_attr) subject = attribute_path(item, attr_name);
      bool r;
      if (a.args.size() > first_test_arg) {
        std::vector<Value> extra(a.args.begin() + long(first_test_arg) + 1, a.args.end());
        r = run_test_by_name(a.args[first_test_arg], subject, std::move(extra));
      } else {
        r = subject.truthy();
      }
      if (r == keep_when) out.push_back(item);
    }
    return out;
  }

  // "a.b.0" as Jinja's attribute arguments allow.
  Value attribute_path(const Value& v, const std::string& path) {
    Value cur = v;
    size_t start = 0;
    while (start <= path.size()) {
      size_t dot = path.find('.', start);
      std::string part =
          path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (cur.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
        size_t i = std::stoul(part);
        cur = i < cur.size() ? cur.at(i) : Value();
      } else if (cur.is_dict()) {
        cur = cur.member(part);
      } else if (cur.is_object()) {
        const Value* x = cur.object().find(part);
        cur = x ? *x : Value();
      } else {
        return Value();
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return cur;
  }

  std::vector<Value> sorted(std::vector<Value> items, bool reverse, bool case_sensitive,
                            const std::string& attribute) {
    auto key = [&](const Value& v) {
      Value k = attribute.empty() ? v : attribute_path(v, attribute);
      if (!case_sensitive && k.is_string()) return Value(str_lower(k.str()));
      return k;
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      int c = compare(key(x), key(y), "<");
      return reverse ? c > 0 : c < 0;
    });
    return items;
  }

  Value apply_filter(const std::string& f, const Value& v, CallArgs& a, Scope& s) {
    if (f == "safe") return v;
    if (f == "string") return v.is_string() ? v : Value(to_str(v));
    if (f == "trim") return Value(py_strip(to_str(v), arg(a, 0, "chars"), true, true));
    if (f == "upper") return Value(str_upper(to_str(v)));
    if (f == "lower") return Value(str_lower(to_str(v)));
    if (f == "capitalize") return Value(capitalize(to_str(v)));
    if (f == "title") {
      std::string out = to_str(v);
      bool word_start = true;
      for (char& c : out) {
        bool sep = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '-' || c == '(' ||
                   c == '{' || c == '[' || c == '<';
        if (sep) {
          word_start = true;
          continue;
        }
        if (c >= 'a' && c <= 'z' && word_start)
          c = char(c - 'a' + 'A');
        else if (c >= 'A' && c <= 'Z' && !word_start)
          c = char(c - 'A' + 'a');
        word_start = false;
      }
      return Value(out);
    }
    if (f == "e" || f == "escape" || f == "forceescape") return Value(html_escape(to_str(v)));
    if (f == "length" || f == "count") return Value(length(v));
    if (f == "d" || f == "default") {
      const Value* def = arg(a, 0, "default_value");
      const Value* boolean = arg(a, 1, "boolean");
      bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
      if (use_default) return def ? *def : Value(std::string());
      return v;
    }
    if (f == "first" || f == "last") {
      if (v.is_array()) {
        if (v.size() == 0) return Value();
        return f == "first" ? v.at(0) : v.at(v.size() - 1);
      }
      std::vector<Value> items = iterate(v);
      if (items.empty()) return Value();
      return f == "first" ? items.front() : items.back();
    }
    if (f == "join") {
      const Value* sep = arg(a, 0, "d");
      const Value* attribute = arg(a, 1, "attribute");
      std::string out, sep_s = sep ? to_str(*sep) : "";
      bool first = true;
      for (const auto& x : iterate(v)) {
        if (!first) out += sep_s;
        first = false;
        out += to_str(attribute ? attribute_path(x, to_str(*attribute)) : x);
      }
      return Value(out);
    }
    if (f == "items") {
      if (v.is_undefined()) return Value(Json::array());
      if (!v.is_dict()) eval_fail(cat("items filter needs a mapping, got '", type_name(v), "'"));
      Value result;
      CallArgs none;
      call_method(v, "items", none, &result);
      return result;
    }
    if (f == "list") {
      if (v.is_array()) return v;
      return make_list(iterate(v));
    }
    if (f == "reverse") {
      if (v.is_string()) {
        auto cs = utf8_chars(v.str());
        std::string out;
        for (auto it = cs.rbegin(); it != cs.rend(); ++it) out += *it;
        return Value(out);
      }
      std::vector<Value> items = iterate(v);
      std::reverse(items.begin(), items.end());
      return make_list(items);
    }
    if (f == "tojson") {
      if (v.is_undefined()) eval_fail("tojson of an undefined value");
      const Value* indent = arg(a, 0, "indent");
      const Value* sort_keys = a.kwarg("sort_keys");
      return Value(to_json_text(v.to_json(),
                                indent && !indent->is_null() ? int(indent->as_int()) : -1,
                                sort_keys && sort_keys->truthy()));
    }
    if (f == "replace") {
      const Value* old = arg(a, 0, "old");
      const Value* repl = arg(a, 1, "new");
      if (!old || !repl) eval_fail("replace needs two arguments");
      return Value(py_replace(to_str(v), to_str(*old), to_str(*repl), int_arg(a, 2, "count", -1)));
    }
    if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr")
      return make_list(select_items(f, v, a));
    if (f == "map") {
      std::vector<Value> out;
      const Value* attribute = a.kwarg("attribute");
      for (const auto& item : iterate(v)) {
        if (attribute) {
          Value x = attribute_path(item, to_str(*attribute));
          if (x.is_undefined())
            if (const Value* def = a.kwarg("default")) x = *def;
          out.push_back(x);
        } else {
          if (a.args.empty() || !a.args[0].is_string())
            eval_fail("map() needs a filter name or attribute=");
          std::string name = a.args[0].str();
          if (!is_known_filter(name)) eval_fail(cat("unsupported filter '", name, "'"));
          CallArgs rest;
          rest.args.assign(a.args.begin() + 1, a.args.end());
          rest.kwargs = a.kwargs;
          out.push_back(apply_filter(name, item, rest, s));
        }
      }
      return make_list(out);
    }
    if (f == "unique") {
      std::vector<Value> out;
      const Value* attribute = a.kwarg("attribute");
      for (const auto& item : iterate(v)) {
        Value k = attribute ? attribute_path(item, to_str(*attribute)) : item;
        bool seen = false;
        for (const auto& o : out) {
          Value ok = attribute ? attribute_path(o, to_str(*attribute)) : o;
          if (k.is_string() && ok.is_string() ? str_lower(k.str()) == str_lower(ok.str())
                                              : equals(k, ok))
            seen = true;
        }
        if (!seen) out.push_back(item);
      }
      return make_list(out);
    }
    if (f == "sort") {
      const Value* reverse = arg(a, 0, "reverse");
      const Value* cs = arg(a, 1, "case_sensitive");
      const Value* attribute = arg(a, 2, "attribute");
      return make_list(sorted(iterate(v), reverse && reverse->truthy(), cs && cs->truthy(),
                              attribute ? to_str(*attribute) : ""));
    }
    if (f == "dictsort") {
      if (!v.is_dict()) eval_fail("dictsort needs a mapping");
      const Value* cs = arg(a, 0, "case_sensitive");
      const Value* by = arg(a, 1, "by");
      const Value* reverse = arg(a, 2, "reverse");
      Value pairs;
      CallArgs none;
      call_method(v, "items", none, &pairs);
      bool by_value = by && by->is_string() && by->str() == "value";
      return make_list(sorted(iterate(pairs), reverse && reverse->truthy(), cs && cs->truthy(),
                              by_value ? "1" : "0"));
    }
    if (f == "min" || f == "max") {
      const Value* cs = arg(a, 0, "case_sensitive");
      const Value* attribute = arg(a, 1, "attribute");
      std::vector<Value> items =
          sorted(iterate(v), false, cs && cs->truthy(), attribute ? to_str(*attribute) : "");
      if (items.empty()) return Value();
      return f == "min" ? items.front() : items.back();
    }
    if (f == "sum") {
      const Value* attribute = arg(a, 0, "attribute");
      const Value* start = arg(a, 1, "start");
      Value total = start ? *start : Value(int64_t(0));
      for (const auto& item : iterate(v))
        total = arithmetic("+", total, attribute ? attribute_path(item, to_str(*attribute)) : item);
      return total;
    }
    if (f == "abs") {
      if (!is_numeric(v)) eval_fail(cat("bad operand type for abs(): '", type_name(v), "'"));
      return is_integral(v) ? Value(int64_t(std::llabs(v.as_int())))
                            : Value(std::fabs(v.as_double()));
    }
    if (f == "int" || f == "float") {
      const Value* def = arg(a, 0, "default");
      Value fallback = def ? *def : (f == "int" ? Value(int64_t(0)) : Value(0.0));
      double d;
      if (is_numeric(v)) {
        d = v.as_double();
        if (f == "int" && is_integral(v)) return Value(v.as_int());
      } else if (v.is_string()) {
        try {
          size_t used = 0;
          std::string t = py_strip(v.str(), nullptr, true, true);
          d = std::stod(t, &used);
          if (used != t.size()) return fallback;
        } catch (const std::exception&) {
          return fallback;
        }
      } else {
        return fallback;
      }
      if (f == "int") return Value(int64_t(d));
      return Value(d);
    }
    if (f == "round") {
      int64_t precision = int_arg(a, 0, "precision", 0);
      const Value* method = arg(a, 1, "method");
      std::string m = method ? to_str(*method) : "common";
      double scale = std::pow(10.0, double(precision));
      double x = v.as_double() * scale;
      if (m == "ceil")
        x = std::ceil(x);
      else if (m == "floor")
        x = std::floor(x);
      else
        x = std::nearbyint(x);  // Python's round(): half to even
      return Value(x / scale);
    }
    if (f == "indent") {
      int64_t width = 4;
      std::string pad;
      if (const Value* w = arg(a, 0, "width")) {
        if (w->is_string())
          pad = w->str();
        else
          width = w->as_int();
      }
      if (pad.empty()) pad = std::string(size_t(std::max<int64_t>(0, width)), ' ');
      const Value* first = arg(a, 1, "first");
      const Value* blank = arg(a, 2, "blank");
      std::string text = to_str(v), out;
      size_t start = 0;
      bool is_first = true;
      while (true) {
        size_t nl = text.find('\n', start);
        std::string line =
            text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        bool indent_it = (is_first ? first && first->truthy() : true) &&
                         (!line.empty() || (blank && blank->truthy()));
        if (indent_it) out += pad;
        out += line;
        if (nl == std::string::npos) break;
        out += '\n';
        start = nl + 1;
        is_first = false;
      }
      return Value(out);
    }
    if (f == "format") return Value(percent_format(to_str(v), a.args));
    if (f == "attr") {
      if (a.args.empty()) eval_fail("attr needs a name");
      std::string name = to_str(a.args[0]);
      // Python attributes only: the keys of a dict are items, not attributes.
      if (v.is_object()) {
        const Value* x = v.object().find(name);
        return x ? *x : Value();
      }
      return Value();
    }
    eval_fail(cat("unsupported filter '", f, "'"));
  }

  // ------------------------------------------------------------ tests

  bool apply_test(const std::string& t, const Value& v, CallArgs& a) {
    auto other = [&]() -> const Value& {
      if (a.args.empty()) eval_fail(cat("test '", t, "' needs an argument"));
      return a.args[0];
    };
    if (t == "defined") return !v.is_undefined();
    if (t == "undefined") return v.is_undefined();
    if (t == "none") return v.is_null();
    if (t == "boolean") return v.is_bool();
    if (t == "true") return v.is_bool() && v.json().get<bool>();
    if (t == "false") return v.is_bool() && !v.json().get<bool>();
    if (t == "integer") return v.is_int();
    if (t == "float") return v.is_float();
    if (t == "number") return v.is_number() || v.is_bool();
    if (t == "string") return v.is_string();
    if (t == "mapping") return v.is_dict();
    if (t == "iterable") return v.is_undefined() || v.is_string() || v.is_array() || v.is_dict();
    if (t == "sequence") return v.is_undefined() || v.is_string() || v.is_array() || v.is_dict();
    if (t == "callable") return v.is_callable();
    if (t == "odd") return v.as_int() % 2 != 0;
    if (t == "even") return v.as_int() % 2 == 0;
    if (t == "divisibleby") {
      int64_t d = other().as_int();
      if (d == 0) eval_fail("divisibleby 0");
      return v.as_int() % d == 0;
    }
    if (t == "eq" || t == "equalto") return equals(v, other());
    if (t == "ne") return !equals(v, other());
    if (t == "lt" || t == "lessthan") return compare(v, other(), "<") < 0;
    if (t == "le") return compare(v, other(), "<=") <= 0;
    if (t == "gt" || t == "greaterthan") return compare(v, other(), ">") > 0;
    if (t == "ge") return compare(v, other(), ">=") >= 0;
    if (t == "in") return contains(other(), v);
    if (t == "sameas") {
      const Value& o = other();
      if (v.is_json() && o.is_json() && (v.is_null() || v.is_bool()) &&
          (o.is_null() || o.is_bool()))
        return v.json() == o.json();
      if (v.is_object() && o.is_object()) return v.object_ptr() == o.object_ptr();
      return false;
    }
    if (t == "lower") {
      std::string s = to_str(v);
      return s == str_lower(s);
    }
    if (t == "upper") {
      std::string s = to_str(v);
      return s == str_upper(s);
    }
    eval_fail(cat("unsupported test '", t, "'"));
  }

  Scope builtins_;
  Scope root_;
  int line_ = 0;
  int depth_ = 0;
};

}  // namespace

bool is_known_filter(std::string_view name) { return known_filters().count(name) > 0; }
bool is_known_test(std::string_view name) { return known_tests().count(name) > 0; }

std::string render(const Body& body, const std::vector<std::pair<std::string, Value>>& globals) {
  return Renderer(globals).run(body);
}

}  // namespace kiln::jinja
