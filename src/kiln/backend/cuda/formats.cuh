// Device-side decoding of GGML block formats, bit-exact with
// src/kiln/quant (the same multiplies and subtractions, never fused: the
// *_rn intrinsics keep the compiler from contracting them into FMAs).
//
// Every format is decoded in units of 32 consecutive elements: a block of
// Fmt<T>::kBlock elements and Fmt<T>::kBytes bytes holds kUnits units. The
// plain types are treated as blocks of 32 elements.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kiln/core/dtype.h"
#include "kiln/quant/k_scales.h"

namespace kiln::cuda {

__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const uint16_t*>(p)));
}

// Four bytes from an address that may not be 4-aligned (2-aligned or less).
__device__ __forceinline__ uint32_t u32_at(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t(3));
  const uint32_t sh = uint32_t(a & 3) * 8;
  if (sh == 0) return w[0];
  return __funnelshift_r(w[0], w[1], sh);
}

// N/4 words starting sh bits (0, 8, 16 or 24) into the 4-aligned words w:
// each is funnel-shifted out of two neighbours, so a shift of 0 needs no
// branch (it keeps the low word). Reads one word past the N/4.
template <int N>
__device__ __forceinline__ void funnel_words(const uint32_t* w, uint32_t sh, uint32_t (&out)[N / 4]) {
  uint32_t prev = w[0];
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    const uint32_t next = w[i + 1];
    out[i] = __funnelshift_r(prev, next, sh);
    prev = next;
  }
}

// n bytes (n % 4 == 0) into words.
template <int N>
__device__ __forceinline__ void bytes_at(const uint8_t* p, uint32_t (&out)[N / 4]) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t(3));
  const uint32_t sh = uint32_t(a & 3) * 8;
  if (sh == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) out[i] = w[i];
  } else {
    funnel_words<N>(w, sh, out);
  }
}

__device__ __forceinline__ uint32_t byte_of(const uint32_t* words, int i) {
  return (words[i >> 2] >> ((i & 3) * 8)) & 0xFF;
}

__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float mul_sub(float a, float b, float c) {
  return __fsub_rn(__fmul_rn(a, b), c);
}
__device__ __forceinline__ float mul_add(float a, float b, float c) {
  return __fadd_rn(__fmul_rn(a, b), c);
}

static __constant__ int8_t kIQ4Table[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

template <DType T>
struct Fmt;

template <>
struct Fmt<DType::F32> {
  static constexpr int kBlock = 32, kBytes = 128, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float* f = reinterpret_cast<const float*>(b);
#pragma unroll
    for (int i = 0; i < 32; ++i) w[i] = f[i];
  }
};
template <>
struct Fmt<DType::F16> {
  static constexpr int kBlock = 32, kBytes = 64, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
#pragma unroll
    for (int i = 0; i < 32; ++i) w[i] = __half2float(__ushort_as_half(h[i]));
  }
};
template <>
struct Fmt<DType::BF16> {
  static constexpr int kBlock = 32, kBytes = 64, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(b);
#pragma unroll
    for (int i = 0; i < 32; ++i) w[i] = __uint_as_float(uint32_t(h[i]) << 16);
  }
};
template <>
struct Fmt<DType::Q8_0> {
  static constexpr int kBlock = 32, kBytes = 34, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b);
    uint32_t q[8];
    bytes_at<32>(b + 2, q);
