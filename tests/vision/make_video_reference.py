#!/usr/bin/env python3
"""Makes the video references of tests/data/hf/{qwen3_vl,qwen3_5_vl}: what
transformers' processor and model give for a short clip of synthetic frames.

Run where torch and transformers are installed (the test machine has neither,
so the outputs are committed):
    python3 tests/vision/make_video_reference.py OUT_DIR
writes OUT_DIR/video/frame_00.png ... (the clip, 5 frames: an odd count, so the
last is repeated to fill the temporal patch) and OUT_DIR/<model>/ref_video.safetensors
with pixel_values (the processor's pixel_values_videos), video_grid_thw,
input_ids (the prompt with the video's timestamps and pads expanded, as the
processor writes it), position_ids (I32 [3, T], M-RoPE), video_embeds,
deepstack_embeds (Qwen3-VL only) and logits.
The frames are taken as sampled at 2 frames per second, kiln's default for a
folder of images.
"""
import os
import sys
import traceback

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "hf")
FPS = 2.0
N_FRAMES = 5
WIDTH, HEIGHT = 144, 80  # not the image fixture's size, and not a multiple of 32 tall


def make_frames(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    frames = []
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    for f in range(N_FRAMES):
        r = (xx * 1.7 + f * 23) % 256
        g = (yy * 2.9 + xx * 0.4 + f * 41) % 256
        b = ((xx - WIDTH / 2) ** 2 + (yy - HEIGHT / 2) ** 2 + f * 400) ** 0.5 * 3 % 256
        rgb = np.stack([r, g, b], axis=-1).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB")
        img.save(os.path.join(out_dir, "frame_%02d.png" % f))
        frames.append(img)
    return frames


def reference(name, frames, out_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = os.path.join(DATA, name)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(
        path, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    text = "<|vision_start|><|video_pad|><|vision_end|>What happens?"
    meta = {"fps": FPS, "total_num_frames": N_FRAMES, "frames_indices": list(range(N_FRAMES))}
    kwargs = dict(text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False)
    try:
        inputs = processor(video_metadata=[meta], **kwargs)
    except TypeError:
        inputs = processor(**kwargs)
    ids = inputs["input_ids"]
    grid = inputs["video_grid_thw"]
    pixels = inputs["pixel_values_videos"]
    out = {
        "pixel_values": pixels.float().contiguous(),
        "video_grid_thw": grid.to(torch.int32).contiguous(),
        "input_ids": ids[0].to(torch.int32).contiguous(),
    }
    with torch.no_grad():
        inner = model.model
        try:
            import inspect

            given = dict(inputs, input_ids=ids, video_grid_thw=grid, image_grid_thw=None)
            names = inspect.signature(inner.get_rope_index).parameters
            pos, _ = inner.get_rope_index(**{k: given.get(k) for k in names if k in given})
            out["position_ids"] = pos[:, 0, :].to(torch.int32).contiguous()
        except Exception:
            traceback.print_exc()
        try:
            feats = inner.get_video_features(pixels, grid)
            if isinstance(feats, tuple):
                embeds, deepstack = feats
            else:  # a ModelOutput: the merged embeddings and, for Qwen3-VL, DeepStack's
                print(name, "video features:", list(feats.keys()))
                embeds = feats.pooler_output
                deepstack = getattr(feats, "deepstack_features", None)
            if isinstance(embeds, (list, tuple)):
                embeds = torch.cat(list(embeds), dim=0)
            out["video_embeds"] = embeds.float().contiguous()
            if deepstack is not None and len(deepstack) > 0:
                out["deepstack_embeds"] = torch.stack(list(deepstack)).float().contiguous()
        except Exception:
            traceback.print_exc()
        logits = model(**inputs).logits[0]
        out["logits"] = logits.float().contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "ref_video.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in out.items()}, "grid", grid.tolist())
    print(name, "prompt:", processor.tokenizer.decode(ids[0]))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "video_ref"
    frames = make_frames(os.path.join(out, "video"))
    import transformers

    print("transformers", transformers.__version__, "torch", torch.__version__)
    for name in ("qwen3_vl", "qwen3_5_vl"):
        try:
            reference(name, frames, os.path.join(out, name))
        except Exception:
            traceback.print_exc()


if __name__ == "__main__":
    main()
