// Bad input gets one clear line on stderr and a non-zero exit: never a
// crash, never a partial output file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "e2e/cli_runner.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using test::run_kiln;
const std::string kData = KILN_TEST_DATA;
const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";

// A clean failure: exit code 1 or 2 (not a signal), one line on stderr that
// says "error" or names the problem, nothing on stdout.
void expect_clean_failure(const test::CliResult& r, const std::string& must_mention) {
  EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << "exit " << r.exit_code << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(must_mention), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

fs::path temp_file(const std::string& name) { return fs::temp_directory_path() / name; }

void write_prefix(const fs::path& dst, const std::string& src, size_t bytes) {
  std::ifstream in(src, std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), std::streamsize(bytes));
  std::ofstream(dst, std::ios::binary).write(data.data(), std::streamsize(in.gcount()));
}

TEST(BadInput, MissingFile) {
  expect_clean_failure(run_kiln({"run", "/nonexistent/model.gguf", "-p", "hi"}), "/nonexistent/model.gguf");
}

TEST(BadInput, NotAModel) {
  const auto p = temp_file("kiln_not_a_model.bin");
  std::ofstream(p) << "hello, this is not a model file at all\n";
  expect_clean_failure(run_kiln({"info", p.string()}), "not a GGUF or safetensors");
  fs::remove(p);
}

TEST(BadInput, TruncatedGguf) {
  const auto p = temp_file("kiln_truncated.gguf");
  for (size_t cut : {size_t(3), size_t(24), size_t(5000), size_t(600000)}) {
    write_prefix(p, kStories, cut);
    expect_clean_failure(run_kiln({"run", p.string(), "-p", "Once", "-n", "4"}), p.string());
  }
  fs::remove(p);
}

TEST(BadInput, TruncatedSafetensors) {
  const auto dir = temp_file("kiln_truncated_st");
  fs::create_directories(dir);
  fs::copy_file(kData + "/hf/llama/config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  write_prefix(dir / "model.safetensors", kData + "/hf/llama/model.safetensors", 300000);
  expect_clean_failure(run_kiln({"logits", dir.string(), "--ids", "1 2", "--out", (dir / "o.safetensors").string()}),
                       "model.safetensors");
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
  fs::remove_all(dir);
}

TEST(BadInput, ShapeContradictsMetadata) {
  // A config that claims a wider model than the weights are.
  const auto dir = temp_file("kiln_bad_shape");
  fs::create_directories(dir);
  std::ifstream in(kData + "/hf/llama/config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  cfg.replace(cfg.find("\"intermediate_size\": 160"), 24, "\"intermediate_size\": 192");
  std::ofstream(dir / "config.json") << cfg;
  fs::copy_file(kData + "/hf/llama/model.safetensors", dir / "model.safetensors");
  expect_clean_failure(run_kiln({"run", dir.string(), "--ids", "1 2", "-n", "1"}), "ffn_gate");
  fs::remove_all(dir);
}

TEST(BadInput, TokenIdOutsideVocabulary) {
  expect_clean_failure(run_kiln({"run", kStories, "--ids", "1 99999", "-n", "2"}), "99999");
}

TEST(BadInput, UnknownFlagAndCommand) {
  expect_clean_failure(run_kiln({"run", "--frobnicate"}), "--frobnicate");
  expect_clean_failure(run_kiln({"launch"}), "launch");
  expect_clean_failure(run_kiln({"run", kStories, "-n", "many"}), "many");
}

TEST(BadInput, LogitsLeavesNoPartialFile) {
  const auto out = temp_file("kiln_no_partial.safetensors");
  fs::remove(out);
  expect_clean_failure(run_kiln({"logits", kStories, "--ids", "1 4000", "--out", out.string()}), "4000");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
}

TEST(BadInput, UnknownArchitecture) {
  const auto dir = temp_file("kiln_unknown_arch");
  fs::create_directories(dir);
  std::ifstream in(kData + "/hf/llama/config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  cfg.replace(cfg.find("LlamaForCausalLM"), 16, "FancyNetForCausalLM");
  cfg.replace(cfg.find("\"model_type\": \"llama\""), 21, "\"model_type\": \"fancynet\"");
  std::ofstream(dir / "config.json") << cfg;
  fs::copy_file(kData + "/hf/llama/model.safetensors", dir / "model.safetensors");
  expect_clean_failure(run_kiln({"info", dir.string()}), "FancyNetForCausalLM");
  fs::remove_all(dir);
}

TEST(Help, EveryCommandExplainsItself) {
  auto r = run_kiln({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* cmd : {"run", "logits", "info"}) {
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
    auto h = run_kiln({cmd, "--help"});
    EXPECT_EQ(h.exit_code, 0) << cmd;
    EXPECT_NE(h.out.find("usage: kiln"), std::string::npos) << cmd;
  }
}

// The options' help is one column: every line under "options:" starts
// either an option ("  -x" / "  --xx") or continues one at column 24, the
// -h line included (logits' --image help runs over two lines).
TEST(Help, OptionsKeepOneColumn) {
  auto h = run_kiln({"logits", "--help"});
  ASSERT_EQ(h.exit_code, 0);
  std::istringstream in(h.out.substr(h.out.find("options:\n") + 9));
  int continued = 0;
  for (std::string line; std::getline(in, line) && !line.empty();) {
    if (line.rfind("  -", 0) == 0) {
      const size_t gap = line.find("  ", 2);  // after the names and the value's name
      if (gap < 22) {
        EXPECT_EQ(line.find_first_not_of(' ', gap), 24u) << line;
      }
    } else {
      EXPECT_EQ(line.find_first_not_of(' '), 24u) << line;
      ++continued;
    }
  }
  EXPECT_GT(continued, 0);
}

}  // namespace
}  // namespace kiln
