#include "kiln/vision/resize.h"

#include <algorithm>
#include <cmath>

#include "kiln/core/error.h"

namespace kiln {
namespace {

constexpr int kPillowBits = 32 - 8 - 2;

double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output pixel: the first input index, the tap count, and integer weights.
struct Taps {
  int ksize = 0;
  int bits = kPillowBits;  // fixed-point precision of the weights
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out][ksize]
};

Taps precompute(int in_size, int out_size, ResampleArithmetic arithmetic) {
  Taps t;
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  t.weights.assign(size_t(out_size) * t.ksize, 0);
  std::vector<double> k(size_t(t.ksize));
  std::vector<double> normalized(size_t(out_size) * t.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[size_t(x)] = cubic((x + xmin - center + 0.5) * ss);
      ww += k[size_t(x)];
    }
    for (int x = 0; x < xmax; ++x)
      normalized[size_t(xx) * t.ksize + x] = ww != 0.0 ? k[size_t(x)] / ww : k[size_t(x)];
    t.first[size_t(xx)] = xmin;
    t.count[size_t(xx)] = xmax;
  }
  if (arithmetic == ResampleArithmetic::Torch) {
    // The largest precision whose doubled largest weight still fits int16.
    const double max_w = *std::max_element(normalized.begin(), normalized.end());
    int bits = 0;
    for (; bits < kPillowBits; ++bits)
      if (int(0.5 + max_w * double(1 << (bits + 1))) >= (1 << 15)) break;
    t.bits = bits;
  }
  const double one = double(1 << t.bits);
  for (size_t i = 0; i < normalized.size(); ++i) {
    const double w = normalized[i];
    t.weights[i] = w < 0 ? int32_t(-0.5 + w * one) : int32_t(0.5 + w * one);
  }
  return t;
}

uint8_t clip8(int32_t v, int bits) {
  v >>= bits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

Image resize_bicubic(const Image& in, int out_width, int out_height,
                     ResampleArithmetic arithmetic) {
  KILN_CHECK(out_width > 0 && out_height > 0, "cannot resize an image to ", out_width, "x",
             out_height);
  if (out_width == in.width && out_height == in.height) return in;
  // Horizontal pass into an intermediate image (all rows), then vertical;
  // a pass whose size is unchanged is skipped, as Pillow does.
  Image mid = in;
  if (out_width != in.width) {
    const Taps t = precompute(in.width, out_width, arithmetic);
    mid.width = out_width;
    mid.rgb.assign(size_t(out_width) * in.height * 3, 0);
    for (int y = 0; y < in.height; ++y)
      for (int xx = 0; xx < out_width; ++xx) {
        const int32_t* k = &t.weights[size_t(xx) * t.ksize];
        const int x0 = t.first[size_t(xx)];
        for (int c = 0; c < 3; ++c) {
          int32_t ss = 1 << (t.bits - 1);
          for (int x = 0; x < t.count[size_t(xx)]; ++x) ss += int32_t(in.at(x0 + x, y, c)) * k[x];
          mid.rgb[(size_t(y) * out_width + xx) * 3 + c] = clip8(ss, t.bits);
        }
      }
  }
  if (out_height == in.height) return mid;
  const Taps t = precompute(in.height, out_height, arithmetic);
  Image out;
  out.width = out_width;
  out.height = out_height;
  out.rgb.assign(size_t(out_width) * out_height * 3, 0);
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &t.weights[size_t(yy) * t.ksize];
    const int y0 = t.first[size_t(yy)];
    for (int x = 0; x < out_width; ++x)
      for (int c = 0; c < 3; ++c) {
        int32_t ss = 1 << (t.bits - 1);
        for (int y = 0; y < t.count[size_t(yy)]; ++y) ss += int32_t(mid.at(x, y0 + y, c)) * k[y];
        out.rgb[(size_t(yy) * out_width + x) * 3 + c] = clip8(ss, t.bits);
      }
  }
  return out;
}

}  // namespace kiln
