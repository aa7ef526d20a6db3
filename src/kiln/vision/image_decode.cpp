// JPEG through libjpeg(-turbo), PNG through libpng, WebP through libwebp:
// the same libraries Pillow decodes with, so pixels agree with what the
// Hugging Face processor starts from.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "kiln/core/error.h"
#include "kiln/vision/image.h"

namespace kiln {
namespace {

// --- JPEG: libjpeg reports errors through a callback; longjmp back out.
struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& what) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  Image img;
  std::vector<uint8_t> row;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail(what, ": corrupt JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const bool gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    fail(what, ": CMYK JPEG images are not supported; convert it to RGB first");
  }
  cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img.width = int(cinfo.output_width);
  img.height = int(cinfo.output_height);
  const int comps = cinfo.output_components;
  img.rgb.resize(size_t(img.width) * img.height * 3);
  row.resize(size_t(img.width) * comps);
  while (cinfo.output_scanline < cinfo.output_height) {
    const int y = int(cinfo.output_scanline);
    JSAMPROW rows[1] = {row.data()};
    jpeg_read_scanlines(&cinfo, rows, 1);
    uint8_t* dst = &img.rgb[size_t(y) * img.width * 3];
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c) dst[x * 3 + c] = row[size_t(x) * comps + (gray ? 0 : c)];
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

// --- PNG
struct PngReader {
  const uint8_t* data;
  size_t size, pos;
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

struct PngFailure {
  char message[256];
};

void png_fail(png_structp png, png_const_charp msg) {
  auto* f = static_cast<PngFailure*>(png_get_error_ptr(png));
  std::snprintf(f->message, sizeof f->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_quiet(png_structp, png_const_charp) {}

Image decode_png(const uint8_t* data, size_t size, const std::string& what) {
  PngFailure failure{};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, png_fail, png_quiet);
  KILN_CHECK(png, what, ": cannot start the PNG decoder");
  png_infop info = png_create_info_struct(png);
  PngReader reader{data, size, 0};
  Image img;
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail(what, ": corrupt PNG (", failure.message, ")");
  }
  png_set_read_fn(png, &reader, png_read_mem);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  // Pillow keeps the high byte of 16-bit samples.
  if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8)
    png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  img.width = int(png_get_image_width(png, info));
  img.height = int(png_get_image_height(png, info));
  const int channels = png_get_channels(png, info);
  if (channels != 3 && channels != 4) png_error(png, "unexpected channel count");
  const size_t stride = png_get_rowbytes(png, info);
  pixels.resize(stride * size_t(img.height));
  rows.resize(size_t(img.height));
  for (int y = 0; y < img.height; ++y) rows[size_t(y)] = pixels.data() + stride * size_t(y);
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  const size_t n = size_t(img.width) * img.height;
  img.rgb.resize(n * 3);
  if (channels == 4) {
    img.alpha.resize(n);
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) {
        const uint8_t* s = rows[size_t(y)] + size_t(x) * 4;
        const size_t i = size_t(y) * img.width + x;
        std::memcpy(&img.rgb[i * 3], s, 3);
        img.alpha[i] = s[3];
      }
  } else {
    for (int y = 0; y < img.height; ++y)
      std::memcpy(&img.rgb[size_t(y) * img.width * 3], rows[size_t(y)], size_t(img.width) * 3);
  }
  return img;
}

// --- WebP
Image decode_webp(const uint8_t* data, size_t size, const std::string& what) {
  WebPBitstreamFeatures features;
  KILN_CHECK(WebPGetFeatures(data, size, &features) == VP8_STATUS_OK, what, ": corrupt WebP");
  KILN_CHECK(!features.has_animation, what, ": animated WebP is not supported as an image");
  int w = 0, h = 0;
  Image img;
  if (features.has_alpha) {
    uint8_t* rgba = WebPDecodeRGBA(data, size, &w, &h);
    KILN_CHECK(rgba, what, ": corrupt WebP");
    img.width = w;
    img.height = h;
    const size_t n = size_t(w) * h;
    img.rgb.resize(n * 3);
    img.alpha.resize(n);
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&img.rgb[i * 3], rgba + i * 4, 3);
      img.alpha[i] = rgba[i * 4 + 3];
    }
    WebPFree(rgba);
  } else {
    uint8_t* rgb = WebPDecodeRGB(data, size, &w, &h);
    KILN_CHECK(rgb, what, ": corrupt WebP");
    img.width = w;
    img.height = h;
    img.rgb.assign(rgb, rgb + size_t(w) * h * 3);
    WebPFree(rgb);
  }
  return img;
}

}  // namespace

void composite_on_white(const uint8_t* rgba, size_t n_pixels, uint8_t* rgb) {
  // Pillow's Image.alpha_composite of the image over an opaque white
  // background, 7-bit fixed point, then the alpha channel dropped.
  constexpr uint32_t kBits = 7;
  auto div255 = [](uint32_t a) { return ((a >> 8) + a) >> 8; };
  for (size_t i = 0; i < n_pixels; ++i) {
    const uint8_t* s = rgba + i * 4;
    uint8_t* d = rgb + i * 3;
    const uint32_t a = s[3];
    if (a == 0) {
      d[0] = d[1] = d[2] = 255;
      continue;
    }
    const uint32_t blend = 255 * (255 - a);
    const uint32_t outa255 = a * 255 + blend;
    const uint32_t coef1 = a * 255 * 255 * (1u << kBits) / outa255;
    const uint32_t coef2 = 255 * (1u << kBits) - coef1;
    for (int c = 0; c < 3; ++c) {
      const uint32_t v = s[c] * coef1 + 255u * coef2;
      d[c] = uint8_t(div255(v + (0x80u << kBits)) >> kBits);
    }
  }
}

void composite_alpha_on_white(Image& img) {
  if (img.alpha.empty()) return;
  const size_t n = size_t(img.width) * img.height;
  std::vector<uint8_t> rgba(n * 4);
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(&rgba[i * 4], &img.rgb[i * 3], 3);
    rgba[i * 4 + 3] = img.alpha[i];
  }
  composite_on_white(rgba.data(), n, img.rgb.data());
  img.alpha.clear();
}

Image decode_image(const uint8_t* data, size_t size, const std::string& what) {
  KILN_CHECK(size >= 12, what, ": too short to be an image");
  if (data[0] == 0xFF && data[1] == 0xD8) return decode_jpeg(data, size, what);
  if (std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) return decode_png(data, size, what);
  if (std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0)
    return decode_webp(data, size, what);
  fail(what, ": not a JPEG, PNG or WebP image");
}

Image decode_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, path, ": cannot open the image");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Image img = decode_image(bytes.data(), bytes.size(), path);
  KILN_CHECK(img.width > 0 && img.height > 0, path, ": image has no pixels");
  return img;
}

}  // namespace kiln
