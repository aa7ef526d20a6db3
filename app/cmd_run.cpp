// kiln run: continue a prompt and stream the text as it is generated.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/runtime/generate.h"

namespace kiln::app {
namespace {

int run_command(const std::vector<std::string>& args) {
  std::string model, prompt, ids_text;
  int n_predict = 256;
  bool json = false, no_bos = false;
  RuntimeFlags rt;
  SamplingFlags sf;
  ArgParser p("kiln run", "[MODEL] [-p TEXT | --ids \"1 2 3\"] [-n N] [options]",
              "Generate a continuation of a prompt and stream it to stdout.\n"
              "MODEL is a .gguf file, or a safetensors model (file or folder with config.json);\n"
              "without one, the bundled stories260K model tells a story.");
  p.positional("MODEL", "model file or folder (default: the bundled stories260K)", &model, false);
  p.option("-p,--prompt", "TEXT", "prompt text", &prompt);
  p.option("--ids", "IDS", "prompt as token ids (\"1 2 3\"), used as given", &ids_text);
  p.option("-n,--n-predict", "N", "tokens to generate (default 256)", &n_predict);
  p.flag("--no-bos", "do not start the prompt with the BOS token", &no_bos);
  p.flag("--json", "print one JSON object at the end: {\"prompt_ids\", \"ids\", \"text\"}", &json);
  add_sampling_flags(p, &sf);
  add_runtime_flags(p, &rt);
  p.epilog(
      "examples:\n"
      "  kiln run                                  a story from the bundled model\n"
      "  kiln run model.gguf -p \"The sky is\" -n 32 --greedy\n"
      "  kiln run model.gguf --ids \"1 415 2\" --json --seed 7");
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(n_predict >= 0, "-n must be >= 0");
  KILN_CHECK(prompt.empty() || ids_text.empty(), "give either -p or --ids, not both");

  const bool demo = model.empty();
  if (demo) model = bundled_model_path();
  if (demo && prompt.empty() && ids_text.empty()) prompt = "Once upon a time";
  KILN_CHECK(!prompt.empty() || !ids_text.empty(), "no prompt: give -p TEXT or --ids \"1 2 3\"");

  auto engine = load_engine(model, rt, /*need_tokenizer=*/ids_text.empty());
  const Tokenizer* tok = engine->tokenizer();

  GenerateRequest req;
  req.max_tokens = n_predict;
  req.sampling = sampling_params(sf);
  if (!ids_text.empty()) {
    req.prompt = parse_ids(ids_text);
  } else {
    EncodeOptions eo;
    eo.add_bos = tok->add_bos_by_default() && !no_bos;
    req.prompt = tok->encode(prompt, eo);
  }
  for (int64_t id : engine->spec().eos_ids) req.stop_ids.push_back(int32_t(id));
  if (tok && tok->eos_id() >= 0) req.stop_ids.push_back(tok->eos_id());

  auto state = engine->model().new_state(state_options(rt));
  std::string text;
  std::unique_ptr<StreamingDecoder> decoder;
  if (tok) decoder = std::make_unique<StreamingDecoder>(*tok, /*skip_special=*/true);
  if (demo && !json) std::fputs(prompt.c_str(), stdout);
  auto result = generate(engine->model(), *state, req, [&](int32_t id) {
    if (!decoder) return true;
    std::string piece = decoder->push(id);
    text += piece;
    if (!json) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (decoder) {
    std::string rest = decoder->flush();
    text += rest;
    if (!json) std::fputs(rest.c_str(), stdout);
  }
  if (json) {
    nlohmann::json out;
    out["prompt_ids"] = req.prompt;
    out["ids"] = result.tokens;
    out["text"] = text;
    out["stop_reason"] = stop_reason_name(result.stop);
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs("\n", stdout);
  }
  return 0;
}

}  // namespace

KILN_COMMAND("run", "generate text from a prompt (streams to stdout)", run_command);

}  // namespace kiln::app
