#include "kiln/model/model.h"

#include <algorithm>

#include "kiln/core/argmax.h"
#include "kiln/core/error.h"
#include "kiln/model/bitnet.h"
#include "kiln/model/hybrid.h"
#include "kiln/model/kv_cache.h"
#include "kiln/model/transformer.h"

namespace kiln {

void SequenceState::reset() {
  n_past_ = 0;
  rope_offset_ = 0;
  if (kv_) kv_->truncate(0);
}

void SequenceState::truncate(int64_t pos) {
  KILN_CHECK(pos >= 0 && pos <= n_past_, "cannot truncate a sequence of ", n_past_,
             " positions to ", pos);
  n_past_ = kv_ ? kv_->truncate(pos) : pos;
}

int64_t SequenceState::kv_blocks_needed(int64_t n) const {
  return kv_ ? kv_->blocks_missing(n_past_ + n) : 0;
}

int64_t SequenceState::kv_blocks_held() const { return kv_ ? kv_->blocks_held() : 0; }

bool SequenceState::share_prefix(const SequenceState& donor, int64_t positions) {
  if (!kv_ || !donor.kv_ || !kv_->paged() || kv_->pool() != donor.kv_->pool() ||
      donor.rope_offset_ != 0)
    return false;
  if (positions > donor.n_past_ || positions > capacity_) return false;
  kv_->share_prefix(*donor.kv_, positions);
  n_past_ = positions;
  rope_offset_ = 0;
  return true;
}

std::shared_ptr<KvBlockPool> Model::new_kv_pool(int64_t block_positions, int64_t n_blocks,
                                                DType dtype) {
  if (!backend_->paged_kv() || attention_layers() == 0) return nullptr;
  return std::make_shared<KvBlockPool>(*backend_, attention_layers(), spec_.n_kv_heads,
                                       spec_.head_dim, block_positions, n_blocks, dtype);
}

int64_t Model::state_capacity(const StateOptions& o) const {
  return o.context > 0 ? o.context : std::min<int64_t>(spec_.max_context, 4096);
}

void Model::prepare_tokens(SequenceState& s, const int32_t* tokens, int64_t n) const {
  KILN_CHECK(s.position() + n <= s.capacity(), "context full: ", s.position() + n,
             " positions needed, the context holds ", s.capacity(), " (raise --ctx-size)");
  // (No tokens: the last pick, which lies in the vocabulary.)
  for (int64_t i = 0; tokens && i < n; ++i)
    KILN_CHECK(tokens[i] >= 0 && tokens[i] < spec_.vocab_size, "token id ", tokens[i],
               " is outside the vocabulary (", spec_.vocab_size, " tokens)");
  if (s.kv_) s.kv_->reserve(s.position() + n);
}

void Model::forward_batch(const std::vector<BatchItem>& items) {
  std::vector<float> row;
  std::vector<Candidate> top;
  for (const BatchItem& it : items) {
    if (it.n <= 0) continue;
    if (it.logits || (!it.argmax && !it.top)) {
      forward(*it.state, it.tokens, it.n, it.logits, false);
      continue;
    }
    row.resize(size_t(spec_.vocab_size));
    forward(*it.state, it.tokens, it.n, row.data(), false);
    if (it.argmax) {
      *it.argmax = it.draw ? draw_from_logits(row.data(), spec_.vocab_size, *it.draw)
                           : argmax(row.data(), spec_.vocab_size);
    } else {
      top_k_candidates(row.data(), spec_.vocab_size, size_t(it.top_k), top);
      write_candidates(top, size_t(it.top_k), it.top);
    }
  }
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
