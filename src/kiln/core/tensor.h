// A named, typed, read-only view of tensor bytes that live elsewhere (an
// mmapped file, usually). Shapes are row-major, outermost dimension first,
// as PyTorch writes them: a linear layer's weight is {out_features, in_features}.
// (GGUF lists dimensions innermost first; its reader reverses them.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/dtype.h"

namespace kiln {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Length of the innermost dimension (a row).
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  // Number of rows: every dimension but the innermost.
  int64_t rows() const { return shape.empty() ? 1 : numel() / shape.back(); }
  size_t row_bytes() const { return dtype_row_bytes(dtype, cols()); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[64, 1024]"

}  // namespace kiln
