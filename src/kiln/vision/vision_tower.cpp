#include "kiln/vision/vision_tower.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include "kiln/core/error.h"
#include "kiln/model/building_blocks.h"
#include "kiln/quant/dequantize.h"

namespace kiln {
namespace {

std::vector<float> to_f32(const TensorView& t) {
  KILN_CHECK(can_dequantize(t.dtype), "tensor ", t.name, " has a type kiln cannot read here");
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t r = 0; r < t.rows(); ++r)
    dequantize_row(t.dtype, t.row(r), out.data() + r * t.cols(), t.cols());
  return out;
}

DeviceBuffer upload(Backend& b, const float* data, int64_t n) {
  DeviceBuffer buf(b, size_t(n) * sizeof(float));
  b.to_device(buf.get(), data, buf.bytes());
  return buf;
}

// torch.linspace(start, end, steps) in float32, computed from both ends as torch does.
std::vector<float> linspace_f32(float start, float end, int64_t steps) {
  std::vector<float> v(static_cast<size_t>(steps));
  if (steps == 1) {
    v[0] = start;
    return v;
  }
  const float step = (end - start) / float(steps - 1);
  for (int64_t i = 0; i < steps; ++i)
    v[size_t(i)] = i < steps / 2 ? start + step * float(i) : end - step * float(steps - 1 - i);
  return v;
}

// The mmproj name of each model.visual.* tensor of a Hugging Face checkpoint.
std::string mmproj_name(const std::string& rest, const std::vector<int64_t>& deepstack) {
  auto ends = [&](const std::string& s) { return rest.size() >= s.size() &&
                                                 rest.compare(rest.size() - s.size(), s.size(), s) == 0; };
  const std::string suffix = ends(".weight") ? ".weight" : ends(".bias") ? ".bias" : "";
  if (suffix.empty()) return "";
  const std::string stem = rest.substr(0, rest.size() - suffix.size());
  if (stem == "pos_embed") return "v.position_embd" + suffix;
  if (stem == "patch_embed.proj") return "v.patch_embd" + suffix;
  if (stem == "merger.norm") return "v.post_ln" + suffix;
  if (stem == "merger.linear_fc1") return "mm.0" + suffix;
  if (stem == "merger.linear_fc2") return "mm.2" + suffix;
  static const std::pair<const char*, const char*> kBlock[] = {
      {"norm1", "ln1"},        {"norm2", "ln2"},           {"attn.qkv", "attn_qkv"},
      {"attn.proj", "attn_out"}, {"mlp.linear_fc1", "ffn_up"}, {"mlp.linear_fc2", "ffn_down"}};
  int idx = -1;
  char tail[64] = {};
  if (std::sscanf(stem.c_str(), "blocks.%d.%63s", &idx, tail) == 2) {
    for (auto [hf, gg] : kBlock)
      if (std::string(tail) == hf) return cat("v.blk.", idx, ".", gg, suffix);
    return "";
  }
  if (std::sscanf(stem.c_str(), "deepstack_merger_list.%d.%63s", &idx, tail) == 2) {
    if (idx < 0 || size_t(idx) >= deepstack.size()) return "";
    const std::string t = tail;
    const std::string part = t == "norm" ? "norm" : t == "linear_fc1" ? "fc1" : t == "linear_fc2" ? "fc2" : "";
    if (part.empty()) return "";
    return cat("v.deepstack.", deepstack[size_t(idx)], ".", part, suffix);
  }
  return "";
}

}  // namespace

