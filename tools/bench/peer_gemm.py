#!/usr/bin/env python3
"""PyTorch peer for benchmarks/IlgpuTune.GpuBench gemm: torch.matmul in bf16 (bf16 out) at the bench's shapes and
layouts, timed the same way: CUDA events around 10 back-to-back calls, median of 7 pairs, after 3 warm-up calls.
Prints one JSON line per shape: {"layout","M","N","K","s","tflops"}."""
import json, torch

SHAPES = [("NT", 4096, 4096, 4096), ("NN", 4096, 4096, 4096), ("TN", 4096, 4096, 4096), ("NT", 8192, 8192, 8192),
          ("NT", 4096, 11008, 4096),
          ("NT", 2048, 4096, 4096), ("NT", 2048, 11008, 4096), ("NT", 2048, 4096, 11008), ("NN", 2048, 4096, 11008),
          ("TN", 11008, 4096, 2048),
          ("NT", 2048, 64, 4096), ("NT", 2048, 4096, 64), ("NN", 2048, 64, 4096), ("NN", 2048, 4096, 64),
          ("TN", 4096, 64, 2048), ("TN", 64, 4096, 2048), ("NT", 8192, 64, 4096), ("NT", 8192, 4096, 64)]


def bench(fn, reps=7, inner=10, warm=3):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(inner): fn()
        e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1e3 / inner)
    ts.sort(); return ts[len(ts) // 2]


dev = torch.cuda.get_device_name()
for layout, M, N, K in SHAPES:
    r = lambda *s: torch.rand(*s, device="cuda", dtype=torch.bfloat16) * 2 - 1
    if layout == "NT": a, b = r(M, K), r(N, K); fn = lambda: a @ b.t()
    elif layout == "NN": a, b = r(M, K), r(K, N); fn = lambda: a @ b
    else: a, b = r(K, M), r(K, N); fn = lambda: a.t() @ b
    t = bench(fn)
    print(json.dumps(dict(peer="torch", torch=torch.__version__, device=dev, op="gemm_bf16", layout=layout, M=M, N=N, K=K,
                          s=t, tflops=2 * M * N * K / t / 1e12)), flush=True)
