// `kiln bench` as a user calls it: llama-bench's table and JSON.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "e2e/cli_runner.h"

namespace kiln {
namespace {

using test::run_kiln;
const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";

TEST(BenchCommand, TableNamesTheTestsAndASmallModelsParameters) {
  auto r = run_kiln({"bench", kStories, "-p", "8", "-n", "8", "-r", "1", "--cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(" pp8 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" tg8 |"), std::string::npos) << r.out;
  // 292,800 parameters: thousands, not "0.00 B".
  EXPECT_NE(r.out.find("292.80 K"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tg8: 1013.00 KiB of weights read per token"), std::string::npos) << r.out;
}

TEST(BenchCommand, JsonIsLlamaBenchsArray) {
  auto r = run_kiln({"bench", kStories, "-p", "8", "-n", "8", "-r", "2", "--cpu", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["test"], "pp8");
  EXPECT_EQ(j[1]["test"], "tg8");
  for (const auto& o : j) {
    EXPECT_GT(o["avg_ts"].get<double>(), 0.0);
    EXPECT_GE(o["stddev_ts"].get<double>(), 0.0);
    EXPECT_EQ(o["samples_ts"].size(), 2u);
    EXPECT_EQ(o["model_n_params"], 292800);
  }
  EXPECT_GT(j[1]["avg_gbps"].get<double>(), 0.0);
}

// -d: each test after that many tokens in the context, named as
// llama-bench names it ("tg8 @ d64"), the depth in the JSON.
TEST(BenchCommand, DepthNamesTheTestsAsLlamaBench) {
  auto r = run_kiln({"bench", kStories, "-p", "8", "-n", "8", "-d", "64", "-r", "1", "--cpu",
                     "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["test"], "pp8 @ d64");
  EXPECT_EQ(j[1]["test"], "tg8 @ d64");
  for (const auto& o : j) {
    EXPECT_EQ(o["n_depth"], 64);
    EXPECT_GT(o["avg_ts"].get<double>(), 0.0);
  }
  auto bad = run_kiln({"bench", kStories, "-d", "-5", "--cpu"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("must not be negative"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kiln
