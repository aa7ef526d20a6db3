// The kiln command is a set of subcommands, one per file in app/. Each file
// registers itself with KILN_COMMAND; main() dispatches on the first argument.
#pragma once

#include <string>
#include <vector>

namespace kiln::app {

struct Command {
  const char* name;
  const char* summary;  // one line for `kiln --help`
  int (*run)(const std::vector<std::string>& args);  // args after the command name
};

void register_command(const Command& command);
const std::vector<Command>& commands();

struct CommandRegistrar {
  explicit CommandRegistrar(const Command& c) { register_command(c); }
};

}  // namespace kiln::app

#define KILN_COMMAND(name, summary, fn) \
  static ::kiln::app::CommandRegistrar kiln_command_registrar_##fn({name, summary, fn})