#pragma unroll
    for (int i = 0; i < 32; ++i) w[i] = mul(float(int8_t(byte_of(q, i))), d);
  }
};
template <>
struct Fmt<DType::Q4_0> {
  static constexpr int kBlock = 32, kBytes = 18, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b);
    uint32_t q[4];
    bytes_at<16>(b + 2, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      w[j] = mul(float((v & 0xF) - 8), d);
      w[j + 16] = mul(float((v >> 4) - 8), d);
    }
  }
};
template <>
struct Fmt<DType::Q4_1> {
  static constexpr int kBlock = 32, kBytes = 20, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b), m = half_at(b + 2);
    uint32_t q[4];
    bytes_at<16>(b + 4, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      w[j] = mul_add(float(v & 0xF), d, m);
      w[j + 16] = mul_add(float(v >> 4), d, m);
    }
  }
};
template <>
struct Fmt<DType::Q5_0> {
  static constexpr int kBlock = 32, kBytes = 22, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b);
    const uint32_t qh = u32_at(b + 2);
    uint32_t q[4];
    bytes_at<16>(b + 6, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      const int lo = (v & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (v >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      w[j] = mul(float(lo - 16), d);
      w[j + 16] = mul(float(hi - 16), d);
    }
  }
};
template <>
struct Fmt<DType::Q5_1> {
  static constexpr int kBlock = 32, kBytes = 24, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b), m = half_at(b + 2);
    const uint32_t qh = u32_at(b + 4);
    uint32_t q[4];
    bytes_at<16>(b + 8, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      const int lo = (v & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (v >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      w[j] = mul_add(float(lo), d, m);
      w[j + 16] = mul_add(float(hi), d, m);
    }
  }
};
template <>
struct Fmt<DType::IQ4_NL> {
  static constexpr int kBlock = 32, kBytes = 18, kUnits = 1;
  __device__ static void unit(const uint8_t* b, int, float* w) {
    const float d = half_at(b);
    uint32_t q[4];
    bytes_at<16>(b + 2, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      w[j] = mul(d, float(kIQ4Table[v & 0xF]));
      w[j + 16] = mul(d, float(kIQ4Table[v >> 4]));
    }
  }
};
// Q2_K: 84 bytes = scales[16], qs[64], d, dmin. Unit u = 4 * half + shift.
template <>
struct Fmt<DType::Q2_K> {
  static constexpr int kBlock = 256, kBytes = 84, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b + 80), dmin = half_at(b + 82);
    const int half = u >> 2, shift = 2 * (u & 3);
    uint32_t q[8];
    bytes_at<32>(b + 16 + 32 * half, q);
#pragma unroll
    for (int part = 0; part < 2; ++part) {
      const int sc = b[8 * half + 2 * (u & 3) + part];
      const float dl = mul(d, float(sc & 0xF)), ml = mul(dmin, float(sc >> 4));
#pragma unroll
      for (int l = 0; l < 16; ++l)
        w[16 * part + l] = mul_sub(dl, float((byte_of(q, l + 16 * part) >> shift) & 3), ml);
    }
  }
};
// Q3_K: 110 bytes = hmask[32], qs[64], scales[12], d.
template <>
struct Fmt<DType::Q3_K> {
  static constexpr int kBlock = 256, kBytes = 110, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b + 108);
    const uint8_t* s = b + 96;
    const int half = u >> 2, shift = 2 * (u & 3);
    const uint32_t m = 1u << u;
    uint32_t q[8], hm[8];
    bytes_at<32>(b + 32 + 32 * half, q);
    bytes_at<32>(b, hm);
