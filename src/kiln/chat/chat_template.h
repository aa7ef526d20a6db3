// Chat templates: turning a conversation into the prompt text a model was
// trained on, by running the model's own Jinja template (from
// tokenizer_config.json, chat_template.jinja or GGUF metadata) the way
// Hugging Face transformers does.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kiln {

namespace jinja {
struct Node;
}

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;  // passed as the template variable enable_thinking when set
  std::string bos_token, eos_token;
  // Ordered JSON keeps the caller's key order, which `tojson` reproduces as
  // Python does; a plain nlohmann::json converts implicitly.
  nlohmann::ordered_json tools;  // null: no tools
  nlohmann::ordered_json extra;  // extra template variables (chat_template_kwargs), an object
};

class ChatTemplate {
 public:
  // Throws kiln::Error ("chat template line N: ...") on a syntax error or a
  // construct the interpreter does not support.
  static ChatTemplate parse(const std::string& source);

  // messages: an OpenAI-style list of {role, content, ...}; content may be a
  // string or a list of {type: text|image, ...} parts. Throws kiln::Error
  // naming the template line when rendering fails (raise_exception included).
  std::string render(const nlohmann::json& messages, const ChatTemplateOptions& opt) const;
  // The same, keeping the key order of the messages for tojson.
  std::string render(const nlohmann::ordered_json& messages, const ChatTemplateOptions& opt) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Node>>> body_;
};

// Finds the template of a model folder: chat_template.jinja, else
// tokenizer_config.json "chat_template" (a string, or a list of {name,
// template}: "default" is taken). Returns nullopt if there is none.
std::optional<std::string> find_chat_template(const std::string& model_dir);

// The template in a tokenizer_config.json document, as find_chat_template reads it.
std::optional<std::string> chat_template_from_config(const nlohmann::json& tokenizer_config);

// A special token of tokenizer_config.json ("bos_token", "eos_token"): a string
// or {"content": ...}; empty if absent or null.
std::string special_token_from_config(const nlohmann::json& tokenizer_config,
                                      const std::string& key);

}  // namespace kiln
