#include "kiln/server/server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>
#include <utility>

#include "kiln/core/error.h"
#include "kiln/core/splitmix.h"
#include "kiln/runtime/chat_format.h"
#include "kiln/runtime/thinking.h"
#include "kiln/server/api_error.h"
#include "kiln/server/json_constraint.h"
#include "kiln/server/output.h"

namespace kiln {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Where a streamed chunk's text goes while its frame is made (stream).
constexpr const char* kTextSlot = "kiln-text-slot-5f3a";

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A number drawn once per process, so that ids and seeds differ from run
// to run (std::random_device opens the system's source on every
// construction: ~4% of the HTTP threads' time when made per request).
uint64_t process_salt() {
  static const uint64_t salt =
      (uint64_t(std::random_device{}()) << 32 | std::random_device{}()) ^
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  return salt;
}

// The n-th value of a splitmix64 sequence from the process's salt: distinct
// for every n, well mixed.
uint64_t salted(uint64_t n) { return splitmix64_mix(process_salt() + n * kSplitmixGamma); }

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%016llx", prefix, (unsigned long long)salted(++counter));
  return buf;
}

// A request's seed when it names none: a different draw for every request.
uint64_t unnamed_seed() {
  static std::atomic<uint64_t> counter{0};
  return salted(~(++counter));
}

json error_body(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return {{"error", err}};
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(dump(error_body(e)), "application/json");
}

// --- request fields, checked

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const json& body, const char* key, double lo, double hi, double fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) throw bad_param(key, cat("'", key, "' must be a number"));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) throw bad_param(key, cat("'", key, "' must be between ", lo, " and ", hi));
  return x;
}

std::optional<int64_t> integer(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>())
    return int64_t(v->get<double>());
  if (!v->is_number_integer()) throw bad_param(key, cat("'", key, "' must be an integer"));
  return v->get<int64_t>();
}

bool boolean(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw bad_param(key, cat("'", key, "' must be true or false"));
  return v->get<bool>();
}

std::vector<std::string> stop_list(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  if (v->is_string()) return {v->get<std::string>()};
  if (!v->is_array()) throw bad_param("stop", "'stop' must be a string or a list of strings");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string()) throw bad_param("stop", "'stop' must be a string or a list of strings");
    out.push_back(s.get<std::string>());
  }
  if (out.size() > 16) throw bad_param("stop", "at most 16 stop strings");
  return out;
}

// Messages as chat templates expect them. OpenAI clients send an assistant
// turn that only calls tools with "content": null, and may send content as a
// list of {"type": "text"} parts; templates written for Hugging Face test
// and concatenate content as a string. Text parts are joined with newlines
// (as other OpenAI-compatible servers do); other parts are refused rather
// than dropped, since this server has no image input.
json template_messages(const json& messages) {
  json out = messages;
  for (auto& m : out) {
    auto it = m.find("content");
    if (it == m.end()) continue;
    if (it->is_null()) {
      *it = "";
    } else if (it->is_array()) {
      std::string text;
      for (size_t i = 0; i < it->size(); ++i) {
        const json& part = (*it)[i];
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          throw bad_param("messages",
                          "only text content parts ({\"type\": \"text\", \"text\": ...}) are "
                          "supported");
        if (i) text += "\n";
        text += part["text"].get<std::string>();
      }
      *it = text;
    }
  }
  return out;
}

// Texts of the control tokens, for spotting them in user text.
std::vector<std::string> special_texts(const Tokenizer& tok) {
  std::vector<std::string> out;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.is_special(id) && !tok.token_text(id).empty()) out.push_back(tok.token_text(id));
  return out;
}

// Holds one count of a counter while it lives (a request being generated).
class Counted {
 public:
  Counted() = default;
  explicit Counted(std::atomic<int>& c) : n_(&c) { ++c; }
  Counted(Counted&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
  Counted& operator=(Counted&& o) noexcept {
    if (this != &o) {
      release();
      n_ = std::exchange(o.n_, nullptr);
    }
    return *this;
  }
  ~Counted() { release(); }

 private:
  void release() {
    if (n_) --*n_;
    n_ = nullptr;
  }
  std::atomic<int>* n_ = nullptr;
};

}  // namespace

int token_take_pace_us(int running) {
  constexpr int kTakesPerSecond = 2000, kFewestUs = 2000, kMostUs = 16000;
  return std::clamp(running * (1000000 / kTakesPerSecond), kFewestUs, kMostUs);
}