std::unique_ptr<VisionTower> VisionTower::from_safetensors(const SafetensorsModel& st,
                                                           const nlohmann::json& config,
                                                           Backend& backend) {
  KILN_CHECK(config.contains("vision_config"), "config.json has no vision_config: the model "
             "has no vision tower");
  const auto& vc = config["vision_config"];
  auto num = [&](const char* key, int64_t fallback) {
    return vc.contains(key) && vc[key].is_number() ? vc[key].get<int64_t>() : fallback;
  };
  VisionSpec s;
  s.hidden = num("hidden_size", 0);
  s.n_layers = num("depth", 0);
  s.n_heads = num("num_heads", 0);
  s.ffn = num("intermediate_size", 0);
  s.out_hidden = num("out_hidden_size", 0);
  s.patch = num("patch_size", 16);
  s.temporal = num("temporal_patch_size", 2);
  s.merge = num("spatial_merge_size", 2);
  s.in_channels = num("in_channels", 3);
  s.n_pos = num("num_position_embeddings", 0);
  s.gelu_tanh = vc.value("hidden_act", std::string("gelu_pytorch_tanh")) != "gelu";
  if (vc.contains("rope_parameters") && vc["rope_parameters"].contains("rope_theta"))
    s.rope_theta = vc["rope_parameters"]["rope_theta"].get<float>();
  if (vc.contains("deepstack_visual_indexes"))
    s.deepstack_layers = vc["deepstack_visual_indexes"].get<std::vector<int64_t>>();
  KILN_CHECK(s.hidden > 0 && s.n_layers > 0 && s.n_heads > 0 && s.ffn > 0 && s.out_hidden > 0,
             "config.json: vision_config lacks hidden_size, depth, num_heads, intermediate_size "
             "or out_hidden_size");

  std::map<std::string, const TensorView*> by_name;
  for (const TensorView& t : st.tensors()) {
    std::string rest;
    for (const char* prefix : {"model.visual.", "visual."})
      if (t.name.rfind(prefix, 0) == 0) rest = t.name.substr(std::strlen(prefix));
    if (rest.empty()) continue;
    const std::string name = mmproj_name(rest, s.deepstack_layers);
    if (!name.empty()) by_name[name] = &t;
  }
  KILN_CHECK(!by_name.empty(), "the checkpoint has no model.visual.* tensors");
  auto tower = std::unique_ptr<VisionTower>(new VisionTower(s, backend));
  // The Conv3d kernel [out, C, T, P, P] is already the matrix [out, C*T*P*P]
  // that multiplies a patch row.
  auto patch = by_name.find("v.patch_embd.weight");
  KILN_CHECK(patch != by_name.end(), "vision tensor patch_embed.proj.weight is missing");
  const int64_t cols = s.in_channels * s.temporal * s.patch * s.patch;
  TensorView pv = *patch->second;
  KILN_CHECK(pv.numel() == s.hidden * cols, "patch_embed.proj.weight has shape ",
             shape_string(pv.shape), ", expected ", s.hidden, " x ", cols, " values");
  pv.shape = {s.hidden, cols};
  tower->patch_w_ = backend.load_weight(pv);
  tower->load([&](const std::string& n) {
    auto it = by_name.find(n);
    return it == by_name.end() ? nullptr : it->second;
  }, "the checkpoint");
  return tower;
}

