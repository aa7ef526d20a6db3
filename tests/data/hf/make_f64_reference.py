#!/usr/bin/env python3
"""Runs a fixture's transformers model wholly in float64 on its reference
prompt and writes OUT_DIR/<arch>.f64.safetensors (logits F64 [T, V]), to tell
how far the committed float32 reference (ref.safetensors) itself is from the
exact result: an engine that computes more exactly than the reference cannot
get closer to it than that.
    python3 tests/data/hf/make_f64_reference.py OUT_DIR qwen3_next qwen3_5_text

Loading with dtype=float64 is not enough: the modeling code casts to float32
on purpose in several places (RMSNorm, the softmaxes, the gates g = -exp(A_log)
* softplus(a.float() + dt_bias), and torch_chunk_gated_delta_rule, which turns
q, k, v, g and beta into float32 before the chunked rule). Those casts are
redirected to float64 here, before the model is built, so no op of the
forward rounds to float32; the script checks that every module's floating
outputs are float64.
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def keep_float64():
    to = torch.Tensor.to

    def to_f64(self, *args, **kwargs):
        args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        if kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        return to(self, *args, **kwargs)

    torch.Tensor.to = to_f64
    torch.Tensor.float = lambda self, *a, **k: to(self, torch.float64)
    softmax = F.softmax

    def softmax_f64(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=torch.float64 if dtype is torch.float32 else dtype)

    F.softmax = softmax_f64
    torch.softmax = lambda x, dim, dtype=None: softmax_f64(x, dim=dim, dtype=dtype)


def check_float64(model):
    seen = []

    def hook(module, _inputs, output):
        outs = output if isinstance(output, (tuple, list)) else (output,)
        for o in outs:
            if torch.is_tensor(o) and o.is_floating_point() and o.dtype != torch.float64:
                seen.append((type(module).__name__, o.dtype))

    for m in model.modules():
        m.register_forward_hook(hook)
    return seen


def main():
    keep_float64()
    from transformers import AutoModelForCausalLM

    out_dir = sys.argv[1]
    for arch in sys.argv[2:]:
        d = os.path.join(HERE, arch)
        ref = load_file(os.path.join(d, "ref.safetensors"))
        ids = ref["input_ids"].long()[None]
        kw = dict(dtype=torch.float64, attn_implementation="eager")
        try:  # MoE experts: the eager loop (grouped matmuls take no float64)
            model = AutoModelForCausalLM.from_pretrained(d, experts_implementation="eager", **kw)
        except (TypeError, ValueError):
            model = AutoModelForCausalLM.from_pretrained(d, **kw)
        model.eval()
        not_f64 = check_float64(model)
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[0]
        if not_f64:
            print(f"{arch}: outputs not in float64: {sorted(set(map(str, not_f64)))}")
        r32 = ref["logits"].double()
        err = (logits - r32).abs().max().item() / r32.abs().max().item()
        per_pos = ((logits - r32).abs().amax(-1) / r32.abs().max()).tolist()
        worst = sorted(range(len(per_pos)), key=lambda i: -per_pos[i])[:3]
        print(f"{arch}: float32 reference vs float64: max relative logit error {err:.3e}; "
              f"worst positions {[(i, f'{per_pos[i]:.2e}') for i in worst]}")
        save_file({"logits": logits.contiguous()}, os.path.join(out_dir, arch + ".f64.safetensors"))


if __name__ == "__main__":
    main()
