// The public API as an embedding program uses it.
#include <gtest/gtest.h>

#include "kiln/kiln.h"

namespace {

const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
const std::string kQwen3 = std::string(KILN_TEST_DATA) + "/hf/qwen3";

TEST(Api, SessionGeneratesLikeTheCommand) {
  auto llm = kiln::Llm::open(kStories);
  EXPECT_EQ(llm->architecture(), "llama");
  EXPECT_EQ(llm->vocab_size(), 512);
  const auto prompt = llm->tokenize("Once upon a time", /*add_bos=*/true);
  EXPECT_EQ(prompt, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  auto s = llm->session();
  s->feed(prompt);
  kiln::GenerateOptions g;
  g.temperature = 0;
  g.max_tokens = 8;
  std::string streamed;
  auto ids = s->generate(g, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  // llama.cpp's greedy continuation of this prompt on this model.
  EXPECT_EQ(ids, (std::vector<int32_t>{432, 383, 286, 261, 376, 298, 315, 421}));
  EXPECT_EQ(streamed, ", there was a little girl");  // " g" "ir" "l": 8 tokens
  EXPECT_EQ(s->position(), 5 + 8);
  // The session goes on from where it stopped.
  auto more = s->generate(g);
  EXPECT_EQ(more.front(), 395);
}

TEST(Api, CallbackCanStop) {
  auto llm = kiln::Llm::open(kStories);
  auto s = llm->session();
  s->feed(llm->tokenize("Once upon a time", true));
  kiln::GenerateOptions g;
  g.temperature = 0;
  g.max_tokens = 50;
  int calls = 0;
  auto ids = s->generate(g, [&](std::string_view) { return ++calls < 3; });
  EXPECT_EQ(ids.size(), 3u);
}

TEST(Api, ChatTurns) {
  auto llm = kiln::Llm::open(kQwen3);
  auto chat = llm->chat("Be brief.");
  kiln::GenerateOptions g;
  g.temperature = 0;
  g.max_tokens = 6;
  g.enable_thinking = false;
  std::string streamed;
  const std::string a = chat->say("Hello", g, [&](std::string_view p) {
    streamed += p;
    return true;
  });
  EXPECT_EQ(a, streamed);
  EXPECT_NO_THROW(chat->say("Again", g));
  chat->reset();
}

TEST(Api, BadPathIsAnError) {
  EXPECT_THROW(kiln::Llm::open("/nonexistent.gguf"), std::runtime_error);
}

}  // namespace
