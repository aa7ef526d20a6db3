// Renders a parsed template with Python Jinja2's semantics, as far as chat
// templates depend on them: Undefined renders empty, Python str()/repr() of
// values, Python string methods, and the globals Hugging Face adds
// (raise_exception, strftime_now) with its tojson.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/chat/jinja_ast.h"

namespace kiln::jinja {

bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);

// Renders body with the given top-level variables. Throws kiln::Error
// ("chat template line N: ...") when rendering fails, including raise_exception().
std::string render(const Body& body, const std::vector<std::pair<std::string, Value>>& globals);

}  // namespace kiln::jinja
