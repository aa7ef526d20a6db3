// kiln run: continue a prompt and stream the text as it is generated.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/runtime/conversation.h"
#include "kiln/runtime/generate.h"
#include "kiln/runtime/stop_strings.h"

namespace kiln::app {
namespace {

void print_json(const std::vector<int32_t>& prompt_ids, const GenerateResult& g,
                const std::string& text, const std::string& thought) {
  nlohmann::json out;
  out["prompt_ids"] = prompt_ids;
  out["ids"] = g.tokens;
  out["text"] = text;
  if (!thought.empty()) out["reasoning"] = thought;
  out["stop_reason"] = stop_reason_name(g.stop);
  // As llama.cpp's server reports them: the prompt fed (prefill) and the
  // tokens generated after it (decode), with their wall-clock times.
  const auto per_second = [](int64_t n, double s) { return s > 0 ? double(n) / s : 0.0; };
  const int64_t predicted = int64_t(g.tokens.size());
  out["timings"] = {{"prompt_n", g.prompt_tokens},
                    {"prompt_ms", 1e3 * g.prefill_seconds},
                    {"prompt_per_second", per_second(g.prompt_tokens, g.prefill_seconds)},
                    {"predicted_n", predicted},
                    {"predicted_ms", 1e3 * g.decode_seconds},
                    {"predicted_per_second", per_second(predicted, g.decode_seconds)}};
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

void print_stream(const std::string& s, FILE* to) {
  std::fputs(s.c_str(), to);
  std::fflush(to);
}

// One user turn through the chat template: the answer on stdout, the
// thought on stderr with --show-think.
int run_chat_turn(Engine& engine, ChatFormat format, const std::string& prompt, int n_predict,
                  const SamplingParams& sampling, const ChatFlags& cf, const MediaFlags& mf,
                  const RuntimeFlags& rt, bool json) {
  TurnOptions turn;
  turn.max_tokens = n_predict;
  turn.sampling = sampling;
  turn.enable_thinking = cf.enable_thinking();
  turn.think_budget = cf.think_budget;
  turn.stop_strings = cf.stop;
  Conversation chat(engine, std::move(format), state_options(rt));
  chat.set_system(cf.system);
  chat.set_mmproj(mf.mmproj);
  TurnCallbacks cb;
  if (!json) {
    cb.on_answer = [](const std::string& s) { print_stream(s, stdout); };
    if (cf.show_think) cb.on_thought = [](const std::string& s) { print_stream(s, stderr); };
  }
  TurnResult r = chat.say(prompt, turn, cb, mf.media());
  if (json)
    print_json(r.prompt_ids, r.generation, r.answer, r.thought);
  else
    std::fputs("\n", stdout);
  return 0;
}

int run_command(const std::vector<std::string>& args) {
  std::string model, prompt, ids_text;
  int n_predict = 256;
  bool json = false, no_bos = false, raw = false;
  RuntimeFlags rt;
  SamplingFlags sf;
  ChatFlags cf;
  MediaFlags mf;
  ArgParser p("kiln run", "[MODEL] [-p TEXT | --ids \"1 2 3\"] [-n N] [options]",
              "Generate a continuation of a prompt and stream it to stdout.\n"
              "MODEL is a .gguf file, or a safetensors model (file or folder with config.json);\n"
              "without one, the bundled stories260K model tells a story.\n"
              "A prompt given with -p goes through the model's chat template when it has one\n"
              "(as a user message); --raw and --ids skip the template.");
  p.positional("MODEL", "model file or folder (default: the bundled stories260K)", &model, false);
  p.option("-p,--prompt", "TEXT", "prompt text", &prompt);
  p.option("--ids", "IDS", "prompt as token ids (\"1 2 3\"), used as given", &ids_text);
  p.option("-n,--n-predict", "N", "tokens to generate (default 256)", &n_predict);
  p.flag("--raw", "send the prompt as it is, without the model's chat template", &raw);
  p.flag("--no-bos", "do not start a raw prompt with the BOS token", &no_bos);
  p.flag("--json",
         "print one JSON object at the end: {\"prompt_ids\", \"ids\", \"text\", \"stop_reason\",\n"
         "\"timings\"} (timings: prompt and generated tokens, ms and tokens per second)",
         &json);
  add_chat_flags(p, &cf);
  add_media_flags(p, &mf);
  add_sampling_flags(p, &sf);
  add_runtime_flags(p, &rt);
  p.epilog(
      "examples:\n"
      "  kiln run                                  a story from the bundled model\n"
      "  kiln run model.gguf -p \"The sky is\" -n 32 --greedy\n"
      "  kiln run Qwen3-0.6B/ -p \"Why is the sky blue?\" --think-budget 64 --show-think\n"
      "  kiln run Qwen3-VL-4B/ --image cat.jpg -p \"What is in the picture?\"\n"
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
  const SamplingParams sampling = sampling_params(sf, default_sampling(engine->file()));
  const bool has_media = !mf.images.empty() || !mf.videos.empty();
  KILN_CHECK(!has_media || !raw, "--image/--video need the chat template or --ids, not --raw");
  if (!raw && ids_text.empty()) {
    ChatFormat format = load_chat_format(engine->file(), *tok);
    if (format.chat_template)
      return run_chat_turn(*engine, std::move(format), prompt, n_predict, sampling, cf, mf, rt,
                           json);
    KILN_CHECK(!has_media, "this model has no chat template, so it cannot take images");
  }

  GenerateRequest req;
  req.max_tokens = n_predict;
  req.sampling = sampling;
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
  std::vector<float> prefilled;
  if (has_media) {
    // --ids with the media pads already expanded (as kiln logits takes them).
    auto vision = VisionRuntime::open(engine->file(), mf.mmproj, engine->backend());
    const TurnMedia tm = mf.media();
    std::vector<MediaItem> media;
    for (const auto& path : tm.images) media.push_back(vision->encode_image(path));
    for (const auto& path : tm.videos) media.push_back(vision->encode_video(path, tm.video));
    MultimodalPrompt mp =
        build_multimodal_prompt(req.prompt, media, vision_token_ids(engine->require_tokenizer()), 0);
    prefilled.resize(size_t(engine->spec().vocab_size));
    prefill_multimodal(engine->model(), *state, mp, prefilled.data(), false);
    req.prefilled_logits = prefilled.data();
  }
  std::string text;
  std::unique_ptr<StreamingDecoder> decoder;
  if (tok) decoder = std::make_unique<StreamingDecoder>(*tok, /*skip_special=*/true);
  StopStrings stops(cf.stop);
  if (demo && !json) print_stream(prompt, stdout);
  auto show = [&](const std::string& piece) {
    text += piece;
    if (!json) print_stream(piece, stdout);
  };
  auto result = generate(engine->model(), *state, req, [&](int32_t id) {
    if (!decoder) return true;
    show(stops.push(decoder->push(id)));
    return !stops.stopped();
  });
  if (decoder) show(stops.push(decoder->flush()) + stops.flush());
  if (json)
    print_json(req.prompt, result, text, "");
  else
    std::fputs("\n", stdout);
  return 0;
}

}  // namespace

KILN_COMMAND("run", "generate text from a prompt (streams to stdout)", run_command);

}  // namespace kiln::app
