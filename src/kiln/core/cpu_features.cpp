#include "kiln/core/cpu_features.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define KILN_X86 1
#endif
#if KILN_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kiln {
namespace {

#if KILN_X86
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
unsigned long long xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

// Linux hands out the AMX tile data state (XTILEDATA, xsave component 18)
// only to processes that ask for it; without the grant the first tile
// instruction faults.
bool request_amx_state() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if KILN_X86
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 7) return f;
  cpuid(1, 0, r);
  const bool fma = r[2] & (1u << 12), osxsave = r[2] & (1u << 27), f16c = r[2] & (1u << 29);
  if (!osxsave) return f;
  const unsigned long long xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;
  unsigned l7[4], l7s1[4];
  cpuid(7, 0, l7);
  cpuid(7, 1, l7s1);
  const bool avx2 = l7[1] & (1u << 5);
  f.avx2 = ymm_state && avx2 && fma && f16c;
  const bool avx512f = l7[1] & (1u << 16), avx512dq = l7[1] & (1u << 17),
             avx512bw = l7[1] & (1u << 30), avx512vl = l7[1] & (1u << 31);
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && (l7[2] & (1u << 11));
  f.avx512_fp16 = f.avx512 && (l7[3] & (1u << 23));
  f.avx_vnni = f.avx2 && (l7s1[0] & (1u << 4));
  f.avx512_bf16 = f.avx512 && (l7s1[0] & (1u << 5));
  const bool amx_tile = l7[3] & (1u << 24), amx_int8 = l7[3] & (1u << 25);
  const bool tile_state = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
  const char* cap_env = std::getenv("KILN_CPU");
  const bool amx_allowed = !cap_env || std::string(cap_env) == "amx";
  f.amx_int8 = f.avx512_vnni && amx_tile && amx_int8 && tile_state && amx_allowed &&
               request_amx_state();
#endif
  // The cap: lets tests run every kernel level on one machine.
  if (const char* cap = std::getenv("KILN_CPU")) {
    const std::string c = cap;
    if (c == "scalar") f = CpuFeatures{};
    if (c == "avx2" || c == "avx2vnni") {
      const bool vnni = c == "avx2vnni" && f.avx_vnni;
      f = CpuFeatures{f.avx2, false, false, vnni, false, false};
    }
    if (c == "avx512") f.avx512_vnni = f.avx_vnni = f.avx512_bf16 = f.avx512_fp16 = false;
    if (c != "amx") f.amx_int8 = false;
  }
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string cpu_kernel_level() {
  const CpuFeatures& f = cpu_features();
  if (f.amx_int8) return "amx";
  if (f.avx512_vnni) return "avx512vnni";
  if (f.avx512) return "avx512";
  if (f.avx_vnni) return "avx2vnni";
  if (f.avx2) return "avx2";
  return "scalar";
}

}  // namespace kiln
