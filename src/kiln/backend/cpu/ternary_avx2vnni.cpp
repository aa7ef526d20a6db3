// The ternary kernels for the avx2vnni level (compile flags set in CMakeLists.txt).

#define KILN_TNS k_avx2vnni
#define KILN_TLEVEL "avx2vnni"
#include "kiln/backend/cpu/ternary_kernels.inc"
