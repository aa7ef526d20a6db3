// The public API (include/kiln/kiln.h) over the runtime: Engine loads,
// Conversation chats, generate() runs the loop.
#include "kiln/kiln.h"

#include "kiln/core/error.h"
#include "kiln/runtime/chat_format.h"
#include "kiln/runtime/conversation.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/generate.h"
#include "kiln/runtime/stop_strings.h"

namespace kiln {
namespace {

SamplingParams sampling_of(const GenerateOptions& o) {
  SamplingParams s;
  s.temperature = o.temperature;
  s.top_k = o.top_k;
  s.top_p = o.top_p;
  s.min_p = o.min_p;
  s.repeat_penalty = o.repeat_penalty;
  s.seed = o.seed;
  return s;
}

StateOptions state_of(const OpenOptions& o) {
  StateOptions s;
  s.context = o.context;
  return s;
}

}  // namespace

// --- Llm

std::unique_ptr<Llm> Llm::open(const std::string& path, const OpenOptions& options) {
  LoadOptions lo;
  lo.threads = options.threads;
  lo.force_cpu = options.cpu;
  lo.device = options.device;
  lo.context = options.context;
  std::unique_ptr<Llm> llm(new Llm());
  llm->engine_ = Engine::load(path, lo);
  llm->options_ = options;
  return llm;
}

Llm::~Llm() = default;

std::vector<int32_t> Llm::tokenize(std::string_view text, bool add_bos) const {
  EncodeOptions eo;
  eo.add_bos = add_bos;
  return engine_->require_tokenizer().encode(text, eo);
}

std::string Llm::detokenize(const std::vector<int32_t>& ids) const {
  return engine_->require_tokenizer().decode(ids, /*skip_special=*/false);
}

int64_t Llm::vocab_size() const { return engine_->spec().vocab_size; }
std::string Llm::architecture() const { return engine_->spec().arch; }
std::string Llm::device() const { return engine_->backend().name(); }

std::unique_ptr<Session> Llm::session() {
  return std::unique_ptr<Session>(new Session(*engine_, options_.context));
}

std::unique_ptr<Chat> Llm::chat(const std::string& system_prompt) {
  auto c = std::make_unique<Conversation>(
      *engine_, load_chat_format(engine_->file(), engine_->require_tokenizer()), state_of(options_));
  c->set_system(system_prompt);
  return std::unique_ptr<Chat>(new Chat(std::move(c)));
}

// --- Session

Session::Session(Engine& engine, int64_t context) : engine_(engine) {
  StateOptions so;
  so.context = context;
  state_ = engine.model().new_state(so);
  logits_.resize(size_t(engine.spec().vocab_size));
}

Session::~Session() = default;

const std::vector<float>& Session::feed(const std::vector<int32_t>& ids) {
  KILN_CHECK(!ids.empty(), "Session::feed: no ids");
  engine_.model().forward(*state_, ids.data(), int64_t(ids.size()), logits_.data(), false);
  history_.insert(history_.end(), ids.begin(), ids.end());
  return logits_;
}

std::vector<int32_t> Session::generate(const GenerateOptions& o, const TextCallback& on_text) {
  KILN_CHECK(state_->position() > 0, "Session::generate: feed a prompt first");
  GenerateRequest req;
  req.max_tokens = o.max_tokens;
  req.sampling = sampling_of(o);
  req.prefilled_logits = logits_.data();
  for (int64_t id : engine_.spec().eos_ids) req.stop_ids.push_back(int32_t(id));
  const Tokenizer* tok = engine_.tokenizer();
  std::unique_ptr<StreamingDecoder> decoder;
  if (tok) decoder = std::make_unique<StreamingDecoder>(*tok, true);
  StopStrings stops(o.stop);
  req.prompt = history_;  // already fed: only the penalties read it
  auto result = kiln::generate(engine_.model(), *state_, req, [&](int32_t id) {
    if (!decoder) return true;
    const std::string piece = stops.push(decoder->push(id));
    const bool go_on = piece.empty() || !on_text || on_text(piece);
    return go_on && !stops.stopped();
  });
  if (decoder && on_text) {
    const std::string rest = stops.push(decoder->flush()) + stops.flush();
    if (!rest.empty()) on_text(rest);
  }
  history_.insert(history_.end(), result.tokens.begin(), result.tokens.end());
  // The last generated token is not in the cache yet: feed it so the
  // session can go on from here.
  if (!result.tokens.empty() && state_->position() < int64_t(history_.size()))
    engine_.model().forward(*state_, &result.tokens.back(), 1, logits_.data(), false);
  return result.tokens;
}

int64_t Session::position() const { return state_->position(); }

void Session::reset() {
  state_->reset();
  history_.clear();
}

// --- Chat

Chat::Chat(std::unique_ptr<Conversation> c) : conversation_(std::move(c)) {}
Chat::~Chat() = default;

std::string Chat::say(const std::string& user_text, const GenerateOptions& o,
                      const TextCallback& on_answer, const TextCallback& on_thought) {
  TurnOptions t;
  t.max_tokens = o.max_tokens;
  t.sampling = sampling_of(o);
  t.enable_thinking = o.enable_thinking;
  t.think_budget = o.think_budget;
  t.stop_strings = o.stop;
  bool stop = false;
  TurnCallbacks cb;
  cb.on_answer = [&](const std::string& s) {
    if (on_answer && !on_answer(s)) stop = true;
  };
  cb.on_thought = [&](const std::string& s) {
    if (on_thought && !on_thought(s)) stop = true;
  };
  cb.cancelled = [&] { return stop; };
  return conversation_->say(user_text, t, cb).answer;
}

void Chat::reset() { conversation_->reset(); }

}  // namespace kiln
