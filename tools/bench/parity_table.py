#!/usr/bin/env python3
"""Issue 21's CUDA table: the worst relative error per family and path from `ilgpu-tune parity` outputs.
    python3 tools/bench/parity_table.py DIR > DIR/families-cuda.md
DIR holds parity-cuda.txt (fp32, precompiled PTX), parity-cuda-bf16.txt, parity-cuda-jit.txt (fp32, ILGPU JIT) and
parity-cuda-qlora-bf16.txt, as benchmarks/run_cuda_families.sh writes them; device.txt names the GPU."""
import os
import sys
from collections import defaultdict

PATHS = [("parity-cuda.txt", "fp32, precompiled PTX"), ("parity-cuda-jit.txt", "fp32, ILGPU JIT"),
         ("parity-cuda-bf16.txt", "bf16, precompiled PTX"), ("parity-cuda-qlora-bf16.txt", "QLoRA bf16")]


def parse(path):
    """{family: {"out": worst rel of outputs, "grad": worst rel of grads, "n": rows, "fail": failed rows}}"""
    fams = defaultdict(lambda: dict(out=0.0, grad=0.0, n=0, fail=0))
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 7 or "/" not in parts[0] or parts[-1] not in ("yes", "NO"):
                continue
            fam, tensor, rel = parts[0].split("/")[0], parts[1], float(parts[-3])
            r = fams[fam]
            key = "grad" if tensor.startswith("grad.") or ".grad" in tensor or "lora_grad" in tensor else "out"
            r[key] = max(r[key], rel)
            r["n"] += 1
            r["fail"] += parts[-1] == "NO"
    return fams


def main(d):
    device = open(os.path.join(d, "device.txt")).read().strip() if os.path.exists(os.path.join(d, "device.txt")) else "?"
    tables = {name: parse(os.path.join(d, fn)) for fn, name in PATHS if os.path.exists(os.path.join(d, fn))}
    fams = sorted({f for t in tables.values() for f in t})
    print(f"# Parity with transformers on CUDA, every fixture family ({device})\n")
    print("`ilgpu-tune parity tests/fixtures/tiny/* --device cuda [--bf16]` against the fp32 goldens of transformers "
          "(tests/fixtures/tiny, made by tools/golden/make_tiny_models.py): full fine-tuning logits / loss / grads, LoRA "
          "logits / loss / grads, the packed batch, MoE aux losses. Worst relative error (max |ours - hf| / max |hf|) of "
          "outputs and of gradients per family; limits fp32 1e-4 / 1e-3, bf16 3e-2 / 8e-2. Made by "
          "benchmarks/run_cuda_families.sh + tools/bench/parity_table.py.\n")
    names = list(tables)
    print("| family | " + " | ".join(f"{n}: outputs / grads (rows, failed)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for fam in fams:
        cells = []
        for n in names:
            r = tables[n].get(fam)
            cells.append("—" if r is None else f"{r['out']:.2e} / {r['grad']:.2e} ({r['n']}, {r['fail']})")
        print(f"| {fam} | " + " | ".join(cells) + " |")
    total = {n: (sum(r["n"] for r in t.values()), sum(r["fail"] for r in t.values())) for n, t in tables.items()}
    print("\n" + "; ".join(f"{n}: {a} rows, {b} failed" for n, (a, b) in total.items()))


if __name__ == "__main__":
    main(sys.argv[1])
