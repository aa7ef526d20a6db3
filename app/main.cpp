// kiln: run open LLMs from GGUF or safetensors. main() only dispatches to
// the subcommands in this folder; each explains itself with --help.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "command.h"
#include "kiln/core/error.h"

namespace kiln::app {

static std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
void register_command(const Command& command) { registry().push_back(command); }
const std::vector<Command>& commands() { return registry(); }

static void print_help() {
  std::printf(
      "kiln: run open language models (GGUF or Hugging Face safetensors) on CPU or GPU\n\n"
      "usage: kiln COMMAND [ARGS]   (kiln COMMAND --help for its options)\n\ncommands:\n");
  auto sorted = commands();
  std::sort(sorted.begin(), sorted.end(),
            [](const Command& a, const Command& b) { return std::string(a.name) < b.name; });
  for (const auto& c : sorted) std::printf("  %-10s %s\n", c.name, c.summary);
  std::printf(
      "\nexamples:\n"
      "  kiln run                         tell a story with the bundled model\n"
      "  kiln run model.gguf -p \"Hello\"   continue a prompt\n"
      "  kiln info model.gguf             what a model is and what it needs\n");
}

}  // namespace kiln::app

int main(int argc, char** argv) {
  using namespace kiln::app;
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "help") {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& c : commands()) {
    if (name == c.name) {
      std::vector<std::string> args(argv + 2, argv + argc);
      try {
        return c.run(args);
      } catch (const kiln::Error& e) {
        std::fprintf(stderr, "kiln %s: error: %s\n", c.name, e.what());
        return 1;
      } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "kiln %s: error: out of memory\n", c.name);
        return 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kiln %s: error: %s\n", c.name, e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "kiln: unknown command '%s' (see kiln --help)\n", name.c_str());
  return 2;
}
