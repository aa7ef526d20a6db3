#include "kiln/runtime/multimodal.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "kiln/core/error.h"
#include "kiln/io/json_file.h"

namespace kiln {

int64_t MediaItem::merged_h() const { return pixels.grid_h / merge; }
int64_t MediaItem::merged_w() const { return pixels.grid_w / merge; }

VisionTokenIds vision_token_ids(const Tokenizer& tok) {
  VisionTokenIds v;
  auto id = [&](const char* s) { return tok.token_id(s).value_or(-1); };
  v.start = id("<|vision_start|>");
  v.end = id("<|vision_end|>");
  v.image_pad = id("<|image_pad|>");
  v.video_pad = id("<|video_pad|>");
  return v;
}

std::unique_ptr<VisionRuntime> VisionRuntime::open(const ModelFile& model,
                                                   const std::string& mmproj, Backend& backend) {
  namespace fs = std::filesystem;
  auto r = std::make_unique<VisionRuntime>();
  // The tower runs on the language model's backend (CPU or GPU); its
  // output comes back to host memory and enters the model as token embeddings.
  std::string config_dir = model.directory();
  if (model.format() == ModelFormat::Safetensors && mmproj.empty()) {
    KILN_CHECK(model.safetensors(), model.path(), ": no safetensors container");
    r->tower_ = VisionTower::from_safetensors(*model.safetensors(), model.hf_config(), backend);
  } else {
    std::string path = mmproj;
    if (path.empty()) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(model.directory().empty() ? "." : model.directory())) {
        const std::string name = e.path().filename().string();
        if (name.rfind("mmproj", 0) == 0 && e.path().extension() == ".gguf")
          found.push_back(e.path().string());
      }
      std::sort(found.begin(), found.end());
      KILN_CHECK(!found.empty(), model.path(), ": images need the vision tower: give --mmproj "
                 "FILE (no mmproj-*.gguf beside the model)");
      path = found.front();
    }
    r->mmproj_ = GgufFile::open(path);
    r->tower_ = VisionTower::from_gguf(*r->mmproj_, backend);
    config_dir = fs::path(path).parent_path().string();
  }
  // preprocessor_config.json beside the weights, or one folder up (GGUFs in a
  // subfolder of the checkpoint); the tower's own patch/merge sizes win.
  VisionPreprocessConfig cfg;
  const fs::path dir = config_dir.empty() ? fs::path(".") : fs::path(config_dir);
  if (fs::exists(dir / "preprocessor_config.json"))
    cfg = load_preprocess_config(dir.string());
  else if (fs::exists(dir.parent_path() / "preprocessor_config.json"))
    cfg = load_preprocess_config(dir.parent_path().string());
  const VisionSpec& s = r->tower_->spec();
  cfg.patch = int(s.patch);
  cfg.merge = int(s.merge);
  cfg.temporal = int(s.temporal);
  r->cfg_ = cfg;
  return r;
}

MediaItem VisionRuntime::encode_image(const std::string& path) {
  MediaItem m;
  m.merge = cfg_.merge;
  m.pixels = preprocess_image(decode_image_file(path), cfg_);
  m.out = tower_->encode(m.pixels);
  return m;
}

MediaItem VisionRuntime::encode_video(const std::string& path, const VideoOptions& opt) {
  MediaItem m;
  m.video = true;
  m.merge = cfg_.merge;
  VideoOptions o = opt;  // the model's processor picks the frames its way
  o.sampling = cfg_.video == VideoProcessorKind::kQwen2VL ? FrameSampling::kArange
                                                          : FrameSampling::kLinspace;
  o.temporal = cfg_.temporal;
  VideoFrames v = load_video(path, o);
  m.pixels = preprocess_video(v.frames, cfg_);
  m.seconds = temporal_patch_seconds(v.seconds, cfg_.temporal);
  m.out = tower_->encode(m.pixels);
  return m;
}

std::vector<int32_t> expand_media_pads(const std::vector<int32_t>& ids,
                                       const std::vector<MediaItem>& media, const Tokenizer& tok,
                                       const VisionTokenIds& v) {
  std::vector<int32_t> out;
  size_t next = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool image = ids[i] == v.image_pad, video = ids[i] == v.video_pad;
    if (!image && !video) {
      out.push_back(ids[i]);
      continue;
    }
    KILN_CHECK(next < media.size(), "the prompt has more image/video places than images and "
               "videos given");
    const MediaItem& m = media[next++];
    KILN_CHECK(m.video == video, "the prompt's ", video ? "video" : "image", " place ", next,
               " was given ", m.video ? "a video" : "an image");
    const int64_t per_frame = m.merged_h() * m.merged_w();
    if (image) {
      out.insert(out.end(), size_t(per_frame * m.pixels.grid_t), v.image_pad);
      continue;
    }
    // Each temporal patch brings its own start/end inside the template's
    // (transformers' processor replaces the pad alone and keeps the
    // <|vision_start|> / <|vision_end|> around it).
    for (int64_t f = 0; f < m.pixels.grid_t; ++f) {
      char stamp[48];
      std::snprintf(stamp, sizeof stamp, "<%.1f seconds>", m.seconds[size_t(f)]);
      const std::vector<int32_t> t = tok.encode(stamp);
      out.insert(out.end(), t.begin(), t.end());
      out.push_back(v.start);
      out.insert(out.end(), size_t(per_frame), v.video_pad);
      out.push_back(v.end);
    }
  }
  KILN_CHECK(next == media.size(), media.size(), " images/videos given but the prompt has ",
             next, " places for them");
  return out;
}

