// Failures leave nothing behind, and bad input gets one clear line.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "helpers.h"
#include "kiln/convert/convert.h"
#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"

namespace kiln {
namespace {

using namespace kiln::test;
namespace fs = std::filesystem;

TEST(ConvertFailure, ThrowingTensorLeavesNoFile) {
  TempDir tmp;
  const std::string out = tmp.file("out.gguf");
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  std::vector<float> ok(64, 1.0f);
  w.add_tensor("a", DType::F32, {64}, ok.data(), ok.size() * 4);
  w.add_tensor_fill("b", DType::F32, {4, 64}, [](void*) { throw Error("source went away"); });
  EXPECT_THROW(w.write(out), Error);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST(ConvertFailure, ExistingOutputSurvivesAFailure) {
  TempDir tmp;
  const std::string out = tmp.file("out.gguf");
  { std::ofstream(out) << "previous"; }
  const std::string bad = tmp.file("bad");
  fs::create_directories(bad);
  fs::copy_file(kData + "/hf/llama/config.json", bad + "/config.json");
  { std::ofstream(bad + "/model.safetensors") << "not a safetensors file"; }
  ConvertOptions o;
  EXPECT_THROW(convert_model(bad, out, o), Error);
  std::ifstream in(out);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "previous");
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST(ConvertFailure, FileTypes) {
  EXPECT_EQ(parse_file_type("Q4_K_M"), FileType::Q4_K_M);
  EXPECT_EQ(parse_file_type("bf16"), FileType::BF16);
  EXPECT_EQ(parse_file_type("TQ1_0"), FileType::TQ1_0);
  EXPECT_EQ(parse_file_type("i2_s"), FileType::I2_S);
  EXPECT_THROW(parse_file_type("q3_x"), Error);
}

TEST(ConvertFailure, TernaryTypesAreForBitnetOnly) {
  TempDir tmp;
  ConvertOptions o;
  o.type = FileType::TQ2_0;
  try {
    convert_model(kData + "/hf/llama", tmp.file("llama-tq2_0.gguf"), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not ternary"), std::string::npos) << e.what();
  }
}

TEST(ConvertFailure, UnsupportedArchitectureNamesIt) {
  try {
    convert::require_convert_arch("falcon");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("converting falcon is not supported yet"), std::string::npos)
        << e.what();
  }
}

// Runs a shell command, returns (exit status, stderr).
std::pair<int, std::string> run(const std::string& cmd, const std::string& err_file) {
  const int rc = std::system((cmd + " 2>" + err_file).c_str());
  std::ifstream in(err_file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

TEST(ConvertCommand, BadTypeIsOneClearLine) {
  TempDir tmp;
  for (const char* type : {"q9_9", "tq2_0"}) {
    auto [rc, err] = run(std::string(KILN_BINARY) + " convert " + kData + "/hf/llama " +
                             tmp.file("x.gguf") + " --type " + type,
                         tmp.file("err"));
    EXPECT_NE(rc, 0);
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find("--type"), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(tmp.file("x.gguf")));
  }
}

TEST(ConvertCommand, InterruptLeavesNoFile) {
  TempDir tmp;
  // Big enough that writing takes a while: ~60M parameters into q4_k_m.
  const std::string config = tmp.file("config.json");
  std::ofstream(config) << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 16,
    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 2048})";
  const std::string out = tmp.file("big.gguf");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(KILN_BINARY, KILN_BINARY, "synth", "--config", config.c_str(), out.c_str(), "--type",
          "q4_k_m", "-q", "--threads", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Interrupt once the temporary exists, i.e. in the middle of the write.
  bool seen = false;
  int status = 0;
  for (int i = 0; i < 2000 && !seen; ++i) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    seen = fs::exists(out + ".tmp");
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!seen) GTEST_SKIP() << "the write finished before it could be interrupted";
  kill(pid, SIGINT);
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

// Requantizing llama.cpp's f32 GGUF to q8_0 gives llama.cpp's q8_0 GGUF's
// tensors, byte for byte, and keeps its metadata.
TEST(ConvertGguf, RequantizesLikeLlamaCpp) {
  TempDir tmp;
  ConvertOptions o;
  o.type = FileType::Q8_0;
  convert_model(kData + "/hf/qwen3_moe/gguf/qwen3_moe-f32.gguf", tmp.file("q8.gguf"), o);
  auto ours = GgufFile::open(tmp.file("q8.gguf"));
  auto theirs = GgufFile::open(kData + "/hf/qwen3_moe/gguf/qwen3_moe-q8_0.gguf");
  EXPECT_EQ(ours->get_int("general.file_type"), 7);
  EXPECT_EQ(ours->get_string("tokenizer.ggml.pre"), "qwen2");
  for (const TensorView& t : theirs->tensors()) {
    const TensorView* m = ours->find_tensor(t.name);
    ASSERT_NE(m, nullptr) << t.name;
    ASSERT_EQ(m->dtype, t.dtype) << t.name;
    EXPECT_EQ(std::memcmp(m->data, t.data, t.nbytes), 0) << t.name;
  }
}

}  // namespace
}  // namespace kiln
