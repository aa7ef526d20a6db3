// The gemm kernels for the avx512vnni level (compile flags set in CMakeLists.txt).
#define KILN_VNNI512 1
#define KILN_KNS k_avx512vnni
#include "kiln/quant/gemm_kernels.inc"
