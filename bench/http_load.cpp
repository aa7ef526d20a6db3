// Aggregate tok/s of a running `kiln serve` (or any OpenAI-compatible
// server) over HTTP: N concurrent /v1/completions requests on loopback, each
// on its own thread and connection, timed from the first request sent to
// the last response read. A streamed response's tokens are its SSE chunks
// ("data: {" lines, one a token here); a whole one's are its usage's
// completion_tokens. Raw sockets and one thread a request, so that the
// client costs little beside the server it measures (on a small machine
// both share the cores).
//
//   kiln_http_load PORT STREAMS [ROUNDS=3] [TOKENS=128] [STREAM=1]
//
// Prints each round's total tokens, seconds and tok/s (streamed, with
// several requests, also the rate once every request has its first token).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// One request's outcome: its completion tokens (-1: the server could not be
// reached) and, streamed, when each token's chunk was read.
struct Outcome {
  int tokens = 0;
  std::vector<Clock::time_point> arrivals;
};

Outcome one_request(int port, int index, int tokens, bool stream) {
  Outcome out;
  out.tokens = -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return out;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return out;
  }
  // Greedy, a prompt of its own per request (so no two share a cached head).
  const std::string body = "{\"prompt\":\"Once upon a time " + std::to_string(index) +
                           "\",\"max_tokens\":" + std::to_string(tokens) +
                           ",\"temperature\":0" + (stream ? ",\"stream\":true}" : "}");
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  for (size_t sent = 0; sent < req.size();) {
    const ssize_t n = write(fd, req.data() + sent, req.size() - sent);
    if (n <= 0) {
      close(fd);
      return out;
    }
    sent += size_t(n);
  }
  // A streamed token is a chunk's "data: {" line: counted as the bytes come
  // (a line split between two reads is found once the rest arrives).
  static constexpr char kChunk[] = "data: {";
  constexpr size_t kChunkLen = sizeof kChunk - 1;
  std::string response;
  size_t scanned = 0;
  char buf[1 << 16];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) {
    response.append(buf, size_t(n));
    if (!stream) continue;
    const Clock::time_point now = Clock::now();
    for (size_t at; (at = response.find(kChunk, scanned)) != std::string::npos;) {
      out.arrivals.push_back(now);
      scanned = at + kChunkLen;
    }
    // The next search starts where a line cut by this read could begin.
    if (response.size() >= kChunkLen) scanned = std::max(scanned, response.size() - (kChunkLen - 1));
  }
  close(fd);
  if (stream) {
    out.tokens = int(out.arrivals.size());
  } else {
    const size_t at = response.find("\"completion_tokens\":");
    out.tokens = at == std::string::npos ? 0 : std::atoi(response.c_str() + at + 20);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PORT STREAMS [ROUNDS=3] [TOKENS=128] [STREAM=1]\n", argv[0]);
    return 2;
  }
  const int port = std::atoi(argv[1]), streams = std::atoi(argv[2]);
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const int tokens = argc > 4 ? std::atoi(argv[4]) : 128;
  const bool stream = argc > 5 ? std::atoi(argv[5]) != 0 : true;
  for (int r = 0; r < rounds; ++r) {
    std::vector<Outcome> got(static_cast<size_t>(streams));
    std::vector<std::thread> threads;
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < streams; ++i)
      threads.emplace_back([&, i] { got[size_t(i)] = one_request(port, i, tokens, stream); });
    for (auto& t : threads) t.join();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    long total = 0;
    for (const Outcome& g : got) {
      if (g.tokens < 0) {
        std::fprintf(stderr, "no server on port %d\n", port);
        return 1;
      }
      total += g.tokens;
    }
    std::printf("%d streams: %ld tokens in %.3f s = %.0f tok/s", streams, total, s,
                double(total) / s);
    // Streamed, several requests: also the rate once every request has its
    // first token (the prompts are in and the batch is full) until the
    // last token, as the serving bench's "after every first token", to
    // tell the steady state from the ramps at either end of a round.
    if (stream && streams > 1) {
      Clock::time_point all_started = t0, last = t0;
      for (const Outcome& g : got)
        if (!g.arrivals.empty()) {
          all_started = std::max(all_started, g.arrivals.front());
          last = std::max(last, g.arrivals.back());
        }
      long after = 0;
      for (const Outcome& g : got)
        for (const Clock::time_point& a : g.arrivals) after += a > all_started;
      const double window = std::chrono::duration<double>(last - all_started).count();
      if (window > 0) std::printf("; after every first token %.0f tok/s", double(after) / window);
    }
    std::printf("\n");
  }
  return 0;
}
