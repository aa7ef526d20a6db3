// Decoded pictures as the Hugging Face processors see them: 8-bit RGB,
// with any alpha composited onto white (transformers' convert_to_rgb).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;    // row-major, 3 bytes a pixel
  std::vector<uint8_t> alpha;  // 1 byte a pixel when the file is transparent, else empty
  uint8_t at(int x, int y, int c) const { return rgb[(size_t(y) * width + x) * 3 + c]; }
};

// Decodes a JPEG, PNG or WebP file (sniffed from its bytes, not its name).
// Throws kiln::Error naming the file for anything unreadable or corrupt.
Image decode_image_file(const std::string& path);
Image decode_image(const uint8_t* data, size_t size, const std::string& what);

// RGBA -> RGB over a white background, with PIL's alpha_composite arithmetic.
void composite_on_white(const uint8_t* rgba, size_t n_pixels, uint8_t* rgb);
// The same on a decoded image, whose alpha is then gone. The processors of
// transformers 5 do NOT do this (they drop the alpha channel, as PIL's
// convert("RGB") does, and preprocessing ignores `alpha`); older ones and
// Pillow-based pipelines composite.
void composite_alpha_on_white(Image& img);

}  // namespace kiln
