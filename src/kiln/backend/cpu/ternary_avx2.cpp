// The ternary kernels for the avx2 level (compile flags set in CMakeLists.txt).

#define KILN_TNS k_avx2
#define KILN_TLEVEL "avx2"
#include "kiln/backend/cpu/ternary_kernels.inc"
