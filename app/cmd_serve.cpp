// kiln serve: an OpenAI-compatible HTTP server with continuous batching.
#include <csignal>
#include <cstdio>
#include <thread>

#include "command.h"
#include "common.h"
#include "kiln/core/error.h"
#include "kiln/runtime/system_probe.h"
#include "kiln/server/server.h"

namespace kiln::app {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int serve_command(const std::vector<std::string>& args) {
  std::string model, host = "127.0.0.1", api_key, alias;
  int port = 8080, parallel = 0, queue = 64, grace = 10;
  int64_t step_tokens = 256, kv_size = 0;
  RuntimeFlags rt;
  ArgParser p("kiln serve", "MODEL [--host H] [--port P] [--parallel N] [--ctx-size C] [--api-key KEY]",
              "Serve a model over HTTP with the OpenAI API: POST /v1/chat/completions and\n"
              "/v1/completions (streamed with \"stream\": true), GET /v1/models, /health and\n"
              "/metrics. Requests are decoded together (continuous batching): each step feeds\n"
              "every running sequence's next token and chunks of new prompts at once.\n"
              "Context and slots are chosen to fit this machine's free memory unless given.");
  p.positional("MODEL", "model file or folder", &model, true);
  p.option("--host", "H", "address to listen on (default 127.0.0.1)", &host);
  p.option("--port", "P", "port (default 8080; 0 = any free port, printed at start)", &port);
  p.option("-np,--parallel", "N", "requests decoded together (default: chosen from the machine)",
           &parallel);
  p.option("--queue", "N", "requests that may wait for a slot; more get 503 (default 64)", &queue);
  p.option("--step-tokens", "N",
           "most tokens per forward step: prompts are fed in chunks of what is left after the "
           "decoding sequences (default 256)",
           &step_tokens);
  p.option("--kv-size", "N",
           "positions in the KV cache all requests share, in blocks of 32 (default: parallel x "
           "ctx-size, or what fits in RAM; fewer lets many slots share less memory; CPU only)",
           &kv_size);
  p.option("--api-key", "KEY", "require 'Authorization: Bearer KEY' (except on /health)", &api_key);
  p.option("--alias", "NAME", "the model name clients use (default: the file name)", &alias);
  p.option("--grace", "S", "seconds running requests get to finish on SIGTERM (default 10)", &grace);
  add_runtime_flags(p, &rt);
  p.epilog(
      "--ctx-size is the context of each request (prompt + answer). On the CPU the KV cache\n"
      "is one pool of blocks that the requests take as they grow and give back when done\n"
      "(--kv-size positions; at least ctx-size): a prompt head that requests have in common\n"
      "is stored once, and when the pool runs short the newest request is paused and\n"
      "recomputed later. On a GPU each slot holds its whole context.\n\n"
      "example:\n"
      "  kiln serve Qwen3-0.6B/ --port 8080 --parallel 8\n"
      "  curl localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'");
  if (!p.parse(args)) return p.exit_code();
  KILN_CHECK(port >= 0 && port < 65536, "--port must be 0 to 65535");
  KILN_CHECK(parallel >= 0, "--parallel must be positive");
  KILN_CHECK(queue >= 0, "--queue must be >= 0");
  KILN_CHECK(rt.ctx_size >= 0, "--ctx-size must be positive");
  KILN_CHECK(kv_size >= 0, "--kv-size must be positive");

  // What this machine has, and what fits on it.
  const SystemProbe sys = probe_system();
  std::fprintf(stderr, "kiln serve: this machine: %s\n", sys.summary().c_str());
  auto probe_file = ModelFile::open(model);
  const StateOptions so = state_options(rt);
  const bool gpu = !rt.cpu && !sys.gpus.empty();
  ServePlan plan =
      plan_serving(*probe_file, sys, rt.ctx_size, parallel, so.kv_dtype, gpu, kv_size);
  auto report = [&] {
    for (const auto& r : plan.reasons) std::fprintf(stderr, "kiln serve: %s\n", r.c_str());
    KILN_CHECK(plan.fits, "the model does not fit this machine (see above); not starting rather "
                          "than thrashing");
  };
  if (!gpu) report();

  RuntimeFlags load_flags = rt;
  // The device choice sees the whole cache the server will hold.
  load_flags.ctx_size = int(std::min<int64_t>(plan.kv_positions, INT32_MAX));
  auto engine = load_engine(model, load_flags);
  if (gpu) {
    // The engine may have settled on the CPU after all (the model did not fit
    // the GPU, or it cannot run there): plan for the device it chose.
    if (engine->backend().name() == "cpu")
      plan = plan_serving(*probe_file, sys, rt.ctx_size, parallel, so.kv_dtype, false, kv_size);
    report();
  }
  probe_file.reset();
  std::fprintf(stderr, "kiln serve: on %s: %d parallel sequences x %lld positions\n",
               engine->backend().name().c_str(), plan.parallel, (long long)plan.context);

  ServerOptions o;
  o.host = host;
  o.port = port;
  o.api_key = api_key;
  o.model_id = alias;
  o.scheduler.slots = plan.parallel;
  o.scheduler.context = plan.context;
  o.scheduler.max_queue = queue;
  o.scheduler.step_tokens = step_tokens;
  o.scheduler.kv_dtype = so.kv_dtype;
  o.scheduler.kv_positions = plan.kv_positions;
  o.scheduler.weight_tiles_bytes = plan.on_gpu ? 0 : plan.weight_tiles_bytes;
  o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  if (!plan.on_gpu)
    std::fprintf(stderr, "kiln serve: committing the KV cache's memory (%lld positions)...\n",
                 (long long)plan.kv_positions);
  Server server(*engine, o);
  if (const SchedulerStats st = server.scheduler_stats(); st.kv_blocks > 0)
    std::fprintf(stderr, "kiln serve: KV cache: a pool of %lld blocks of %lld positions (%lld positions) shared by the slots\n",
                 (long long)st.kv_blocks, (long long)st.kv_block_positions,
                 (long long)(st.kv_blocks * st.kv_block_positions));
  const int bound = server.bind();
  std::fprintf(stderr, "kiln serve: model '%s' listening on http://%s:%d\n",
               server.model_id().c_str(), host.c_str(), bound);
  std::fflush(stderr);

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::thread watcher([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::fprintf(stderr, "kiln serve: stopping: %d s for running requests to finish\n", grace);
    server.shutdown(grace * 1000);
  });
  server.run();
  g_stop = 1;
  watcher.join();
  std::fprintf(stderr, "kiln serve: stopped\n");
  return 0;
}

}  // namespace

KILN_COMMAND("serve", "an OpenAI-compatible HTTP server with continuous batching", serve_command);

}  // namespace kiln::app
