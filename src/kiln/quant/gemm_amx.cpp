// The gemm kernels for the amx level: the avx512vnni kernels, with prefill
// products of 16 tokens and more on the AMX tile unit (gemm_amx_tiles.inc;
// compile flags set in CMakeLists.txt).
#define KILN_VNNI512 1
#define KILN_AMX 1
#define KILN_KNS k_amx
#include "kiln/quant/gemm_kernels.inc"
