// Small helpers the quantizers share. Internal to the quant area.
#pragma once

#include <cmath>

namespace kiln::quant {

// Element of largest magnitude, with its sign; the first one wins ties (0
// when every element is 0).
inline float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

}  // namespace kiln::quant
