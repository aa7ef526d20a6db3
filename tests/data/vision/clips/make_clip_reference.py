#!/usr/bin/env python3
"""Makes tests/data/vision/clips/<clip>.ref.safetensors (Qwen3-VL) and
<clip>.qwen3_5_vl.ref.safetensors: what transformers' processor for the
fixture model makes of each lossy clip of tests/data/vision/clips (see
make_lossy_videos.cpp) when it is given the file itself, as a user would:
its own video decoder, its own frame sampling (2 frames per second), its
resize and normalisation, the timestamps it writes into the prompt.

Run where torch and transformers are installed (the test machine has neither,
so the outputs are committed):
    python3 tests/data/vision/clips/make_clip_reference.py
For each clip it writes
  pixel_values  the processor's pixel_values_videos
  video_grid_thw
  input_ids     "<|vision_start|><|video_pad|><|vision_end|>What happens?" as
                the processor expands it (timestamps and pads)
  frames        (Qwen3-VL's file only) every frame of the clip as that
                decoder gives it, uint8 [N, H, W, 3] RGB, so that a test can
                tell decoding from sampling and resizing
and prints which decoder transformers used.
"""
import inspect
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

CLIPS = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(CLIPS, "..", "..", "hf")
MODELS = {"qwen3_vl": ".ref.safetensors", "qwen3_5_vl": ".qwen3_5_vl.ref.safetensors"}
TEXT = "<|vision_start|><|video_pad|><|vision_end|>What happens?"


def all_frames_cv2(path):
    import cv2

    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].copy())
    meta = {
        "fps": cap.get(cv2.CAP_PROP_FPS),
        "frame_count": cap.get(cv2.CAP_PROP_FRAME_COUNT),
    }
    return np.stack(frames), meta


def main():
    import transformers

    print("transformers", transformers.__version__)
    for arch, suffix in MODELS.items():
        reference(arch, suffix)


def reference(arch, suffix):
    from transformers import AutoProcessor
    import transformers
    from transformers import video_utils

    processor = AutoProcessor.from_pretrained(os.path.join(HF, arch))
    vp = processor.video_processor
    print(arch, type(processor).__name__, type(vp).__name__,
          {k: getattr(vp, k, None) for k in ("fps", "min_frames", "max_frames", "do_sample_frames",
                                              "size")})
    for name in sorted(os.listdir(CLIPS)):
        if not name.endswith((".mp4", ".webm", ".mkv")):
            continue
        path = os.path.join(CLIPS, name)
        frames, cv_meta = all_frames_cv2(path)
        print(name, "cv2 frames", frames.shape, cv_meta)
        inputs, used = None, None
        try:
            inputs = processor(text=[TEXT], videos=[path], return_tensors="pt",
                               do_sample_frames=True, fps=2)
            used = "transformers' default decoder"
        except ImportError as e:
            # No torchcodec / PyAV here: decode with OpenCV (FFmpeg inside, the
            # same swscale conversion) and let the processor sample as it
            # would from that decoder's metadata.
            print("  default decoder unavailable:", str(e)[:120])
            meta = video_utils.VideoMetadata(total_num_frames=frames.shape[0], fps=cv_meta["fps"],
                                             width=frames.shape[2], height=frames.shape[1],
                                             duration=frames.shape[0] / cv_meta["fps"])
            inputs = processor(text=[TEXT], videos=[frames], video_metadata=[meta],
                               return_tensors="pt", do_sample_frames=True, fps=2)
            used = "opencv"
        print("  used", used, "grid", inputs["video_grid_thw"].tolist())
        ids = inputs["input_ids"][0]
        print("  text", processor.tokenizer.decode(ids[:24]))
        out = {
            "pixel_values": inputs["pixel_values_videos"].float().contiguous(),
            "video_grid_thw": inputs["video_grid_thw"].to(torch.int32).contiguous(),
            "input_ids": ids.to(torch.int32).contiguous(),
        }
        if arch == "qwen3_vl":
            out["frames"] = torch.from_numpy(frames).contiguous()
        save_file(out, os.path.join(CLIPS, name + suffix),
                  metadata={"decoder": used, "transformers": transformers.__version__,
                            "cv2": json.dumps(cv_meta)})

if __name__ == "__main__":
    main()
