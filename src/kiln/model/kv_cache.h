// The keys and values of a sequence's attention layers, in one of two
// layouts (see KvLayer):
//  - contiguous: planes sized for the whole context, allocated up front; one
//    sequence on its own (kiln run, kiln chat) or a backend without paging;
//  - paged: fixed-size blocks taken from a KvBlockPool that many sequences
//    share (kiln serve), as each sequence grows, so short and long sequences
//    share one budget of memory, and a prompt head that several sequences
//    have in common is stored once (blocks are reference-counted).
// Neither class locks: a pool and its caches are used from one thread (the
// server's scheduler).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/model/model.h"

namespace kiln {

class KvBlockPool {
 public:
  KvBlockPool(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
              int64_t block_positions, int64_t n_blocks, DType dtype);
  int64_t n_layers() const { return int64_t(layers_.size()); }
  int64_t block_positions() const { return block_; }
  int64_t n_blocks() const { return int64_t(refs_.size()); }
  int64_t free_blocks() const { return int64_t(free_.size()); }
  // A free block holding one reference, or -1 when every block is in use.
  int32_t take();
  void retain(int32_t block);
  // Drops one reference; the block is free again when none is left.
  void release(int32_t block);
  int32_t references(int32_t block) const { return refs_[size_t(block)]; }
  // Layer i's planes, with no block table yet (KvCache fills it in).
  const KvLayer& layer(int64_t i) const { return layers_[size_t(i)]; }
  // Bytes one block takes over all layers, keys and values.
  size_t block_bytes() const { return block_bytes_; }
  size_t bytes() const { return block_bytes_ * size_t(n_blocks()); }

 private:
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvLayer> layers_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // a stack: the block freed last is taken first
  int64_t block_ = 0;
  size_t block_bytes_ = 0;
};

class KvCache {
 public:
  // Paged when the options carry a pool (whose layer count and head shapes
  // must match; no block is taken yet), else contiguous: every layer's
  // planes for `capacity` positions, allocated now.
  KvCache(Backend& backend, const StateOptions& options, int64_t n_layers, int64_t n_kv_heads,
          int64_t head_dim, int64_t capacity);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvLayer& layer(int64_t i) const { return layers_[size_t(i)]; }
  bool paged() const { return pool_ != nullptr; }
  const KvBlockPool* pool() const { return pool_.get(); }
  int64_t capacity() const { return capacity_; }
  // Bytes of cache this sequence holds (paged: its blocks, shared ones included).
  size_t bytes() const;

  // --- paged caches (on a contiguous one these are no-ops)
  // Blocks to take before positions [0, positions) can all be written.
  int64_t blocks_missing(int64_t positions) const;
  int64_t blocks_held() const { return held_; }
  // Takes those blocks; throws when the pool has too few free.
  void reserve(int64_t positions);
  // Keeps positions [0, positions) and gives back the blocks past them.
  // Returns the positions kept: fewer (down to a block boundary) when the
  // last kept block is shared, since the sequence will write into it next.
  int64_t truncate(int64_t positions);
  // Gives back every block and takes the first positions / block blocks of
  // donor instead (positions a multiple of the block size), sharing them.
  void share_prefix(const KvCache& donor, int64_t positions);

 private:
  void init_contiguous(Backend& backend, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                       DType dtype);
  void init_paged(std::shared_ptr<KvBlockPool> pool, int64_t n_layers, int64_t n_kv_heads,
                  int64_t head_dim);
  void give_back_from(int64_t first_block);

  std::vector<DeviceBuffer> buffers_;  // contiguous planes
  std::shared_ptr<KvBlockPool> pool_;  // paged: where the blocks come from
  std::vector<int32_t> table_;         // paged: block of each run of positions; never reallocated
  int64_t held_ = 0;                   // paged: table_[0, held_) are taken
  int64_t capacity_ = 0;
  std::vector<KvLayer> layers_;
};

}  // namespace kiln
