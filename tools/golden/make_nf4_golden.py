#!/usr/bin/env python3
"""Golden tensors for IlgpuTune's NF4/FP4 blockwise quantization with double quantization (bitsandbytes semantics).

bitsandbytes is not installed where this runs, so this is the documented algorithm (shared research formats.md §5) in
torch ops, mirroring bitsandbytes@95f9af3's CUDA kernels (csrc/kernels.cu kQuantizeBlockwise / kQuantizeBlockwiseSmall,
dQuantizeNF4, dQuantizeFP4, dQuantize<0>, kDequantizeBlockwise) and functional.py (quantize_4bit with
compress_statistics, create_dynamic_map, dequantize_4bit). All math in fp32 on the CPU:
  absmax[b] = max |x| over 64 consecutive elements (the partial last block is zero-filled, as the kernel loads it)
  s = x * (1 / absmax[b])        reciprocal multiply, as CUDA; an all-zero block gives 0 * inf = NaN
  NF4: q = number of decision-tree thresholds t with s > t (the CUDA tree's fp32 literals; NaN -> 0)
  FP4: sign 0b1000 if s < 0; |s| level through the CUDA thresholds -> bit pattern
  packed byte k = q[2k] << 4 | q[2k+1]; odd n: the pad nibble is the zero-filled element's code
  offset = mean(absmax); a = absmax - offset; 8-bit blockwise (256) of a with the signed dynamic map, nearest code by
  the CUDA pivot search of dQuantize<0>; absmax2[c] = max |a| over block c
  dequant: absmax' = dyn[qabsmax] * absmax2[b/256] + offset (two fp32 ops); w = code4[nibble] * absmax'
Where the pure-torch backend (backends/default/ops.py) differs from CUDA this follows CUDA (the path that wrote real
checkpoints): an all-zero block packs 0x00 (NaN -> code 0) where torch's backend gives 0x77, its partial block divides
instead of multiplying by the reciprocal, and its FP4 table has +0.0 where CUDA dequantizes pattern 0b1000 to -0.0.

Writes <out>/nf4.safetensors:
  code.nf4 [16], code.fp4 [16] (CUDA dequant values, -0.0 at 8), code.dynamic [256]  F32
  thresholds.nf4 [15], thresholds.fp4 [7]                                               F32 (CUDA literals)
  {case}.input [n] F32; for t in nf4, fp4:
  {case}.{t}.packed U8 [(n+1)/2, 1]   {case}.{t}.absmax F32 [nb]    {case}.{t}.dequant F32 [n] (plain absmax)
  {case}.{t}.offset F32 [1]           {case}.{t}.qabsmax U8 [nb]    {case}.{t}.absmax2 F32 [ceil(nb/256)]
  {case}.{t}.absmax_dq F32 [nb]       {case}.{t}.dequant_nested F32 [n]   {case}.{t}.dequant_nested_bf16 BF16 [n]
  bw8.input F32 [600], bw8.q U8, bw8.absmax F32: 8-bit dynamic blockwise (256) on midpoints and a zero block
Usage: python3 tools/golden/make_nf4_golden.py --out DIR
"""
import argparse
import os
import struct
from fractions import Fraction

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch
from safetensors.torch import save_file, load_file

F32 = torch.float32
NF4_CODE = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0]
# dQuantizeNF4's tree, flattened in ascending order (s > t for k thresholds -> code k)
# CUDA's thresholds are float literals, which a C++ compiler rounds from the decimal; float(python double) would round
# twice and miss by one ulp on 4 of them (they sit on fp32 ties: midpoints of fp32 codes), so round the decimals here.
NF4_T = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984,
         -0.13791173323988914, -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668,
         0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011]
FP4_T = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]
FP4_PATTERN = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011]  # level (ascending magnitude) -> bits
FP4_LUT = [0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25]


def f32_literal(values):
    # correctly rounded decimal -> fp32, ties to even, as a C++ compiler converts `0.123f`
    out = []
    for v in values:
        exact = Fraction(repr(v))
        b = struct.unpack("<I", struct.pack("<f", v))[0]
        near = [c for c in (b - 1, b, b + 1) if 0 <= c < 2 ** 32]
        val = lambda c: Fraction(struct.unpack("<f", struct.pack("<I", c))[0])
        out.append(struct.unpack("<f", struct.pack("<I", min(near, key=lambda c: (abs(val(c) - exact), c & 1))))[0])
    return torch.tensor(out, dtype=F32)


def dynamic_map():
    # functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), verbatim
    data = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2 ** i + 1, dtype=F32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data.sort()
    return torch.tensor(data, dtype=F32)


