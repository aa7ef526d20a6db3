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
// Prints each round's total tokens, seconds and tok/s.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

// One request; its completion tokens, or -1 when the server could not be reached.
int one_request(int port, int index, int tokens, bool stream) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
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
      return -1;
    }
    sent += size_t(n);
  }
  std::string response;
  char buf[1 << 16];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) response.append(buf, size_t(n));
  close(fd);
  if (!stream) {
    const size_t at = response.find("\"completion_tokens\":");
    return at == std::string::npos ? 0 : std::atoi(response.c_str() + at + 20);
  }
  int chunks = 0;
  for (size_t at = 0; (at = response.find("data: {", at)) != std::string::npos; ++at) ++chunks;
  return chunks;
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
    std::vector<int> got(size_t(streams), 0);
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < streams; ++i)
      threads.emplace_back([&, i] { got[size_t(i)] = one_request(port, i, tokens, stream); });
    for (auto& t : threads) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    long total = 0;
    for (int g : got) {
      if (g < 0) {
        std::fprintf(stderr, "no server on port %d\n", port);
        return 1;
      }
      total += g;
    }
    std::printf("%d streams: %ld tokens in %.3f s = %.0f tok/s\n", streams, total, s,
                double(total) / s);
  }
  return 0;
}
