// splitmix64: a 64-bit state stepped by a fixed odd constant and mixed into
// well-spread outputs. For seeds and ids, not for security.
#pragma once

#include <cstdint>

#include "kiln/core/host_device.h"

namespace kiln {

constexpr uint64_t kSplitmixGamma = 0x9e3779b97f4a7c15ULL;

// splitmix64's output function of a state value.
KILN_HD inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The next value of the sequence whose state is `state` (advanced).
KILN_HD inline uint64_t splitmix64(uint64_t& state) { return splitmix64_mix(state += kSplitmixGamma); }

}  // namespace kiln
