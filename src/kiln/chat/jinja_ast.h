// The syntax tree of a parsed template: expressions and statements, each
// carrying its template line for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/chat/jinja_value.h"

namespace kiln::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // literal
    Name,     // name
    Attr,     // args[0].name
    Item,     // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]] (null children when left out)
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..])
    Unary,    // name in {"-", "+", "not"}, args[0]
    Binary,   // args[0] name args[1]; name is an operator, "and", "or", "in", "not in"
    Cond,     // args[0] if args[1] else args[2] (args[2] may be null)
    List,     // [args...]
    Tuple,    // (args...)
    Dict,     // {args[0]: args[1], args[2]: args[3], ...}
  };
  Kind kind;
  int line = 0;
  Json literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // Test: `is not`
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    Text,      // text
    Output,    // {{ expr }}
    If,        // branches: (cond, body)...; a null cond is the else branch
    For,       // for targets in expr [if filter]: body [else: else_body]
    Set,       // set targets = expr, or set targets[0].attr = expr (attr non-empty)
    SetBlock,  // set targets[0] %}body{% endset
    Macro,     // macro name(params) body
    Break,
    Continue,
    Block,        // a body rendered as is ({% generation %})
    FilterBlock,  // filter name(args) %}body{% endfilter: expr is the filter, its args[0] a
                  // placeholder
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;  // For: the `if` condition
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::string name;                                     // Macro
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro: name, default (may be null)
};

}  // namespace kiln::jinja