struct Server::Impl {
  Engine& engine;
  ServerOptions opt;
  const Tokenizer& tok;
  ChatFormat format;
  SamplingParams defaults;
  std::vector<std::string> specials;
  std::shared_ptr<const std::vector<std::string>> pieces;  // token bytes, for JSON mode
  std::unique_ptr<Scheduler> scheduler;
  httplib::Server http;
  std::atomic<bool> shutting_down{false};
  std::atomic<int64_t> http_requests{0}, rejected{0}, client_errors{0}, completed{0},
      cancelled{0};
  std::atomic<int> running{0};  // requests accepted whose responses are not yet done
  std::mutex log_mutex;

  Impl(Engine& e, const ServerOptions& o) : engine(e), opt(o), tok(e.require_tokenizer()) {
    if (opt.model_id.empty()) {
      namespace fs = std::filesystem;
      fs::path p(e.file().path());
      opt.model_id = fs::is_directory(p) ? p.filename().string() : p.stem().string();
      if (opt.model_id.empty()) opt.model_id = p.parent_path().filename().string();
    }
    format = load_chat_format(e.file(), tok);
    defaults = default_sampling(e.file());
    specials = special_texts(tok);
    auto pc = std::make_shared<std::vector<std::string>>(size_t(e.spec().vocab_size));
    for (int32_t id = 0; id < tok.vocab_size() && id < e.spec().vocab_size; ++id)
      if (!tok.is_special(id)) (*pc)[size_t(id)] = tok.token_bytes(id);
    pieces = pc;
    scheduler = std::make_unique<Scheduler>(e.model(), opt.scheduler);
    routes();
  }

  void log(const std::string& line) {
    if (!opt.log) return;
    std::lock_guard lock(log_mutex);
    opt.log(line);
  }

  // ---------------------------------------------------------------- routes

