#include "kiln/model/model.h"

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