std::unique_ptr<VisionTower> VisionTower::from_gguf(const GgufFile& g, Backend& backend) {
  const std::string arch = g.get_string_or("general.architecture", "");
  KILN_CHECK(arch == "clip", g.path(), ": not an mmproj file (general.architecture is '", arch,
             "', expected 'clip')");
  const std::string proj = g.get_string_or("clip.projector_type", "");
  KILN_CHECK(proj == "qwen3vl_merger", g.path(), ": projector type '", proj,
             "' is not supported (kiln reads Qwen3-VL / Qwen3.5 vision towers: qwen3vl_merger)");
  VisionSpec s;
  s.hidden = g.get_int("clip.vision.embedding_length");
  s.n_layers = g.get_int("clip.vision.block_count");
  s.n_heads = g.get_int("clip.vision.attention.head_count");
  s.ffn = g.get_int("clip.vision.feed_forward_length");
  s.out_hidden = g.get_int("clip.vision.projection_dim");
  s.patch = g.get_int("clip.vision.patch_size");
  s.merge = g.get_int_or("clip.vision.spatial_merge_size", 2);
  s.eps = float(g.get_float_or("clip.vision.attention.layer_norm_epsilon", 1e-6));
  s.gelu_tanh = true;
  if (g.has("clip.vision.is_deepstack_layers")) {
    const auto flags = g.get_int_array("clip.vision.is_deepstack_layers");
    for (size_t i = 0; i < flags.size(); ++i)
      if (flags[i]) s.deepstack_layers.push_back(int64_t(i));
  }
  const TensorView* w0 = g.find_tensor("v.patch_embd.weight");
  const TensorView* w1 = g.find_tensor("v.patch_embd.weight.1");
  const TensorView* pos = g.find_tensor("v.position_embd.weight");
  KILN_CHECK(w0 && pos, g.path(), ": v.patch_embd.weight or v.position_embd.weight is missing");
  s.temporal = w1 ? 2 : 1;
  s.n_pos = pos->shape[0];
  auto tower = std::unique_ptr<VisionTower>(new VisionTower(s, backend));
  // The converter splits the Conv3d kernel into one [out, C, P, P] tensor per
  // frame; interleave them back into the [out, C, T, P, P] matrix.
  const int64_t pp = s.patch * s.patch, cols = s.in_channels * s.temporal * pp;
  std::vector<float> m(static_cast<size_t>(s.hidden * cols));
  for (int64_t f = 0; f < s.temporal; ++f) {
    const TensorView& part = f == 0 ? *w0 : *w1;
    KILN_CHECK(part.numel() == s.hidden * s.in_channels * pp, g.path(), ": ", part.name,
               " has shape ", shape_string(part.shape));
    const std::vector<float> v = to_f32(part);
    for (int64_t o = 0; o < s.hidden; ++o)
      for (int64_t c = 0; c < s.in_channels; ++c)
        std::copy_n(&v[size_t((o * s.in_channels + c) * pp)], pp,
                    &m[size_t(o * cols + (c * s.temporal + f) * pp)]);
  }
  auto& bytes = tower->storage_.emplace_back(m.size() * sizeof(float));
  std::memcpy(bytes.data(), m.data(), bytes.size());
  TensorView pv;
  pv.name = "v.patch_embd.weight";
  pv.dtype = DType::F32;
  pv.shape = {s.hidden, cols};
  pv.data = bytes.data();
  pv.nbytes = bytes.size();
  tower->patch_w_ = backend.load_weight(pv);
  tower->load([&](const std::string& n) { return g.find_tensor(n); }, g.path());
  return tower;
}

