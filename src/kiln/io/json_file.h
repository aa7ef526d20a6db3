// JSON files (config.json, tokenizer.json, safetensors headers...) parsed
// with nlohmann::json; a syntax error becomes a kiln::Error that names the
// file and the line, instead of nlohmann's own exception.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kiln {

// Reads and parses a whole file. Throws kiln::Error "<path>: cannot open: ..."
// or "<path>: invalid JSON at line L: ...".
nlohmann::json read_json_file(const std::string& path);

// Parses text that came from `origin` (a path, or "a.safetensors header"),
// with the same one-line errors as read_json_file.
nlohmann::json parse_json(std::string_view text, const std::string& origin);

}  // namespace kiln
