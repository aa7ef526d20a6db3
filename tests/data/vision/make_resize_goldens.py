"""Golden pixels for kiln's image decoding and resizing, made with Pillow.

Writes small test images in every supported format (RGB/grayscale/RGBA,
PNG/JPEG/WebP, odd sizes) and, for each, the 8-bit RGB image that the
Hugging Face Qwen2-VL processor resizes to: decode, convert_to_rgb (alpha
over white), Image.resize(smart size, BICUBIC). Run with Debian's python3-pil:
    /usr/bin/python3 make_resize_goldens.py
"""
import json
import math

import numpy as np
from PIL import Image


def smart_resize(h, w, factor=32, min_pixels=1024, max_pixels=65536):
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def to_rgb(img):
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


rng = np.random.default_rng(7)


def pattern(w, h, c):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), (x * y) % 256], -1)
    noise = rng.integers(0, 60, size=(h, w, 3))
    a = ((base + noise) % 256).astype(np.uint8)
    if c == 1:
        return a[..., 0]
    if c == 4:
        alpha = ((x * 7 + y * 3) % 256).astype(np.uint8)
        return np.concatenate([a, alpha[..., None]], -1)
    return a


cases = [
    ("rgb_up.png", 45, 30, 3, "PNG"),        # upscaled to the minimum
    ("gray.png", 70, 50, 1, "PNG"),          # grayscale
    ("alpha.png", 130, 41, 4, "PNG"),        # RGBA over white
    ("photo.jpg", 97, 64, 3, "JPEG"),        # libjpeg decode
    ("gray.jpg", 40, 90, 1, "JPEG"),
    ("pic.webp", 300, 200, 3, "WEBP"),       # downscaled to the maximum
    ("alpha.webp", 33, 61, 4, "WEBP"),
]
index = {}
blobs = []
offset = 0
for name, w, h, c, fmt in cases:
    a = pattern(w, h, c)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[c]
    kw = {"quality": 85} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
    Image.fromarray(a, mode).save(name, fmt, **kw)
    img = to_rgb(Image.open(name))
    hb, wb = smart_resize(img.height, img.width)
    out = np.asarray(img.resize((wb, hb), Image.BICUBIC, reducing_gap=None), dtype=np.uint8)
    raw = out.tobytes()
    index[name] = {"dtype": "U8", "shape": [hb, wb, 3], "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
header = json.dumps(index).encode()
header += b" " * ((8 - len(header) % 8) % 8)
with open("resize_goldens.safetensors", "wb") as f:
    f.write(len(header).to_bytes(8, "little") + header + b"".join(blobs))