  void routes() {
    const int threads = opt.http_threads > 0
                            ? opt.http_threads
                            : opt.scheduler.slots + opt.scheduler.max_queue + 8;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_keep_alive_timeout(2);
    http.set_read_timeout(30);
    http.set_write_timeout(30);

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      ++http_requests;
      if (opt.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      if (auth == "Bearer " + opt.api_key) return httplib::Server::HandlerResponse::Unhandled;
      ++client_errors;
      send_error(res, ApiError(401, "authentication_error",
                               auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'"
                                            : "incorrect API key",
                               "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    http.set_exception_handler(
        [this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          try {
            std::rethrow_exception(ep);
          } catch (const ApiError& e) {
            if (e.status < 500) ++client_errors;
            send_error(res, e);
          } catch (const Error& e) {
            ++client_errors;
            send_error(res, ApiError(400, "invalid_request_error", e.what()));
          } catch (const std::exception& e) {
            send_error(res, ApiError(500, "server_error", e.what()));
          } catch (...) {
            send_error(res, ApiError(500, "server_error", "unknown error"));
          }
        });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404)
        send_error(res, ApiError(404, "invalid_request_error",
                                 cat("no route ", req.method, " ", req.path), "", "not_found"));
      else if (res.status == 413)
        send_error(res, ApiError(413, "invalid_request_error", "request body too large"));
      else if (res.status >= 400)
        send_error(res, ApiError(res.status, "invalid_request_error",
                                 cat("HTTP ", res.status)));
    });

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const SchedulerStats s = scheduler->stats();
      json j = {{"status", shutting_down ? "shutting_down" : "ok"},
                {"slots_idle", s.slots - s.active},
                {"slots_processing", s.active},
                {"queue", s.waiting}};
      if (s.kv_blocks > 0) j["kv_blocks"] = {{"total", s.kv_blocks}, {"used", s.kv_blocks_used}};
      res.status = shutting_down ? 503 : 200;
      res.set_content(dump(j), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump({{"object", "list"}, {"data", json::array({model_object()})}}),
                      "application/json");
    });
    // models.retrieve(id) in the OpenAI clients.
    http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      check_model({{"model", req.matches[1].str()}});
      res.set_content(dump(model_object()), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completion(req, res, true);
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completion(req, res, false);
    });
  }

  json model_object() const {
    return {{"id", opt.model_id},
            {"object", "model"},
            {"created", unix_time()},
            {"owned_by", "kiln"},
            {"meta",
             {{"arch", engine.spec().arch},
              {"context", opt.scheduler.context},
              {"parallel", opt.scheduler.slots},
              {"vocab", engine.spec().vocab_size}}}};
  }

  std::string metrics() {
    const SchedulerStats s = scheduler->stats();
    std::ostringstream o;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
        << name << " " << v << "\n";
    };
    metric("kiln_http_requests_total", "counter", "HTTP requests received", double(http_requests));
    metric("kiln_requests_total", "counter", "generation requests started", double(s.requests_started));
    metric("kiln_requests_finished_total", "counter", "generation requests ended",
           double(s.requests_finished));
    metric("kiln_requests_cancelled_total", "counter",
           "generation requests cancelled (disconnect, shutdown)", double(cancelled));
    metric("kiln_requests_rejected_total", "counter", "requests refused with 503 (queue full)",
           double(rejected));
    metric("kiln_client_errors_total", "counter", "requests answered with a 4xx", double(client_errors));
    metric("kiln_prompt_tokens_total", "counter", "prompt tokens received (tokens in)",
           double(s.prompt_tokens));
    metric("kiln_prompt_tokens_cached_total", "counter",
           "prompt tokens found in a slot's cache (prefix reuse)", double(s.cached_prompt_tokens));
    metric("kiln_generated_tokens_total", "counter", "tokens generated (tokens out)",
           double(s.generated_tokens));
    metric("kiln_queue_depth", "gauge", "requests waiting for a slot", double(s.waiting));
    metric("kiln_slots_busy", "gauge", "slots running a request", double(s.active));
    metric("kiln_responses_open", "gauge",
           "accepted requests whose responses are still being made or sent", double(running.load()));
    metric("kiln_slots_total", "gauge", "slots (sequences decoded together)", double(s.slots));
    metric("kiln_tokens_per_second", "gauge", "tokens generated per second over the last 5 s",
           s.recent_tokens_per_s);
    metric("kiln_forward_steps_total", "counter", "batched forward steps", double(s.steps));
    metric("kiln_busy_seconds_total", "counter", "seconds spent in forward steps", s.busy_seconds);
    metric("kiln_sample_seconds_total", "counter", "seconds spent choosing tokens after them",
           s.sample_seconds);
    if (s.kv_blocks > 0) {
      metric("kiln_kv_blocks_total", "gauge", "blocks in the paged KV pool", double(s.kv_blocks));
      metric("kiln_kv_blocks_used", "gauge", "KV blocks held by sequences (running or cached)",
             double(s.kv_blocks_used));
      metric("kiln_kv_block_positions", "gauge", "positions per KV block",
             double(s.kv_block_positions));
      metric("kiln_kv_shared_prefix_tokens_total", "counter",
             "prompt tokens whose KV blocks were shared from another sequence",
             double(s.shared_prefix_tokens));
      metric("kiln_preemptions_total", "counter",
             "sequences preempted (recomputed later) because the KV pool ran out",
             double(s.preemptions));
    }
    return o.str();
  }

  // ------------------------------------------------------------ requests

  struct Job {
    std::shared_ptr<Sequence> seq;
    bool chat = false, stream = false, include_usage = false;
    bool opened_thought = false, tools = false;
    int top_logprobs = -1;
    bool logprobs = false;
    std::vector<std::string> stops;
    std::string id;
    int64_t created = 0;
    Counted counted;  // in `running` from acceptance until the response is done
  };

  // Sequence::wait's pace for a request's takes now (token_take_pace_us).
  int take_pace_us() const { return token_take_pace_us(running.load(std::memory_order_relaxed)); }

  void check_model(const json& body) {
    const json* m = field(body, "model");
    if (!m) return;
    if (!m->is_string()) throw bad_param("model", "'model' must be a string");
    const std::string name = m->get<std::string>();
    if (name != opt.model_id && name != engine.file().path())
      throw ApiError(404, "invalid_request_error",
                     cat("the model '", name, "' does not exist; this server has '", opt.model_id,
                         "'"),
                     "model", "model_not_found");
  }

  SamplingParams sampling(const json& body) {
    SamplingParams p = defaults;
    p.temperature = float(number_in(body, "temperature", 0, 2, p.temperature));
    p.top_p = float(number_in(body, "top_p", 0, 1, p.top_p));
    if (p.top_p <= 0) throw bad_param("top_p", "'top_p' must be greater than 0");
    if (auto k = integer(body, "top_k")) p.top_k = int(*k);
    p.min_p = float(number_in(body, "min_p", 0, 1, p.min_p));
    p.presence_penalty = float(number_in(body, "presence_penalty", -2, 2, 0));
    p.frequency_penalty = float(number_in(body, "frequency_penalty", -2, 2, 0));
    p.repeat_penalty = float(number_in(body, "repeat_penalty", 0.01, 10, p.repeat_penalty));
    if (auto s = integer(body, "seed"))
      p.seed = uint64_t(*s);
    else
      p.seed = unnamed_seed();
    return p;
  }

  // The rendered chat prompt as ids. User text never turns into control
  // tokens, even if it spells one (as Conversation does).
  std::vector<int32_t> encode_chat(const std::string& text, const json& messages) {
    auto mentions = [&](const std::string& s) {
      for (const auto& n : specials)
        if (s.find(n) != std::string::npos) return true;
      return false;
    };
    bool injected = false;
    for (const auto& m : messages)
      if (m.value("role", "") != "assistant" && m.contains("content") && m["content"].is_string() &&
          mentions(m["content"].get<std::string>()))
        injected = true;
    if (!injected) return tok.encode(text);
    std::vector<int32_t> ids;
    size_t pos = 0;
    EncodeOptions plain;
    plain.parse_special = false;
    for (const auto& m : messages) {
      if (m.value("role", "") == "assistant" || !m.contains("content") || !m["content"].is_string())
        continue;
      const std::string c = m["content"];
      const size_t at = text.find(c, pos);
      if (at == std::string::npos || c.empty()) continue;
      auto head = tok.encode(text.substr(pos, at - pos));
      auto b = tok.encode(c, plain);
      ids.insert(ids.end(), head.begin(), head.end());
      ids.insert(ids.end(), b.begin(), b.end());
      pos = at + c.size();
    }
    auto tail = tok.encode(text.substr(pos));
    ids.insert(ids.end(), tail.begin(), tail.end());
    return ids;
  }

  Job parse(const json& body, bool chat) {
    if (!body.is_object()) throw ApiError(400, "invalid_request_error", "the body must be a JSON object");
    check_model(body);
    Job job;
    job.chat = chat;
    job.created = unix_time();
    job.id = new_id(chat ? "chatcmpl" : "cmpl");
    job.stream = boolean(body, "stream", false);
    if (const json* so = field(body, "stream_options")) {
      if (!so->is_object()) throw bad_param("stream_options", "'stream_options' must be an object");
      job.include_usage = boolean(*so, "include_usage", false);
    }
    if (auto n = integer(body, "n"); n && *n != 1)
      throw bad_param("n", "only n = 1 is supported");
    auto seq = std::make_shared<Sequence>();
    seq->sampling = sampling(body);
    auto max_tokens = integer(body, "max_completion_tokens");
    if (!max_tokens) max_tokens = integer(body, "max_tokens");
    if (max_tokens && *max_tokens < 1)
      throw bad_param(field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                      "'max_tokens' must be at least 1");
    job.stops = stop_list(body);

    // Log-probabilities: chat takes logprobs: bool + top_logprobs: N;
    // completions take logprobs: N.
    if (chat) {
      job.logprobs = boolean(body, "logprobs", false);
      if (auto n = integer(body, "top_logprobs")) {
        if (*n < 0 || *n > 20) throw bad_param("top_logprobs", "'top_logprobs' must be 0 to 20");
        if (!job.logprobs) throw bad_param("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        job.top_logprobs = int(*n);
      } else if (job.logprobs) {
        job.top_logprobs = 0;
      }
    } else if (auto n = integer(body, "logprobs")) {
      if (*n < 0 || *n > 20) throw bad_param("logprobs", "'logprobs' must be 0 to 20");
      job.logprobs = true;
      job.top_logprobs = int(*n);
    }
    seq->top_logprobs = job.logprobs ? job.top_logprobs : -1;

    if (const json* rf = field(body, "response_format")) {
      if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
        throw bad_param("response_format", "'response_format' must be {\"type\": ...}");
      const std::string type = (*rf)["type"];
      if (type == "json_object" || type == "json_schema")
        seq->constraint = std::make_unique<JsonConstraint>(pieces);
      else if (type != "text")
        throw bad_param("response_format", cat("unknown response_format type '", type, "'"));
    }

    if (chat) {
      const json* messages = field(body, "messages");
      if (!messages || !messages->is_array() || messages->empty())
        throw bad_param("messages", "'messages' must be a non-empty list");
      for (const auto& m : *messages) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
          throw bad_param("messages", "each message must be an object with a string 'role'");
        if (m.contains("content") && !m["content"].is_null() && !m["content"].is_string() &&
            !m["content"].is_array())
          throw bad_param("messages", "a message's 'content' must be a string or a list of parts");
      }
      if (!format.chat_template)
        throw ApiError(400, "invalid_request_error",
                       "this model has no chat template: use /v1/completions");
      const json msgs = template_messages(*messages);
      ChatTemplateOptions co = format.default_options();
      co.add_generation_prompt = true;
      if (const json* kw = field(body, "chat_template_kwargs")) {
        if (!kw->is_object())
          throw bad_param("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        co.extra = ojson(*kw);
        if (kw->contains("enable_thinking")) {
          if (!(*kw)["enable_thinking"].is_boolean())
            throw bad_param("chat_template_kwargs", "'enable_thinking' must be true or false");
          co.enable_thinking = (*kw)["enable_thinking"].get<bool>();
        }
      }
      std::string tool_choice = "auto";
      if (const json* tc = field(body, "tool_choice"); tc && tc->is_string()) tool_choice = *tc;
      if (const json* tools = field(body, "tools")) {
        if (!tools->is_array()) throw bad_param("tools", "'tools' must be a list");
        if (tool_choice != "none" && !tools->empty()) {
          co.tools = ojson(*tools);
          job.tools = true;
        }
      }
      std::string text;
      try {
        text = format.render(msgs, co);
      } catch (const Error& e) {
        throw ApiError(400, "invalid_request_error", cat("the chat template failed: ", e.what()),
                       "messages");
      }
      seq->prompt = encode_chat(text, msgs);
      seq->stop_ids = format.end_of_turn_ids;
      job.opened_thought = prompt_opens_thought(seq->prompt, format);
      // A thinking budget: thinking_budget (tokens), or chat_template_kwargs.thinking_budget.
      std::optional<int64_t> budget = integer(body, "thinking_budget");
      if (!budget)
        if (const json* kw = field(body, "chat_template_kwargs")) budget = integer(*kw, "thinking_budget");
      if (budget && *budget >= 0 && co.enable_thinking.value_or(true)) {
        if (format.think_start_id < 0 || format.think_end_id < 0)
          throw bad_param("thinking_budget", "this model has no <think> and </think> tokens");
        auto tb = std::make_shared<ThinkingBudget>(format, tok, *budget, job.opened_thought);
        seq->force = [tb](const std::vector<int32_t>& g) { return (*tb)(g); };
      }
    } else {
      const json* prompt = field(body, "prompt");
      if (!prompt) throw bad_param("prompt", "'prompt' is required");
      const json* p = prompt;
      if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
      if (p->is_string()) {
        EncodeOptions eo;
        eo.add_bos = tok.add_bos_by_default();
        seq->prompt = tok.encode(p->get<std::string>(), eo);
      } else if (p->is_array() && !p->empty()) {
        for (const auto& x : *p) {
          if (!x.is_number_integer())
            throw bad_param("prompt", "'prompt' must be a string or a list of token ids");
          const int64_t id = x.get<int64_t>();
          if (id < 0 || id >= engine.spec().vocab_size)
            throw bad_param("prompt", cat("token id ", id, " is outside the vocabulary"));
          seq->prompt.push_back(int32_t(id));
        }
      } else {
        throw bad_param("prompt", "'prompt' must be a string or a list of token ids");
      }
      if (tok.eos_id() >= 0) seq->stop_ids.push_back(tok.eos_id());
      for (int32_t id : format.end_of_turn_ids)
        if (std::find(seq->stop_ids.begin(), seq->stop_ids.end(), id) == seq->stop_ids.end())
          seq->stop_ids.push_back(id);
    }
    if (seq->prompt.empty()) throw bad_param(chat ? "messages" : "prompt", "the prompt is empty");
    const int64_t ctx = opt.scheduler.context;
    if (int64_t(seq->prompt.size()) >= ctx)
      throw ApiError(400, "invalid_request_error",
                     cat("the prompt has ", seq->prompt.size(), " tokens; this server's context is ",
                         ctx, " tokens per request"),
                     chat ? "messages" : "prompt", "context_length_exceeded");
    const int64_t room = ctx - int64_t(seq->prompt.size());
    seq->max_tokens = max_tokens ? std::min(*max_tokens, room) : room;
    job.seq = std::move(seq);
    return job;
  }

  // ------------------------------------------------------------ responses

  json token_logprob_chat(const TokenEvent& e) {
    auto entry = [&](int32_t id, float lp) {
      const std::string t = tok.token_bytes(id);
      json bytes = json::array();
      for (unsigned char c : t) bytes.push_back(int(c));
      return json{{"token", t}, {"logprob", lp}, {"bytes", bytes}};
    };
    json j = entry(e.id, e.logprob);
    json top = json::array();
    for (const auto& t : e.top) top.push_back(entry(t.id, t.logprob));
    j["top_logprobs"] = top;
    return j;
  }

  json usage(const Job& job) {
    const int64_t p = int64_t(job.seq->prompt.size()), c = job.seq->generated();
    return {{"prompt_tokens", p},
            {"completion_tokens", c},
            {"total_tokens", p + c},
            {"prompt_tokens_details", {{"cached_tokens", job.seq->cached_tokens()}}}};
  }

  std::string finish_name(FinishReason r, bool tool_calls) {
    if (tool_calls && (r == FinishReason::Stop || r == FinishReason::Length)) return "tool_calls";
    if (r == FinishReason::Stop) return "stop";
    if (r == FinishReason::Length || r == FinishReason::ContextFull) return "length";
    if (r == FinishReason::Error) return "error";
    return "cancelled";
  }

  void completion(const httplib::Request& req, httplib::Response& res, bool chat) {
    if (shutting_down) throw ApiError(503, "server_error", "the server is shutting down");
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded())
      throw ApiError(400, "invalid_request_error", "the body is not valid JSON");
    auto job = std::make_shared<Job>(parse(body, chat));
    bool accepted;
    try {
      accepted = scheduler->submit(job->seq);
    } catch (const Error& e) {
      throw ApiError(400, "invalid_request_error", e.what());
    }
    if (!accepted) {
      ++rejected;
      throw ApiError(503, "server_error",
                     shutting_down ? "the server is shutting down"
                                   : "the server is busy: every slot is taken and the queue is full; "
                                     "retry later");
    }
    job->counted = Counted(running);
    log(cat("kiln serve: ", req.path, " ", job->id, " prompt ", job->seq->prompt.size(),
            " tokens, max ", job->seq->max_tokens, job->stream ? ", streamed" : ""));
    if (job->stream)
      stream(job, res);
    else
      whole(job, res);
  }

  OutputAssembler assembler(const Job& job) {
    return OutputAssembler(tok, job.chat ? &format : nullptr, job.opened_thought, job.stops,
                           job.tools);
  }

  void end_stats(const Job& job) {
    const FinishReason r = job.seq->finish_reason();
    if (r == FinishReason::Cancelled) ++cancelled;
    else ++completed;
    log(cat("kiln serve: ", job.id, " done: ", job.seq->generated(), " tokens, ",
            finish_reason_name(r), job.seq->cached_tokens() ? cat(", ", job.seq->cached_tokens(), " prompt tokens reused") : ""));
  }

  // A request without "stream": the whole completion as one JSON object.
  struct WholeState {
    OutputAssembler out;
    std::vector<TokenEvent> logprob_events;
    bool ended = false;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };

  // Takes the sequence's new tokens (waiting up to wait_ms); true once it
  // has finished.
  bool collect(Job& job, WholeState& st, int wait_ms) {
    std::vector<TokenEvent> events;
    const bool finished = job.seq->wait(events, wait_ms, take_pace_us());
    for (auto& e : events) {
      st.out.push(e.id);
      if (st.out.stopped()) job.seq->cancel(FinishReason::Stop);
      if (job.logprobs) st.logprob_events.push_back(std::move(e));
    }
    return finished;
  }

  // The response body of a finished sequence; throws ApiError(500) when the
  // generation failed.
  std::string whole_body(Job& job, WholeState& st) {
    st.out.finish();
    // A stop string may be found after the scheduler has already ended the
    // sequence for another reason (it runs ahead of the text): it wins.
    FinishReason reason = st.out.stopped() ? FinishReason::Stop : job.seq->finish_reason();
    if (reason == FinishReason::Error)
      throw ApiError(500, "server_error", cat("generation failed: ", job.seq->error()));
    end_stats(job);
    const OutputAssembler& out = st.out;
    json choice = {{"index", 0}};
    if (job.chat) {
      json tools = out.tool_calls();
      json msg = {{"role", "assistant"}, {"content", out.content()}};
      if (!out.reasoning().empty()) msg["reasoning_content"] = out.reasoning();
      if (!tools.empty()) {
        msg["tool_calls"] = tools;
        if (out.content().empty()) msg["content"] = nullptr;
      }
      choice["message"] = msg;
      choice["finish_reason"] = finish_name(reason, !tools.empty());
      if (job.logprobs) {
        json content = json::array();
        for (const auto& e : st.logprob_events) content.push_back(token_logprob_chat(e));
        choice["logprobs"] = {{"content", content}};
      } else {
        choice["logprobs"] = nullptr;
      }
    } else {
      choice["text"] = out.content();
      choice["finish_reason"] = finish_name(reason, false);
      choice["logprobs"] = job.logprobs ? completion_logprobs(st.logprob_events) : json(nullptr);
    }
    json j = {{"id", job.id},
              {"object", job.chat ? "chat.completion" : "text_completion"},
              {"created", job.created},
              {"model", opt.model_id},
              {"choices", json::array({choice})},
              {"usage", usage(job)}};
    return dump(j);
  }

  // Short generations get a plain response (and a 500 if they fail). One
  // still running after opt.whole_keepalive_after_ms goes on as a chunked
  // response: a space each second (JSON may start with whitespace) tells
  // whether the client is still there, and a failed write cancels the
  // sequence (see ServerOptions::whole_keepalive_after_ms).
  void whole(const std::shared_ptr<Job>& job, httplib::Response& res) {
    auto st = std::make_shared<WholeState>(WholeState{assembler(*job)});
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(std::max(0, opt.whole_keepalive_after_ms));
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      const bool finished = collect(*job, *st, int(std::clamp<int64_t>(left.count(), 0, 250)));
      if (finished) {
        res.set_content(whole_body(*job, *st), "application/json");
        return;
      }
      if (std::chrono::steady_clock::now() >= until) break;
    }
    res.set_chunked_content_provider(
        "application/json",
        [this, job, st](size_t, httplib::DataSink& sink) {
          if (!collect(*job, *st, 250)) {
            if (std::chrono::steady_clock::now() - st->last_write >= std::chrono::seconds(1)) {
              st->last_write = std::chrono::steady_clock::now();
              if (!sink.write(" ", 1)) {
                job->seq->cancel();
                return false;
              }
            }
            return true;
          }
          std::string body;
          try {
            body = whole_body(*job, *st);
          } catch (const ApiError& e) {
            body = dump(error_body(e));
          }
          st->ended = true;
          if (!sink.write(body.data(), body.size())) return false;
          sink.done();
          return true;
        },
        [this, job, st](bool) {
          // Finished sequences were counted by whole_body, even when the
          // last write found the client gone.
          if (!st->ended) {
            job->seq->cancel();
            ++cancelled;
            log(cat("kiln serve: ", job->id, " cancelled: the client went away"));
          }
        });
  }

  json completion_logprobs(const std::vector<TokenEvent>& events) {
    json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
    size_t offset = 0;
    for (const auto& e : events) {
      const std::string t = tok.token_bytes(e.id);
      tokens.push_back(t);
      lps.push_back(e.logprob);
      json top = json::object();
      for (const auto& a : e.top) top[tok.token_bytes(a.id)] = a.logprob;
      tops.push_back(top);
      offsets.push_back(offset);
      offset += t.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  // Server-sent events: one chunk per piece of text, then the finish
  // reason, the usage when asked for, and [DONE]. A client that goes away
  // cancels its sequence at the next write (or the next second's keep-alive).
  void stream(const std::shared_ptr<Job>& job, httplib::Response& res) {
    struct State {
      OutputAssembler out;
      bool started = false, ended = false;
      std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
      std::string frame_before, frame_after;  // a text chunk around its text
    };
    auto st = std::make_shared<State>(State{assembler(*job)});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, st](size_t, httplib::DataSink& sink) {
          auto event = [](const json& j) { return "data: " + dump(j) + "\n\n"; };
          auto write = [&](const std::string& s) {
            st->last_write = std::chrono::steady_clock::now();
            return sink.write(s.data(), s.size());
          };
          auto send = [&](const json& j) { return write(event(j)); };
          auto chunk = [&](json delta_or_text, const json& finish, const json& logprobs) {
            json choice = {{"index", 0}};
            if (job->chat) choice["delta"] = std::move(delta_or_text);
            else choice["text"] = std::move(delta_or_text);
            choice["logprobs"] = logprobs;
            choice["finish_reason"] = finish;
            return json{{"id", job->id},
                        {"object", job->chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", job->created},
                        {"model", opt.model_id},
                        {"choices", json::array({choice})}};
          };
          auto fail = [&] {
            job->seq->cancel();
            return false;
          };
          if (!st->started) {
            st->started = true;
            if (job->chat && !send(chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr)))
              return fail();
          }
          std::vector<TokenEvent> events;
          const bool finished = job->seq->wait(events, 250, take_pace_us());
          std::string batch;  // the chunks of the tokens taken, in one write
          for (const auto& e : events) {
            OutputDelta d = st->out.push(e.id);
            if (st->out.stopped()) job->seq->cancel(FinishReason::Stop);
            json lp = nullptr;
            if (job->logprobs)
              lp = job->chat ? json{{"content", json::array({token_logprob_chat(e)})}}
                             : completion_logprobs({e});
            if (d.empty() && !job->logprobs) continue;
            if (!job->logprobs && d.reasoning.empty()) {
              // Text alone, the usual token: the request's chunk made once
              // with a placeholder for the text, the text dropped in (the
              // same bytes as building and dumping the chunk, ~5% of a
              // tiny model's served samples).
              if (st->frame_before.empty()) {
                const json text = kTextSlot;
                const std::string whole =
                    event(chunk(job->chat ? json{{"content", text}} : text, nullptr, nullptr));
                const std::string slot = dump(text);
                const size_t at = whole.find(slot);
                st->frame_before = whole.substr(0, at);
                st->frame_after = whole.substr(at + slot.size());
              }
              batch += st->frame_before + dump(json(d.content)) + st->frame_after;
              continue;
            }
            json payload;
            if (job->chat) {
              payload = json::object();
              if (!d.reasoning.empty()) payload["reasoning_content"] = d.reasoning;
              if (!d.content.empty()) payload["content"] = d.content;
            } else {
              payload = d.content;
            }
            batch += event(chunk(payload, nullptr, lp));
          }
          if (!batch.empty() && !write(batch)) return fail();
          if (!finished) {
            // Nothing to say for a while: a comment line finds out whether
            // the client is still there.
            if (std::chrono::steady_clock::now() - st->last_write > std::chrono::seconds(1) &&
                !write(": keep-alive\n\n"))
              return fail();
            return true;
          }
          OutputDelta d = st->out.finish();
          const FinishReason reason =
              st->out.stopped() ? FinishReason::Stop : job->seq->finish_reason();
          json tools = st->out.tool_calls();
          if (job->chat) {
            json payload = json::object();
            if (!d.reasoning.empty()) payload["reasoning_content"] = d.reasoning;
            if (!d.content.empty()) payload["content"] = d.content;
            if (!payload.empty() && !send(chunk(payload, nullptr, nullptr))) return fail();
            if (!tools.empty()) {
              json calls = json::array();
              for (size_t i = 0; i < tools.size(); ++i) {
                json c = tools[i];
                c["index"] = i;
                calls.push_back(c);
              }
              if (!send(chunk({{"tool_calls", calls}}, nullptr, nullptr))) return fail();
            }
            if (!send(chunk(json::object(), finish_name(reason, !tools.empty()), nullptr))) return fail();
          } else {
            if (!send(chunk(d.content, finish_name(reason, false), nullptr))) return fail();
          }
          if (reason == FinishReason::Error) {
            ApiError e(500, "server_error", cat("generation failed: ", job->seq->error()));
            send(error_body(e));
          }
          if (job->include_usage) {
            json u = chunk(nullptr, nullptr, nullptr);
            u["choices"] = json::array();
            u["usage"] = usage(*job);
            if (!send(u)) return fail();
          }
          static const char done[] = "data: [DONE]\n\n";
          if (!sink.write(done, sizeof done - 1)) return fail();
          st->ended = true;
          end_stats(*job);
          sink.done();
          return true;
        },
        [this, job, st](bool success) {
          // The connection is gone (or the response is complete): never leave
          // the sequence running for nobody.
          if (!success || !st->ended) {
            job->seq->cancel();
            ++cancelled;
            log(cat("kiln serve: ", job->id, " cancelled: the client went away"));
          }
        });
  }
};

