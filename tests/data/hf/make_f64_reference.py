#!/usr/bin/env python3
"""Runs a fixture's transformers model in float64 on its reference prompt
and writes OUT_DIR/<arch>.f64.safetensors (logits F64 [T, V]), to tell how far
the committed float32 reference (ref.safetensors) itself is from the exact
result: an engine that computes more exactly than the reference cannot get
closer to it than that.
    python3 tests/data/hf/make_f64_reference.py OUT_DIR qwen3_next qwen3_5_text
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from transformers import AutoModelForCausalLM

    out_dir = sys.argv[1]
    for arch in sys.argv[2:]:
        d = os.path.join(HERE, arch)
        ref = load_file(os.path.join(d, "ref.safetensors"))
        ids = ref["input_ids"].long()[None]
        try:  # MoE experts: the eager loop (grouped matmuls take no float64)
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64,
                                                         experts_implementation="eager").eval()
        except (TypeError, ValueError):
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[0]
        r32 = ref["logits"].double()
        err = (logits - r32).abs().max().item() / r32.abs().max().item()
        print(f"{arch}: float32 reference vs float64: max relative logit error {err:.3e}")
        save_file({"logits": logits.contiguous()}, os.path.join(out_dir, arch + ".f64.safetensors"))


if __name__ == "__main__":
    main()
