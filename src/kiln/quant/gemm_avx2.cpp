// The gemm kernels for the avx2 level (compile flags set in CMakeLists.txt).

#define KILN_KNS k_avx2
#include "kiln/quant/gemm_kernels.inc"
