// Any bytes given to SafetensorsModel::open must end in a parsed file or a
// kiln::Error. Seed with tests/data/**/*.safetensors.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_file.h"
#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"

// Read tensor bytes are stored here so the reads are not optimized away.
static volatile uint8_t g_sink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = kiln::fuzz::write_input(nullptr, 0, ".safetensors");
  kiln::fuzz::write_input(data, size, ".safetensors");
  try {
    auto m = kiln::SafetensorsModel::open(path);
    uint8_t acc = 0;
    for (const auto& t : m->tensors()) {
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
