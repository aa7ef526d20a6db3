// Bicubic resampling with Pillow's arithmetic (Image.resize(..., BICUBIC)):
// an antialiasing Keys cubic (a = -0.5) whose support widens with the
// downscale factor, 22-bit fixed-point weights, horizontal pass first, each
// pass rounded and clamped to 8 bits. The Hugging Face processors resize this
// way (and torchvision's uint8 antialias path reproduces it).
#pragma once

#include "kiln/vision/image.h"

namespace kiln {

Image resize_bicubic(const Image& in, int out_width, int out_height);

}  // namespace kiln
