// The ternary kernels for the avx512vnni level (compile flags set in CMakeLists.txt).

#define KILN_TNS k_avx512vnni
#define KILN_TLEVEL "avx512vnni"
#include "kiln/backend/cpu/ternary_kernels.inc"