MultimodalPrompt build_multimodal_prompt(const std::vector<int32_t>& ids,
                                         const std::vector<MediaItem>& media,
                                         const VisionTokenIds& v, int64_t start) {
  MultimodalPrompt p;
  p.ids = ids;
  const int64_t T = int64_t(ids.size());
  p.positions.assign(size_t(3 * T), 0);
  const int64_t dim = media.empty() ? 0 : media.front().out.dim;
  for (const MediaItem& m : media) p.n_deepstack = std::max(p.n_deepstack, m.out.n_deepstack);
  std::vector<std::vector<float>> ds(size_t(p.n_deepstack));
  int64_t pos = start;
  size_t item = 0;
  int64_t frame = 0;
  for (int64_t i = 0; i < T;) {
    const int32_t id = ids[size_t(i)];
    if (id != v.image_pad && id != v.video_pad) {
      for (int c = 0; c < 3; ++c) p.positions[size_t(c * T + i)] = int32_t(pos);
      ++pos;
      ++i;
      continue;
    }
    KILN_CHECK(item < media.size(), "the prompt has more image/video pads than media given");
    const MediaItem& m = media[item];
    const int64_t gh = m.merged_h(), gw = m.merged_w(), n = gh * gw;
    int64_t run = 0;
    while (i + run < T && ids[size_t(i + run)] == id) ++run;
    // One image is one span; a video has one span per temporal patch.
    KILN_CHECK(run == (m.video ? n : n * m.pixels.grid_t), "a span of ", run,
               " pads does not match the ", m.video ? "video frame's " : "image's ",
               m.video ? n : n * m.pixels.grid_t, " tokens");
    const int64_t src0 = m.video ? frame * n : 0;
    for (int64_t r = 0; r < run; ++r) {
      const int64_t tok = i + r, k = r % n;
      p.positions[size_t(tok)] = int32_t(pos + r / n);
      p.positions[size_t(T + tok)] = int32_t(pos + k / gw);
      p.positions[size_t(2 * T + tok)] = int32_t(pos + k % gw);
      p.rows.push_back(int32_t(tok));
      const float* e = m.out.embeds.data() + (src0 + r) * dim;
      p.embeds.insert(p.embeds.end(), e, e + dim);
      for (int64_t l = 0; l < p.n_deepstack; ++l) {
        if (l < m.out.n_deepstack) {
          const float* d = m.out.deepstack.data() + (l * m.out.n_tokens + src0 + r) * dim;
          ds[size_t(l)].insert(ds[size_t(l)].end(), d, d + dim);
        } else {
          ds[size_t(l)].insert(ds[size_t(l)].end(), size_t(dim), 0.0f);
        }
      }
    }
    pos += std::max<int64_t>({m.video ? 1 : m.pixels.grid_t, gh, gw});
    i += run;
    if (m.video && ++frame < m.pixels.grid_t) continue;
    frame = 0;
    ++item;
  }
  KILN_CHECK(item == media.size(), media.size(), " images/videos given but the prompt has pads for ",
             item);
  for (auto& d : ds) p.deepstack.insert(p.deepstack.end(), d.begin(), d.end());
  p.next_position = pos;
  return p;
}

ForwardInputs MultimodalPrompt::inputs() const {
  ForwardInputs in;
  in.embeds = embeds.data();
  in.embed_rows = rows.data();
  in.n_embeds = int64_t(rows.size());
  in.deepstack = deepstack.data();
  in.n_deepstack = rows.empty() ? 0 : n_deepstack;
  in.mrope_positions = positions.data();
  return in;
}

void prefill_multimodal(Model& model, SequenceState& state, const MultimodalPrompt& prompt,
                        float* logits, bool all_logits) {
  model.forward(state, prompt.ids.data(), int64_t(prompt.ids.size()), logits, all_logits,
                prompt.inputs());
  state.set_rope_offset(prompt.next_position - state.position());
}

}  // namespace kiln
