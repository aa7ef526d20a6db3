#include "kiln/runtime/conversation.h"

#include <algorithm>

#include "kiln/core/error.h"
#include "kiln/runtime/stop_strings.h"
#include "kiln/runtime/thinking.h"

namespace kiln {
namespace {

// Texts of the special tokens, longest first (for spotting them in user text).
std::vector<std::string> special_texts(const Tokenizer& tok) {
  std::vector<std::string> out;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.is_special(id) && !tok.token_text(id).empty()) out.push_back(tok.token_text(id));
  return out;
}

bool mentions_any(const std::string& text, const std::vector<std::string>& needles) {
  for (const auto& n : needles)
    if (text.find(n) != std::string::npos) return true;
  return false;
}

}  // namespace

Conversation::Conversation(Engine& engine, ChatFormat format, const StateOptions& so)
    : engine_(engine), format_(std::move(format)), state_(engine.model().new_state(so)) {
  if (const Tokenizer* tok = engine.tokenizer()) special_texts_ = special_texts(*tok);
}

void Conversation::set_system(const std::string& text) { system_ = text; }

void Conversation::reset() {
  messages_ = nlohmann::json::array();
  user_texts_.clear();
  raw_text_.clear();
  // The cache keeps its contents; the next turn reuses whatever prefix
  // (the system prompt) still matches.
}

std::vector<int32_t> Conversation::render_prompt(const TurnOptions& opt) const {
  const Tokenizer& tok = engine_.require_tokenizer();
  if (!has_template()) {
    EncodeOptions eo;
    eo.parse_special = false;
    eo.add_bos = tok.add_bos_by_default();
    return tok.encode(raw_text_, eo);
  }
  nlohmann::json all = nlohmann::json::array();
  if (!system_.empty()) all.push_back({{"role", "system"}, {"content", system_}});
  for (const auto& m : messages_) all.push_back(m);

  ChatTemplateOptions co = format_.default_options();
  co.add_generation_prompt = true;
  co.enable_thinking = opt.enable_thinking;
  const std::string text = format_.render(all, co);

  // Template text is tokenized with its control tokens; user text must not
  // be able to spell one. In the usual case the two agree and the whole
  // prompt is tokenized at once, exactly as Hugging Face does.
  std::vector<std::string> written;  // what people wrote, in prompt order
  if (!system_.empty()) written.push_back(system_);
  written.insert(written.end(), user_texts_.begin(), user_texts_.end());
  bool injected = false;
  for (const auto& w : written) injected = injected || mentions_any(w, special_texts_);
  if (!injected) return tok.encode(text);

  // Otherwise: cut the rendered text at each written piece and tokenize
  // those pieces as plain text.
  std::vector<int32_t> ids;
  size_t pos = 0;
  EncodeOptions plain;
  plain.parse_special = false;
  for (const auto& w : written) {
    const size_t at = text.find(w, pos);
    if (at == std::string::npos || w.empty()) continue;
    auto head = tok.encode(text.substr(pos, at - pos));
    auto body = tok.encode(w, plain);
    ids.insert(ids.end(), head.begin(), head.end());
    ids.insert(ids.end(), body.begin(), body.end());
    pos = at + w.size();
  }
  auto tail = tok.encode(text.substr(pos));
  ids.insert(ids.end(), tail.begin(), tail.end());
  return ids;
}

nlohmann::json Conversation::user_message(const std::string& text, size_t n_images,
                                          size_t n_videos) const {
  if (n_images + n_videos == 0) return {{"role", "user"}, {"content", text}};
  // Vision templates take a list of parts; a text-only template gets the
  // vision markers written into the text, as the vision templates render them.
  const bool template_takes_parts = format_.chat_template->source().find("image") != std::string::npos;
  if (template_takes_parts) {
    nlohmann::json parts = nlohmann::json::array();
    for (size_t i = 0; i < n_images; ++i) parts.push_back({{"type", "image"}});
    for (size_t i = 0; i < n_videos; ++i) parts.push_back({{"type", "video"}});
    parts.push_back({{"type", "text"}, {"text", text}});
    return {{"role", "user"}, {"content", parts}};
  }
  std::string s;
  for (size_t i = 0; i < n_images; ++i) s += "<|vision_start|><|image_pad|><|vision_end|>";
  for (size_t i = 0; i < n_videos; ++i) s += "<|vision_start|><|video_pad|><|vision_end|>";
  return {{"role", "user"}, {"content", s + text}};
}

TurnResult Conversation::say(const std::string& user_text, const TurnOptions& opt,
                             const TurnCallbacks& cb, const TurnMedia& media) {
  // A turn that fails (a bad image, a full context) leaves no trace.
  const size_t n_messages = messages_.size(), n_media = media_.size(), n_raw = raw_text_.size(),
               n_texts = user_texts_.size();
  try {
    return say_unchecked(user_text, opt, cb, media);
  } catch (...) {
    messages_.erase(messages_.begin() + std::ptrdiff_t(n_messages), messages_.end());
    media_.resize(n_media);
    raw_text_.resize(n_raw);
    user_texts_.resize(n_texts);
    throw;
  }
}

