// The `kiln serve` command itself: it reports the machine and the plan it
// chose, serves on an ephemeral port, and a SIGTERM stops it cleanly; and
// the memory plan it rests on, on made-up machines.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "kiln/quant/gemm.h"
#include "kiln/runtime/system_probe.h"

namespace kiln {
namespace {

const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
const std::string kQwen3 = std::string(KILN_TEST_DATA) + "/hf/qwen3";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServeCommand, ServesAndStopsOnSigterm) {
  const std::string err = (std::filesystem::temp_directory_path() /
                           ("kiln_serve_" + std::to_string(::getpid()) + ".err"))
                              .string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* f = std::freopen(err.c_str(), "w", stderr);
    (void)f;
    ::execl(KILN_BINARY, KILN_BINARY, "serve", kStories.c_str(), "--port", "0", "--parallel", "3",
            "--ctx-size", "256", (char*)nullptr);
    ::_exit(127);
  }
  int port = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (port == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    const std::string log = read_file(err);
    const size_t at = log.find("listening on http://127.0.0.1:");
    if (at != std::string::npos && log.find('\n', at) != std::string::npos)
      port = std::atoi(log.c_str() + at + std::string("listening on http://127.0.0.1:").size());
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(port, 0) << read_file(err);
  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 8})",
                  "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const std::string log = read_file(err);
  EXPECT_NE(log.find("this machine: RAM"), std::string::npos) << log;
  EXPECT_NE(log.find("3 parallel sequences x 256 positions"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
  std::filesystem::remove(err);
}

SystemProbe machine(size_t ram_mib) {
  SystemProbe s;
  s.ram_total = s.ram_available = ram_mib << 20;
  s.logical_cores = s.physical_cores = 4;
  return s;
}

TEST(ServePlan, FitsWhatIsAsked) {
  auto f = ModelFile::open(kQwen3);
  ServePlan p = plan_serving(*f, machine(8192), 256, 4, DType::F32, false);
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.parallel, 4);
  EXPECT_EQ(p.context, 256);
  EXPECT_EQ(p.kv_positions, 4 * 256);
  // A pool the user sized is kept, but never below one context.
  EXPECT_EQ(plan_serving(*f, machine(8192), 256, 4, DType::F32, false, 300).kv_positions, 300);
  EXPECT_EQ(plan_serving(*f, machine(8192), 256, 4, DType::F32, false, 100).kv_positions, 256);
  ServePlan chosen = plan_serving(*f, machine(8192), 0, 0, DType::F32, false);
  EXPECT_EQ(chosen.parallel, 16);  // 4 per core
  EXPECT_EQ(chosen.context, f->spec().max_context);
}

TEST(ServePlan, ShrinksThenRefuses) {
  auto f = ModelFile::open(kQwen3);
  const ModelFootprint fp = model_footprint(*f, DType::F32);
  // Room for the weights, activations and about 3 x 512 positions.
  const size_t budget = fp.weight_bytes + fp.activation_bytes + 3 * 512 * fp.kv_bytes_per_position;
  const size_t ram = (budget + (256u << 20)) >> 20;
  // On the CPU the sequences keep their number and context and share a
  // smaller pool of KV blocks.
  ServePlan p = plan_serving(*f, machine(ram + 1), 512, 8, DType::F32, false);
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.parallel, 8);
  EXPECT_EQ(p.context, 512);
  EXPECT_GE(p.kv_positions, 512);
  EXPECT_LT(p.kv_positions, 8 * 512);
  EXPECT_LE(p.need_bytes, p.budget_bytes);
  EXPECT_NE(p.reasons.front().find("share a pool of"), std::string::npos) << p.reasons.front();
  // On a GPU each sequence holds its whole context: fewer sequences.
  SystemProbe gpu = machine(8192);
  gpu.gpus.push_back(GpuProbe{0, "test GPU", (ram + 1) << 20, (ram + 1) << 20});
  ServePlan g = plan_serving(*f, gpu, 512, 8, DType::F32, true);
  EXPECT_TRUE(g.fits);
  EXPECT_LT(g.parallel, 8);
  EXPECT_GE(g.parallel, 1);
  EXPECT_EQ(g.kv_positions, int64_t(g.parallel) * g.context);
  EXPECT_LE(g.need_bytes, g.budget_bytes);
  ServePlan none = plan_serving(*f, machine(1), 512, 1, DType::F32, false);
  EXPECT_FALSE(none.fits);
  EXPECT_NE(none.reasons.back().find("smaller quantization"), std::string::npos);
}

