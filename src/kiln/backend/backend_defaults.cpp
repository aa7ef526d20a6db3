// Default bodies of the ops a backend may not have yet: each names itself and
// the backend, so a model that needs a missing op fails with a clear line
// instead of computing garbage.
#include "kiln/backend/backend.h"
#include "kiln/core/error.h"

namespace kiln {
namespace {

[[noreturn]] void missing(const Backend& b, const char* op) {
  fail(op, " is not implemented on the ", b.name(), " backend");
}

}  // namespace

void Backend::conv1d_silu(const float*, int64_t, int64_t, const float*, int64_t, float*, float*) {
  missing(*this, "conv1d_silu");
}
void Backend::deltanet_gates(const float*, const float*, const float*, const float*, int64_t,
                             int64_t, float*, float*) {
  missing(*this, "deltanet_gates");
}
void Backend::gated_delta_rule(const float*, const float*, const float*, float*,
                               const DeltaRuleParams&, float*) {
  missing(*this, "gated_delta_rule");
}
void Backend::rmsnorm_gated(const float*, const float*, const float*, int64_t, int64_t, float,
                            float*) {
  missing(*this, "rmsnorm_gated");
}
void Backend::sigmoid_mul(float*, const float*, int64_t, int64_t, bool) {
  missing(*this, "sigmoid_mul");
}

void Backend::ternary_matmul(const Weight&, const float*, int64_t, float*) {
  missing(*this, "ternary_matmul");
}
void Backend::relu2_mul(const float*, const float*, int64_t, float*) {
  missing(*this, "relu2_mul");
}

}  // namespace kiln
