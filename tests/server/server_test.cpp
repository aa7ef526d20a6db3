// The HTTP server end to end, in-process on an ephemeral loopback port, with
// httplib's client: the OpenAI request and response shapes, streaming,
// concurrent requests (greedy outputs must equal the same requests run one
// at a time: batching may not change what a sequence computes), prefix
// reuse, disconnects, overload, bad requests and the API key.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "kiln/runtime/generate.h"
#include "kiln/server/server.h"

namespace kiln {
namespace {

// Built with AddressSanitizer (whose quarantine keeps freed memory
// resident, so the resident-memory checks do not apply).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif

using json = nlohmann::json;
const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";
const std::string kQwen3 = std::string(KILN_TEST_DATA) + "/hf/qwen3";

class LiveServer {
 public:
  LiveServer(const std::string& model, ServerOptions o) {
    engine = Engine::load(model, LoadOptions{});
    o.host = "127.0.0.1";
    o.port = 0;
    server = std::make_unique<Server>(*engine, o);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~LiveServer() {
    server->shutdown(2000);
    thread.join();
  }
  httplib::Client client(int timeout_s = 60) const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(timeout_s, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const json& body,
                       const httplib::Headers& headers = {}) const {
    return client().Post(path.c_str(), headers, body.dump(), "application/json");
  }
  // Polls /health until n slots are processing or `limit` has passed since
  // `since`; whether it got there.
  bool wait_slots_processing(int n, std::chrono::steady_clock::time_point since,
                             std::chrono::milliseconds limit) const {
    for (;;) {
      if (json::parse(client().Get("/health")->body)["slots_processing"] == n) return true;
      if (std::chrono::steady_clock::now() - since > limit) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // Waits until the gauge kiln_responses_open reads n.
  bool wait_responses_open(int n, std::chrono::milliseconds limit) const {
    const auto since = std::chrono::steady_clock::now();
    for (;;) {
      if (metric_values()["kiln_responses_open"] == n) return true;
      if (std::chrono::steady_clock::now() - since > limit) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  json metric_values() const {
    auto r = client().Get("/metrics");
    json out = json::object();
    std::istringstream in(r->body);
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      const size_t sp = line.find(' ');
      out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return out;
  }
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Server> server;
  int port = 0;
  std::thread thread;
};

ServerOptions options(int slots, int queue = 64) {
  ServerOptions o;
  o.scheduler.slots = slots;
  o.scheduler.context = 512;
  o.scheduler.max_queue = queue;
  o.scheduler.step_tokens = 64;  // small, so prompts are fed in several chunks
  return o;
}

// A streamed response: the events' JSON payloads, and whether [DONE] came.
struct Sse {
  std::vector<json> events;
  bool done = false;
};
Sse parse_sse(const std::string& body) {
  Sse s;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") s.done = true;
    else s.events.push_back(json::parse(data));
  }
  return s;
}

std::string completion_text(const LiveServer& srv, const std::string& prompt, int n) {
  auto r = srv.post("/v1/completions",
                    {{"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}});
  EXPECT_TRUE(r) << "no response: " << httplib::to_string(r.error());
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body)["choices"][0]["text"];
}

const std::vector<std::string> kPrompts = {
    "Once upon a time", "The cat", "Lily and Ben went to the park", "One day, a little bird",
    "Tom had a red ball", "The sun was", "Sara liked to", "In the forest there was",
    "Max was a happy dog", "The big tree", "Mom said", "A girl named Sue",
    "They played all day", "The boat", "Once there was a king", "Tim saw a frog"};

TEST(Server, HealthModelsAndMetrics) {
  LiveServer srv(kStories, options(2));
  auto h = srv.client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = srv.client().Get("/v1/models");
  ASSERT_TRUE(m);
  auto models = json::parse(m->body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
  completion_text(srv, "Once upon a time", 8);
  json metrics = srv.metric_values();
  EXPECT_EQ(metrics["kiln_requests_total"], 1);
  EXPECT_EQ(metrics["kiln_generated_tokens_total"], 8);
  EXPECT_EQ(metrics["kiln_prompt_tokens_total"], 5);  // bos + 4
  EXPECT_EQ(metrics["kiln_queue_depth"], 0);
  EXPECT_TRUE(srv.wait_responses_open(0, std::chrono::seconds(2)));
  EXPECT_TRUE(metrics.contains("kiln_tokens_per_second"));
  auto missing = srv.client().Get("/nope");
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(json::parse(missing->body).contains("error"));
}

// The server's greedy text equals the generation loop's on the same prompt.
TEST(Server, CompletionMatchesTheGenerationLoop) {
  LiveServer srv(kStories, options(2));
  const Tokenizer& tok = srv.engine->require_tokenizer();
  EncodeOptions eo;
  eo.add_bos = tok.add_bos_by_default();
  GenerateRequest req;
  req.prompt = tok.encode("Once upon a time", eo);
  req.max_tokens = 40;
  req.sampling.temperature = 0;
  req.stop_ids = {tok.eos_id()};
  StateOptions so;
  so.context = 512;
  auto state = srv.engine->model().new_state(so);
  auto ref = generate(srv.engine->model(), *state, req, nullptr);
  auto r = srv.post("/v1/completions",
                    {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", 40},
                     {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], tok.decode(ref.tokens, true));
  EXPECT_EQ(j["usage"]["completion_tokens"], int64_t(ref.tokens.size()));
  EXPECT_EQ(j["usage"]["prompt_tokens"], int64_t(req.prompt.size()));
}

TEST(Server, StreamedTextEqualsTheWholeResponse) {
  LiveServer srv(kStories, options(2));
  const std::string whole = completion_text(srv, "The cat", 30);
  auto r = srv.post("/v1/completions", {{"prompt", "The cat"},
                                        {"max_tokens", 30},
                                        {"temperature", 0},
                                        {"stream", true},
                                        {"stream_options", {{"include_usage", true}}}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  Sse s = parse_sse(r->body);
  EXPECT_TRUE(s.done);
  std::string text;
  std::string finish;
  json usage;
  std::string id;
  for (const auto& e : s.events) {
    if (e.contains("usage")) usage = e["usage"];
    if (e["choices"].empty()) continue;
    // Every chunk whole: the same id throughout, its object, model, index.
    if (id.empty()) id = e["id"].get<std::string>();
    EXPECT_EQ(e["id"], id);
    EXPECT_EQ(e["object"], "text_completion");
    EXPECT_TRUE(e.contains("model") && e.contains("created")) << e.dump();
    EXPECT_EQ(e["choices"][0]["index"], 0);
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, whole);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 30);
}

// 16 greedy requests at once on 8 slots (so some queue) give exactly what
// each gives alone.
TEST(Server, ConcurrentRequestsEqualSequentialOnes) {
  LiveServer srv(kStories, options(8));
  std::vector<std::string> alone;
  for (const auto& p : kPrompts) alone.push_back(completion_text(srv, p, 48));
  std::vector<std::string> together(kPrompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < kPrompts.size(); ++i)
    threads.emplace_back([&, i] { together[i] = completion_text(srv, kPrompts[i], 48); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(alone[i], together[i]) << kPrompts[i];
  json m = srv.metric_values();
  EXPECT_GT(m["kiln_prompt_tokens_cached_total"].get<double>(), 0);  // the repeats reuse their heads
}

// 32 streams at once on 32 slots, every one running in each batched step:
// each equals its single-stream greedy output.
TEST(Server, ThirtyTwoStreamsEqualTheirSingleStreamOutputs) {
  LiveServer srv(kStories, options(32));
  std::vector<std::string> prompts;
  for (const auto& p : kPrompts) {
    prompts.push_back(p);
    prompts.push_back(p + " and then");
  }
  std::vector<std::string> alone;
  for (const auto& p : prompts) alone.push_back(completion_text(srv, p, 40));
  std::vector<std::string> together(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i)
    threads.emplace_back([&, i] {
      auto r = srv.post("/v1/completions", {{"prompt", prompts[i]},
                                            {"max_tokens", 40},
                                            {"temperature", 0},
                                            {"stream", true}});
      ASSERT_TRUE(r && r->status == 200);
      for (const auto& e : parse_sse(r->body).events)
        if (!e["choices"].empty()) together[i] += e["choices"][0]["text"].get<std::string>();
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(alone[i], together[i]) << prompts[i];
}

// The same on the Qwen3 fixture through the chat endpoint: a chat template,
// BPE, QK-norm, a 151k vocabulary; streamed and not.
TEST(Server, ConcurrentChatEqualsSequentialOnQwen3) {
  LiveServer srv(kQwen3, options(4));
  auto body = [](int i, bool stream) {
    return json{{"messages",
                 {{{"role", "system"}, {"content", "You are terse."}},
                  {{"role", "user"}, {"content", "Question number " + std::to_string(i)}}}},
                {"max_tokens", 12},
                {"temperature", 0},
                {"stream", stream},
                {"chat_template_kwargs", {{"enable_thinking", false}}}};
  };
  auto text_of = [&](int i, bool stream) {
    auto r = srv.post("/v1/chat/completions", body(i, stream));
    EXPECT_TRUE(r && r->status == 200);
    if (!r) return std::string();
    if (!stream) return json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>();
    std::string text;
    for (const auto& e : parse_sse(r->body).events)
      if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
        text += e["choices"][0]["delta"]["content"].get<std::string>();
    return text;
  };
  std::vector<std::string> alone;
  for (int i = 0; i < 8; ++i) alone.push_back(text_of(i, false));
  std::vector<std::string> together(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { together[size_t(i)] = text_of(i, i % 2); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(alone[i], together[i]) << i;
  auto r = srv.post("/v1/chat/completions", body(0, false));
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_GT(j["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 10);
}

// A thinking budget closes the thought; the thought comes back as
// reasoning_content, apart from the answer.
TEST(Server, ThinkingBudgetAndReasoningContent) {
  LiveServer srv(kQwen3, options(2));
  auto r = srv.post("/v1/chat/completions",
                    {{"messages", {{{"role", "user"}, {"content", "Think about it"}}}},
                     {"max_tokens", 80},
                     {"temperature", 0},
                     {"thinking_budget", 4},
                     {"chat_template_kwargs", {{"enable_thinking", true}}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json msg = json::parse(r->body)["choices"][0]["message"];
  ASSERT_TRUE(msg.contains("reasoning_content")) << msg.dump();
  const std::string thought = msg["reasoning_content"];
  EXPECT_NE(thought.find("Considering the limited time"), std::string::npos) << thought;
  EXPECT_EQ(msg["content"].get<std::string>().find("<think>"), std::string::npos);
  EXPECT_EQ(msg["content"].get<std::string>().find("Considering"), std::string::npos);
}

TEST(Server, ToolsAreRenderedByTheTemplate) {
  LiveServer srv(kQwen3, options(1));
  json tools = json::array({{{"type", "function"},
                             {"function",
                              {{"name", "get_weather"},
                               {"description", "Weather of a city"},
                               {"parameters",
                                {{"type", "object"},
                                 {"properties", {{"city", {{"type", "string"}}}}}}}}}}});
  json base = {{"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
               {"max_tokens", 4},
               {"temperature", 0}};
  auto without = srv.post("/v1/chat/completions", base);
  json with_tools = base;
  with_tools["tools"] = tools;
  auto with = srv.post("/v1/chat/completions", with_tools);
  ASSERT_TRUE(without && with);
  ASSERT_EQ(with->status, 200) << with->body;
  // The tool list makes the prompt longer: the template rendered it.
  EXPECT_GT(json::parse(with->body)["usage"]["prompt_tokens"].get<int>(),
            json::parse(without->body)["usage"]["prompt_tokens"].get<int>() + 20);
}

// What OpenAI clients send beyond plain strings: content as text parts (the
// same prompt as the string), an assistant turn that only calls a tool
// ("content": null) followed by the tool's answer; and models.retrieve.
TEST(Server, MessagesAsOpenAiClientsSendThem) {
  LiveServer srv(kQwen3, options(1));
  auto chat = [&](const json& messages) {
    return srv.post("/v1/chat/completions",
                    {{"messages", messages}, {"max_tokens", 4}, {"temperature", 0}});
  };
  auto as_string = chat({{{"role", "user"}, {"content", "Say hi.\nPlease."}}});
  auto as_parts = chat({{{"role", "user"},
                         {"content",
                          {{{"type", "text"}, {"text", "Say hi."}},
                           {{"type", "text"}, {"text", "Please."}}}}}});
  ASSERT_TRUE(as_string && as_parts);
  ASSERT_EQ(as_parts->status, 200) << as_parts->body;
  json a = json::parse(as_string->body), b = json::parse(as_parts->body);
  EXPECT_EQ(a["usage"]["prompt_tokens"], b["usage"]["prompt_tokens"]);
  EXPECT_EQ(a["choices"][0]["message"], b["choices"][0]["message"]);
  auto image = chat({{{"role", "user"},
                      {"content", {{{"type", "image_url"}, {"image_url", {{"url", "x"}}}}}}}});
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 400) << image->body;
  EXPECT_EQ(json::parse(image->body)["error"]["param"], "messages");

  auto tool_turn = chat(
      {{{"role", "user"}, {"content", "Weather in Paris?"}},
       {{"role", "assistant"},
        {"content", nullptr},
        {"tool_calls",
         {{{"id", "call_1"},
           {"type", "function"},
           {"function", {{"name", "get_weather"}, {"arguments", R"({"city":"Paris"})"}}}}}}},
       {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", R"({"temperature_c": 21})"}}});
  ASSERT_TRUE(tool_turn);
  EXPECT_EQ(tool_turn->status, 200) << tool_turn->body;

  auto m = srv.client().Get("/v1/models/qwen3");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200) << m->body;
  EXPECT_EQ(json::parse(m->body)["id"], "qwen3");
  EXPECT_EQ(json::parse(m->body)["object"], "model");
  auto other = srv.client().Get("/v1/models/gpt-4");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(json::parse(other->body)["error"]["code"], "model_not_found");
}

TEST(Server, JsonModeGivesAJsonObject) {
  LiveServer srv(kStories, options(1));
  auto r = srv.post("/v1/completions", {{"prompt", "Once upon a time"},
                                        {"max_tokens", 60},
                                        {"temperature", 0.9},
                                        {"seed", 7},
                                        {"response_format", {{"type", "json_object"}}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  const std::string text = j["choices"][0]["text"];
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.find_first_not_of(" \n\t"), text.find('{'));
  if (j["choices"][0]["finish_reason"] == "stop") {
    json parsed = json::parse(text, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << text;
    EXPECT_TRUE(parsed.is_object()) << text;
  }
}

// Without a seed each request draws its own: four sampled requests at a
// high temperature give more than one text (the same seed for all would
// give one; four equal draws of 24 tokens from stories260K at 1.5 are not
// a chance to reckon with).
TEST(Server, UnseededRequestsDrawApart) {
  LiveServer srv(kStories, options(2));
  json body = {{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 1.5},
               {"top_k", 0}};
  std::set<std::string> texts;
  for (int i = 0; i < 4; ++i) {
    auto r = srv.post("/v1/completions", body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    texts.insert(json::parse(r->body)["choices"][0]["text"].get<std::string>());
  }
  EXPECT_GT(texts.size(), 1u);
}

TEST(Server, LogprobsAndSeededSampling) {
  LiveServer srv(kStories, options(2));
  json body = {{"prompt", "The dog"}, {"max_tokens", 10}, {"temperature", 1.0},
               {"top_p", 0.9},        {"seed", 42},         {"logprobs", 3}};
  auto a = srv.post("/v1/completions", body);
  auto b = srv.post("/v1/completions", body);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->status, 200) << a->body;
  json ja = json::parse(a->body), jb = json::parse(b->body);
  EXPECT_EQ(ja["choices"][0]["text"], jb["choices"][0]["text"]);  // same seed, same text
  json lp = ja["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
  }
}

// A stop string ends the text before it.
TEST(Server, StopStrings) {
  LiveServer srv(kStories, options(1));
  const std::string full = completion_text(srv, "Once upon a time", 40);
  const size_t at = full.find("Lily");
  ASSERT_NE(at, std::string::npos) << full;
  auto r = srv.post("/v1/completions", {{"prompt", "Once upon a time"},
                                        {"max_tokens", 40},
                                        {"temperature", 0},
                                        {"stop", {"Lily"}}});
  json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["text"], full.substr(0, at));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST(Server, BadRequestsGetOpenAiErrors) {
  LiveServer srv(kStories, options(1));
  struct Bad {
    std::string path, body;
    int status;
    std::string param;
  };
  const std::string big(20000, 'a');
  const std::vector<Bad> cases = {
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", "[1, 2]", 400, ""},
      {"/v1/completions", R"({"prompt": 5})", 400, "prompt"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -3})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": "ten"})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": "x", "temperature": 9})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": "x", "n": 3})", 400, "n"},
      {"/v1/completions", R"({"prompt": "x", "stream": "yes"})", 400, "stream"},
      {"/v1/completions", R"({"prompt": "x", "stop": [1]})", 400, "stop"},
      {"/v1/completions", R"({"prompt": [1, 99999]})", 400, "prompt"},
      {"/v1/completions", R"({"prompt": "x", "model": "gpt-4"})", 404, "model"},
      {"/v1/completions", R"({"prompt": "x", "response_format": {"type": "yaml"}})", 400,
       "response_format"},
      {"/v1/completions", json{{"prompt", big}}.dump(), 400, "prompt"},  // longer than the context
      {"/v1/chat/completions", R"({"messages": []})", 400, "messages"},
      {"/v1/chat/completions", R"({"messages": "hi"})", 400, "messages"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})", 400, ""},
  };
  for (const auto& c : cases) {
    auto r = srv.client().Post(c.path.c_str(), c.body, "application/json");
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, c.status) << c.body << " -> " << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    if (!c.param.empty()) {
      EXPECT_EQ(j["error"]["param"], c.param) << r->body;
    }
  }
  // Still serving.
  EXPECT_FALSE(completion_text(srv, "The cat", 4).empty());
}

TEST(Server, ApiKeyIsRequired) {
  ServerOptions o = options(1);
  o.api_key = "sekrit";
  LiveServer srv(kStories, o);
  json body = {{"prompt", "Hi"}, {"max_tokens", 2}};
  auto none = srv.post("/v1/completions", body);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["code"], "invalid_api_key");
  auto wrong = srv.post("/v1/completions", body, {{"Authorization", "Bearer nope"}});
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(srv.client().Get("/v1/models")->status, 401);
  auto right = srv.post("/v1/completions", body, {{"Authorization", "Bearer sekrit"}});
  EXPECT_EQ(right->status, 200);
  EXPECT_EQ(srv.client().Get("/health")->status, 200);  // probes need no key
}

// The hybrids (Gated DeltaNet + gated attention, per-sequence recurrent
// state) and BitNet (ternary products) batch their steps too: 6 greedy requests of different prompt
// lengths on 3 slots (so some queue and slots are reused) give what each
// gives alone. Their products and attention give the same bits batched or
// alone; the prompts are fed in the same chunks either way (one per step,
// under the step budget), so the delta rule's chunks match as well.
TEST(Server, ConcurrentRequestsEqualSequentialOnHybridsAndBitnet) {
  for (const char* fixture : {"qwen3_5_text", "qwen3_next", "bitnet"}) {
    LiveServer srv(std::string(KILN_TEST_DATA) + "/hf/" + fixture, options(3));
    std::vector<std::string> prompts;
    for (int i = 0; i < 6; ++i) {
      std::string p = "Tell me about";
      for (int w = 0; w < 1 + 3 * i; ++w) p += " the number " + std::to_string(w * 7 + i);
      prompts.push_back(p);
    }
    std::vector<std::string> alone;
    for (const auto& p : prompts) alone.push_back(completion_text(srv, p, 16));
    std::vector<std::string> together(prompts.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < prompts.size(); ++i)
      threads.emplace_back([&, i] { together[i] = completion_text(srv, prompts[i], 16); });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(alone[i], together[i]) << fixture << ": " << prompts[i];
  }
}

// A client that goes away mid-stream frees its slot at once.
TEST(Server, DisconnectFreesTheSlot) {
  LiveServer srv(kStories, options(1));
  httplib::Client c = srv.client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = json{{"prompt", "Once upon a time"}, {"max_tokens", 100000}, {"stream", true}}.dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  httplib::Response res;
  httplib::Error err;
  c.send(req, res, err);  // returns when the receiver says stop
  EXPECT_GE(chunks, 3);
  c.stop();
  ASSERT_TRUE(srv.wait_slots_processing(0, std::chrono::steady_clock::now(),
                                        std::chrono::seconds(3)));
  EXPECT_GE(srv.metric_values()["kiln_requests_cancelled_total"].get<double>(), 1);
  // The abandoned response no longer counts as open (it would hold later
  // requests' token takes at a longer pace: token_take_pace_us).
  EXPECT_TRUE(srv.wait_responses_open(0, std::chrono::seconds(3)));
  // The slot takes the next request.
  EXPECT_FALSE(completion_text(srv, "The cat", 4).empty());
}

// Requests take their tokens every 2 ms while a few run, and less often as
// more do, so that together they take about 2000 times a second, up to
// 16 ms apart.
TEST(ServerPacing, TakesSlowDownWithRunningRequestsWithinTwoAndSixteenMs) {
  EXPECT_EQ(token_take_pace_us(0), 2000);
  EXPECT_EQ(token_take_pace_us(1), 2000);
  EXPECT_EQ(token_take_pace_us(4), 2000);
  EXPECT_EQ(token_take_pace_us(8), 4000);
  EXPECT_EQ(token_take_pace_us(32), 16000);
  EXPECT_EQ(token_take_pace_us(256), 16000);
}

// A request without "stream" whose client gives up: past
// whole_keepalive_after_ms the answer is chunked, a space a second, and the
// failed write cancels the sequence. Here from the start (0 ms) and with a
// context long enough that the generation would run for seconds.
TEST(Server, AbandonedWholeRequestFreesTheSlot) {
  ServerOptions o = options(1);
  o.scheduler.context = 32768;
  o.whole_keepalive_after_ms = 0;
  LiveServer srv(kStories, o);
  // The chunked form still gives the whole completion, as JSON after spaces.
  auto ok = srv.post("/v1/completions", {{"prompt", "The cat"}, {"max_tokens", 6}, {"temperature", 0}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(json::parse(ok->body)["choices"][0]["text"], completion_text(srv, "The cat", 6));

  httplib::Client c = srv.client();
  c.set_read_timeout(0, 300000);  // gives up after 0.3 s and closes the socket
  const auto t_sent = std::chrono::steady_clock::now();
  auto r = c.Post("/v1/completions",
                  json{{"prompt", "Once upon a time"}, {"max_tokens", 30000}, {"temperature", 0}}.dump(),
                  "application/json");
  EXPECT_FALSE(r && r->status == 200 && r->body.find('{') != std::string::npos)
      << "the generation was meant to outlast the client";
  c.stop();
  ASSERT_TRUE(srv.wait_slots_processing(0, t_sent, std::chrono::seconds(4)));
  const auto freed_after = std::chrono::steady_clock::now() - t_sent;
  EXPECT_GE(srv.metric_values()["kiln_requests_cancelled_total"].get<double>(), 1);
  std::printf("[ measured ] slot free %.2f s after the request was sent\n",
              std::chrono::duration<double>(freed_after).count());
  EXPECT_FALSE(completion_text(srv, "The cat", 4).empty());
}

// With every slot busy and no queue, a request is refused with 503 and
// Retry-After rather than piling up; the running one is unaffected.
TEST(Server, OverloadAnswers503) {
  LiveServer srv(kStories, options(1, /*queue=*/0));
  std::atomic<bool> long_done{false};
  std::string long_text;
  std::thread t([&] {
    auto r = srv.post("/v1/completions", {{"prompt", "Once upon a time"},
                                          {"max_tokens", 400},
                                          {"temperature", 0},
                                          {"stream", true}});
    long_text = r ? r->body : "";
    long_done = true;
  });
  // Wait until it runs.
  srv.wait_slots_processing(1, std::chrono::steady_clock::now(), std::chrono::milliseconds(1500));
  auto r = srv.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
  ASSERT_TRUE(r);
  if (!long_done) {
    EXPECT_EQ(r->status, 503) << r->body;
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
    EXPECT_TRUE(json::parse(r->body).contains("error"));
  }
  t.join();
  EXPECT_TRUE(parse_sse(long_text).done);
}

// Shutting down lets running requests finish (within the grace period) and
// refuses new ones.
TEST(Server, ShutdownFinishesRunningStreams) {
  auto srv = std::make_unique<LiveServer>(kStories, options(2));
  std::string body;
  std::thread t([&] {
    auto r = srv->post("/v1/completions",
                       {{"prompt", "Once upon a time"}, {"max_tokens", 200}, {"stream", true}});
    body = r ? r->body : "";
  });
  srv->wait_slots_processing(1, std::chrono::steady_clock::now(), std::chrono::milliseconds(1500));
  srv.reset();  // shutdown(2000)
  t.join();
  Sse s = parse_sse(body);
  EXPECT_TRUE(s.done) << body.substr(0, 300);
  ASSERT_FALSE(s.events.empty());
  EXPECT_FALSE(s.events.back()["choices"][0]["finish_reason"].is_null());
}

// This process's resident memory, in KiB (the server runs in-process).
long resident_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// Opens a TCP connection to the server, writes `bytes` and closes it without
// reading: a client that dies halfway through its request.
void send_and_hang_up(int port, const std::string& bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
    (void)!write(fd, bytes.data(), bytes.size());
  close(fd);
}

// Rounds of malformed, cut-off and abandoned requests from several clients at
// once, with good ones among them: afterwards the server is healthy, every
// slot is free, the queue is empty, a greedy request still gives its
// output, and memory has stopped growing. The process's RSS climbs for the
// first ~20 rounds (allocator arenas and the connection threads' stacks
// settling; measured flat from round 20 on) and then stays within a few
// KiB, so the last 8 rounds (256 requests) may add at most 1 MiB: a leak of
// 4 KiB a request (a sequence, its logits, a connection) would fail it.
TEST(Server, MalformedAndAbandonedRequestsLeaveItHealthy) {
  ServerOptions o = options(4);
  o.whole_keepalive_after_ms = 0;  // requests without "stream" answered chunked at once
  LiveServer srv(kStories, o);
  const std::string want = completion_text(srv, "Once upon a time", 12);
  const std::vector<std::string> bad = {
      "{not json", "[1, 2]", R"({"prompt": 5})", R"({"prompt": "x", "max_tokens": -3})",
      R"({"prompt": "x", "temperature": "hot"})", R"({"prompt": [1, 99999]})",
      json{{"prompt", std::string(20000, 'a')}}.dump()};
  std::atomic<int> abandoned_streams{0};
  auto client_work = [&](int who, int round) {
    const int kind = (who + round) % 6;
    if (kind == 0) {  // malformed body
      auto r = srv.client().Post("/v1/completions", bad[size_t(who + round) % bad.size()],
                                 "application/json");
      EXPECT_TRUE(r && r->status >= 400 && r->status < 500);
    } else if (kind == 1) {  // a stream abandoned after two chunks
      httplib::Client c = srv.client();
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = json{{"prompt", kPrompts[size_t(who) % kPrompts.size()]},
                      {"max_tokens", 400},
                      {"stream", true}}
                     .dump();
      req.set_header("Content-Type", "application/json");
      int chunks = 0;
      req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
      httplib::Response res;
      httplib::Error err;
      c.send(req, res, err);
      c.stop();
      ++abandoned_streams;
    } else if (kind == 2) {  // headers cut off
      send_and_hang_up(srv.port, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le");
    } else if (kind == 3) {  // a body shorter than its Content-Length
      send_and_hang_up(srv.port,
                       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       "application/json\r\nContent-Length: 500\r\n\r\n{\"messages\": [");
    } else if (kind == 4) {  // a request without "stream" whose client gives up
      httplib::Client c = srv.client();
      c.set_read_timeout(0, 20000);
      c.Post("/v1/completions",
             json{{"prompt", kPrompts[size_t(who) % kPrompts.size()]}, {"max_tokens", 400}}.dump(),
             "application/json");
      c.stop();
    } else {  // a good request
      auto r = srv.post("/v1/completions", {{"prompt", kPrompts[size_t(round) % kPrompts.size()]},
                                            {"max_tokens", 8}});
      EXPECT_TRUE(r && r->status == 200);
      if (r) {
        EXPECT_FALSE(json::parse(r->body)["choices"][0]["text"].get<std::string>().empty());
      }
    }
  };
  auto wait_idle = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      const json m = srv.metric_values();
      if (m["kiln_slots_busy"] == 0 && m["kiln_queue_depth"] == 0) return m;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) {
        ADD_FAILURE() << "still busy: " << m.dump();
        return m;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  long rss_settled = 0;
  constexpr int kRounds = 32, kSettled = kRounds - 8;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::thread> clients;
    for (int who = 0; who < 8; ++who)
      clients.emplace_back([&, who] {
        for (int rep = 0; rep < 4; ++rep) client_work(who + rep, round);
      });
    for (auto& t : clients) t.join();
    const json m = wait_idle();
    EXPECT_LE(m["kiln_kv_blocks_used"].get<double>(), m["kiln_kv_blocks_total"].get<double>());
    const long rss = resident_kib();
    if (round % 8 == 7 || round >= kSettled)
      std::printf("[ measured ] round %d: RSS %ld KiB, KV blocks used %g of %g, %g cancelled\n", round,
                rss, m["kiln_kv_blocks_used"].get<double>(), m["kiln_kv_blocks_total"].get<double>(),
                m["kiln_requests_cancelled_total"].get<double>());
    if (round == kSettled - 1) rss_settled = rss;
    if (round >= kSettled && !kAddressSanitizer) {  // its quarantine holds what is freed
      EXPECT_LE(rss - rss_settled, 1024) << "memory grew in round " << round;
    }
  }
  EXPECT_EQ(json::parse(srv.client().Get("/health")->body)["status"], "ok");
  // Every abandoned stream is cancelled (an abandoned request without
  // "stream" may finish before its next write finds the client gone).
  EXPECT_GE(srv.metric_values()["kiln_requests_cancelled_total"].get<double>(),
            double(abandoned_streams.load()));
  EXPECT_GT(abandoned_streams.load(), kRounds * 4);
  EXPECT_EQ(completion_text(srv, "Once upon a time", 12), want);
}

}  // namespace
}  // namespace kiln
