// kiln template: render a conversation with a model's chat template, to see
// exactly the prompt text the model will be given.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "args.h"
#include "command.h"
#include "kiln/chat/chat_template.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/io/json_file.h"

namespace kiln::app {
namespace {

namespace fs = std::filesystem;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct TemplateSource {
  std::string text;
  std::string bos, eos;
};

// Special tokens of a GGUF vocabulary, by the ids its metadata names.
std::string gguf_token(const GgufFile& f, const char* id_key) {
  const GgufValue* id = f.find(id_key);
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  if (!id || !tokens || !id->is_integer() || tokens->type != GgufType::ARRAY) return "";
  int64_t i = id->as_int();
  if (i < 0 || size_t(i) >= tokens->array.size() ||
      tokens->array[size_t(i)].type != GgufType::STRING)
    return "";
  return tokens->array[size_t(i)].str;
}

void tokens_from_config(const std::string& config_path, TemplateSource* t) {
  if (!fs::exists(config_path)) return;
  nlohmann::json config = read_json_file(config_path);
  t->bos = special_token_from_config(config, "bos_token");
  t->eos = special_token_from_config(config, "eos_token");
}

// MODEL: a model folder, a tokenizer_config.json, a .jinja file or a GGUF file.
TemplateSource load_template(const std::string& model) {
  TemplateSource t;
  KILN_CHECK(fs::exists(model), model, ": no such file or folder");
  if (fs::is_directory(model)) {
    auto text = find_chat_template(model);
    KILN_CHECK(text, model,
               ": no chat template (no chat_template.jinja, and no \"chat_template\" in "
               "tokenizer_config.json)");
    t.text = *text;
    tokens_from_config((fs::path(model) / "tokenizer_config.json").string(), &t);
    return t;
  }
  if (ends_with(model, ".gguf")) {
    auto f = GgufFile::open(model);
    const GgufValue* v = f->find("tokenizer.chat_template");
    KILN_CHECK(v && v->type == GgufType::STRING, model,
               ": no chat template (metadata key tokenizer.chat_template is missing)");
    t.text = v->str;
    t.bos = gguf_token(*f, "tokenizer.ggml.bos_token_id");
    t.eos = gguf_token(*f, "tokenizer.ggml.eos_token_id");
    return t;
  }
  if (ends_with(model, ".json")) {
    nlohmann::json config = read_json_file(model);
    auto text = chat_template_from_config(config);
    KILN_CHECK(text, model, ": no \"chat_template\" in this file");
    t.text = *text;
    t.bos = special_token_from_config(config, "bos_token");
    t.eos = special_token_from_config(config, "eos_token");
    return t;
  }
  // A bare template file; its special tokens come from a tokenizer_config.json beside it.
  t.text = read_text(model);
  tokens_from_config((fs::path(model).parent_path() / "tokenizer_config.json").string(), &t);
  return t;
}

int template_command(const std::vector<std::string>& args) {
  std::string model, messages_path;
  bool add_generation_prompt = false, no_think = false;
  ArgParser p("kiln template", "MODEL --messages FILE.json [--add-generation-prompt] [--no-think]",
              "Print the prompt a model's chat template makes of a conversation, exactly.");
  p.positional("MODEL", "model folder, GGUF file, tokenizer_config.json or .jinja template", &model,
               true);
  p.option("-m,--messages", "FILE.json",
           "OpenAI-style message list, or a request object with \"messages\" (and \"tools\", "
           "\"chat_template_kwargs\")",
           &messages_path);
  p.flag("--add-generation-prompt", "end with the header of the assistant's turn",
         &add_generation_prompt);
  p.flag("--no-think", "pass enable_thinking=false (models with a thinking mode)", &no_think);
  p.epilog(
      "example:\n"
      "  echo '[{\"role\": \"user\", \"content\": \"Hi\"}]' > chat.json\n"
      "  kiln template Qwen3-0.6B/ --messages chat.json --add-generation-prompt");
  if (!p.parse(args)) return p.exit_code();
  if (messages_path.empty()) {
    std::fprintf(stderr, "kiln template: --messages FILE.json is required\n%s", p.help().c_str());
    return 2;
  }

  TemplateSource src = load_template(model);
  ChatTemplate tmpl = ChatTemplate::parse(src.text);

  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(read_text(messages_path));
  } catch (const nlohmann::json::parse_error& e) {
    fail(messages_path, ": invalid JSON at byte ", e.byte);
  }
  ChatTemplateOptions opt;
  opt.add_generation_prompt = add_generation_prompt;
  if (no_think) opt.enable_thinking = false;
  opt.bos_token = src.bos;
  opt.eos_token = src.eos;
  nlohmann::ordered_json messages = doc;
  if (doc.is_object()) {
    KILN_CHECK(doc.contains("messages"), messages_path, ": an object needs a \"messages\" list");
    messages = doc["messages"];
    if (doc.contains("tools")) opt.tools = doc["tools"];
    if (doc.contains("chat_template_kwargs")) opt.extra = doc["chat_template_kwargs"];
  }
  KILN_CHECK(messages.is_array(), messages_path,
             ": messages must be a JSON list of {role, content}");

  std::string out = tmpl.render(messages, opt);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

KILN_COMMAND("template", "print the prompt a model's chat template makes of a conversation",
             template_command);

}  // namespace kiln::app
