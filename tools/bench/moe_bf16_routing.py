#!/usr/bin/env python3
"""Why a tiny MoE fixture's bf16 parity can fail: transformers' own bf16 run against its fp32 golden, and how many
tokens pick different experts. Loads tests/fixtures/tiny/<arch> (hub layout) with transformers in fp32 and in bf16
(on the GPU if present), runs the golden's input_ids, and prints logits rel error (max |bf16 - fp32| / max |fp32|), the
count of (layer, token) whose top-k expert set differs, and the smallest top-k margin in fp32.
    python3 tools/bench/moe_bf16_routing.py tests/fixtures/tiny/mixtral"""
import sys
import torch
import transformers
from safetensors.torch import load_file

d = sys.argv[1]
dev = "cuda" if torch.cuda.is_available() else "cpu"
ids = load_file(f"{d}/golden.safetensors")["input_ids"].long().to(dev)
res = {}
for dt in (torch.float32, torch.bfloat16):
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=dt, attn_implementation="eager").to(dev).eval()
    with torch.no_grad():
        out = m(input_ids=ids, output_router_logits=True, use_cache=False)
    res[dt] = (out.logits.float(), [r.float() for r in out.router_logits], m.config)
(l32, r32, cfg), (l16, r16, _) = res[torch.float32], res[torch.bfloat16]
k = cfg.num_experts_per_tok
rel = ((l16 - l32).abs().max() / l32.abs().max()).item()
flips, margin = 0, float("inf")
for a, b in zip(r32, r16):
    ta, tb = a.topk(k, -1).indices.sort(-1).values, b.topk(k, -1).indices.sort(-1).values
    flips += int((ta != tb).any(-1).sum())
    s = a.sort(-1, descending=True).values
    margin = min(margin, (s[:, k - 1] - s[:, k]).min().item())
print(f"{d}: transformers bf16 vs its fp32 logits rel {rel:.3e}; (layer, token) pairs whose top-{k} set differs: {flips} "
      f"of {sum(r.shape[0] for r in r32)}; smallest fp32 top-{k} margin {margin:.2e}")
