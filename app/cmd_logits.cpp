// kiln logits: one prefill over given token ids, logits of every position
// written to a safetensors file. Numerical tests and benchmarks rely on
// exactly this interface.
#include <cstdio>
#include <vector>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"

namespace kiln::app {
namespace {

int logits_command(const std::vector<std::string>& args) {
  std::string model, ids_text, prompt, out_path;
  RuntimeFlags rt;
  ArgParser p("kiln logits", "MODEL (--ids \"1 2 3\" | -p TEXT) --out FILE.safetensors",
              "Run one prefill over the prompt and write the next-token logits of every\n"
              "position as tensor 'logits', F32 [T, vocab].");
  p.positional("MODEL", "model file or folder", &model, true);
  p.option("--ids", "IDS", "prompt as token ids (\"1 2 3\")", &ids_text);
  p.option("-p,--prompt", "TEXT", "prompt as text (tokenized without BOS)", &prompt);
  p.option("-o,--out", "FILE", "output .safetensors file", &out_path);
  add_runtime_flags(p, &rt);
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(!out_path.empty(), "--out FILE is required");
  KILN_CHECK(ids_text.empty() != prompt.empty(), "give exactly one of --ids or -p");

  auto engine = load_engine(model, rt, /*need_tokenizer=*/!prompt.empty());
  std::vector<int32_t> ids =
      ids_text.empty() ? engine->require_tokenizer().encode(prompt) : parse_ids(ids_text);
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  RuntimeFlags sized = rt;
  if (sized.ctx_size == 0 || sized.ctx_size < T) sized.ctx_size = int(T);
  auto state = engine->model().new_state(state_options(sized));
  std::vector<float> logits(static_cast<size_t>(T * V));
  engine->model().forward(*state, ids.data(), T, logits.data(), /*all_logits=*/true);

  std::vector<SafetensorsEntry> entries;
  entries.push_back({"logits", DType::F32, {T, V}, logits.data(), logits.size() * sizeof(float)});
  entries.push_back({"input_ids", DType::I32, {T}, ids.data(), ids.size() * sizeof(int32_t)});
  write_safetensors(out_path, entries);
  return 0;
}

}  // namespace

KILN_COMMAND("logits", "write the logits of one prefill to a safetensors file", logits_command);

}  // namespace kiln::app
