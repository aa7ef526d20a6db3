// Built without fused multiply-adds (CMakeLists.txt), so that the draw's
// arithmetic rounds as on the device.
#include "kiln/core/draw.h"

#include <vector>

namespace kiln {
namespace {

// The draw from c[0, n): its temperature-1 total `total` where given (a
// longer list's; -1 back where the filters would keep candidates past
// these n), else made from these n in order (draw_keep, as the GPU does).
int32_t draw_among(const Candidate* c, size_t n, const double* total, const DrawSpec& spec) {
  std::vector<double> e(n);
  const float l0 = c[0].first;
  for (size_t i = 0; i < n; ++i) e[i] = draw_weight_t1(c[i].first, l0);
  int64_t keep;
  if (total) {
    bool decided;
    keep = draw_keep_of_total(e.data(), int64_t(n), *total, spec.top_p, spec.min_p, &decided);
    if (!decided) return -1;
  } else {
    keep = draw_keep(e.data(), int64_t(n), spec.top_p, spec.min_p);
  }
  std::vector<double>& w = e;  // the weights of the kept candidates, in place
  for (int64_t i = 0; i < keep; ++i) w[size_t(i)] = draw_weight(c[i].first, l0, spec.temperature);
  return c[draw_pick(w.data(), keep, draw_uniform(spec.seed, spec.index))].second;
}

}  // namespace

int32_t draw_candidates(const Candidate* c, size_t n, const DrawSpec& spec) {
  return draw_among(c, n, nullptr, spec);
}

int32_t draw_head_candidates(const Candidate* c, size_t n, double total, const DrawSpec& spec) {
  return draw_among(c, n, &total, spec);
}

int32_t draw_from_logits(const float* logits, int64_t vocab, const DrawSpec& spec) {
  std::vector<Candidate> top;
  top_k_candidates(logits, vocab, size_t(spec.top_k), top);
  return top.empty() ? 0 : draw_candidates(top.data(), top.size(), spec);
}

}  // namespace kiln
