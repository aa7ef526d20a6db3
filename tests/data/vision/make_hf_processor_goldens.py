import os, numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers import Qwen2VLImageProcessor
import transformers
out = os.environ["OUT"]
proc = Qwen2VLImageProcessor.from_pretrained("tests/data/hf/qwen3_vl")
rng = np.random.default_rng(1)
def smooth(h, w, c):
    base = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, c)).astype(np.uint8)
    return np.stack([np.array(Image.fromarray(base[:, :, i]).resize((w, h), Image.BILINEAR)) for i in range(c)], -1)
tensors = {}
for name, mode, w, h in [("hf_rgb_37x53.png", "RGB", 37, 53), ("hf_rgba_45x41.png", "RGBA", 45, 41), ("hf_gray_70x33.png", "L", 70, 33)]:
    c = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = smooth(h, w, c)
    im = Image.fromarray(a[:, :, 0] if c == 1 else a, mode)
    im.save(os.path.join(out, name))
    enc = proc(images=[Image.open(os.path.join(out, name))], return_tensors="np")
    tensors["pixel_values." + name] = enc["pixel_values"].astype(np.float32)
    tensors["grid." + name] = enc["image_grid_thw"].astype(np.int32)
save_file(tensors, os.path.join(out, "hf_processor_goldens.safetensors"),
          metadata={"made_by": "transformers %s %s" % (transformers.__version__, type(proc).__name__)})
print({k: v.shape for k, v in tensors.items()})
