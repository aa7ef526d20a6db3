#include "kiln/runtime/chat_format.h"

#include <algorithm>
#include <filesystem>

#include "kiln/core/error.h"
#include "kiln/io/json_file.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

void add_unique(std::vector<int32_t>& ids, int64_t id) {
  if (id >= 0 && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end()) ids.push_back(int32_t(id));
}

}  // namespace

std::string ChatFormat::render(const nlohmann::json& messages,
                               const ChatTemplateOptions& options) const {
  KILN_CHECK(chat_template.has_value(), "the model has no chat template");
  return chat_template->render(messages, options);
}

ChatTemplateOptions ChatFormat::default_options() const {
  ChatTemplateOptions o;
  o.bos_token = bos_token;
  o.eos_token = eos_token;
  return o;
}

ChatFormat load_chat_format(const ModelFile& file, const Tokenizer& tok) {
  ChatFormat f;
  std::optional<std::string> source;
  if (const GgufFile* g = file.gguf()) {
    if (const GgufValue* v = g->find("tokenizer.chat_template"); v && v->type == GgufType::STRING)
      source = v->str;
  } else {
    source = find_chat_template(file.directory());
    const fs::path config = fs::path(file.directory()) / "tokenizer_config.json";
    if (fs::exists(config)) {
      const nlohmann::json c = read_json_file(config.string());
      f.bos_token = special_token_from_config(c, "bos_token");
      f.eos_token = special_token_from_config(c, "eos_token");
    }
  }
  if (source) f.chat_template = ChatTemplate::parse(*source);
  if (f.bos_token.empty() && tok.bos_id() >= 0) f.bos_token = tok.token_text(tok.bos_id());
  if (f.eos_token.empty() && tok.eos_id() >= 0) f.eos_token = tok.token_text(tok.eos_id());

  for (int64_t id : file.spec().eos_ids) add_unique(f.end_of_turn_ids, id);
  add_unique(f.end_of_turn_ids, tok.eos_id());
  if (!f.eos_token.empty())
    if (auto id = tok.token_id(f.eos_token)) add_unique(f.end_of_turn_ids, *id);
  // generation_config.json may list more (Llama 3: <|eot_id|> and <|end_of_text|>).
  const fs::path gen = fs::path(file.directory()) / "generation_config.json";
  if (!file.gguf() && fs::exists(gen)) {
    const nlohmann::json g = read_json_file(gen.string());
    if (auto it = g.find("eos_token_id"); it != g.end()) {
      if (it->is_number_integer()) add_unique(f.end_of_turn_ids, it->get<int64_t>());
      if (it->is_array())
        for (const auto& x : *it)
          if (x.is_number_integer()) add_unique(f.end_of_turn_ids, x.get<int64_t>());
    }
  }
  if (f.chat_template)
    for (const char* t : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"})
      if (auto id = tok.token_id(t)) add_unique(f.end_of_turn_ids, *id);
  if (auto id = tok.token_id("<think>")) f.think_start_id = *id;
  if (auto id = tok.token_id("</think>")) f.think_end_id = *id;
  return f;
}

SamplingParams default_sampling(const ModelFile& file) {
  SamplingParams p;
  if (const GgufFile* g = file.gguf()) {
    p.temperature = float(g->get_float_or("general.sampling.temp", p.temperature));
    p.top_k = int(g->get_int_or("general.sampling.top_k", p.top_k));
    p.top_p = float(g->get_float_or("general.sampling.top_p", p.top_p));
    p.min_p = float(g->get_float_or("general.sampling.min_p", p.min_p));
    return p;
  }
  const fs::path gen = fs::path(file.directory()) / "generation_config.json";
  if (!fs::exists(gen)) return p;
  const nlohmann::json g = read_json_file(gen.string());
  auto number = [&](const char* key, auto fallback) {
    auto it = g.find(key);
    return it != g.end() && it->is_number() ? it->get<decltype(fallback)>() : fallback;
  };
  p.temperature = number("temperature", p.temperature);
  if (g.value("do_sample", true) == false) p.temperature = 0;  // greedy whatever else it says
  p.top_k = number("top_k", p.top_k);
  p.top_p = number("top_p", p.top_p);
  p.min_p = number("min_p", p.min_p);
  p.repeat_penalty = number("repetition_penalty", p.repeat_penalty);
  return p;
}

}  // namespace kiln
