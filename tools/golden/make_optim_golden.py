#!/usr/bin/env python3
"""Golden tensors for IlgpuTune's optimizer path: torch.optim.AdamW + GradScaler + clip_grad_norm_.

Three seeded fp32 parameters go through 6 iterations of the mmengine AmpOptimWrapper order
(formats.md §6.2): given scaled grads -> scaler.unscale_ -> clip_grad_norm_(max_norm=1) -> scaler.step -> scaler.update.
Iteration 2 has an inf in one grad, so its step is skipped and the scale backs off; growth_interval is 3 so the
scale also grows once. The lr is set before each iteration (1e-3 times a factor) to check the decay uses the current lr.
AdamW: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01, amsgrad off, foreach off (torch's CPU default).

Writes <out>/adamw.safetensors (runs on CPU in a second):
  param0.{i}                                initial parameters
  it{k}.lr [1]                              lr used in iteration k, rounded to F32 (exact: 1e-3 * lr_factors[k])
  it{k}.grad_in.{i}                         scaled grads handed to the scaler
  it{k}.inv_scale [1]                       float32(1/double(scale))
  it{k}.found_inf [1]                       1.0 or 0.0
  it{k}.grad_unscaled.{i}                   after unscale_
  it{k}.total_norm [1]                      clip_grad_norm_'s return (pre-clip)
  it{k}.grad_clipped.{i}                    after clipping
  it{k}.param.{i}, it{k}.exp_avg.{i}, it{k}.exp_avg_sq.{i}, it{k}.step.{i} [1]   after scaler.step
  it{k}.scale [1], it{k}.growth_tracker [1] after scaler.update
Usage: python3 tools/golden/make_optim_golden.py --out DIR
"""
import argparse
import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch
from safetensors.torch import save_file, load_file

SHAPES = [(4, 3), (5,), (2, 3, 2)]
LR, BETAS, EPS, WD, MAX_NORM = 1e-3, (0.9, 0.999), 1e-8, 0.01, 1.0
LR_FACTORS = [1.0, 1.0, 0.5, 1.0, 0.25, 1.0]
GRAD_SIZES = [0.5, 0.05, 0.5, 0.3, 0.02, 0.7]  # some iterations clip (norm > 1), some do not
INF_ITER = 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(20240601)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    out = {f"param0.{i}": p.detach().clone() for i, p in enumerate(params)}
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    gen = torch.Generator().manual_seed(7)

    def one(x):
        return torch.tensor([float(x)], dtype=torch.float32)

    for k in range(len(LR_FACTORS)):
        lr = LR * LR_FACTORS[k]
        for g in opt.param_groups:
            g["lr"] = lr
        scaler.scale(torch.ones(()))  # what backward on the scaled loss does first (also initializes the scale)
        scale = scaler.get_scale()
        for i, p in enumerate(params):
            p.grad = (torch.randn(p.shape, generator=gen) * GRAD_SIZES[k] * scale).float()
        if k == INF_ITER:
            params[1].grad[3] = float("inf")
        for i, p in enumerate(params):
            out[f"it{k}.grad_in.{i}"] = p.grad.clone()
        out[f"it{k}.lr"] = one(lr)
        out[f"it{k}.inv_scale"] = torch.tensor([1.0 / scale], dtype=torch.float64).float()
        scaler.unscale_(opt)
        found = sum(v.item() for v in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values())
        out[f"it{k}.found_inf"] = one(found)
        for i, p in enumerate(params):
            out[f"it{k}.grad_unscaled.{i}"] = p.grad.clone()
        total = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        out[f"it{k}.total_norm"] = total.reshape(1).float().clone()
        for i, p in enumerate(params):
            out[f"it{k}.grad_clipped.{i}"] = p.grad.clone()
        scaler.step(opt)
        scaler.update()
        for i, p in enumerate(params):
            st = opt.state.get(p, {})
            out[f"it{k}.param.{i}"] = p.detach().clone()
            out[f"it{k}.exp_avg.{i}"] = st["exp_avg"].clone() if st else torch.zeros_like(p)
            out[f"it{k}.exp_avg_sq.{i}"] = st["exp_avg_sq"].clone() if st else torch.zeros_like(p)
            out[f"it{k}.step.{i}"] = one(st["step"].item() if st else 0)
        out[f"it{k}.scale"] = one(scaler.get_scale())
        out[f"it{k}.growth_tracker"] = one(scaler.state_dict()["_growth_tracker"])
        print(f"it{k}: lr {lr:g} found_inf {found} total_norm {total.item():.6g} scale {scaler.get_scale()} "
              f"tracker {scaler.state_dict()['_growth_tracker']}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "adamw.safetensors")
    meta = {"format_version": "1", "script": "tools/golden/make_optim_golden.py", "torch": torch.__version__,
            "lr": repr(LR), "betas": repr(BETAS), "eps": repr(EPS), "weight_decay": repr(WD), "max_norm": repr(MAX_NORM),
            "growth_interval": "3", "lr_factors": ",".join(repr(f) for f in LR_FACTORS), "inf_iter": str(INF_ITER), "iterations": str(len(LR_FACTORS))}
    out = {k: v.contiguous() for k, v in sorted(out.items())}
    save_file(out, path, metadata=meta)
    back = load_file(path)
    ok = all(torch.equal(back[k].nan_to_num(), v.nan_to_num()) and torch.equal(back[k].isnan(), v.isnan()) for k, v in out.items())
    print(("ok" if ok else "FAIL") + f" {path} reads back ({len(out)} tensors), torch {torch.__version__}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
