// The official OpenAI client library (the `openai` npm package, unmodified)
// against `kiln serve`: tests/e2e/node/openai_client_test.mjs makes the calls
// and checks the answers; this test starts two servers (the qwen3 fixture,
// which has a chat template, behind an API key, and stories260K for
// /v1/completions), runs the script and stops the servers with SIGTERM.
// Without node or tests/e2e/node/node_modules (scripts/install-deps.sh
// installs it with npm), the test is skipped.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e/cli_runner.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kNodeDir = std::string(KILN_TEST_DATA) + "/../e2e/node";
const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
const std::string kQwen3 = std::string(KILN_TEST_DATA) + "/hf/qwen3";

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path temp_file(const std::string& tag) {
  static int n = 0;
  return fs::temp_directory_path() /
         ("kiln_openai_" + std::to_string(::getpid()) + "_" + std::to_string(n++) + "_" + tag);
}

// The first executable `name` on PATH, or "".
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p)) return p.string();
  }
  return "";
}

// Starts argv with stdout and stderr going to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  FILE* f = std::freopen(log.c_str(), "w", stderr);
  if (f) ::dup2(::fileno(f), 1);
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  ::execv(a[0], a.data());
  std::fprintf(stderr, "cannot run %s\n", a[0]);
  ::_exit(127);
}

// Waits for pid up to `limit`; kills it (SIGKILL) past that. Returns the
// wait status, or -1 if it had to be killed.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto t0 = Clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() - t0 > limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return status;
}

// `kiln serve` on an ephemeral port, up once /health says ok.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) : log_(temp_file("serve.log")) {
    args.insert(args.begin(), {KILN_BINARY, "serve"});
    for (const char* a : {"--port", "0"}) args.push_back(a);
    pid_ = spawn(args, log_);
    const std::string marker = "listening on http://127.0.0.1:";
    const auto t0 = Clock::now();
    while (port_ == 0 && Clock::now() - t0 < std::chrono::seconds(60)) {
      const std::string text = slurp(log_);
      const size_t at = text.find(marker);
      if (at != std::string::npos && text.find('\n', at) != std::string::npos)
        port_ = std::atoi(text.c_str() + at + marker.size());
      else if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        stopped_ = true;  // it died: nothing to stop
        break;
      }
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (port_ == 0) return;
    httplib::Client c("127.0.0.1", port_);
    while (Clock::now() - t0 < std::chrono::seconds(60)) {
      auto r = c.Get("/health");
      if (r && r->status == 200) {
        healthy_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~ServeProcess() {
    if (pid_ > 0 && !stopped_) stop();
    fs::remove(log_);
  }
  // SIGTERM, as a service manager stops it; the exit status.
  int stop() {
    stopped_ = true;
    ::kill(pid_, SIGTERM);
    return wait_for(pid_, std::chrono::seconds(30));
  }
  bool healthy() const { return healthy_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  std::string log() const { return slurp(log_); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool healthy_ = false, stopped_ = false;
};

TEST(OpenAiClient, OfficialNodeClientTalksToKilnServe) {
  const std::string node = on_path("node");
  if (node.empty()) GTEST_SKIP() << "node is not on PATH: install Node.js 18+ to run this test";
  if (!fs::exists(kNodeDir + "/node_modules/openai/package.json"))
    GTEST_SKIP() << "the openai npm package is missing: run scripts/install-deps.sh (or `npm ci "
                    "--prefix tests/e2e/node`) to run this test";
  std::string version;
  if (FILE* p = ::popen((test::shell_quote(node) + " --version").c_str(), "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, p)) version = buf;
    ::pclose(p);
  }
  // "v20.11.1": the openai package needs fetch and web streams (Node 18+).
  if (version.size() < 2 || std::atoi(version.c_str() + 1) < 18)
    GTEST_SKIP() << "node " << version << " is too old for the openai package (needs 18+)";

  const std::string key = "kiln-test-key";
  ServeProcess chat({kQwen3, "--parallel", "2", "--ctx-size", "512", "--api-key", key});
  ServeProcess plain({kStories, "--parallel", "2", "--ctx-size", "256"});
  ASSERT_TRUE(chat.healthy()) << chat.log();
  ASSERT_TRUE(plain.healthy()) << plain.log();

  const fs::path out = temp_file("node.log");
  const pid_t pid = spawn({node, kNodeDir + "/openai_client_test.mjs", chat.url(), plain.url(),
                           "--api-key", key},
                          out);
  const int status = wait_for(pid, std::chrono::seconds(300));
  const std::string said = slurp(out);
  fs::remove(out);
  ASSERT_NE(status, -1) << "the client script ran past 300 s:\n" << said;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the OpenAI client script failed (status " << status << "):\n"
      << said << "\n--- chat server log:\n"
      << chat.log() << "\n--- completions server log:\n"
      << plain.log();
  EXPECT_NE(said.find("cases passed"), std::string::npos) << said;
  std::cout << said;

  const int chat_status = chat.stop(), plain_status = plain.stop();
  EXPECT_TRUE(WIFEXITED(chat_status) && WEXITSTATUS(chat_status) == 0) << chat.log();
  EXPECT_TRUE(WIFEXITED(plain_status) && WEXITSTATUS(plain_status) == 0) << plain.log();
}

}  // namespace
}  // namespace kiln
