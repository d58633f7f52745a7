#!/usr/bin/env python3
"""QLoRA golden for IlgpuTune: the tiny Llama fixture with every decoder linear stored as bitsandbytes NF4 (blocks of 64,
double quantization), and the fixture's PEFT LoRA adapter on top.

bitsandbytes is not installed where this runs, so the 4-bit quantizer is the torch reference of make_nf4_golden.py (the
documented CUDA algorithm, formats.md §5), imported from the same folder. What transformers + bnb do for QLoRA is
  W4 = quantize_4bit(W, nf4, blocksize 64, compress_statistics=True)   for q,k,v,o,gate,up,down of every layer
  forward/backward = the model with each such W replaced by dequantize_4bit(W4) (fp32 here: bnb_4bit_compute_dtype
  float32), embeddings, norms and lm_head untouched (formats.md §5.5); LoRA A/B trainable, base frozen.
So this script dequantizes every quantized linear to fp32, loads it into LlamaForCausalLM, attaches the fixture adapter
(tests/fixtures/tiny/llama/adapter: r 4, alpha 8, every A and B 0.1*randn, so B != 0 and all grads are non-trivial)
and runs the fixture's inputs.

Writes <out>/qlora.safetensors (fp32 CPU, deterministic):
  input_ids, labels             I32 [2,16]   copied from the fixture's golden.safetensors
  logits F32 [2,16,128], loss F32 []         the QLoRA model
  lora_grad.<adapter key>       F32          d loss / d LoRA weight, keys as in adapter_model.safetensors
  q.<weight key>.packed U8 [(n+1)/2, 1], .qabsmax U8 [n/64], .absmax2 F32 [ceil(n/64/256)], .offset F32 [1]
                                             the quantized bytes of each decoder linear (offset = torch's mean(absmax))
  q.<weight key>.offset_f64 F32 [1], .qabsmax_f64, .absmax2_f64
                                             the same with mean(absmax) summed in float64 and rounded once (the engine's
                                             offset; the logits above use torch's, as bnb)
Usage: python3 tools/golden/make_qlora_golden.py --out DIR [--fixture tests/fixtures/tiny/llama]
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import transformers
import peft
from safetensors.torch import save_file, load_file

import make_nf4_golden as nf4

F32 = torch.float32
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
           "mlp.down_proj"]


def lora_key(peft_name):
    return peft_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def quantize_nested(w):
    # bnb quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True) and dequantize_4bit, fp32
    x = w.detach().reshape(-1).to(F32)
    n = x.numel()
    packed, absmax = nf4.quantize_4bit(x, "nf4")
    offset = absmax.mean()
    dyn = nf4.dynamic_map()
    qabs, absmax2 = nf4.quantize_blockwise8(dyn, absmax - offset)
    absmax_dq = dyn[qabs.long()] * absmax2[torch.arange(absmax.numel()) // 256]
    absmax_dq = absmax_dq + offset
    deq = nf4.dequantize_4bit(packed, absmax_dq, "nf4", n).reshape(w.shape)
    # The engine sums the mean in float64 (torch's fp32 reduction can differ in the last bit): its statistics too.
    offset_f64 = absmax.double().mean().float()
    qabs_f64, absmax2_f64 = nf4.quantize_blockwise8(dyn, absmax - offset_f64)
    return deq, {"packed": packed, "qabsmax": qabs, "absmax2": absmax2, "offset": offset.reshape(1),
                 "offset_f64": offset_f64.reshape(1), "qabsmax_f64": qabs_f64, "absmax2_f64": absmax2_f64}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixture", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                                       "fixtures", "tiny", "llama"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    ok = True

    def check(name, cond):
        nonlocal ok
        ok &= bool(cond)
        print(("ok   " if cond else "FAIL ") + name)

    fixture = os.path.abspath(args.fixture)
    ref = load_file(os.path.join(fixture, "golden.safetensors"))
    input_ids, labels = ref["input_ids"].long(), ref["labels"].long()
    try:
        model = transformers.LlamaForCausalLM.from_pretrained(fixture, dtype=F32, attn_implementation="eager")
    except TypeError:
        model = transformers.LlamaForCausalLM.from_pretrained(fixture, torch_dtype=F32, attn_implementation="eager")
    model.train()
    res = {"input_ids": ref["input_ids"], "labels": ref["labels"]}
    state = model.state_dict()
    max_err, same_offset = 0.0, 0
    with torch.no_grad():
        for i in range(model.config.num_hidden_layers):
            for lin in LINEARS:
                key = f"model.layers.{i}.{lin}.weight"
                w = state[key]
                deq, q = quantize_nested(w)
                max_err = max(max_err, ((deq - w).abs().max() / w.abs().max()).item())
                same_offset += int(torch.equal(q["offset"], q["offset_f64"]))
                for k2, t in q.items():
                    res[f"q.{key}.{k2}"] = t.contiguous()
                w.copy_(deq)
    n_lin = model.config.num_hidden_layers * len(LINEARS)
    check(f"{n_lin} linears quantized, max |dequant - w| / max|w| = {max_err:.3f} (NF4: < 0.2)", 0 < max_err < 0.2)
    print(f"info  torch mean(absmax) == float64 mean for {same_offset} of {n_lin} offsets")

    pm = peft.PeftModel.from_pretrained(model, os.path.join(fixture, "adapter"), is_trainable=True)
    pm.train()
    lora_params = {n: p for n, p in pm.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    check(f"only the {len(lora_params)} LoRA weights are trainable",
          sorted(trainable) == sorted(lora_params) and len(lora_params) == 2 * n_lin)
    adapter = load_file(os.path.join(fixture, "adapter", "adapter_model.safetensors"))
    check("adapter weights loaded as saved", all(torch.equal(adapter[lora_key(n)], p.detach()) for n, p in lora_params.items()))
    out = pm(input_ids=input_ids, labels=labels, use_cache=False)
    out.loss.backward()
    res["logits"] = out.logits.detach().clone().contiguous()
    res["loss"] = out.loss.detach().clone().reshape(())
    for n, p in lora_params.items():
        res["lora_grad." + lora_key(n)] = p.grad.detach().clone().contiguous()
    check("every LoRA grad is non-zero", all(p.grad.abs().max().item() > 0 for p in lora_params.values()))
    d = (res["logits"] - ref["lora_logits"]).abs().max().item() / ref["lora_logits"].abs().max().item()
    check(f"QLoRA logits differ from the fp32 LoRA golden by max {d:.3e} of max|logits| (quantization noise)", 0 < d < 0.5)
    print(f"info  loss {res['loss'].item():.6f} (fp32 LoRA golden {ref['lora_loss'].item():.6f})")

    meta = {"script": "tools/golden/make_qlora_golden.py", "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "fixture": "tests/fixtures/tiny/llama", "bitsandbytes": "95f9af3 (algorithm)"}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "qlora.safetensors")
    save_file({k: v.contiguous() for k, v in sorted(res.items())}, path, metadata=meta)
    back = load_file(path)
    check("file reads back", all(torch.equal(back[k].reshape(-1).view(torch.uint8), res[k].contiguous().reshape(-1).view(torch.uint8)) for k in res))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
