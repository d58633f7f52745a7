#!/usr/bin/env python3
"""SDPA peer lines for the tensor-core flash-attention bench (AttentionBench): torch.nn.functional.scaled_dot_product_attention,
bf16, batch 1, heads = 4096 / d, causal and not, forward and backward, seq 512..8192. Same method as peer_kernels.py: CUDA
events after warm-up, median of repeats. FLOPs: fwd 4*h*seq^2*d (halved when causal), bwd 2.5x that. One JSON line each."""
import json, torch, torch.nn.functional as F

def bench(fn, reps=20, warm=5):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
    ts.sort(); return ts[len(ts) // 2]

dev = torch.cuda.get_device_name()
def out(**k): print(json.dumps(dict(peer="torch", torch=torch.__version__, device=dev, **k)), flush=True)

for seq in (512, 1024, 2048, 4096, 8192):
    for d in (64, 128):
        h = 4096 // d
        q = torch.randn(1, h, seq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn_like(q, requires_grad=True); v = torch.randn_like(q, requires_grad=True)
        for causal in (True, False):
            fl = 4 * h * seq * seq * d / (2 if causal else 1)
            tag = "_causal" if causal else ""
            t = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
            out(op="sdpa_fwd" + tag, seq=seq, d=d, heads=h, s=t, tflops=fl / t / 1e12)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal); g = torch.randn_like(o)
            t = bench(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
            out(op="sdpa_bwd" + tag, seq=seq, d=d, heads=h, s=t, tflops=2.5 * fl / t / 1e12)
