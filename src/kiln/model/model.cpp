#include "kiln/model/model.h"

#include <algorithm>

#include "kiln/core/error.h"
#include "kiln/model/bitnet.h"
#include "kiln/model/hybrid.h"
#include "kiln/model/transformer.h"

namespace kiln {

void SequenceState::truncate(int64_t pos) {
  KILN_CHECK(pos >= 0 && pos <= n_past_, "cannot truncate a sequence of ", n_past_,
             " positions to ", pos);
  n_past_ = pos;
}

int64_t Model::state_capacity(const StateOptions& o) const {
  return o.context > 0 ? o.context : std::min<int64_t>(spec_.max_context, 4096);
}

void Model::check_tokens(const SequenceState& s, const int32_t* tokens, int64_t n) const {
  KILN_CHECK(s.position() + n <= s.capacity(), "context full: ", s.position() + n,
             " positions needed, the context holds ", s.capacity(), " (raise --ctx-size)");
  for (int64_t i = 0; i < n; ++i)
    KILN_CHECK(tokens[i] >= 0 && tokens[i] < spec_.vocab_size, "token id ", tokens[i],
               " is outside the vocabulary (", spec_.vocab_size, " tokens)");
}

void Model::forward_batch(const std::vector<BatchItem>& items) {
  for (const BatchItem& it : items)
    if (it.n > 0) forward(*it.state, it.tokens, it.n, it.logits, false);
}

std::unique_ptr<Model> load_model(const ModelFile& file, Backend& backend) {
  const std::string& arch = file.spec().arch;
  if (arch == "llama" || arch == "qwen3" || arch == "qwen3moe" || arch == "smollm3")
    return load_transformer(file, backend);
  if (arch == "qwen35" || arch == "qwen35moe" || arch == "qwen3next")
    return load_hybrid(file, backend);
  if (arch == "bitnet") return load_bitnet(file, backend);
  fail(file.path(), ": no forward pass for architecture '", arch, "'");
}

}  // namespace kiln