void VisionTower::load(const Find& find, const std::string& source) {
  const VisionSpec& s = spec_;
  Backend& b = *backend_;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> const TensorView& {
    const TensorView* t = find(name);
    KILN_CHECK(t, source, ": vision tensor ", name, " is missing");
    KILN_CHECK(t->shape == shape, source, ": vision tensor ", name, " has shape ",
               shape_string(t->shape), ", expected ", shape_string(shape));
    return *t;
  };
  auto vec = [&](const std::string& name, int64_t n) {
    const std::vector<float> v = to_f32(get(name, {n}));
    return upload(b, v.data(), n);
  };
  const int64_t H = s.hidden, M = H * s.merge * s.merge;
  KILN_CHECK(H % s.n_heads == 0 && (H / s.n_heads) % 4 == 0, source,
             ": vision head size must be a multiple of 4");
  patch_b_ = vec("v.patch_embd.bias", H);
  pos_table_ = to_f32(get("v.position_embd.weight", {s.n_pos, H}));
  const int64_t side = int64_t(std::llround(std::sqrt(double(s.n_pos))));
  KILN_CHECK(side * side == s.n_pos, source, ": ", s.n_pos,
             " position embeddings do not form a square grid");

  // 2-D rotary: a quarter of the head's frequencies turn with the row, the
  // next quarter with the column (rotate-half pairs over the whole head).
  const int64_t hd = H / s.n_heads, quarter = hd / 4;
  std::vector<float> row(size_t(hd / 2), 0.0f), col(size_t(hd / 2), 0.0f);
  for (int64_t i = 0; i < quarter; ++i) {
    const float f = 1.0f / std::pow(s.rope_theta, float(2 * i) / float(hd / 2));
    row[size_t(i)] = f;
    col[size_t(quarter + i)] = f;
  }
  inv_freq_row_ = upload(b, row.data(), hd / 2);
  inv_freq_col_ = upload(b, col.data(), hd / 2);

  blocks_.resize(size_t(s.n_layers));
  for (int64_t i = 0; i < s.n_layers; ++i) {
    Block& L = blocks_[size_t(i)];
    const std::string p = cat("v.blk.", i, ".");
    L.ln1_w = vec(p + "ln1.weight", H);
    L.ln1_b = vec(p + "ln1.bias", H);
    L.ln2_w = vec(p + "ln2.weight", H);
    L.ln2_b = vec(p + "ln2.bias", H);
    const TensorView& qkv = get(p + "attn_qkv.weight", {3 * H, H});
    L.wq = b.load_weight(row_slice(qkv, 0, H, p + "attn_q"));
    L.wk = b.load_weight(row_slice(qkv, H, H, p + "attn_k"));
    L.wv = b.load_weight(row_slice(qkv, 2 * H, H, p + "attn_v"));
    const std::vector<float> qkv_b = to_f32(get(p + "attn_qkv.bias", {3 * H}));
    L.bq = upload(b, qkv_b.data(), H);
    L.bk = upload(b, qkv_b.data() + H, H);
    L.bv = upload(b, qkv_b.data() + 2 * H, H);
    L.wo = b.load_weight(get(p + "attn_out.weight", {H, H}));
    L.bo = vec(p + "attn_out.bias", H);
    L.w_up = b.load_weight(get(p + "ffn_up.weight", {s.ffn, H}));
    L.b_up = vec(p + "ffn_up.bias", s.ffn);
    L.w_down = b.load_weight(get(p + "ffn_down.weight", {H, s.ffn}));
    L.b_down = vec(p + "ffn_down.bias", H);
  }
  merger_.norm_w = vec("v.post_ln.weight", H);
  merger_.norm_b = vec("v.post_ln.bias", H);
  merger_.w1 = b.load_weight(get("mm.0.weight", {M, M}));
  merger_.b1 = vec("mm.0.bias", M);
  merger_.w2 = b.load_weight(get("mm.2.weight", {s.out_hidden, M}));
  merger_.b2 = vec("mm.2.bias", s.out_hidden);
  for (int64_t li : s.deepstack_layers) {
    KILN_CHECK(li >= 0 && li < s.n_layers, source, ": DeepStack layer ", li, " out of range");
    Merger& m = deepstack_[li];
    const std::string p = cat("v.deepstack.", li, ".");
    m.norm_after_shuffle = true;
    m.norm_w = vec(p + "norm.weight", M);
    m.norm_b = vec(p + "norm.bias", M);
    m.w1 = b.load_weight(get(p + "fc1.weight", {M, M}));
    m.b1 = vec(p + "fc1.bias", M);
    m.w2 = b.load_weight(get(p + "fc2.weight", {s.out_hidden, M}));
    m.b2 = vec(p + "fc2.bias", s.out_hidden);
  }
}

