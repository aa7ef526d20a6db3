// kiln chat: a conversation in the terminal, streamed, with the model's own
// chat template; the KV cache carries over from turn to turn.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/runtime/conversation.h"

namespace kiln::app {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

int chat_command(const std::vector<std::string>& args) {
  std::string model;
  int n_predict = 1024;
  RuntimeFlags rt;
  SamplingFlags sf;
  ChatFlags cf;
  MediaFlags mf;
  ArgParser p("kiln chat", "[MODEL] [--system TEXT] [options]",
              "Talk with a model in the terminal. Answers stream as they are generated;\n"
              "the conversation is kept, and each turn only processes its new tokens.\n"
              "In the chat: /reset starts over (the system prompt stays), /exit or Ctrl-D quits,\n"
              "/image PATH or /video PATH attaches media to your next message (vision models),\n"
              "Ctrl-C stops the answer being written.");
  p.positional("MODEL", "model file or folder (default: the bundled stories260K)", &model, false);
  p.option("-n,--n-predict", "N", "most tokens per answer (default 1024)", &n_predict);
  add_chat_flags(p, &cf);
  p.option("--mmproj", "FILE", "vision tower of a GGUF model (default: mmproj-*.gguf beside it)",
           &mf.mmproj);
  add_sampling_flags(p, &sf);
  add_runtime_flags(p, &rt);
  if (!p.parse(args)) return p.exit_code();
  if (model.empty()) model = bundled_model_path();

  auto engine = load_engine(model, rt);
  ChatFormat format = load_chat_format(engine->file(), engine->require_tokenizer());
  TurnOptions turn;
  turn.max_tokens = n_predict;
  turn.sampling = sampling_params(sf, default_sampling(engine->file()));
  turn.enable_thinking = cf.enable_thinking();
  turn.think_budget = cf.think_budget;
  turn.stop_strings = cf.stop;
  Conversation chat(*engine, std::move(format), state_options(rt));
  chat.set_system(cf.system);
  chat.set_mmproj(mf.mmproj);
  TurnMedia pending;

  const bool tty = ::isatty(STDIN_FILENO);
  std::signal(SIGINT, on_sigint);
  if (tty)
    std::fprintf(stderr, "kiln chat: %s%s. /reset starts over, /exit or Ctrl-D quits.\n",
                 engine->spec().arch.c_str(),
                 chat.has_template() ? "" : " (no chat template: text is continued as written)");
  std::string line;
  for (;;) {
    if (tty) std::fputs("\n> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      chat.reset();
      if (tty) std::fputs("(conversation cleared)\n", stdout);
      continue;
    }
    if (line.rfind("/image ", 0) == 0 || line.rfind("/video ", 0) == 0) {
      const bool video = line[1] == 'v';
      std::string path = line.substr(7);
      while (!path.empty() && path.front() == ' ') path.erase(0, 1);
      (video ? pending.videos : pending.images).push_back(path);
      if (tty) std::printf("(%s attached to your next message)\n", path.c_str());
      continue;
    }
    if (line.empty()) continue;
    g_interrupted = 0;
    TurnCallbacks cb;
    cb.on_answer = [](const std::string& s) {
      std::fputs(s.c_str(), stdout);
      std::fflush(stdout);
    };
    if (cf.show_think)
      cb.on_thought = [](const std::string& s) {
        std::fputs(s.c_str(), stderr);
        std::fflush(stderr);
      };
    cb.cancelled = [] { return g_interrupted != 0; };
    try {
      chat.say(line, turn, cb, pending);
    } catch (const Error& e) {
      // A bad image or a full context ends the turn, not the chat.
      std::fprintf(stderr, "kiln chat: error: %s\n", e.what());
    }
    pending = TurnMedia{};
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

KILN_COMMAND("chat", "talk with a model in the terminal (multi-turn, streaming)", chat_command);

}  // namespace kiln::app
