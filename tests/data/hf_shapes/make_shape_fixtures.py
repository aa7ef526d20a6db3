#!/usr/bin/env python3
"""Tiny random hybrid models (Gated DeltaNet + gated attention) of shapes the
main fixtures (tests/data/hf/qwen3_5_text, qwen3_next) do not have: other
key/value head ratios, key and value head widths that differ, GQA ratios,
layer patterns, dense and MoE feed-forwards, the Qwen3.5 MoE class, and
prompt lengths that end inside, or exactly at, 64-token chunks.

For each shape NAME it writes OUT_DIR/NAME/ with config.json,
model.safetensors (bf16, as checkpoints ship), ref.safetensors (input_ids,
logits F32 [T, V] from transformers in float32 on the CPU, greedy_ids from
generate() with the cache) and ref_exact.safetensors (the same logits with
the model run wholly in float64, make_f64_reference.keep_float64, rounded
to f32 for storage). Weights are spread as the main fixtures' generator
does (1/sqrt(fan_in) Gaussians, jittered A_log, dt_bias and norms), then
rounded to bf16 so that the file and the reference hold the same numbers.
    python3 tests/data/hf_shapes/make_shape_fixtures.py OUT_DIR
Needs torch, transformers (5.17 made the committed ones), safetensors.
"""
import math
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hf"))
import make_f64_reference  # noqa: E402

SEED = 4321
VOCAB = 384
GREEDY_LEN = 8
ROPE = {"rope_type": "default", "rope_theta": 10000000.0}


def spread_(model):
    g = torch.Generator().manual_seed(SEED + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            if p.ndim >= 2:
                fan_in = p.shape[-1] if p.ndim == 2 else int(math.prod(p.shape[1:]))
                scale = 0.1 if "embed" in name else 1.0 / math.sqrt(max(fan_in, 1))
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            elif "A_log" in name or "dt_bias" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(p.to(torch.bfloat16).to(p.dtype))


def shapes():
    from transformers import (Qwen3_5ForCausalLM, Qwen3_5TextConfig, Qwen3NextConfig,
                              Qwen3NextForCausalLM)
    L, F = "linear_attention", "full_attention"
    out = {
        # V heads 3x K heads, K wider than V, GQA 3:1, partial RoPE of half
        # the dims, attention at layers 1 and 5; 200 tokens: 3 chunks + 8.
        "qwen3_5_kv3": (Qwen3_5ForCausalLM, Qwen3_5TextConfig(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=6,
            layer_types=[L, F, L, L, L, F], num_attention_heads=6, num_key_value_heads=2,
            head_dim=16, linear_num_key_heads=2, linear_num_value_heads=6,
            linear_key_head_dim=32, linear_value_head_dim=16, linear_conv_kernel_dim=4,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters=dict(ROPE, partial_rotary_factor=0.5, mrope_section=[2, 1, 1],
                                 mrope_interleaved=True),
            attn_implementation="eager", bos_token_id=1, eos_token_id=2), 200),
        # As many V heads as K heads, 24 wide (not a multiple of 16), a
        # 3-tap convolution, tied embeddings; 128 tokens: exactly 2 chunks.
        "qwen3_5_kv1": (Qwen3_5ForCausalLM, Qwen3_5TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=4,
            layer_types=[L, L, L, F], num_attention_heads=4, num_key_value_heads=4,
            head_dim=16, linear_num_key_heads=3, linear_num_value_heads=3,
            linear_key_head_dim=24, linear_value_head_dim=24, linear_conv_kernel_dim=3,
            max_position_embeddings=512, tie_word_embeddings=True,
            rope_parameters=dict(ROPE, partial_rotary_factor=0.25, mrope_section=[2, 1, 1],
                                 mrope_interleaved=True),
            attn_implementation="eager", bos_token_id=1, eos_token_id=2), 128),
        # Qwen3-Next with one K head for 4 V heads, 4 experts of which 1 is
        # chosen, not renormalised, layer 0 a dense MLP; 100 tokens.
        "qwen3_next_kv4": (Qwen3NextForCausalLM, Qwen3NextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            layer_types=[L, L, F, L], num_attention_heads=4, num_key_value_heads=1,
            head_dim=16, linear_num_key_heads=1, linear_num_value_heads=4,
            linear_key_head_dim=16, linear_value_head_dim=32, linear_conv_kernel_dim=4,
            num_experts=4, num_experts_per_tok=1, moe_intermediate_size=24,
            shared_expert_intermediate_size=40, norm_topk_prob=False, decoder_sparse_step=1,
            mlp_only_layers=[0], max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters=dict(ROPE, partial_rotary_factor=0.5),
            attn_implementation="eager", bos_token_id=1, eos_token_id=2), 100),
    }
    try:  # the Qwen3.5 MoE text model, where this transformers has it
        from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
        out["qwen3_5_moe"] = (Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4, layer_types=[L, L, L, F],
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
            linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=32,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters=dict(ROPE, partial_rotary_factor=0.25, mrope_section=[2, 1, 1],
                                 mrope_interleaved=True),
            attn_implementation="eager", bos_token_id=1, eos_token_id=2), 150)
    except ImportError as e:
        print(f"[skip] qwen3_5_moe: {e}")
    return out


def main():
    out_dir = sys.argv[1]
    made = []
    for name, (cls, cfg, n_prompt) in shapes().items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(SEED)
        model = cls(cfg).eval()
        spread_(model)
        ids = torch.randint(3, VOCAB, (n_prompt,), generator=torch.Generator().manual_seed(SEED + 1))
        with torch.no_grad():
            logits = model(ids[None], use_cache=False).logits[0].float()
            greedy = model.generate(ids[None], max_new_tokens=GREEDY_LEN, do_sample=False,
                                    use_cache=True, pad_token_id=0, eos_token_id=None)
        save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous(),
                   "greedy_ids": greedy[0, n_prompt:].to(torch.int32).contiguous()},
                  os.path.join(d, "ref.safetensors"))
        model.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))
        made.append((name, d, ids, logits))
        print(f"[ok] {name}: {n_prompt} tokens, greedy {greedy[0, n_prompt:].tolist()}")
    # Float64 last: keep_float64 patches torch for the rest of the process.
    make_f64_reference.keep_float64()
    for name, d, ids, logits in made:
        from transformers import AutoModelForCausalLM
        kw = dict(dtype=torch.float64, attn_implementation="eager")
        try:
            model = AutoModelForCausalLM.from_pretrained(d, experts_implementation="eager", **kw)
        except (TypeError, ValueError):
            model = AutoModelForCausalLM.from_pretrained(d, **kw)
        model.eval()
        not_f64 = make_f64_reference.check_float64(model)
        with torch.no_grad():
            exact = model(ids[None].long(), use_cache=False).logits[0]
        if not_f64:
            print(f"{name}: outputs not in float64: {sorted(set(map(str, not_f64)))}")
        err = (exact - logits.double()).abs().max().item() / logits.abs().max().item()
        # Through numpy: .float() and .to(float32) are float64 under keep_float64.
        exact32 = torch.from_numpy(exact.numpy().astype("float32"))
        save_file({"logits": exact32.contiguous()}, os.path.join(d, "ref_exact.safetensors"))
        print(f"{name}: float32 reference vs float64: max relative logit error {err:.3e}")


if __name__ == "__main__":
    main()