std::vector<float> VisionTower::position_embeddings(int64_t t, int64_t h, int64_t w) const {
  // Bilinear interpolation of the trained side x side grid at h x w points
  // spanning it corner to corner, then laid out in merge-window order.
  const int64_t H = spec_.hidden, m = spec_.merge;
  const int64_t side = int64_t(std::llround(std::sqrt(double(spec_.n_pos))));
  const std::vector<float> ys = linspace_f32(0.0f, float(side - 1), h);
  const std::vector<float> xs = linspace_f32(0.0f, float(side - 1), w);
  std::vector<float> grid(size_t(h * w * H));
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) {
      const int64_t y0 = int64_t(ys[size_t(i)]), x0 = int64_t(xs[size_t(j)]);
      const int64_t y1 = std::min(y0 + 1, side - 1), x1 = std::min(x0 + 1, side - 1);
      const float dy = ys[size_t(i)] - float(y0), dx = xs[size_t(j)] - float(x0);
      const float wts[4] = {(1 - dy) * (1 - dx), (1 - dy) * dx, dy * (1 - dx), dy * dx};
      const int64_t idx[4] = {y0 * side + x0, y0 * side + x1, y1 * side + x0, y1 * side + x1};
      float* out = &grid[size_t((i * w + j) * H)];
      for (int64_t d = 0; d < H; ++d) {
        float acc = pos_table_[size_t(idx[0] * H + d)] * wts[0];
        for (int k = 1; k < 4; ++k) acc += pos_table_[size_t(idx[k] * H + d)] * wts[k];
        out[d] = acc;
      }
    }
  std::vector<float> out(size_t(t * h * w * H));
  int64_t r = 0;
  for (int64_t f = 0; f < t; ++f)
    for (int64_t bh = 0; bh < h / m; ++bh)
      for (int64_t bw = 0; bw < w / m; ++bw)
        for (int64_t mh = 0; mh < m; ++mh)
          for (int64_t mw = 0; mw < m; ++mw, ++r)
            std::copy_n(&grid[size_t(((bh * m + mh) * w + bw * m + mw) * H)], H,
                        &out[size_t(r * H)]);
  return out;
}

void VisionTower::run_merger(const Merger& m, const float* x, int64_t n_patches, float* out) {
  Backend& b = *backend_;
  const int64_t H = spec_.hidden, group = spec_.merge * spec_.merge, M = H * group;
  const int64_t n = n_patches / group;
  DeviceBuffer normed(b, size_t(n_patches * H) * sizeof(float));
  DeviceBuffer mid(b, size_t(n * M) * sizeof(float));
  if (m.norm_after_shuffle)
    b.layernorm(x, m.norm_w.f32(), m.norm_b.f32(), n, M, spec_.eps, normed.f32());
  else
    b.layernorm(x, m.norm_w.f32(), m.norm_b.f32(), n_patches, H, spec_.eps, normed.f32());
  // Consecutive rows are one merge window already: [n_patches, H] is [n, M].
  b.matmul(m.w1, normed.f32(), n, mid.f32());
  b.add_bias(mid.f32(), m.b1.f32(), n, M);
  b.gelu(mid.f32(), n * M, /*tanh_approx=*/false);
  b.matmul(m.w2, mid.f32(), n, out);
  b.add_bias(out, m.b2.f32(), n, spec_.out_hidden);
}

