// kiln logits: one prefill over given token ids, logits of every position
// written to a safetensors file. Numerical tests and benchmarks rely on
// exactly this interface.
#include <cstdio>
#include <vector>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"
#include "kiln/runtime/multimodal.h"

namespace kiln::app {
namespace {

int logits_command(const std::vector<std::string>& args) {
  std::string model, ids_text, prompt, out_path, mmproj;
  std::vector<std::string> images, videos;
  VideoOptions video_opt;
  float fps = 2.0f;
  RuntimeFlags rt;
  ArgParser p("kiln logits", "MODEL (--ids \"1 2 3\" | -p TEXT) --out FILE.safetensors",
              "Run one prefill over the prompt and write the next-token logits of every\n"
              "position as tensor 'logits', F32 [T, vocab].");
  p.positional("MODEL", "model file or folder", &model, true);
  p.option("--ids", "IDS", "prompt as token ids (\"1 2 3\")", &ids_text);
  p.option("-p,--prompt", "TEXT", "prompt as text (tokenized without BOS)", &prompt);
  p.option("-o,--out", "FILE", "output .safetensors file", &out_path);
  p.option("--image", "PATH", "an image for the prompt's image pads (repeatable); also\n"
                 "writes pixel_values, image_embeds, deepstack_embeds and position_ids", &images);
  p.option("--video", "PATH", "a video file or folder of frames (repeatable)", &videos);
  p.option("--mmproj", "FILE", "vision tower GGUF (default: mmproj-*.gguf beside the model)",
           &mmproj);
  p.option("--fps", "N", "video frames sampled per second (default 2)", &fps);
  p.option("--max-frames", "N", "at most this many video frames (default 768)",
           &video_opt.max_frames);
  add_runtime_flags(p, &rt);
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(!out_path.empty(), "--out FILE is required");
  KILN_CHECK(ids_text.empty() != prompt.empty(), "give exactly one of --ids or -p");

  video_opt.fps = fps;
  const bool vision = !images.empty() || !videos.empty();
  auto engine = load_engine(model, rt, /*need_tokenizer=*/!prompt.empty() || vision);
  std::vector<int32_t> ids =
      ids_text.empty() ? engine->require_tokenizer().encode(prompt) : parse_ids(ids_text);
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  RuntimeFlags sized = rt;
  if (sized.ctx_size == 0 || sized.ctx_size < T) sized.ctx_size = int(T);
  auto state = engine->model().new_state(state_options(sized));
  std::vector<float> logits(static_cast<size_t>(T * V));
  std::vector<SafetensorsEntry> entries;
  std::vector<MediaItem> media;
  MultimodalPrompt mm;
  if (images.empty() && videos.empty()) {
    engine->model().forward(*state, ids.data(), T, logits.data(), /*all_logits=*/true);
  } else {
    auto tower = VisionRuntime::open(engine->file(), mmproj, engine->backend());
    for (const auto& path : images) media.push_back(tower->encode_image(path));
    for (const auto& path : videos) media.push_back(tower->encode_video(path, video_opt));
    const Tokenizer& tok = engine->require_tokenizer();
    mm = build_multimodal_prompt(ids, media, vision_token_ids(tok), 0);
    prefill_multimodal(engine->model(), *state, mm, logits.data(), /*all_logits=*/true);
    const MediaItem& m = media.front();
    entries.push_back({"pixel_values", DType::F32, {m.pixels.rows(), m.pixels.cols},
                       m.pixels.data.data(), m.pixels.data.size() * sizeof(float)});
    entries.push_back({"image_embeds", DType::F32, {m.out.n_tokens, m.out.dim},
                       m.out.embeds.data(), m.out.embeds.size() * sizeof(float)});
    if (m.out.n_deepstack)
      entries.push_back({"deepstack_embeds", DType::F32,
                         {m.out.n_deepstack, m.out.n_tokens, m.out.dim}, m.out.deepstack.data(),
                         m.out.deepstack.size() * sizeof(float)});
    entries.push_back({"position_ids", DType::I32, {3, T}, mm.positions.data(),
                       mm.positions.size() * sizeof(int32_t)});
  }

  entries.push_back({"logits", DType::F32, {T, V}, logits.data(), logits.size() * sizeof(float)});
  entries.push_back({"input_ids", DType::I32, {T}, ids.data(), ids.size() * sizeof(int32_t)});
  write_safetensors(out_path, entries);
  return 0;
}

}  // namespace

KILN_COMMAND("logits", "write the logits of one prefill to a safetensors file", logits_command);

}  // namespace kiln::app
