// An OpenAI-compatible HTTP server over one model: /v1/chat/completions and
// /v1/completions (streamed as server-sent events or not), /v1/models,
// /health and /metrics (Prometheus text). Requests run on a Scheduler, which
// batches every running sequence into each forward step.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kiln/runtime/engine.h"
#include "kiln/server/scheduler.h"

namespace httplib {
class Server;
}

namespace kiln {

// How often a request's thread takes its sequence's new tokens
// (Sequence::wait's pace), in microseconds, while `running` requests are
// being generated: every 2 ms for a few, and longer as more run, so that
// all of them together take about 2000 times a second (a take wakes a
// thread and writes to a socket, and on a small machine 32 streams of a
// small model waking every 2 ms cost more than their steps), up to 16 ms:
// a token reaches its client at most that much later. The first take and
// the end are never held back.
int token_take_pace_us(int running);

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;          // 0: any free port (see bind())
  std::string api_key;      // non-empty: requests need "Authorization: Bearer KEY"
  std::string model_id;     // the name clients use; empty: the file name without extension
  SchedulerOptions scheduler;
  int http_threads = 0;     // 0: slots + queue + 8 (a streaming request holds a thread)
  size_t max_body_bytes = 16u << 20;
  // A request without "stream" that is still generating after this long is
  // answered as a chunked response whose body starts with a space every
  // second until the JSON is ready: the only way cpp-httplib lets a handler
  // notice a client that has gone away (its write fails), so that its
  // sequence is cancelled instead of running on for nobody. The status is
  // 200 from then on; a generation that fails later ends the body with an
  // error object instead of the completion.
  int whole_keepalive_after_ms = 1000;
  std::function<void(const std::string&)> log;  // one line per request and event; may be empty
};

class Server {
 public:
  Server(Engine& engine, const ServerOptions& options);
  ~Server();

  // Binds the socket; returns the port (the chosen one when options.port == 0).
  // Throws kiln::Error when the address cannot be bound.
  int bind();
  // Serves until stop(); call after bind().
  void run();
  // Graceful stop: new requests get 503, running ones get grace_ms to finish,
  // then are cancelled (streams end with finish_reason "cancelled"); then
  // the listener closes and run() returns. Safe from any thread but a handler.
  void shutdown(int grace_ms);
  const std::string& model_id() const;
  SchedulerStats scheduler_stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
