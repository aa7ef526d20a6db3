#include "kiln/backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "kiln/core/argmax.h"
#include "kiln/core/error.h"

namespace kiln {

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

std::string CpuBackend::name() const { return cat("CPU (", pool_.size(), " threads)"); }

void* CpuBackend::alloc(size_t bytes) {
  // 64-byte alignment: whole cache lines and aligned AVX-512 loads. Buffers
  // of 2 MiB and more (KV caches, packed weight tiles, a long prompt's
  // activations) on 2 MiB boundaries, with transparent huge pages asked
  // for: a 512th of the page faults when they are first written (the
  // serving KV pool is zeroed at start-up: 7 GiB took 8.7 s in 4 KiB pages
  // on a development VM, 4.3 s in huge pages) and of the TLB entries a
  // step's walk over them needs.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: ignored where unsupported
#endif
  return p;
}

void CpuBackend::free(void* p) { std::free(p); }
void CpuBackend::to_device(void* dst, const void* host, size_t bytes) { std::memcpy(dst, host, bytes); }
void CpuBackend::to_host(void* host, const void* src, size_t bytes) { std::memcpy(host, src, bytes); }
void CpuBackend::fill_zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }

// The logits are host memory already: no copy (the default stages each row
// in a fresh vector, which costs page faults as large as the vocabulary).
// A few microseconds of scanning (32 rows of a 512-token vocabulary) stay
// on this thread.
void CpuBackend::argmax_rows(const float* src, int64_t rows, int64_t cols, int32_t* const* outs) {
  auto body = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) *outs[r] = argmax(src + r * cols, cols);
  };
  if (rows * cols < (int64_t(1) << 16))
    body(0, rows, 0);
  else
    pool_.parallel_for(rows, body);
  if (rows > 0) last_pick_ = *outs[0];
}

// A model this small (the tiny ones: stories260K is 1 MB) stays in the
// caches of every core, so each thread reading all of it costs little, while
// its ops on a step's rows are a few microseconds each: one part a thread
// beats splitting every op. At least 8 rows a part.
int CpuBackend::step_parts(int64_t n_rows, size_t weight_bytes) const {
  constexpr size_t kSmallModelBytes = size_t(8) << 20;
  constexpr int64_t kRowsPerPart = 8;
  if (weight_bytes > kSmallModelBytes) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(pool_.size(), n_rows / kRowsPerPart)));
}

void CpuBackend::run_parts(int parts, const std::function<void(int)>& fn) {
  pool_.parallel_for(parts, [&](int64_t p0, int64_t p1, int) {
    for (int64_t p = p0; p < p1; ++p) fn(int(p));
  });
}

Weight CpuBackend::load_weight(const TensorView& view) {
  KILN_CHECK(dtype_info(view.dtype).supported, "tensor ", view.name, ": block type ",
             dtype_name(view.dtype), " is not supported");
  Weight w;
  w.view = view;
  w.data = view.data;
  return w;
}

}  // namespace kiln