// The packed copy counts the weights the tiles serve: the token embedding
// only where it is also the output head (qwen3 ties them, llama does not).
TEST(ServePlan, WeightTilesCountTheEmbeddingOnlyWhenTied) {
  for (const char* arch : {"qwen3", "llama"}) {
    auto f = ModelFile::open(std::string(KILN_TEST_DATA) + "/hf/" + arch + "/gguf/" + arch +
                             "-q8_0.gguf");
    const ModelFootprint fp = model_footprint(*f, DType::F32);
    if (fp.weight_tile_bytes == 0) GTEST_SKIP() << "this CPU's kernels keep no tiles";
    const TensorView& embd = f->tensors().at("token_embd.weight");
    size_t others = 0;
    for (const auto& [name, t] : f->tensors())
      if (name != "token_embd.weight" && t.shape.size() >= 2 &&
          gemm_path(t.dtype, t.cols()) == GemmPath::kInt8)
        others += kept_tiles_bytes(t.dtype, t.rows(), t.cols());
    const size_t embd_tiles = kept_tiles_bytes(embd.dtype, embd.rows(), embd.cols());
    ASSERT_GT(embd_tiles, 0u) << arch;
    EXPECT_EQ(fp.weight_tile_bytes, f->spec().tied_embeddings ? others + embd_tiles : others)
        << arch;
    EXPECT_EQ(f->spec().tied_embeddings, std::string(arch) == "qwen3");
  }
}

// CPU serving keeps a packed copy of the int8 weights when it fits beside
// the caches (Backend::keep_weight_tiles), never for one sequence or on a GPU.
TEST(ServePlan, KeepsWeightTilesWhereTheyFit) {
  auto f = ModelFile::open(std::string(KILN_TEST_DATA) + "/hf/qwen3/gguf/qwen3-q8_0.gguf");
  const ModelFootprint fp = model_footprint(*f, DType::F32);
  if (fp.weight_tile_bytes == 0) GTEST_SKIP() << "this CPU's kernels keep no tiles";
  const size_t without = fp.weight_bytes + fp.activation_bytes +
                         4 * 256 * fp.kv_bytes_per_position + 4 * fp.state_bytes_per_sequence;
  auto with_ram = [](size_t usable) {  // 256 MiB is kept back from what is free
    SystemProbe s;
    s.ram_total = s.ram_available = usable + (256u << 20);
    s.logical_cores = s.physical_cores = 4;
    return s;
  };
  const ServePlan roomy = plan_serving(*f, with_ram(without + fp.weight_tile_bytes), 256, 4,
                                       DType::F32, false);
  EXPECT_EQ(roomy.weight_tiles_bytes, fp.weight_tile_bytes);
  EXPECT_EQ(roomy.need_bytes, without + fp.weight_tile_bytes);
  EXPECT_NE(roomy.reasons.back().find("kept packed in int8 tiles"), std::string::npos)
      << roomy.reasons.back();
  const ServePlan tight = plan_serving(*f, with_ram(without), 256, 4, DType::F32, false);
  EXPECT_TRUE(tight.fits);
  EXPECT_EQ(tight.weight_tiles_bytes, 0u);
  EXPECT_NE(tight.reasons.back().find("not kept in int8 tiles"), std::string::npos)
      << tight.reasons.back();
  EXPECT_EQ(plan_serving(*f, machine(8192), 256, 1, DType::F32, false).weight_tiles_bytes, 0u);
  // A pool cut short anyway leaves room for the tiles first, while one
  // whole context still fits: 8 x 256 asked, room for ~6 x 256 and the tiles.
  const size_t fixed = fp.weight_bytes + fp.activation_bytes + 8 * fp.state_bytes_per_sequence;
  const ServePlan shared = plan_serving(
      *f, with_ram(fixed + 6 * 256 * fp.kv_bytes_per_position + fp.weight_tile_bytes), 256, 8,
      DType::F32, false);
  EXPECT_TRUE(shared.fits);
  EXPECT_EQ(shared.weight_tiles_bytes, fp.weight_tile_bytes);
  EXPECT_EQ(shared.kv_positions, 6 * 256);
  EXPECT_LE(shared.need_bytes, shared.budget_bytes);
  // Where the tiles would leave less than one context, the pool keeps the room.
  const ServePlan small = plan_serving(
      *f, with_ram(fixed + 256 * fp.kv_bytes_per_position + fp.weight_tile_bytes / 2), 256, 8,
      DType::F32, false);
  EXPECT_TRUE(small.fits);
  EXPECT_EQ(small.weight_tiles_bytes, 0u);
  EXPECT_GE(small.kv_positions, 256);
  SystemProbe gpu = machine(8192);
  gpu.gpus.push_back(GpuProbe{0, "test GPU", size_t(8) << 30, size_t(8) << 30});
  EXPECT_EQ(plan_serving(*f, gpu, 256, 4, DType::F32, true).weight_tiles_bytes, 0u);
}

}  // namespace
}  // namespace kiln
