// Filling a tensor row by row on all threads: each row is read (raw source
// row or generated), widened to f32 and encoded in the output type, straight
// into the writer's buffer.
#include <cstring>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/quantize.h"
#include "kiln/quant/ternary.h"

namespace kiln::convert {

void add_planned_tensor(GgufWriter& w, ThreadPool& pool, PlannedTensor t, DType type,
                        I2sLayout i2s_layout) {
  KILN_CHECK(can_quantize(type) || type == DType::I2_S, "tensor ", t.name, ": cannot write type ",
             dtype_name(type));
  KILN_CHECK(t.raw_row || t.generate, "tensor ", t.name, ": no source");
  if (t.raw_row)
    KILN_CHECK(can_dequantize(t.source_dtype), "tensor ", t.name, ": cannot read its type ",
               dtype_name(t.source_dtype));
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  int64_t rows = 1;
  for (size_t k = 0; k + 1 < t.shape.size(); ++k) rows *= t.shape[k];
  const size_t out_row = dtype_row_bytes(type, cols);
  const std::vector<int64_t> shape = t.shape;
  const std::string name = t.name;
  if (type == DType::I2_S) {
    // One scale for the whole tensor: the rows are gathered, then packed together.
    KILN_CHECK(i2s_layout_fits(i2s_layout, rows, cols), "tensor ", name, " [", rows, ", ", cols,
               "] cannot be written in the ", i2s_layout_name(i2s_layout), " I2_S layout");
    w.add_tensor_fill(name, type, shape, [&pool, t = std::move(t), cols, rows, i2s_layout](void* dst) {
      std::vector<float> all(size_t(rows * cols));
      pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
          if (t.raw_row)
            dequantize_row(t.source_dtype, t.raw_row(r), all.data() + r * cols, cols);
          else
            t.generate(r, all.data() + r * cols);
        }
      });
      quantize_i2s(all.data(), rows, cols, i2s_layout, dst);
    });
    return;
  }
  w.add_tensor_fill(name, type, shape, [&pool, t = std::move(t), type, cols, rows, out_row](void* dst) {
    auto* out = static_cast<uint8_t*>(dst);
    const bool copy = t.raw_row && t.source_dtype == type;
    pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
      std::vector<float> f(copy ? 0 : size_t(cols));
      for (int64_t r = begin; r < end; ++r) {
        if (copy) {
          std::memcpy(out + size_t(r) * out_row, t.raw_row(r), out_row);
          continue;
        }
        if (t.raw_row)
          dequantize_row(t.source_dtype, t.raw_row(r), f.data(), cols);
        else
          t.generate(r, f.data());
        quantize_row(type, f.data(), out + size_t(r) * out_row, cols);
      }
    });
  });
}

}  // namespace kiln::convert
