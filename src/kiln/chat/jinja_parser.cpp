#include "kiln/chat/jinja_parser.h"

#include <initializer_list>

#include "kiln/chat/jinja_eval.h"
#include "kiln/chat/jinja_lexer.h"
#include "kiln/core/error.h"

namespace kiln::jinja {
namespace {

const char* describe(const Token& t) {
  switch (t.type) {
    case TokType::Text:
      return "text";
    case TokType::VarBegin:
      return "'{{'";
    case TokType::VarEnd:
      return "'}}'";
    case TokType::BlockBegin:
      return "'{%'";
    case TokType::BlockEnd:
      return "'%}'";
    case TokType::Eof:
      return "the end of the template";
    default:
      return nullptr;
  }
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_template() {
    std::string stop;
    Body body = parse_body({}, &stop);
    return body;
  }

 private:
  // ------------------------------------------------------------ token stream
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokType::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == TokType::Name && cur().text == name; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string spell(const Token& t) {
    if (const char* d = describe(t)) return d;
    if (t.type == TokType::String) return "string '" + t.text + "'";
    return "'" + t.text + "'";
  }

  template <class... Parts>
  [[noreturn]] void error(int line, Parts&&... parts) const {
    fail("chat template line ", line, ": ", std::forward<Parts>(parts)...);
  }
  [[noreturn]] void unexpected(const char* wanted) const {
    error(cur().line, "expected ", wanted, ", got ", spell(cur()));
  }

  void expect_op(const char* op) {
    if (!accept_op(op)) unexpected((std::string("'") + op + "'").c_str());
  }
  std::string expect_name_token() {
    if (cur().type != TokType::Name) unexpected("a name");
    std::string s = cur().text;
    advance();
    return s;
  }
  void expect_block_end() {
    if (cur().type != TokType::BlockEnd) unexpected("'%}'");
    advance();
  }

  // ------------------------------------------------------------ statements

  // Parses nodes until a block whose tag is one of `stops`; leaves the stream
  // on that tag's name and reports it in *stop.
  Body parse_body(std::initializer_list<const char*> stops, std::string* stop) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokType::Eof) {
        if (stops.size() == 0) return body;
        error(t.line, "missing '{% ", *(stops.end() - 1), " %}' at the end of the template");
      }
      if (t.type == TokType::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Text;
        n->line = t.line;
        n->text = t.text;
        body.push_back(std::move(n));
        advance();
      } else if (t.type == TokType::VarBegin) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Output;
        n->line = t.line;
        advance();
        n->expr = parse_tuple(true);
        if (cur().type != TokType::VarEnd) unexpected("'}}'");
        advance();
        body.push_back(std::move(n));
      } else if (t.type == TokType::BlockBegin) {
        advance();
        if (cur().type != TokType::Name) unexpected("a tag name");
        for (const char* s : stops) {
          if (cur().text == s) {
            *stop = s;
            return body;
          }
        }
        body.push_back(parse_statement());
      } else {
        unexpected("text or a tag");
      }
    }
  }

  NodePtr make(Node::Kind kind, int line) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = line;
    return n;
  }

  NodePtr parse_statement() {
    const std::string tag = cur().text;
    const int line = cur().line;
    advance();
    std::string stop;
    if (tag == "if") {
      auto n = make(Node::Kind::If, line);
      ExprPtr cond = parse_tuple(true);
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"}, &stop);
        n->branches.emplace_back(std::move(cond), std::move(b));
        advance();
        if (stop == "elif") {
          cond = parse_tuple(true);
          expect_block_end();
        } else if (stop == "else") {
          expect_block_end();
          Body e = parse_body({"endif"}, &stop);
          n->branches.emplace_back(nullptr, std::move(e));
          advance();
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
      return n;
    }
    if (tag == "for") {
      auto n = make(Node::Kind::For, line);
      n->targets = parse_targets();
      if (!accept_name("in")) unexpected("'in'");
      n->expr = parse_tuple(false);
      if (accept_name("if")) n->filter = parse_expression(true);
      if (is_name("recursive")) error(cur().line, "unsupported construct 'recursive' loop");
      expect_block_end();
      n->body = parse_body({"else", "endfor"}, &stop);
      advance();
      expect_block_end();
      if (stop == "else") {
        n->else_body = parse_body({"endfor"}, &stop);
        advance();
        expect_block_end();
      }
      return n;
    }
    if (tag == "set") {
      std::string first = expect_name_token();
      if (accept_op(".")) {
        auto n = make(Node::Kind::Set, line);
        n->targets = {first};
        n->attr = expect_name_token();
        expect_op("=");
        n->expr = parse_tuple(true);
        expect_block_end();
        return n;
      }
      std::vector<std::string> targets{first};
      while (accept_op(",")) targets.push_back(expect_name_token());
      if (cur().type == TokType::BlockEnd && targets.size() == 1) {
        advance();
        auto n = make(Node::Kind::SetBlock, line);
        n->targets = targets;
        n->body = parse_body({"endset"}, &stop);
        advance();
        expect_block_end();
        return n;
      }
      auto n = make(Node::Kind::Set, line);
      n->targets = std::move(targets);
      expect_op("=");
      n->expr = parse_tuple(true);
      expect_block_end();
      return n;
    }
    if (tag == "macro") {
      auto n = make(Node::Kind::Macro, line);
      n->name = expect_name_token();
      expect_op("(");
      while (!is_op(")")) {
        std::string p = expect_name_token();
        ExprPtr def;
        if (accept_op("=")) def = parse_expression(true);
        n->params.emplace_back(p, std::move(def));
        if (!accept_op(",")) break;
      }
      expect_op(")");
      expect_block_end();
      n->body = parse_body({"endmacro"}, &stop);
      advance();
      if (cur().type == TokType::Name) advance();  // {% endmacro name %}
      expect_block_end();
      return n;
    }
    if (tag == "break" || tag == "continue") {
      expect_block_end();
      return make(tag == "break" ? Node::Kind::Break : Node::Kind::Continue, line);
    }
    if (tag == "generation") {
      // Hugging Face's marker of assistant-generated spans: renders its body.
      auto n = make(Node::Kind::Block, line);
      expect_block_end();
      n->body = parse_body({"endgeneration"}, &stop);
      advance();
      expect_block_end();
      return n;
    }
    if (tag == "filter") {
      auto n = make(Node::Kind::FilterBlock, line);
      auto placeholder = std::make_unique<Expr>();
      placeholder->kind = Expr::Kind::Literal;
      placeholder->line = line;
      n->expr = parse_filter(std::move(placeholder));
      expect_block_end();
      n->body = parse_body({"endfilter"}, &stop);
      advance();
      expect_block_end();
      return n;
    }
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else")
      error(line, "unexpected '{% ", tag, " %}'");
    error(line, "unsupported tag '", tag, "'");
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    bool paren = accept_op("(");
    targets.push_back(expect_name_token());
    while (accept_op(",")) targets.push_back(expect_name_token());
    if (paren) expect_op(")");
    return targets;
  }

  // ------------------------------------------------------------ expressions

  ExprPtr node(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, int line) {
    auto e = node(Expr::Kind::Binary, line);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  // `a, b` without parentheses makes a tuple where Jinja allows it.
  ExprPtr parse_tuple(bool with_cond) {
    int line = cur().line;
    ExprPtr first = parse_expression(with_cond);
    if (!is_op(",")) return first;
    auto t = node(Expr::Kind::Tuple, line);
    t->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (cur().type == TokType::VarEnd || cur().type == TokType::BlockEnd || is_op(")")) break;
      t->args.push_back(parse_expression(with_cond));
    }
    return t;
  }

  ExprPtr parse_expression(bool with_cond) {
    ExprPtr e = parse_or();
    if (!with_cond) return e;
    while (is_name("if")) {
      int line = cur().line;
      advance();
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (accept_name("else")) other = parse_expression(true);
      auto c = node(Expr::Kind::Cond, line);
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      advance();
      e = binary("or", std::move(e), parse_and(), line);
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      advance();
      e = binary("and", std::move(e), parse_not(), line);
    }
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      int line = cur().line;
      advance();
      auto e = node(Expr::Kind::Unary, line);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      int line = cur().line;
      if (cur().type == TokType::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        std::string op = cur().text;
        advance();
        e = binary(op, std::move(e), parse_math1(), line);
      } else if (is_name("in")) {
        advance();
        e = binary("in", std::move(e), parse_math1(), line);
      } else if (is_name("not") && peek().type == TokType::Name && peek().text == "in") {
        advance();
        advance();
        e = binary("not in", std::move(e), parse_math1(), line);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      int line = cur().line;
      advance();
      e = binary(op, std::move(e), parse_concat(), line);
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      advance();
      e = binary("~", std::move(e), parse_math2(), line);
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      int line = cur().line;
      advance();
      e = binary(op, std::move(e), parse_pow(), line);
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      advance();
      e = binary("**", std::move(e), parse_unary(true), line);
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      int line = cur().line;
      std::string op = cur().text;
      advance();
      e = node(Expr::Kind::Unary, line);
      e->name = op;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    switch (t.type) {
      case TokType::Name: {
        std::string name = t.text;
        advance();
        auto e = node(Expr::Kind::Literal, line);
        if (name == "true" || name == "True") {
          e->literal = true;
        } else if (name == "false" || name == "False") {
          e->literal = false;
        } else if (name == "none" || name == "None") {
          e->literal = nullptr;
        } else {
          e->kind = Expr::Kind::Name;
          e->name = name;
        }
        return e;
      }
      case TokType::String: {
        std::string s;
        while (cur().type == TokType::String) {  // adjacent literals concatenate
          s += cur().text;
          advance();
        }
        auto e = node(Expr::Kind::Literal, line);
        e->literal = s;
        return e;
      }
      case TokType::Int: {
        auto e = node(Expr::Kind::Literal, line);
        try {
          e->literal = int64_t(std::stoll(t.text));
        } catch (const std::exception&) {
          error(line, "integer literal ", t.text, " out of range");
        }
        advance();
        return e;
      }
      case TokType::Float: {
        auto e = node(Expr::Kind::Literal, line);
        e->literal = std::stod(t.text);
        advance();
        return e;
      }
      case TokType::Op:
        if (t.text == "(") {
          advance();
          if (accept_op(")")) return node(Expr::Kind::Tuple, line);
          ExprPtr first = parse_expression(true);
          if (accept_op(")")) return first;
          auto tup = node(Expr::Kind::Tuple, line);
          tup->args.push_back(std::move(first));
          while (accept_op(",")) {
            if (is_op(")")) break;
            tup->args.push_back(parse_expression(true));
          }
          expect_op(")");
          return tup;
        }
        if (t.text == "[") {
          advance();
          auto list = node(Expr::Kind::List, line);
          while (!is_op("]")) {
            list->args.push_back(parse_expression(true));
            if (!accept_op(",")) break;
          }
          expect_op("]");
          return list;
        }
        if (t.text == "{") {
          advance();
          auto dict = node(Expr::Kind::Dict, line);
          while (!is_op("}")) {
            dict->args.push_back(parse_expression(true));
            expect_op(":");
            dict->args.push_back(parse_expression(true));
            if (!accept_op(",")) break;
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    unexpected("an expression");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (is_op(".")) {
        advance();
        if (cur().type == TokType::Int) {
          auto item = node(Expr::Kind::Item, line);
          auto idx = node(Expr::Kind::Literal, line);
          idx->literal = int64_t(std::stoll(cur().text));
          advance();
          item->args.push_back(std::move(e));
          item->args.push_back(std::move(idx));
          e = std::move(item);
        } else {
          auto attr = node(Expr::Kind::Attr, line);
          attr->name = expect_name_token();
          attr->args.push_back(std::move(e));
          e = std::move(attr);
        }
      } else if (is_op("[")) {
        advance();
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        auto call = node(Expr::Kind::Call, line);
        call->args.push_back(std::move(e));
        parse_call_args(call.get());
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    bool slice = false;
    if (!is_op(":")) parts[0] = parse_expression(true);
    if (accept_op(":")) {
      slice = true;
      if (!is_op("]") && !is_op(":")) parts[1] = parse_expression(true);
      if (accept_op(":") && !is_op("]")) parts[2] = parse_expression(true);
    }
    expect_op("]");
    auto e = node(slice ? Expr::Kind::Slice : Expr::Kind::Item, line);
    e->args.push_back(std::move(obj));
    if (slice) {
      for (auto& p : parts) e->args.push_back(std::move(p));
    } else {
      e->args.push_back(std::move(parts[0]));
    }
    return e;
  }

  // '(' args ')': positional arguments, then name=value ones.
  void parse_call_args(Expr* call) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) error(cur().line, "unsupported construct '*args' in a call");
      if (cur().type == TokType::Name && peek().type == TokType::Op && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        call->kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!call->kwargs.empty())
          error(cur().line, "a positional argument follows a keyword argument");
        call->args.push_back(parse_expression(true));
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

  ExprPtr parse_filter(ExprPtr subject) {
    int line = cur().line;
    std::string name = expect_name_token();
    if (!is_known_filter(name)) error(line, "unsupported filter '", name, "'");
    auto f = node(Expr::Kind::Filter, line);
    f->name = name;
    f->args.push_back(std::move(subject));
    if (is_op("(")) parse_call_args(f.get());
    return f;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        advance();
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        int line = cur().line;
        advance();
        bool negated = accept_name("not");
        std::string name = expect_name_token();
        if (!is_known_test(name)) error(line, "unsupported test '", name, "'");
        auto t = node(Expr::Kind::Test, line);
        t->name = name;
        t->negated = negated;
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(t.get());
        } else if ((cur().type == TokType::Name || cur().type == TokType::String ||
                    cur().type == TokType::Int || cur().type == TokType::Float || is_op("[") ||
                    is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        auto call = node(Expr::Kind::Call, cur().line);
        call->args.push_back(std::move(e));
        parse_call_args(call.get());
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
};

}  // namespace

Body parse(std::string_view source) { return Parser(tokenize(source)).parse_template(); }

}  // namespace kiln::jinja
