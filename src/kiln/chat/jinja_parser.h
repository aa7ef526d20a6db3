// Builds the syntax tree of a template from its tokens. Everything that can
// be checked without data is checked here, so that a template using a tag,
// filter or test this interpreter lacks fails when it is loaded, naming the
// line and the construct, not in the middle of serving a request.
#pragma once

#include <string_view>

#include "kiln/chat/jinja_ast.h"

namespace kiln::jinja {

// Throws kiln::Error ("chat template line N: ...") on a syntax error or an
// unsupported construct.
Body parse(std::string_view source);

}  // namespace kiln::jinja
