// Tokenizer::from_hf: Hugging Face tokenizer.json (byte-level BPE), with the
// bos/eos names and add_bos_token from tokenizer_config.json beside it.
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/core/error.h"
#include "kiln/tokenizer/bpe.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The whole file; .gz files are decompressed.
std::string read_maybe_gzipped(const std::string& path) {
  if (ends_with(path, ".gz")) {
    gzFile f = gzopen(path.c_str(), "rb");
    KILN_CHECK(f != nullptr, "cannot open ", path);
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    int err = 0;
    const char* msg = gzerror(f, &err);
    const std::string reason = (n < 0 || err < 0) ? std::string(msg ? msg : "read error") : "";
    gzclose(f);
    KILN_CHECK(reason.empty(), path, ": not a valid gzip file (", reason, ")");
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& path) {
  try {
    return json::parse(read_maybe_gzipped(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// tokenizer.json itself: the path, or what a folder holds.
std::string resolve_tokenizer_json(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer.json.gz"}) {
      const fs::path p = fs::path(path) / name;
      if (fs::exists(p, ec)) return p.string();
    }
    fail("no tokenizer.json in folder ", path);
  }
  KILN_CHECK(fs::exists(path, ec), "tokenizer file not found: ", path);
  return path;
}

// tokenizer_config.json beside it: "x/tokenizer.json" -> "x/tokenizer_config.json",
// "x/qwen3.tokenizer.json.gz" -> "x/qwen3.tokenizer_config.json[.gz]".
std::optional<std::string> find_config(const std::string& tokenizer_path) {
  std::string base = tokenizer_path;
  if (ends_with(base, ".gz")) base.resize(base.size() - 3);
  if (!ends_with(base, "tokenizer.json")) return std::nullopt;
  base.resize(base.size() - std::string_view("tokenizer.json").size());
  std::error_code ec;
  for (const char* suffix : {"tokenizer_config.json", "tokenizer_config.json.gz"}) {
    const std::string p = base + suffix;
    if (fs::exists(p, ec)) return p;
  }
  return std::nullopt;
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

bool has_byte_level(const json& node) {
  if (!node.is_object()) return false;
  if (node.value("type", "") == "ByteLevel") return true;
  for (const char* list : {"pretokenizers", "decoders", "processors"}) {
    auto it = node.find(list);
    if (it != node.end() && it->is_array())
      for (const json& child : *it)
        if (has_byte_level(child)) return true;
  }
  return false;
}

// Which of our pre-tokenizers a tokenizer.json's pre_tokenizer is.
PreTokenizer detect_pre_tokenizer(const json& pre, const std::string& path) {
  KILN_CHECK(pre.is_object(), path, ": no pre_tokenizer; only byte-level BPE is supported");
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    KILN_CHECK(pre.value("use_regex", true), path,
               ": ByteLevel pre_tokenizer without a pattern is not supported");
    return PreTokenizer::kGpt2;
  }
  KILN_CHECK(type == "Sequence" && pre.contains("pretokenizers"), path,
             ": unsupported pre_tokenizer type '", type, "'");
  const json& steps = pre["pretokenizers"];
  if (steps.size() == 2 && steps[0].value("type", "") == "Digits" &&
      steps[0].value("individual_digits", false) && steps[1].value("type", "") == "ByteLevel" &&
      steps[1].value("use_regex", true))
    return PreTokenizer::kSmollm;
  if (steps.size() == 2 && steps[0].value("type", "") == "Split" &&
      steps[1].value("type", "") == "ByteLevel" && !steps[1].value("use_regex", true)) {
    const json& split = steps[0];
    const json pattern = split.value("pattern", json::object());
    KILN_CHECK(pattern.contains("Regex") && pattern["Regex"].is_string(), path,
               ": Split pre_tokenizer without a Regex pattern is not supported");
    const std::string regex = pattern["Regex"].get<std::string>();
    KILN_CHECK(split.value("behavior", "") == "Isolated" && !split.value("invert", false), path,
               ": Split pre_tokenizer with behavior '", split.value("behavior", ""),
               "' is not supported");
    if (auto kind = pre_tokenizer_from_regex(regex)) return *kind;
    fail(path, ": unknown pre-tokenizer pattern ", json(regex).dump(),
         " (supported: GPT-2, Qwen2, Qwen3.5, Llama 3, SmolLM)");
  }
  fail(path, ": unsupported pre_tokenizer ", pre.dump().substr(0, 200));
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf(const std::string& path_in) {
  const std::string path = resolve_tokenizer_json(path_in);
  const json root = parse_json(path);
  KILN_CHECK(root.is_object() && root.contains("model"), path, ": no \"model\" section");
  const json& model = root["model"];
  const std::string type = model.value("type", "");
  KILN_CHECK(type == "BPE", path, ": tokenizer model type '", type,
             "' is not supported (byte-level BPE only)");
  KILN_CHECK(has_byte_level(root.value("pre_tokenizer", json())) ||
                 has_byte_level(root.value("decoder", json())),
             path, ": BPE without ByteLevel (SentencePiece-style) is not supported");

  BpeSpec spec;
  spec.source = path;
  spec.pre = detect_pre_tokenizer(root.value("pre_tokenizer", json()), path);
  spec.ignore_merges = model.value("ignore_merges", false);
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const json& norm = root["normalizer"];
    const std::string ntype = norm.value("type", "");
    if (ntype == "NFC") {
      spec.nfc = true;
    } else if (ntype == "Sequence" && norm.value("normalizers", json::array()).empty()) {
    } else {
      fail(path, ": unsupported normalizer '", ntype, "'");
    }
  }

  const json& vocab = model.value("vocab", json::object());
  KILN_CHECK(vocab.is_object() && !vocab.empty(), path, ": model.vocab is missing or empty");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    max_id = std::max<int64_t>(max_id, it.value());
  const json added = root.value("added_tokens", json::array());
  for (const json& t : added) max_id = std::max<int64_t>(max_id, t.value("id", -1));
  KILN_CHECK(max_id < (int64_t{1} << 24), path, ": token id ", max_id, " is implausibly large");
  spec.tokens.resize(static_cast<size_t>(max_id + 1));
  spec.special.assign(spec.tokens.size(), 0);
  spec.raw_text.assign(spec.tokens.size(), 0);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value();
    KILN_CHECK(id >= 0, path, ": negative id for token ", json(it.key()).dump());
    spec.tokens[static_cast<size_t>(id)] = it.key();
  }
  for (const json& t : added) {
    AddedToken a;
    a.id = t.value("id", -1);
    a.content = t.value("content", "");
    KILN_CHECK(a.id >= 0 && !a.content.empty(), path, ": added token without id or content");
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    spec.tokens[static_cast<size_t>(a.id)] = a.content;
    spec.special[static_cast<size_t>(a.id)] = a.special;
    spec.raw_text[static_cast<size_t>(a.id)] = 1;
    spec.added.push_back(std::move(a));
  }

  const json merges = model.value("merges", json::array());
  spec.merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      KILN_CHECK(sp != std::string::npos, path, ": malformed merge ", json(s).dump());
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail(path, ": malformed merge ", m.dump());
    }
  }

  // bos/eos by name; add_bos from the config or a post-processor that adds it.
  auto id_of = [&](const std::string& text) -> int32_t {
    for (size_t i = 0; i < spec.tokens.size(); ++i)
      if (spec.tokens[i] == text) return static_cast<int32_t>(i);
    return -1;
  };
  if (auto config_path = find_config(path)) {
    const json config = parse_json(*config_path);
    if (auto bos = config_token(config, "bos_token")) spec.bos_id = id_of(*bos);
    if (auto eos = config_token(config, "eos_token")) spec.eos_id = id_of(*eos);
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
      spec.add_bos = config["add_bos_token"].get<bool>();
  }
  const json post = root.value("post_processor", json());
  if (post.is_object() && post.value("type", "") == "TemplateProcessing" && spec.bos_id >= 0) {
    for (const json& step : post.value("single", json::array())) {
      if (step.contains("SpecialToken") &&
          step["SpecialToken"].value("id", "") == spec.tokens[static_cast<size_t>(spec.bos_id)])
        spec.add_bos = true;
    }
  }
  return make_bpe_tokenizer(std::move(spec));
}

}  // namespace kiln