TurnResult Conversation::say_unchecked(const std::string& user_text, const TurnOptions& opt,
                                       const TurnCallbacks& cb, const TurnMedia& media) {
  const Tokenizer& tok = engine_.require_tokenizer();
  if (!media.empty()) {
    KILN_CHECK(has_template(), "images need a model with a chat template");
    if (!vision_) vision_ = VisionRuntime::open(engine_.file(), mmproj_, engine_.backend());
    for (const auto& path : media.images) media_.push_back(vision_->encode_image(path));
    for (const auto& path : media.videos) media_.push_back(vision_->encode_video(path, media.video));
  }
  if (has_template()) {
    messages_.push_back(user_message(user_text, media.images.size(), media.videos.size()));
    user_texts_.push_back(user_text);
  }
  else
    raw_text_ += user_text;
  const VisionTokenIds vt = vision_token_ids(tok);
  std::vector<int32_t> prompt = render_prompt(opt);
  if (!media_.empty()) prompt = expand_media_pads(prompt, media_, tok, vt);

  // Keep the cached prefix that still matches; always feed at least one token.
  size_t common = 0;
  while (common < cached_.size() && common < prompt.size() && cached_[common] == prompt[common])
    ++common;
  if (common == prompt.size() && common > 0) --common;
  if (int64_t(common) < media_end_) common = 0;  // positions after media depend on it
  if (!state_->can_truncate(int64_t(common))) common = 0;
  state_->truncate(int64_t(common));
  if (common == 0) state_->set_rope_offset(0);
  cached_.assign(prompt.begin(), prompt.begin() + common);

  TurnResult result;
  result.prompt_ids = prompt;
  result.reused_tokens = int64_t(common);
  GenerateRequest req;
  req.prompt.assign(prompt.begin() + common, prompt.end());
  // Media in the part still to feed: a multimodal prefill places their
  // embeddings and M-RoPE positions; generation samples from its logits.
  std::vector<float> prefilled;
  if (!media_.empty()) {
    size_t pads_before = 0;
    for (size_t i = 0; i < common; ++i) pads_before += prompt[i] == vt.start;
    std::vector<MediaItem> fresh;
    size_t pads_after = 0;
    for (int32_t id : req.prompt) pads_after += id == vt.start;
    // Each media item opens with its own <|vision_start|> (a video: one per
    // temporal patch), so count items by walking them in order.
    size_t seen = 0;
    for (const MediaItem& m : media_) {
      const size_t starts = m.video ? m.seconds.size() : 1;
      if (seen >= pads_before) fresh.push_back(m);
      seen += starts;
    }
    if (pads_after > 0) {
      MultimodalPrompt mp = build_multimodal_prompt(req.prompt, fresh, vt,
                                                    state_->position() + state_->rope_offset());
      prefilled.resize(size_t(engine_.spec().vocab_size));
      prefill_multimodal(engine_.model(), *state_, mp, prefilled.data(), false);
      req.prefilled_logits = prefilled.data();
      media_end_ = state_->position();
    }
  }
  req.max_tokens = opt.max_tokens;
  req.sampling = opt.sampling;
  req.stop_ids = format_.end_of_turn_ids;
  const bool opened = prompt_opens_thought(prompt, format_);
  std::unique_ptr<ThinkingBudget> budget;
  if (opt.think_budget >= 0 && opt.enable_thinking.value_or(true)) {
    budget = std::make_unique<ThinkingBudget>(format_, tok, opt.think_budget, opened);
    req.force = [&](const std::vector<int32_t>& g) { return (*budget)(g); };
  }

  ThoughtTracker thought(format_, opened);
  StreamingDecoder thought_text(tok, true), answer_text(tok, true);
  StopStrings stops(opt.stop_strings);
  std::vector<int32_t> generated;
  result.generation = generate(engine_.model(), *state_, req, [&](int32_t id) {
    generated.push_back(id);
    if (thought.push(id)) {
      // The <think> markers themselves are not shown.
      if (id == format_.think_start_id || id == format_.think_end_id) return true;
      std::string piece = thought_text.push(id);
      result.thought += piece;
      if (cb.on_thought && !piece.empty()) cb.on_thought(piece);
    } else {
      std::string piece = stops.push(answer_text.push(id));
      result.answer += piece;
      if (cb.on_answer && !piece.empty()) cb.on_answer(piece);
      if (stops.stopped()) return false;
    }
    return !(cb.cancelled && cb.cancelled());
  });
  std::string rest = stops.push(answer_text.flush()) + stops.flush();
  result.answer += rest;
  if (cb.on_answer && !rest.empty()) cb.on_answer(rest);

  // The cache now holds the prompt and every generated token but the last.
  cached_.insert(cached_.end(), req.prompt.begin(), req.prompt.end());
  cached_.insert(cached_.end(), generated.begin(), generated.end());
  cached_.resize(size_t(state_->position()));

  const std::string said = tok.decode(generated, /*skip_special=*/false);
  if (has_template())
    messages_.push_back({{"role", "assistant"}, {"content", result.thought.empty() ? result.answer : said}});
  else
    raw_text_ += said;
  return result;
}

}  // namespace kiln
