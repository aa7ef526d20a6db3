#pragma once

namespace kiln {

// How RoPE pairs up the dimensions of a head.
enum class RopeStyle {
  Halves,       // dimension i pairs with i + d/2 (Hugging Face's rotate_half, GGML's NEOX)
  Interleaved,  // dimension 2i pairs with 2i + 1 (GGML's NORM; llama GGUFs are permuted to it)
};

}  // namespace kiln
