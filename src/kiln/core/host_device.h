// KILN_HD marks a function that both host code and the CUDA backend's
// kernels call, so that the two run one definition (a sampled token's draw:
// the same bits on either side). Empty where nvcc is not the compiler.
#pragma once

#if defined(__CUDACC__)
#define KILN_HD __host__ __device__
#else
#define KILN_HD
#endif