Server::Server(Engine& engine, const ServerOptions& options)
    : impl_(std::make_unique<Impl>(engine, options)) {
  // A client closing its socket mid-write must not kill the process.
  ::signal(SIGPIPE, SIG_IGN);
}

Server::~Server() {
  if (impl_->http.is_running()) shutdown(0);
}

const std::string& Server::model_id() const { return impl_->opt.model_id; }
SchedulerStats Server::scheduler_stats() const { return impl_->scheduler->stats(); }

namespace {

// Debian's cpp-httplib is a compiled library whose listening socket takes a
// backlog of 5 connections: more clients connecting at once than the accept
// loop has taken (16 streams starting together on a loaded machine) get
// their connections reset. listen() again on the bound socket raises the
// backlog; httplib does not hand the socket out, so it is found among the
// process's descriptors as the listening TCP socket on our port.
void raise_listen_backlog(int port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int bound = -1;
    if (addr.ss_family == AF_INET) bound = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

int Server::bind() {
  const auto& o = impl_->opt;
  int port = o.port;
  if (port == 0)
    port = impl_->http.bind_to_any_port(o.host);
  else if (!impl_->http.bind_to_port(o.host, port))
    port = -1;
  KILN_CHECK(port > 0, "cannot listen on ", o.host, ":", o.port,
             " (is the port taken, or the address not this machine's?)");
  raise_listen_backlog(port);
  return port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::shutdown(int grace_ms) {
  Impl& s = *impl_;
  s.shutting_down = true;
  s.scheduler->drain(false);
  if (!s.scheduler->wait_idle(grace_ms)) {
    s.log("kiln serve: cancelling the requests still running");
    s.scheduler->drain(true);
    s.scheduler->wait_idle(5000);
  }
  // Give the handlers a moment to write their last events.
  for (int i = 0; i < 50; ++i) {
    if (s.completed + s.cancelled >= s.scheduler->stats().requests_finished) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  s.http.stop();
}

}  // namespace kiln
