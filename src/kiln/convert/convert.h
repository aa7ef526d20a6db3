// Writing models as GGUF files that kiln, llama.cpp and other GGUF tools read:
// `convert` turns a Hugging Face safetensors checkpoint (or another GGUF) into
// one, `synth` makes one with random weights and a real model's shapes.
//
//   ConvertOptions o;
//   o.type = parse_file_type("q8_0");
//   convert_model("Qwen3-0.6B/", "qwen3-0.6b-q8_0.gguf", o);
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "kiln/core/dtype.h"
#include "kiln/quant/ternary.h"

namespace kiln {

// What a whole file is quantized to: llama.cpp's "file types" (general.file_type).
enum class FileType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 7,
  Q4_K_M = 15,
  Q6_K = 18,
  BF16 = 32,
  // Ternary (BitNet b1.58 models only): GGML's TQ1_0/TQ2_0, bitnet.cpp's I2_S.
  TQ1_0 = 36,
  TQ2_0 = 37,
  I2_S = 40,
};

// "q4_k_m" -> FileType::Q4_K_M (case-insensitive). Throws kiln::Error with one
// line naming the accepted types. The ternary types (tq1_0, tq2_0, i2_s) are
// for BitNet models; converting another architecture to them fails.
FileType parse_file_type(const std::string& name);
std::string file_type_name(FileType t);
// "f32, f16, bf16, q8_0, q4_0, q4_k_m, q6_k"
std::string file_type_list();

struct ConvertOptions {
  FileType type = FileType::F16;
  int threads = 0;  // 0: physical cores
  // (bytes written, bytes total), now and then during the write.
  std::function<void(size_t, size_t)> progress;
  // One line of information or warning for the user.
  std::function<void(const std::string&)> log;
  // Convert even when the source has no usable tokenizer (the GGUF then has
  // none; kiln runs it with --ids, llama.cpp does not load it).
  bool allow_no_tokenizer = false;
  // --type i2_s: the packing of the I2_S tensors (ternary.h). x86 is what
  // bitnet.cpp's x86 builds and Microsoft's files use; the others are marked
  // with the kiln.i2_s.layout key.
  I2sLayout i2s_layout = I2sLayout::X86;
};

// src: a safetensors file/folder/index with config.json beside it, or a GGUF.
// The output is written to "<out>.tmp" and renamed into place at the end, so
// a failure leaves no partial file under `out`. Throws kiln::Error.
void convert_model(const std::string& src, const std::string& out, const ConvertOptions& options);

struct SynthOptions {
  FileType type = FileType::Q8_0;
  uint64_t seed = 0;
  float stddev = 0.02f;  // of every weight matrix; norms are 1
  int threads = 0;
  // A Hugging Face model folder whose tokenizer.json (and
  // tokenizer_config.json) to include, so that the file also runs on text
  // and in other GGUF readers (llama.cpp needs a tokenizer); empty: none.
  std::string tokenizer_dir;
  std::function<void(size_t, size_t)> progress;
  std::function<void(const std::string&)> log;
};

// A GGUF with random weights and exactly the tensor shapes and metadata a
// model with this Hugging Face config.json would have. No tokenizer unless
// options.tokenizer_dir names one: otherwise run it with token ids. Weights
// are produced tensor by tensor while writing, so memory use stays near the
// largest tensor.
void synth_model(const std::string& config_json, const std::string& out,
                 const SynthOptions& options);

// A progress callback for stderr: on a terminal it redraws one line ("label
// 42%  1.2/2.9 GiB  310 MiB/s") at most a few times a second and ends it
// with a newline; into a file or a pipe it writes such a line at each tenth.
// Nothing for work done within half a second.
std::function<void(size_t, size_t)> stderr_progress(const std::string& label);
// The same into out; redraw: the terminal form. first_after: how long the
// work must run before the first line.
std::function<void(size_t, size_t)> progress_printer(std::FILE* out, bool redraw,
                                                     const std::string& label,
                                                     std::chrono::milliseconds first_after);

// Removes "<path>.tmp" and exits with status 130 on SIGINT/SIGTERM, so an
// interrupted write leaves nothing behind. Installed by the commands.
void remove_temp_on_interrupt(const std::string& path);

}  // namespace kiln