VisionOutput VisionTower::encode(const PixelValues& px) {
  const VisionSpec& s = spec_;
  Backend& b = *backend_;
  const int64_t S = px.rows(), H = s.hidden, hd = H / s.n_heads, m = s.merge;
  KILN_CHECK(px.cols == s.in_channels * s.temporal * s.patch * s.patch, "pixel patches of ",
             px.cols, " values do not fit the vision tower's ", s.patch, "x", s.patch, "x",
             s.temporal, " patches");
  KILN_CHECK(px.grid_h % m == 0 && px.grid_w % m == 0, "patch grid ", px.grid_h, "x", px.grid_w,
             " is not a multiple of the merge size ", m);
  auto f32 = [&](int64_t n) { return DeviceBuffer(b, size_t(n) * sizeof(float)); };
  DeviceBuffer pix = upload(b, px.data.data(), S * px.cols);
  DeviceBuffer x = f32(S * H), h = f32(S * H), q = f32(S * H), k = f32(S * H), v = f32(S * H),
               a = f32(S * H), o = f32(S * H), up = f32(S * s.ffn);
  b.matmul(patch_w_, pix.f32(), S, x.f32());
  b.add_bias(x.f32(), patch_b_.f32(), S, H);
  const std::vector<float> pos = position_embeddings(px.grid_t, px.grid_h, px.grid_w);
  DeviceBuffer pos_buf = upload(b, pos.data(), S * H);
  b.add(x.f32(), pos_buf.f32(), S * H);

  std::vector<int32_t> rows, cols, bounds{0};
  for (int64_t f = 0; f < px.grid_t; ++f) {
    for (int64_t bh = 0; bh < px.grid_h / m; ++bh)
      for (int64_t bw = 0; bw < px.grid_w / m; ++bw)
        for (int64_t mh = 0; mh < m; ++mh)
          for (int64_t mw = 0; mw < m; ++mw) {
            rows.push_back(int32_t(bh * m + mh));
            cols.push_back(int32_t(bw * m + mw));
          }
    bounds.push_back(int32_t((f + 1) * px.grid_h * px.grid_w));  // attention stays within a frame
  }

  VisionOutput out;
  out.n_tokens = S / (m * m);
  out.dim = s.out_hidden;
  out.n_deepstack = int64_t(deepstack_.size());
  DeviceBuffer ds = f32(std::max<int64_t>(1, out.n_deepstack) * out.n_tokens * out.dim);
  int64_t ds_index = 0;
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t li = 0; li < s.n_layers; ++li) {
    Block& L = blocks_[size_t(li)];
    b.layernorm(x.f32(), L.ln1_w.f32(), L.ln1_b.f32(), S, H, s.eps, h.f32());
    b.matmul(L.wq, h.f32(), S, q.f32());
    b.add_bias(q.f32(), L.bq.f32(), S, H);
    b.matmul(L.wk, h.f32(), S, k.f32());
    b.add_bias(k.f32(), L.bk.f32(), S, H);
    b.matmul(L.wv, h.f32(), S, v.f32());
    b.add_bias(v.f32(), L.bv.f32(), S, H);
    for (float* t : {q.f32(), k.f32()}) {
      // Rotations of distinct frequency pairs commute; a zero frequency leaves a pair as is.
      b.rope(t, S, s.n_heads, hd, hd, rows.data(), inv_freq_row_.f32(), RopeStyle::Halves);
      b.rope(t, S, s.n_heads, hd, hd, cols.data(), inv_freq_col_.f32(), RopeStyle::Halves);
    }
    b.attention_segments(q.f32(), k.f32(), v.f32(), S, s.n_heads, hd, bounds.data(),
                         int64_t(bounds.size()) - 1, scale, a.f32());
    b.matmul(L.wo, a.f32(), S, o.f32());
    b.add_bias(o.f32(), L.bo.f32(), S, H);
    b.add(x.f32(), o.f32(), S * H);
    b.layernorm(x.f32(), L.ln2_w.f32(), L.ln2_b.f32(), S, H, s.eps, h.f32());
    b.matmul(L.w_up, h.f32(), S, up.f32());
    b.add_bias(up.f32(), L.b_up.f32(), S, s.ffn);
    b.gelu(up.f32(), S * s.ffn, s.gelu_tanh);
    b.matmul(L.w_down, up.f32(), S, o.f32());
    b.add_bias(o.f32(), L.b_down.f32(), S, H);
    b.add(x.f32(), o.f32(), S * H);
    auto it = deepstack_.find(li);
    if (it != deepstack_.end())
      run_merger(it->second, x.f32(), S, ds.f32() + (ds_index++) * out.n_tokens * out.dim);
  }
  DeviceBuffer merged = f32(out.n_tokens * out.dim);
  run_merger(merger_, x.f32(), S, merged.f32());
  out.embeds.resize(size_t(out.n_tokens * out.dim));
  b.to_host(out.embeds.data(), merged.get(), out.embeds.size() * sizeof(float));
  if (out.n_deepstack) {
    out.deepstack.resize(size_t(out.n_deepstack * out.n_tokens * out.dim));
    b.to_host(out.deepstack.data(), ds.get(), out.deepstack.size() * sizeof(float));
  }
  return out;
}

}  // namespace kiln
