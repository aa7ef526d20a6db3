// How a model wants to be talked to: its chat template with the bos/eos
// strings the template refers to, the tokens that end its turn, the
// thinking markers, and the sampling defaults its authors ship.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/chat/chat_template.h"
#include "kiln/model/model_file.h"
#include "kiln/runtime/sampler.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

struct ChatFormat {
  std::optional<ChatTemplate> chat_template;  // none: the model takes raw text
  std::string bos_token, eos_token;           // as the template names them
  std::vector<int32_t> end_of_turn_ids;       // eos ids, <|im_end|>, <|eot_id|>...
  int32_t think_start_id = -1;                // <think>, when the vocabulary has it
  int32_t think_end_id = -1;                  // </think>

  // Renders messages with the template (throws if the model has none).
  std::string render(const nlohmann::json& messages, const ChatTemplateOptions& options) const;
  ChatTemplateOptions default_options() const;
};

// Reads the template from GGUF metadata (tokenizer.chat_template) or the
// model folder (chat_template.jinja, tokenizer_config.json).
ChatFormat load_chat_format(const ModelFile& file, const Tokenizer& tokenizer);

// Sampling defaults from generation_config.json (safetensors) or
// general.sampling.* (GGUF); values not given keep SamplingParams' defaults.
SamplingParams default_sampling(const ModelFile& file);

}  // namespace kiln
