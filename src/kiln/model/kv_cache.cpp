#include "kiln/model/kv_cache.h"

#include <algorithm>

#include "kiln/core/error.h"

namespace kiln {
namespace {

size_t element_bytes(DType dtype) {
  KILN_CHECK(dtype == DType::F32 || dtype == DType::F16, "KV cache type must be f32 or f16");
  return dtype == DType::F32 ? 4 : 2;
}

// One K and one V plane of plane_bytes per layer, owned by buffers, each
// layer described by `shape` (its dtype, heads and layout fields).
std::vector<KvLayer> allocate_planes(Backend& backend, std::vector<DeviceBuffer>& buffers,
                                     int64_t n_layers, size_t plane_bytes, const KvLayer& shape) {
  std::vector<KvLayer> layers;
  for (int64_t l = 0; l < n_layers; ++l) {
    KvLayer kv = shape;
    buffers.emplace_back(backend, plane_bytes);
    kv.k = buffers.back().get();
    buffers.emplace_back(backend, plane_bytes);
    kv.v = buffers.back().get();
    layers.push_back(kv);
  }
  return layers;
}

}  // namespace

// --- KvBlockPool

KvBlockPool::KvBlockPool(Backend& backend, int64_t n_layers, int64_t n_kv_heads,
                         int64_t head_dim, int64_t block_positions, int64_t n_blocks,
                         DType dtype)
    : block_(block_positions) {
  KILN_CHECK(block_positions >= 1 && n_blocks >= 1, "a KV pool needs at least one block of one position");
  KILN_CHECK(n_blocks <= INT32_MAX, "a KV pool of ", n_blocks, " blocks is too large");
  KILN_CHECK(backend.paged_kv(), "the ", backend.name(), " backend has no paged KV caches");
  const size_t block_plane = size_t(n_kv_heads * block_positions * head_dim) * element_bytes(dtype);
  KvLayer shape;
  shape.dtype = dtype;
  shape.n_kv_heads = n_kv_heads;
  shape.head_dim = head_dim;
  shape.block = block_positions;
  layers_ = allocate_planes(backend, buffers_, n_layers, block_plane * size_t(n_blocks), shape);
  // Committed now, not as blocks are first taken: the server's memory is
  // what it holds at start-up (a load test sees no growth), and no serving
  // step pays the operating system's page faults and clearing for a new
  // block (~5% of a 32-stream step of a 0.6B model while the pool fills).
  for (DeviceBuffer& b : buffers_) backend.fill_zero(b.get(), b.bytes());
  block_bytes_ = 2 * block_plane * size_t(n_layers);
  refs_.assign(size_t(n_blocks), 0);
  free_.reserve(size_t(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

int32_t KvBlockPool::take() {
  if (free_.empty()) return -1;
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[size_t(b)] = 1;
  return b;
}

void KvBlockPool::retain(int32_t block) {
  KILN_CHECK(refs_[size_t(block)] > 0, "KV block ", block, " is not in use");
  ++refs_[size_t(block)];
}

void KvBlockPool::release(int32_t block) {
  KILN_CHECK(refs_[size_t(block)] > 0, "KV block ", block, " released twice");
  if (--refs_[size_t(block)] == 0) free_.push_back(block);
}

// --- KvCache

KvCache::KvCache(Backend& backend, const StateOptions& o, int64_t n_layers, int64_t n_kv_heads,
                 int64_t head_dim, int64_t capacity)
    : capacity_(capacity) {
  if (o.kv_pool)
    init_paged(o.kv_pool, n_layers, n_kv_heads, head_dim);
  else
    init_contiguous(backend, n_layers, n_kv_heads, head_dim, o.kv_dtype);
}

void KvCache::init_contiguous(Backend& backend, int64_t n_layers, int64_t n_kv_heads,
                              int64_t head_dim, DType dtype) {
  const size_t plane = size_t(n_kv_heads * capacity_ * head_dim) * element_bytes(dtype);
  KvLayer shape;
  shape.dtype = dtype;
  shape.n_kv_heads = n_kv_heads;
  shape.head_dim = head_dim;
  shape.capacity = capacity_;
  layers_ = allocate_planes(backend, buffers_, n_layers, plane, shape);
}

void KvCache::init_paged(std::shared_ptr<KvBlockPool> pool, int64_t n_layers, int64_t n_kv_heads,
                         int64_t head_dim) {
  pool_ = std::move(pool);
  KILN_CHECK(pool_->n_layers() == n_layers && pool_->layer(0).n_kv_heads == n_kv_heads &&
                 pool_->layer(0).head_dim == head_dim,
             "the KV pool was made for another model's attention shapes");
  const int64_t block = pool_->block_positions();
  table_.assign(size_t((capacity_ + block - 1) / block), -1);
  for (int64_t l = 0; l < n_layers; ++l) {
    KvLayer kv = pool_->layer(l);
    kv.capacity = capacity_;
    kv.blocks = table_.data();
    layers_.push_back(kv);
  }
}

KvCache::~KvCache() {
  if (pool_) give_back_from(0);
}

size_t KvCache::bytes() const {
  if (pool_) return size_t(held_) * pool_->block_bytes();
  size_t total = 0;
  for (const auto& b : buffers_) total += b.bytes();
  return total;
}

int64_t KvCache::blocks_missing(int64_t positions) const {
  if (!pool_) return 0;
  const int64_t block = pool_->block_positions();
  const int64_t want = (std::min(positions, capacity_) + block - 1) / block;
  return std::max<int64_t>(0, want - held_);
}

void KvCache::reserve(int64_t positions) {
  const int64_t missing = blocks_missing(positions);
  if (missing == 0) return;
  KILN_CHECK(missing <= pool_->free_blocks(), "the KV cache is full: ", missing,
             " more blocks needed, ", pool_->free_blocks(), " free");
  for (int64_t i = 0; i < missing; ++i) table_[size_t(held_++)] = pool_->take();
}

int64_t KvCache::truncate(int64_t positions) {
  if (!pool_) return positions;
  const int64_t block = pool_->block_positions();
  int64_t keep = (positions + block - 1) / block;  // blocks that hold a kept position
  if (positions % block != 0 && keep > 0 && keep <= held_ &&
      pool_->references(table_[size_t(keep - 1)]) > 1) {
    --keep;  // never write into a block another sequence reads
    positions = keep * block;
  }
  give_back_from(keep);
  return positions;
}

void KvCache::share_prefix(const KvCache& donor, int64_t positions) {
  KILN_CHECK(pool_ && donor.pool_ == pool_, "sharing a prefix needs two caches of one pool");
  const int64_t block = pool_->block_positions();
  KILN_CHECK(positions % block == 0 && positions / block <= donor.held_ && positions <= capacity_,
             "a shared prefix must be whole blocks the donor holds");
  give_back_from(0);
  for (int64_t i = 0; i < positions / block; ++i) {
    const int32_t b = donor.table_[size_t(i)];
    pool_->retain(b);
    table_[size_t(held_++)] = b;
  }
}

void KvCache::give_back_from(int64_t first_block) {
  while (held_ > first_block) {
    --held_;
    pool_->release(table_[size_t(held_)]);
    table_[size_t(held_)] = -1;
  }
}

}  // namespace kiln
