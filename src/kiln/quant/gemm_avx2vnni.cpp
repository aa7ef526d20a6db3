// The gemm kernels for the avx2vnni level (compile flags set in CMakeLists.txt).
#define KILN_AVXVNNI 1
#define KILN_KNS k_avx2vnni
#include "kiln/quant/gemm_kernels.inc"
