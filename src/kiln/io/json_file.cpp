#include "kiln/io/json_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "kiln/core/error.h"

namespace kiln {
namespace {

// nlohmann's message reads "[json.exception.parse_error.101] parse error at
// line 3, column 7: syntax error while parsing ..."; keep only what follows
// the position, since we report the line ourselves.
std::string reason_of(const std::string& what) {
  size_t at = what.find("parse error");
  if (at == std::string::npos) return what;
  size_t colon = what.find(": ", at);
  if (colon == std::string::npos) return what.substr(at);
  return what.substr(colon + 2);
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& origin) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based and may point one past the end of the text.
    size_t upto = std::min(text.size(), e.byte > 0 ? size_t(e.byte - 1) : size_t(0));
    size_t line = 1 + size_t(std::count(text.begin(), text.begin() + upto, '\n'));
    fail(origin, ": invalid JSON at line ", line, ": ", reason_of(e.what()));
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": invalid JSON: ", e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail(path, ": cannot read");
  return parse_json(buf.str(), path);
}

}  // namespace kiln
