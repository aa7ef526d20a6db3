#include "kiln/runtime/system_probe.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

std::string gib(double bytes) {
  std::ostringstream s;
  s.precision(bytes >= double(10ull << 30) ? 3 : 2);
  s << std::fixed << bytes / double(1ull << 30) << " GiB";
  return s.str();
}

// A cgroup v2 (or v1) memory limit, 0 when there is none.
size_t cgroup_limit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    std::string v;
    if (in >> v && v != "max") {
      try {
        const unsigned long long n = std::stoull(v);
        if (n > 0 && n < (1ull << 60)) return size_t(n);
      } catch (...) {
      }
    }
  }
  return 0;
}

size_t cgroup_usage() {
  for (const char* path : {"/sys/fs/cgroup/memory.current",
                           "/sys/fs/cgroup/memory/memory.usage_in_bytes"}) {
    std::ifstream in(path);
    unsigned long long n = 0;
    if (in >> n) return size_t(n);
  }
  return 0;
}

}  // namespace

SystemProbe probe_system() {
  SystemProbe p;
  {
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    size_t kb = 0;
    while (in >> key >> kb >> unit) {
      if (key == "MemTotal:") p.ram_total = kb * 1024;
      if (key == "MemAvailable:") p.ram_available = kb * 1024;
    }
  }
  if (const size_t limit = cgroup_limit()) {
    const size_t used = cgroup_usage();
    const size_t room = limit > used ? limit - used : 0;
    p.ram_total = p.ram_total ? std::min(p.ram_total, limit) : limit;
    p.ram_available = p.ram_available ? std::min(p.ram_available, room) : room;
  }
  p.logical_cores = int(std::max(1u, std::thread::hardware_concurrency()));
  {
    // Physical cores: distinct (physical id, core id) pairs.
    std::ifstream in("/proc/cpuinfo");
    std::string line, phys;
    std::set<std::string> cores;
    std::set<std::string> flags;
    while (std::getline(in, line)) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = line.substr(0, colon);
      key.erase(key.find_last_not_of(" \t") + 1);
      const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
      if (key == "physical id") phys = value;
      if (key == "core id") cores.insert(phys + "/" + value);
      if (key == "flags" && flags.empty()) {
        std::istringstream f(value);
        for (std::string w; f >> w;) flags.insert(w);
      }
    }
    p.physical_cores = cores.empty() ? p.logical_cores : int(cores.size());
    p.physical_cores = std::min(p.physical_cores, p.logical_cores);
    for (const char* f : {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                          "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "neon"})
      if (flags.count(f)) p.cpu_features.push_back(f);
  }
  const int n = cuda_device_count();
  for (int i = 0; i < n; ++i) {
    GpuProbe g;
    g.index = i;
    g.name = cuda_device_name(i);
    cuda_memory_info(i, &g.free_bytes, &g.total_bytes);
    p.gpus.push_back(g);
  }
  return p;
}

std::string SystemProbe::summary() const {
  std::ostringstream s;
  s << "RAM " << gib(double(ram_available)) << " available of " << gib(double(ram_total))
    << "; " << physical_cores << " cores (" << logical_cores << " threads)";
  if (!cpu_features.empty()) {
    s << ";";
    for (const auto& f : cpu_features) s << " " << f;
  }
  for (const auto& g : gpus)
    s << "; GPU " << g.index << " " << g.name << " " << gib(double(g.free_bytes)) << " free of "
      << gib(double(g.total_bytes));
  return s.str();
}

ModelFootprint model_footprint(const ModelFile& file, DType kv_dtype) {
  const ModelSpec& s = file.spec();
  ModelFootprint f;
  for (const auto& [name, t] : file.tensors()) {
    f.weight_bytes += t.nbytes;
    // The token embedding is read a row at a time (Backend::embed), never
    // through the tiles, unless it is also the output head.
    const bool product = name != "token_embd.weight" || s.tied_embeddings;
    if (product && t.shape.size() >= 2 && gemm_path(t.dtype, t.cols()) == GemmPath::kInt8)
      f.weight_tile_bytes += kept_tiles_bytes(t.dtype, t.rows(), t.cols());
  }
  // Every layer is counted as an attention layer: exact for transformers, an
  // upper bound for hybrid models (their linear layers keep a fixed state).
  f.kv_bytes_per_position = size_t(2 * s.n_layers * s.n_kv_heads * s.head_dim) *
                            (kv_dtype == DType::F16 ? 2 : 4);
  f.activation_bytes =
      size_t(512.0 * 4 *
             (6.0 * double(s.hidden) + 4.0 * double(s.n_heads * s.head_dim) +
              2.0 * double(std::max(s.ffn_hidden, s.expert_ffn_hidden)))) +
      size_t(16 * 4 * s.vocab_size);
  return f;
}

ServePlan plan_serving(const ModelFile& file, const SystemProbe& sys, int64_t want_context,
                       int want_parallel, DType kv_dtype, bool on_gpu, int64_t want_kv_positions) {
  const ModelSpec& s = file.spec();
  const ModelFootprint fp = model_footprint(file, kv_dtype);
  ServePlan plan;
  plan.on_gpu = on_gpu && !sys.gpus.empty();
  // Leave a tenth of the memory (at least 256 MiB) to the system and the runtime.
  const size_t free_bytes = plan.on_gpu ? sys.gpus[0].free_bytes : sys.ram_available;
  const size_t reserve = std::max<size_t>(free_bytes / 10, 256u << 20);
  plan.budget_bytes = free_bytes > reserve ? free_bytes - reserve : 0;
  const char* where = plan.on_gpu ? "GPU memory" : "RAM";
  // The weights of a mmapped file on the CPU are in the page cache, but they
  // must stay there to run without thrashing: count them as used.
  const size_t fixed = fp.weight_bytes + fp.activation_bytes;
  // kv: positions cached in all; par sequences each keep their recurrent state.
  auto need = [&](int64_t kv, int par) {
    return fixed + size_t(kv) * fp.kv_bytes_per_position + size_t(par) * fp.state_bytes_per_sequence;
  };
  const bool pooled = !plan.on_gpu;  // the CPU's KV blocks are shared by all sequences

  const int64_t model_ctx = std::max<int64_t>(s.max_context, 1);
  int64_t ctx = want_context > 0 ? want_context : std::min<int64_t>(model_ctx, 4096);
  if (ctx > model_ctx) {
    plan.reasons.push_back(cat("context ", ctx, " is more than the model was trained for (",
                               model_ctx, "); using ", model_ctx));
    ctx = model_ctx;
  }
  int par = want_parallel > 0 ? want_parallel
                              : std::clamp(sys.physical_cores > 0 ? 4 * sys.physical_cores : 4, 4, 32);
  if (want_parallel <= 0)
    plan.reasons.push_back(cat(par, " parallel sequences: 4 per core, 4 to 32 (--parallel sets it)"));
  auto pool_for = [&](int64_t c, int p) {
    if (!pooled) return c * p;
    return std::max(want_kv_positions > 0 ? want_kv_positions : c * p, c);
  };
  int64_t kv = pool_for(ctx, par);
  auto finish = [&](bool fits) {
    plan.context = ctx, plan.parallel = par, plan.kv_positions = kv;
    plan.need_bytes = need(kv, par), plan.fits = fits;
    return plan;
  };
  if (sys.ram_available == 0 && !plan.on_gpu) {
    plan.reasons.push_back("free RAM is unknown: the plan is not checked against it");
    return finish(true);
  }
  const int64_t min_ctx = std::min<int64_t>(512, ctx);
  if (need(min_ctx, 1) > plan.budget_bytes) {
    ctx = min_ctx, par = 1, kv = min_ctx;
    plan.reasons.push_back(cat("the weights (", gib(double(fp.weight_bytes)),
                               ") and one sequence of ", min_ctx, " positions need ",
                               gib(double(need(kv, par))), "; ", gib(double(free_bytes)), " of ",
                               where, " is free (", gib(double(plan.budget_bytes)),
                               " usable): a smaller quantization is needed"));
    return finish(false);
  }
  if (need(kv, par) > plan.budget_bytes) {
    const int64_t want_ctx = ctx, want_kv = kv;
    const int want_par = par;
    const size_t want_need = need(kv, par);
    if (pooled) {
      // A smaller shared pool first: every sequence keeps its context, and
      // when the pool runs short the newest one waits for the others. Then
      // a shorter context.
      size_t room = plan.budget_bytes - std::min(plan.budget_bytes, need(0, par));
      // The pool is cut short anyway: the packed weight tiles (below) go
      // first where one whole context still fits beside them. They make
      // every batched step faster, where the positions they take would
      // only let more sequences run at their longest at once.
      const size_t per_position = std::max<size_t>(fp.kv_bytes_per_position, 1);
      const size_t tiles = par > 1 ? fp.weight_tile_bytes : 0;
      if (tiles > 0 && room >= tiles && (room - tiles) / per_position >= size_t(ctx)) room -= tiles;
      const int64_t fit = int64_t(room / per_position) / 32 * 32;
      while (ctx > min_ctx && fit < ctx) ctx = std::max<int64_t>(min_ctx, ctx / 2 / 256 * 256);
      kv = std::max(std::min(fit, kv), ctx);
      while (par > 1 && need(kv, par) > plan.budget_bytes) --par;  // recurrent states
      plan.reasons.push_back(cat(want_par, " sequences x ", want_ctx, " positions (", want_kv,
                                 " cached) would need ", gib(double(want_need)), " but ",
                                 gib(double(plan.budget_bytes)), " of ", where,
                                 " is usable: ", par, " sequences of up to ", ctx,
                                 " positions share a pool of ", kv));
    } else {
      // Each sequence holds its whole context: fewer sequences, then a
      // shorter context.
      while (par > 1 && need(ctx * par, par) > plan.budget_bytes) --par;
      while (ctx > min_ctx && need(ctx * par, par) > plan.budget_bytes)
        ctx = std::max<int64_t>(min_ctx, ctx / 2 / 256 * 256);
      kv = ctx * par;
      plan.reasons.push_back(cat(want_par, " x ", want_ctx, " positions would need ",
                                 gib(double(want_need)), " but ", gib(double(plan.budget_bytes)),
                                 " of ", where, " is usable: reduced to ", par, " x ", ctx));
    }
  }
  if (pooled)
    plan.reasons.push_back(cat("weights ", gib(double(fp.weight_bytes)), " + KV cache ",
                               gib(double(size_t(kv) * fp.kv_bytes_per_position)), " (a pool of ",
                               kv, " positions for ", par, " sequences of up to ", ctx,
                               ") = ", gib(double(need(kv, par))), " of ",
                               gib(double(plan.budget_bytes)), " usable ", where));
  else
    plan.reasons.push_back(cat("weights ", gib(double(fp.weight_bytes)), " + KV cache ",
                               gib(double(size_t(kv) * fp.kv_bytes_per_position)), " (", par,
                               " x ", ctx, " positions) = ", gib(double(need(kv, par))), " of ",
                               gib(double(plan.budget_bytes)), " usable ", where));
  // The CPU's batched steps repack every weight into int8 tiles on every
  // step unless a packed copy is kept: worth its memory when it fits.
  if (!plan.on_gpu && par > 1 && fp.weight_tile_bytes > 0) {
    if (need(kv, par) + fp.weight_tile_bytes <= plan.budget_bytes) {
      plan.weight_tiles_bytes = fp.weight_tile_bytes;
      plan.reasons.push_back(cat("weights also kept packed in int8 tiles for batched steps: ",
                                 gib(double(fp.weight_tile_bytes)), " more"));
    } else {
      plan.reasons.push_back(cat("weights not kept in int8 tiles (", gib(double(fp.weight_tile_bytes)),
                                 " more than is usable): batched steps repack them"));
    }
  }
  ServePlan done = finish(true);
  done.need_bytes += done.weight_tiles_bytes;
  return done;
}

}  // namespace kiln