def blocks_of(x, bs):
    n = x.numel()
    nb = (n + bs - 1) // bs
    padded = torch.zeros(nb * bs, dtype=F32)
    padded[:n] = x
    return padded.view(nb, bs), nb


def quantize_4bit(x, quant_type, blocksize=64):
    n = x.numel()
    blk, nb = blocks_of(x, blocksize)
    absmax = blk.abs().amax(dim=1)
    s = blk * (torch.ones((), dtype=F32) / absmax).view(-1, 1)
    if quant_type == "nf4":
        q = (s.unsqueeze(-1) > f32_literal(NF4_T)).sum(-1)
    else:
        level = (s.abs().unsqueeze(-1) > f32_literal(FP4_T)).sum(-1)
        q = torch.tensor(FP4_PATTERN)[level] + (s < 0).long() * 8
    q = q.reshape(-1)[: n + (n & 1)].to(torch.uint8)
    packed = ((q[0::2] << 4) | q[1::2]).unsqueeze(1)
    return packed, absmax


def dquantize8(code, x):
    # dQuantize<0>(smem_code, 0, x), vectorized
    pivot = torch.full(x.shape, 127, dtype=torch.long)
    upper_pivot = torch.full(x.shape, 255, dtype=torch.long)
    lower_pivot = torch.zeros(x.shape, dtype=torch.long)
    lower = torch.full(x.shape, -1.0, dtype=F32)
    upper = torch.full(x.shape, 1.0, dtype=F32)
    val = code[pivot]
    i = 64
    while i > 0:
        up = x > val
        lower_pivot = torch.where(up, pivot, lower_pivot)
        lower = torch.where(up, val, lower)
        upper_pivot = torch.where(up, upper_pivot, pivot)
        upper = torch.where(up, upper, val)
        pivot = torch.where(up, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    upper = torch.where(upper_pivot == 255, code[255], upper)
    lower = torch.where(lower_pivot == 0, code[0], lower)
    half = torch.tensor(0.5, dtype=F32)
    mid_up = (upper + val) * half
    mid_lo = (lower + val) * half
    q = torch.where(x > val, torch.where(x > mid_up, upper_pivot, pivot), torch.where(x < mid_lo, lower_pivot, pivot))
    return q.to(torch.uint8)


def quantize_blockwise8(code, a):
    n = a.numel()
    blk, nb = blocks_of(a, 256)
    absmax = blk.abs().amax(dim=1)
    s = blk * (torch.ones((), dtype=F32) / absmax).view(-1, 1)
    return dquantize8(code, s).reshape(-1)[:n], absmax


def code4(quant_type):
    if quant_type == "nf4":
        return torch.tensor(NF4_CODE, dtype=F32)
    lut = f32_literal(FP4_LUT)
    return torch.cat([lut, lut * torch.tensor(-1.0, dtype=F32)])


def dequantize_4bit(packed, absmax, quant_type, n, blocksize=64):
    p = packed.reshape(-1).long()
    q = torch.stack([p >> 4, p & 15], dim=1).reshape(-1)[:n]
    return code4(quant_type)[q] * absmax[torch.arange(n) // blocksize]


def cases():
    g = torch.Generator().manual_seed(20261123)
    out = {}
    out["rand"] = torch.randn(150 * 130, generator=g, dtype=F32) * 0.02  # 305 blocks: two nested blocks, partial
    out["odd"] = torch.randn(7 * 13, generator=g, dtype=F32)  # odd n, one partial block
    out["bf16"] = (torch.randn(64 * 96, generator=g, dtype=F32) * 0.05).to(torch.bfloat16).to(F32)
    e = torch.zeros(64 * 6 + 5, dtype=F32)  # block 0 and the partial last block stay all zero
    t = f32_literal(NF4_T)
    b1 = torch.cat([torch.ones(1), t, torch.nextafter(t, torch.full_like(t, 2)), torch.nextafter(t, torch.full_like(t, -2)),
                    torch.tensor(NF4_CODE[:18], dtype=F32)])
    e[64:64 + b1.numel()] = b1
    tf = f32_literal(FP4_T)
    b2 = torch.cat([torch.ones(1), tf, -tf, torch.nextafter(tf, torch.ones(7)), -torch.nextafter(tf, torch.zeros(7)),
                    torch.tensor([-0.0, 0.0, -1.0, 0.5])])
    e[128:128 + b2.numel()] = b2
    e[192:256] = torch.randn(64, generator=g) * 1e-39  # subnormal block
    e[256:320] = torch.randn(64, generator=g) * 1e30
    e[320:384] = -torch.rand(64, generator=g) * 3  # negative absmax
    e[256 + 5] = -3e30
    out["edge"] = e
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    dyn = dynamic_map()
    res = {"code.nf4": torch.tensor(NF4_CODE, dtype=F32), "code.fp4": code4("fp4"), "code.dynamic": dyn,
           "thresholds.nf4": f32_literal(NF4_T), "thresholds.fp4": f32_literal(FP4_T)}
    ok = True

    def check(name, cond):
        nonlocal ok
        ok &= bool(cond)
        print(("ok   " if cond else "FAIL ") + name)

    check("dynamic map: 256 sorted, no -1, ends at 1", dyn.numel() == 256 and bool((dyn[1:] > dyn[:-1]).all())
          and dyn[0].item() > -1 and dyn[255].item() == 1.0 and dyn[127].item() == 0.0)
    for name, x in cases().items():
        n = x.numel()
        res[f"{name}.input"] = x
        for qt in ("nf4", "fp4"):
            packed, absmax = quantize_4bit(x, qt)
            offset = absmax.mean()
            qabs, absmax2 = quantize_blockwise8(dyn, absmax - offset)
            absmax_dq = dyn[qabs.long()] * absmax2[torch.arange(absmax.numel()) // 256]
            absmax_dq = absmax_dq + offset
            deq = dequantize_4bit(packed, absmax, qt, n)
            deq_n = dequantize_4bit(packed, absmax_dq, qt, n)
            k = f"{name}.{qt}"
            res.update({f"{k}.packed": packed, f"{k}.absmax": absmax, f"{k}.offset": offset.reshape(1),
                        f"{k}.qabsmax": qabs, f"{k}.absmax2": absmax2, f"{k}.absmax_dq": absmax_dq,
                        f"{k}.dequant": deq, f"{k}.dequant_nested": deq_n,
                        f"{k}.dequant_nested_bf16": deq_n.to(torch.bfloat16)})
            nz = absmax[torch.arange(n) // 64] > 1e-30  # zero and subnormal blocks (1/absmax = inf) differ
            if qt == "nf4":
                # away from all-zero blocks, the pure-torch backend's bucketize (fp32 midpoints) gives the same codes
                s = x / absmax[torch.arange(n) // 64]
                bounds = (res["code.nf4"][:-1] + res["code.nf4"][1:]) / 2
                qb = torch.bucketize(s, bounds)
                p = packed.reshape(-1).long()
                q = torch.stack([p >> 4, p & 15], dim=1).reshape(-1)[:n]
                # except at the 4 thresholds where the CUDA literal is one ulp off the fp32 midpoint
                diff = int((q[nz] != qb[nz]).sum())
                check(f"{k}: tree == bucketize on nonzero blocks but {diff} threshold values", diff <= (16 if name == "edge" else 0))
            gap = (code4(qt).sort().values.diff().max() / 2)
            err = ((deq - x).abs() - gap * absmax[torch.arange(n) // 64]).max()
            check(f"{k}: |dequant - x| <= half max gap * absmax", err <= 1e-6 * x.abs().max())
    b = torch.zeros(600, dtype=F32)
    b[0] = 1.0
    mids = (dyn[:-1] + dyn[1:]) * torch.tensor(0.5, dtype=F32)
    b[1:256] = mids
    b[256] = 1.0
    b[257:512] = torch.nextafter(mids, torch.full_like(mids, 2.0))
    # 512..599 stays zero: the NaN path
    q8, am8 = quantize_blockwise8(dyn, b)
    res.update({"bw8.input": b, "bw8.q": q8, "bw8.absmax": am8})
    # dQuantize<0> breaks an exact tie toward the search's final pivot, which may be either neighbour
    low = int((q8[1:256].long() == torch.arange(255)).sum())
    check(f"bw8: exact midpoints go to a neighbour ({low} lower, {255 - low} upper)",
          bool(((q8[1:256].long() - torch.arange(255)).abs() <= 1).all() and ((q8[1:256].long() - torch.arange(255)) >= 0).all()))
    check("bw8: above midpoints go to the upper code", bool((q8[257:512].long() == torch.arange(1, 256)).all()))
    meta = {"script": "tools/golden/make_nf4_golden.py", "torch": torch.__version__, "bitsandbytes": "95f9af3 (algorithm)"}
    path = os.path.join(args.out, "nf4.safetensors")
    save_file({k: v.contiguous() for k, v in sorted(res.items())}, path, metadata=meta)
    back = load_file(path)
    check("file reads back", all(torch.equal(back[k].view(torch.uint8), res[k].contiguous().view(torch.uint8)) for k in res))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