#pragma unroll
    for (int part = 0; part < 2; ++part) {
      const int j = 8 * half + 2 * (u & 3) + part;
      const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
      const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
      const float dl = mul(d, float((lo | (hi << 4)) - 32));
#pragma unroll
      for (int l = 16 * part; l < 16 * part + 16; ++l) {
        const int v = int((byte_of(q, l) >> shift) & 3) - ((byte_of(hm, l) & m) ? 0 : 4);
        w[l] = mul(dl, float(v));
      }
    }
  }
};
// Q4_K: 144 bytes = d, dmin, scales[12], qs[128]. Unit u: low (even) or high
// (odd) nibbles of qs[32 * (u / 2) ...].
template <>
struct Fmt<DType::Q4_K> {
  static constexpr int kBlock = 256, kBytes = 144, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b), dmin = half_at(b + 2);
    int sc, m;
    quant::k4_scale_min(u, b + 4, &sc, &m);
    const float d1 = mul(d, float(sc)), m1 = mul(dmin, float(m));
    uint32_t q[8];
    bytes_at<32>(b + 16 + 32 * (u >> 1), q);
    const int shift = (u & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) w[l] = mul_sub(d1, float((byte_of(q, l) >> shift) & 0xF), m1);
  }
};
// Q5_K: 176 bytes = d, dmin, scales[12], qh[32], qs[128].
template <>
struct Fmt<DType::Q5_K> {
  static constexpr int kBlock = 256, kBytes = 176, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b), dmin = half_at(b + 2);
    int sc, m;
    quant::k4_scale_min(u, b + 4, &sc, &m);
    const float d1 = mul(d, float(sc)), m1 = mul(dmin, float(m));
    uint32_t q[8], qh[8];
    bytes_at<32>(b + 48 + 32 * (u >> 1), q);
    bytes_at<32>(b + 16, qh);
    const int shift = (u & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int v = int((byte_of(q, l) >> shift) & 0xF) + ((byte_of(qh, l) >> u) & 1 ? 16 : 0);
      w[l] = mul_sub(d1, float(v), m1);
    }
  }
};
// Q6_K: 210 bytes = ql[128], qh[64], scales[16] (int8), d.
template <>
struct Fmt<DType::Q6_K> {
  static constexpr int kBlock = 256, kBytes = 210, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b + 208);
    const int half = u >> 2, k = u & 3;
    const uint8_t* ql = b + 64 * half + (k & 1) * 32;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * half);
    uint32_t lo[8], hi[8];
    bytes_at<32>(ql, lo);
    bytes_at<32>(qh, hi);
    const int lshift = (k >> 1) * 4, hshift = 2 * k;
    const float ds0 = mul(d, float(sc[2 * k])), ds1 = mul(d, float(sc[2 * k + 1]));
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int q = int(((byte_of(lo, l) >> lshift) & 0xF) | (((byte_of(hi, l) >> hshift) & 3) << 4)) - 32;
      w[l] = mul(l < 16 ? ds0 : ds1, float(q));
    }
  }
};
// IQ4_XS: 136 bytes = d, scales_h (u16), scales_l[4], qs[128].
template <>
struct Fmt<DType::IQ4_XS> {
  static constexpr int kBlock = 256, kBytes = 136, kUnits = 8;
  __device__ static void unit(const uint8_t* b, int u, float* w) {
    const float d = half_at(b);
    const uint32_t sh = *reinterpret_cast<const uint16_t*>(b + 2);
    const int ls = ((b[4 + u / 2] >> (4 * (u % 2))) & 0xF) | (((sh >> (2 * u)) & 3) << 4);
    const float dl = mul(d, float(ls - 32));
    uint32_t q[4];
    bytes_at<16>(b + 8 + 16 * u, q);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int v = int(byte_of(q, j));
      w[j] = mul(dl, float(kIQ4Table[v & 0xF]));
      w[j + 16] = mul(dl, float(kIQ4Table[v >> 4]));
    }
  }
};

// Calls f.template operator()<T>() for the runtime type t; false if unknown.
template <class F>
bool dispatch_format(DType t, F&& f) {
  switch (t) {
    case DType::F32: f.template operator()<DType::F32>(); return true;
    case DType::F16: f.template operator()<DType::F16>(); return true;
    case DType::BF16: f.template operator()<DType::BF16>(); return true;
    case DType::Q8_0: f.template operator()<DType::Q8_0>(); return true;
    case DType::Q4_0: f.template operator()<DType::Q4_0>(); return true;
    case DType::Q4_1: f.template operator()<DType::Q4_1>(); return true;
    case DType::Q5_0: f.template operator()<DType::Q5_0>(); return true;
    case DType::Q5_1: f.template operator()<DType::Q5_1>(); return true;
    case DType::IQ4_NL: f.template operator()<DType::IQ4_NL>(); return true;
    case DType::Q2_K: f.template operator()<DType::Q2_K>(); return true;
    case DType::Q3_K: f.template operator()<DType::Q3_K>(); return true;
    case DType::Q4_K: f.template operator()<DType::Q4_K>(); return true;
    case DType::Q5_K: f.template operator()<DType::Q5_K>(); return true;
    case DType::Q6_K: f.template operator()<DType::Q6_K>(); return true;
    case DType::IQ4_XS: f.template operator()<DType::IQ4_XS>(); return true;
    default: return false;
  }
}

}  // namespace kiln::cuda
