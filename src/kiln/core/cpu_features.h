// What the running CPU can execute, read once with cpuid (and xgetbv for the
// OS-enabled register state). Kernels are compiled per instruction set and
// picked from this at startup, so one binary runs on any x86-64.
#pragma once

#include <string>

namespace kiln {

struct CpuFeatures {
  bool avx2 = false;        // with FMA and F16C
  bool avx512 = false;      // F, BW, VL, DQ, with the OS saving zmm state
  bool avx512_vnni = false;
  bool avx_vnni = false;    // the VEX (256-bit) VNNI of client cores
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_int8 = false;    // AMX tiles with int8 products, granted to this process by the OS
};

// The CPU's features, capped by KILN_CPU (scalar, avx2, avx2vnni, avx512,
// avx512vnni, amx) when set, so each kernel level can be tested on one machine.
const CpuFeatures& cpu_features();

// The kernel level in use, for messages: "avx512vnni", "avx2", "scalar", ...
std::string cpu_kernel_level();

}  // namespace kiln
