// A timeline of the GPU kernels a program runs, for where Nsight Systems is
// not at hand (the device machine has none): a CUDA injection library,
//
//   CUDA_INJECTION64_PATH=build/bench/libkiln_kernel_trace.so kiln bench M -p 0 -n 16
//
// which the CUDA driver loads at its start. It asks CUPTI for a record of
// every kernel (graph nodes included, each with its start and end on the
// GPU clock) and at exit prints the last KILN_TRACE_COUNT kernels (default
// 400, about one decode step of a 36-layer model) in the order they started:
// when each began after the first, how long it ran, and its gap to the end
// of the kernel before (negative: they overlapped, as a dependent launch
// lets them), then the same window summed by kernel. Nsight Compute times
// each kernel alone, with its own start and drain; this shows them as they
// run in a replayed step. Each kernel's "adds" is how far it moved the end
// of the timeline (its end past the latest end before it or its own start,
// whichever is later; 0 if it ended sooner): summed by kernel, the share of
// the busy time each one accounts for, overlapped work counted once.
//
// KILN_TRACE_COUNT=N: the window's kernels; KILN_TRACE_OUT=FILE: the report
// there instead of standard error.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct KernelRecord {
  uint64_t start, end;
  std::string name;
  uint32_t grid, block, smem, regs;
};

std::mutex records_mutex;
std::vector<KernelRecord> records;

constexpr size_t kBufferBytes = 8 << 20;

// A kernel's name without its namespaces' and templates' noise: the
// demangled name up to its argument list, anonymous namespaces dropped.
std::string short_name(const char* mangled) {
  if (!mangled) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  for (const char* noise : {"(anonymous namespace)::", "kiln::cuda::", "kiln::"}) {
    for (size_t at; (at = s.find(noise)) != std::string::npos;) s.erase(at, std::string(noise).size());
  }
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);  // a kernel's return type
  // Cut at the argument list: the '(' at template depth 0 after the name.
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(' && depth == 0 && i > 0) return s.substr(0, i);
  }
  return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<KernelRecord> got;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    got.push_back({k->start, k->end, short_name(k->name),
                   uint32_t(k->gridX) * uint32_t(k->gridY) * uint32_t(k->gridZ),
                   uint32_t(k->blockX) * uint32_t(k->blockY) * uint32_t(k->blockZ),
                   uint32_t(k->staticSharedMemory) + uint32_t(k->dynamicSharedMemory),
                   uint32_t(k->registersPerThread)});
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(records_mutex);
  records.insert(records.end(), got.begin(), got.end());
}

void report() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(records_mutex);
  const char* path = std::getenv("KILN_TRACE_OUT");
  FILE* out = path ? std::fopen(path, "w") : stderr;
  if (!out) out = stderr;
  std::sort(records.begin(), records.end(),
            [](const KernelRecord& a, const KernelRecord& b) { return a.start < b.start; });
  const char* count_env = std::getenv("KILN_TRACE_COUNT");
  const size_t want = count_env ? std::strtoul(count_env, nullptr, 10) : 400;
  const size_t first = records.size() > want ? records.size() - want : 0;
  if (first == records.size()) {
    std::fprintf(out, "kernel trace: no kernels recorded\n");
    if (out != stderr) std::fclose(out);
    return;
  }
  const uint64_t t0 = records[first].start;
  std::fprintf(out, "kernel trace: the last %zu of %zu kernels (us; gap: from the end of the one before)\n",
               records.size() - first, records.size());
  std::fprintf(out, "%5s %10s %8s %8s %8s  %-6s %-5s %-7s %-4s %s\n", "#", "start", "us", "gap",
               "adds", "grid", "block", "smem", "regs", "kernel");
  struct Sum {
    int n = 0;
    double us = 0, gap = 0, adds = 0;
  };
  std::map<std::string, Sum> by_name;
  double busy = 0, gaps = 0;
  uint64_t last_end = records[first].start;
  for (size_t i = first; i < records.size(); ++i) {
    const KernelRecord& r = records[i];
    const double us = (r.end - r.start) / 1e3;
    const double gap = (double(r.start) - double(last_end)) / 1e3;
    // (Time the GPU sat idle before the kernel is its gap, not its share.)
    const uint64_t from = i == first ? r.start : std::max(r.start, last_end);
    const double adds = r.end > from ? (r.end - from) / 1e3 : 0.0;
    std::fprintf(out, "%5zu %10.2f %8.2f %8.2f %8.2f  %-6u %-5u %-7u %-4u %s\n", i - first,
                 (r.start - t0) / 1e3, us, i == first ? 0.0 : gap, adds, r.grid, r.block, r.smem,
                 r.regs, r.name.c_str());
    Sum& s = by_name[r.name];
    ++s.n;
    s.us += us;
    s.adds += adds;
    if (i > first) s.gap += gap, gaps += gap;
    busy += us;
    last_end = std::max(last_end, r.end);
  }
  const double span = (last_end - t0) / 1e3;
  std::fprintf(out, "\nwindow %.1f us: kernels ran %.1f us in all (overlaps counted twice), "
               "gaps before them sum to %.1f us (negative: overlap)\n", span, busy, gaps);
  std::fprintf(out, "%6s %10s %10s %10s %10s  %s\n", "count", "us", "us each", "gap", "adds",
               "kernel");
  std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.adds > b.second.adds; });
  for (const auto& [name, s] : rows)
    std::fprintf(out, "%6d %10.1f %10.2f %10.1f %10.1f  %s\n", s.n, s.us, s.us / s.n, s.gap, s.adds,
                 name.c_str());
  if (out != stderr) std::fclose(out);
}

}  // namespace

// Called by the CUDA driver when it loads this library
// (CUDA_INJECTION64_PATH); non-zero: loaded.
extern "C" int InitializeInjection(void) {
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel trace: CUPTI would not record kernels\n");
    return 0;
  }
  std::atexit(report);
  return 1;
}
