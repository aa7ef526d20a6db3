// Python's string operations, as chat templates call them on strings
// (str.split, str.strip, str.replace, % and .format(), upper/lower), with
// Python's results on UTF-8 text. Failures throw EvalError.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/chat/jinja_value.h"

namespace kiln::jinja {

// Case mapping of ASCII, Latin-1, Greek and Cyrillic letters; others unchanged.
std::string str_lower(std::string s);
std::string str_upper(std::string s);
std::string capitalize(const std::string& s);

// chars: null/undefined strips whitespace (Python's definition), else a string of characters.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
// sep: null/undefined splits on whitespace runs; maxsplit < 0: no limit.
Json py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count);
// "%s %d" % args, for the conversions s, r, d, i, f.
std::string percent_format(const std::string& fmt, const std::vector<Value>& args);
// "{} {0} {name}".format(...), without format specs.
std::string brace_format(const std::string& fmt, CallArgs& a);

}  // namespace kiln::jinja
