// kiln tokenize: the token ids a model's tokenizer gives for a text.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "args.h"
#include "command.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::app {
namespace {

bool is_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model) {
  std::error_code ec;
  KILN_CHECK(std::filesystem::exists(model, ec), "model not found: ", model);
  if (!std::filesystem::is_directory(model, ec) && is_gguf(model))
    return Tokenizer::from_gguf(*GgufFile::open(model));
  return Tokenizer::from_hf(model);
}

std::string read_input(const std::string& file) {
  if (file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  std::ifstream in(file, std::ios::binary);
  KILN_CHECK(in.good(), "cannot read ", file);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_tokenize(const std::vector<std::string>& args) {
  ArgParser p("kiln tokenize", "MODEL (--text TEXT | --file F) [--plain] [--bos]",
              "Print the token ids of a text as a JSON array on one line.");
  std::string model, text, file;
  bool plain = false, bos = false;
  p.positional("MODEL", "a GGUF file, a tokenizer.json (or .json.gz), or a folder with one", &model,
               true);
  p.option("-t,--text", "TEXT", "the text to tokenize", &text);
  p.option("-f,--file", "F", "read the text from file F ('-' for stdin)", &file);
  p.flag("--plain", "treat special-token text like <|im_end|> as plain text", &plain);
  p.flag("--bos", "put the BOS token first (if the model has one)", &bos);
  p.epilog(
      "examples:\n"
      "  kiln tokenize model.gguf --text \"Hello world\"\n"
      "  kiln tokenize Qwen3-0.6B/ --file prompt.txt --plain\n");
  // An empty --text is a valid text, so "not given" is told apart by a value
  // no command line can hold.
  const std::string unset(1, '\0');
  text = unset;
  if (!p.parse(args)) return p.exit_code();
  const bool has_text = text != unset;
  if (has_text == !file.empty()) {
    std::fprintf(stderr, "kiln tokenize: give exactly one of --text or --file\n");
    return 2;
  }
  if (!file.empty()) text = read_input(file);

  const auto tokenizer = load_tokenizer(model);
  const auto ids = tokenizer->encode(text, {.add_bos = bos, .parse_special = !plain});
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(ids[i]);
  }
  out += "]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace

KILN_COMMAND("tokenize", "print the token ids of a text", run_tokenize);

}  // namespace kiln::app
