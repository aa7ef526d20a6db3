#include "kiln/chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kiln/chat/jinja_eval.h"
#include "kiln/chat/jinja_parser.h"
#include "kiln/core/error.h"

namespace kiln {

ChatTemplate ChatTemplate::parse(const std::string& source) {
  ChatTemplate t;
  t.source_ = source;
  t.body_ = std::make_shared<const jinja::Body>(jinja::parse(source));
  return t;
}

std::string ChatTemplate::render(const nlohmann::json& messages,
                                 const ChatTemplateOptions& opt) const {
  return render(nlohmann::ordered_json(messages), opt);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& opt) const {
  KILN_CHECK(messages.is_array(), "chat messages must be a JSON list, got ", messages.type_name());
  KILN_CHECK(opt.extra.is_null() || opt.extra.is_object(),
             "chat template variables must be a JSON object, got ", opt.extra.type_name());
  // The variables transformers' apply_chat_template passes.
  std::vector<std::pair<std::string, jinja::Value>> globals = {
      {"messages", jinja::Value(messages)},
      {"add_generation_prompt", jinja::Value(opt.add_generation_prompt)},
      {"bos_token", jinja::Value(opt.bos_token)},
      {"eos_token", jinja::Value(opt.eos_token)},
      {"tools", jinja::Value(opt.tools)},
      {"documents", jinja::Value(jinja::Json())},
  };
  if (opt.enable_thinking)
    globals.emplace_back("enable_thinking", jinja::Value(*opt.enable_thinking));
  if (opt.extra.is_object()) {
    for (auto it = opt.extra.begin(); it != opt.extra.end(); ++it) {
      bool replaced = false;
      for (auto& [k, v] : globals) {
        if (k == it.key()) {
          v = jinja::Value(it.value());
          replaced = true;
        }
      }
      if (!replaced) globals.emplace_back(it.key(), jinja::Value(it.value()));
    }
  }
  return jinja::render(*body_, globals);
}

static std::optional<std::string> read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static nlohmann::json read_json(const std::filesystem::path& p, const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(p.string(), ": not valid JSON (", e.what(), ")");
  }
}

std::optional<std::string> chat_template_from_config(const nlohmann::json& config) {
  if (!config.is_object()) return std::nullopt;
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return entry["template"].get<std::string>();
    }
    return std::nullopt;
  }
  fail("\"chat_template\" must be a string or a list of {name, template}, got ", it->type_name());
}

std::string special_token_from_config(const nlohmann::json& config, const std::string& key) {
  if (!config.is_object()) return "";
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

std::optional<std::string> find_chat_template(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  if (auto t = read_text(dir / "chat_template.jinja")) return t;
  // Processors of multimodal models keep it in chat_template.json.
  if (auto text = read_text(dir / "chat_template.json")) {
    if (auto t = chat_template_from_config(read_json(dir / "chat_template.json", *text))) return t;
  }
  if (auto text = read_text(dir / "tokenizer_config.json")) {
    if (auto t = chat_template_from_config(read_json(dir / "tokenizer_config.json", *text)))
      return t;
  }
  return std::nullopt;
}

}  // namespace kiln
