// Any bytes given to GgufFile::open must end in a parsed file or a
// kiln::Error: never a crash, a sanitizer report or another exception.
// Seed with tests/data/**/*.gguf.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_file.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"

// Read tensor bytes are stored here so the reads are not optimized away.
static volatile uint8_t g_sink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = kiln::fuzz::write_input(nullptr, 0, ".gguf");
  kiln::fuzz::write_input(data, size, ".gguf");
  try {
    auto g = kiln::GgufFile::open(path);
    // Touch what a loader touches: every value and the first and last byte
    // of every tensor.
    for (const auto& [key, value] : g->metadata()) {
      if (value.is_integer()) {
        try {
          (void)value.as_int();
        } catch (const kiln::Error&) {
        }
      }
    }
    uint8_t acc = 0;
    for (const auto& t : g->tensors()) {
      if (t.nbytes) {
        acc ^= static_cast<const uint8_t*>(t.data)[0];
        acc ^= static_cast<const uint8_t*>(t.data)[t.nbytes - 1];
      }
    }
    g_sink = acc;
  } catch (const kiln::Error&) {
  }
  return 0;
}
