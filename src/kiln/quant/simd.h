// x86 vector intrinsics for the kernels that have a vector path. Internal to
// the quant area; every vector path has a scalar twin that compiles anywhere.
#pragma once

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics pass deliberately undefined vectors as merge
// sources, which -Wuninitialized reports once they are inlined into a kernel.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
