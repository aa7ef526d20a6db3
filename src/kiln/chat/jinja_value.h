// The value model of the template interpreter. Data is JSON (ordered, so that
// tojson writes keys in the order the caller gave them, as Python does);
// on top of it come Jinja's Undefined, mutable objects (namespace(), loop) and
// callables (macros, globals). A Value pointing into a JSON document shares
// ownership of the whole document instead of copying the node: templates index
// into `messages` constantly and a long conversation must not be copied each time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::jinja {

using Json = nlohmann::ordered_json;

// A failure while rendering; the renderer adds the template line it was at.
class EvalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value;

// Attributes of a namespace() or of the loop variable.
struct Object {
  bool is_namespace = false;
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value v);
};

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  const Value* kwarg(std::string_view name) const;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&)> fn;
};

class Value {
 public:
  enum class Kind { Undefined, Json, Object, Callable };

  Value() = default;  // Undefined
  Value(Json j);      // NOLINT: a JSON value converts implicitly
  Value(const char* s) : Value(Json(s)) {}
  Value(std::string s) : Value(Json(std::move(s))) {}
  Value(bool b) : Value(Json(b)) {}
  Value(int64_t i) : Value(Json(i)) {}
  Value(int i) : Value(Json(int64_t(i))) {}
  Value(double d) : Value(Json(d)) {}
  static Value borrow(std::shared_ptr<const Json> owner, const Json* node);
  static Value object(std::shared_ptr<Object> o);
  static Value callable(std::shared_ptr<Callable> c);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_json() const { return kind_ == Kind::Json; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_callable() const { return kind_ == Kind::Callable; }
  bool is_null() const { return is_json() && node_->is_null(); }
  bool is_string() const { return is_json() && node_->is_string(); }
  bool is_array() const { return is_json() && node_->is_array(); }
  bool is_dict() const { return is_json() && node_->is_object(); }
  bool is_bool() const { return is_json() && node_->is_boolean(); }
  bool is_int() const { return is_json() && node_->is_number_integer(); }
  bool is_float() const { return is_json() && node_->is_number_float(); }
  bool is_number() const { return is_json() && node_->is_number(); }

  const Json& json() const { return *node_; }  // only when is_json()
  const std::string& str() const { return node_->get_ref<const std::string&>(); }
  int64_t as_int() const;    // ints and bools
  double as_double() const;  // any number or bool
  Object& object() const { return *object_; }
  const std::shared_ptr<Object>& object_ptr() const { return object_; }
  Callable& callable() const { return *callable_; }

  // Children of arrays and dicts, without copying.
  size_t size() const { return node_->size(); }
  Value at(size_t i) const { return borrow(owner_, &(*node_)[i]); }
  Value member(const std::string& key) const;  // Undefined if absent

  // Python truthiness.
  bool truthy() const;
  // A JSON copy of the value (Undefined -> null); fails for objects/callables.
  Json to_json() const;

 private:
  Kind kind_ = Kind::Undefined;
  std::shared_ptr<const Json> owner_;
  const Json* node_ = nullptr;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Callable> callable_;
};

// Python's str() and repr() of a value.
std::string to_str(const Value& v);
std::string repr(const Value& v);
std::string py_repr_string(std::string_view s);
std::string py_float_repr(double d);
// json.dumps(v, ensure_ascii=False) with the default separators, or with
// indent (and then "," / ": ") when indent >= 0.
std::string to_json_text(const Json& j, int indent = -1, bool sort_keys = false);

// UTF-8 helpers: strings are sequences of code points in Jinja.
std::vector<std::string_view> utf8_chars(std::string_view s);
size_t utf8_length(std::string_view s);
bool is_py_space(std::string_view ch);

}  // namespace kiln::jinja
