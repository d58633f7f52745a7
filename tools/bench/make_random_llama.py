#!/usr/bin/env python3
"""Writes a random-init Llama of one of peer_hf_peft.py's shapes as an HF folder (bf16 safetensors), so ilgpu-tune can
train the same shape the PyTorch peer measures. Run on the GPU machine:
    python3 tools/bench/make_random_llama.py --shape tiny --vocab 32000 --out /tmp/m-tiny
"""
import argparse, torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4),
    "tinyllama_1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4),
    "llama2_7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "llama3_8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      rope_theta=500000.0),
}

ap = argparse.ArgumentParser()
ap.add_argument("--shape", choices=SHAPES, required=True)
ap.add_argument("--vocab", type=int, default=32000)
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.manual_seed(0)
cfg = LlamaConfig(**SHAPES[a.shape], vocab_size=a.vocab, max_position_embeddings=4096, torch_dtype="bfloat16")
with torch.device("cuda"):
    m = LlamaForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained(a.out)
print(f"{a.shape}: {sum(p.numel() for p in m.parameters()) / 1e6:.1f} M parameters -> {a.out}")
