// kiln convert: a Hugging Face checkpoint (or a GGUF) into a GGUF that kiln,
// llama.cpp and other GGUF tools load.
#include <cstdio>

#include "args.h"
#include "command.h"
#include "kiln/convert/convert.h"
#include "kiln/core/error.h"

namespace kiln::app {
namespace {

int convert_command(const std::vector<std::string>& args) {
  std::string src, out, type = "f16", i2s_layout;
  int threads = 0;
  bool no_tokenizer = false, quiet = false;
  ArgParser p("kiln convert", "SRC OUT.gguf [--type TYPE]",
              "Write a model as GGUF with llama.cpp's tensor names and metadata keys, its\n"
              "tokenizer and chat template. SRC is a safetensors model (folder, file or\n"
              "index, with config.json beside it) or a GGUF to requantize.");
  p.positional("SRC", "model folder or file", &src, true);
  p.positional("OUT", "GGUF file to write (replaced only when complete)", &out, true);
  p.option("-t,--type", "TYPE", "f32, f16, bf16, q8_0, q4_0, q4_k_m or q6_k (default f16)", &type);
  p.option("--i2s-layout", "L", "with --type i2_s: x86 (default, what bitnet.cpp's x86 builds "
           "and Microsoft's files use), arm (bitnet.cpp's ARM builds) or 1x4", &i2s_layout);
  p.option("--threads", "N", "threads (default: physical cores)", &threads);
  p.flag("--no-tokenizer", "convert even without a usable tokenizer.json (run with --ids)",
         &no_tokenizer);
  p.flag("-q,--quiet", "no progress or summary on stderr", &quiet);
  p.epilog(
      "Norms and other 1-D tensors stay f32. q4_k_m follows llama.cpp's mix: output\n"
      "(or tied token_embd) in q6_k, attn_v and ffn_down in q6_k on the first and last\n"
      "eighth of the layers and every third between, the rest q4_k. A row that is not\n"
      "a whole number of blocks falls back (q4_k -> q5_0, q6_k -> q8_0, then f16).\n\n"
      "examples:\n"
      "  kiln convert Qwen3-0.6B/ qwen3-0.6b-q8_0.gguf --type q8_0\n"
      "  kiln convert model-f16.gguf model-q4_k_m.gguf --type q4_k_m");
  if (!p.parse(args)) return p.exit_code();

  ConvertOptions o;
  o.type = parse_file_type(type);
  o.threads = threads;
  if (!i2s_layout.empty()) o.i2s_layout = parse_i2s_layout(i2s_layout);
  o.allow_no_tokenizer = no_tokenizer;
  if (!quiet) {
    o.progress = stderr_progress("converting");
    o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  }
  remove_temp_on_interrupt(out);
  convert_model(src, out, o);
  if (!quiet) std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), file_type_name(o.type).c_str());
  return 0;
}

}  // namespace

KILN_COMMAND("convert", "write a safetensors model (or a GGUF) as GGUF of a given type", convert_command);

}  // namespace kiln::app
