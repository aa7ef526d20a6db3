// Default bodies of the vision-encoder ops for backends that lack them: each
// names itself and the backend instead of computing garbage.
#include "kiln/backend/backend.h"
#include "kiln/core/error.h"

namespace kiln {
namespace {

[[noreturn]] void missing_vision_op(const Backend& b, const char* op) {
  fail(op, " is not implemented on the ", b.name(), " backend");
}

}  // namespace

void Backend::layernorm(const float*, const float*, const float*, int64_t, int64_t, float,
                        float*) {
  missing_vision_op(*this, "layernorm");
}
void Backend::add_bias(float*, const float*, int64_t, int64_t) {
  missing_vision_op(*this, "add_bias");
}
void Backend::gelu(float*, int64_t, bool) { missing_vision_op(*this, "gelu"); }
void Backend::attention_segments(const float*, const float*, const float*, int64_t, int64_t,
                                 int64_t, const int32_t*, int64_t, float, float*) {
  missing_vision_op(*this, "attention_segments");
}

}  // namespace kiln
