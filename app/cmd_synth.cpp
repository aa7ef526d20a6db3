// kiln synth: a GGUF with random weights in the exact shapes of a real model,
// to measure speed at real sizes without downloading weights.
#include <cstdio>

#include "args.h"
#include "command.h"
#include "kiln/convert/convert.h"
#include "kiln/core/error.h"

namespace kiln::app {
namespace {

int synth_command(const std::vector<std::string>& args) {
  std::string config, out, type = "q8_0", tokenizer;
  int64_t seed = 0;
  float stddev = 0.02f;
  int threads = 0;
  bool quiet = false;
  ArgParser p("kiln synth", "--config CONFIG.json OUT.gguf [--type TYPE] [--seed S] [--tokenizer DIR]",
              "Write a GGUF with random weights (gaussian, std 0.02; norms 1) and the shapes\n"
              "and metadata of the model a Hugging Face config.json describes. Without\n"
              "--tokenizer it has no tokenizer: run it with --ids.");
  p.option("-c,--config", "FILE", "the model's config.json (required)", &config);
  p.positional("OUT", "GGUF file to write", &out, true);
  p.option("-t,--type", "TYPE", "f32, f16, bf16, q8_0, q4_0, q4_k_m or q6_k (default q8_0)", &type);
  p.option("--seed", "S", "random seed (default 0); the same seed gives the same file", &seed);
  p.option("--std", "X", "standard deviation of the weights (default 0.02)", &stddev);
  p.option("--tokenizer", "DIR", "include a Hugging Face folder's tokenizer.json (text, llama.cpp)",
           &tokenizer);
  p.option("--threads", "N", "threads (default: physical cores)", &threads);
  p.flag("-q,--quiet", "no progress or summary on stderr", &quiet);
  p.epilog(
      "examples:\n"
      "  kiln synth --config bench/configs/qwen3-0.6b.json qwen3-0.6b-q8_0.gguf\n"
      "  kiln run qwen3-0.6b-q8_0.gguf --ids \"1 2 3\" -n 64\n"
      "  kiln synth --config bench/configs/qwen3-0.6b.json --tokenizer ~/Qwen3-0.6B q.gguf\n"
      "  kiln run q.gguf -p \"Once upon a time\" -n 64");
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(!config.empty(), "--config CONFIG.json is required");
  KILN_CHECK(stddev > 0 && stddev < 10, "--std ", stddev, ": must be in (0, 10)");

  SynthOptions o;
  o.type = parse_file_type(type);
  o.seed = uint64_t(seed);
  o.stddev = stddev;
  o.threads = threads;
  o.tokenizer_dir = tokenizer;
  if (!quiet) {
    o.progress = stderr_progress("writing");
    o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  }
  remove_temp_on_interrupt(out);
  synth_model(config, out, o);
  if (!quiet) std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), file_type_name(o.type).c_str());
  return 0;
}

}  // namespace

KILN_COMMAND("synth", "write a random-weight GGUF with a real model's shapes (for benchmarks)", synth_command);

}  // namespace kiln::app
