// What this machine has (RAM, cores, CPU features, GPU memory) and what a
// model needs of it: the analysis behind `kiln info`'s fit line and the
// context/slot choice of `kiln serve`, so both say the same thing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/dtype.h"
#include "kiln/model/model_file.h"

namespace kiln {

struct GpuProbe {
  int index = 0;
  std::string name;
  size_t free_bytes = 0, total_bytes = 0;
};

struct SystemProbe {
  size_t ram_total = 0;      // bytes; 0 when unknown
  size_t ram_available = 0;  // MemAvailable, or a cgroup limit's headroom when lower
  int logical_cores = 0;
  int physical_cores = 0;
  std::vector<std::string> cpu_features;  // "avx2", "avx512f", ... as the CPU reports them
  std::vector<GpuProbe> gpus;             // CUDA devices this build can use
  std::string summary() const;            // one line
};

SystemProbe probe_system();

// Memory a model needs: weights, and per cached position of one sequence.
struct ModelFootprint {
  size_t weight_bytes = 0;
  size_t kv_bytes_per_position = 0;  // all attention layers, K and V
  size_t state_bytes_per_sequence = 0;  // recurrent (linear-attention) state
  size_t activation_bytes = 0;          // one prompt chunk's scratch and logits
  // The quantized weights packed once into this CPU's int8 tiles, which
  // serving keeps beside the file when memory allows (Backend::
  // keep_weight_tiles); 0 where the CPU's kernels have no such tiles.
  size_t weight_tile_bytes = 0;
};
ModelFootprint model_footprint(const ModelFile& file, DType kv_dtype);

// A choice of context and parallel sequences that fits a memory budget.
struct ServePlan {
  int64_t context = 0;  // positions per sequence
  int parallel = 0;     // sequences decoded together
  // Positions of the KV cache: on the CPU one pool the sequences share (at
  // least one context; fewer than parallel x context when memory is short,
  // the scheduler then pauses and resumes sequences); on a GPU each sequence
  // holds its whole context, parallel x context.
  int64_t kv_positions = 0;
  bool on_gpu = false;
  size_t budget_bytes = 0;  // what may be used (a share of what is free)
  size_t need_bytes = 0;    // weights + caches of the plan (+ kept weight tiles)
  // CPU, several sequences: bytes of weights kept in int8 tiles beside the
  // file for the batched steps (0: not kept, see the reasons).
  size_t weight_tiles_bytes = 0;
  bool fits = false;        // false: even the smallest plan does not fit
  std::vector<std::string> reasons;  // why these numbers, one line each
};

// want_context / want_parallel / want_kv_positions: 0 = choose. A wish that
// does not fit is reduced and the reason recorded: on the CPU the shared
// pool first (down to one context; the sequences then take turns), then the
// context; on a GPU, where each sequence holds its whole context, the
// parallel sequences first, then the context; never below 512 positions.
// fits is false when the weights plus one 512-position sequence do not fit.
ServePlan plan_serving(const ModelFile& file, const SystemProbe& sys, int64_t want_context,
                       int want_parallel, DType kv_dtype, bool on_gpu,
                       int64_t want_kv_positions = 0);

}  // namespace kiln
