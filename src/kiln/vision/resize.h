// Bicubic resampling as the Hugging Face image processors do it: an
// antialiasing Keys cubic (a = -0.5) whose support widens with the downscale
// factor, fixed-point weights, horizontal pass first, each pass rounded and
// clamped to 8 bits, a pass whose size is unchanged skipped.
//
// Two arithmetics exist in the wild and differ by one level at a few pixels:
// Pillow's (Image.resize(BICUBIC): 22-bit int32 weights) and torch's uint8
// antialias kernel (what transformers' torchvision-backed processors run: the
// most bits that keep every weight of a pass within int16).
#pragma once

#include "kiln/vision/image.h"

namespace kiln {

enum class ResampleArithmetic { Torch, Pillow };

Image resize_bicubic(const Image& in, int out_width, int out_height,
                     ResampleArithmetic arithmetic = ResampleArithmetic::Torch);

}  // namespace kiln
