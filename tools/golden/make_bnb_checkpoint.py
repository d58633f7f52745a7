#!/usr/bin/env python3
"""Tiny bitsandbytes-4-bit checkpoints, laid out as transformers' save_pretrained of a bnb-quantized model writes them.

bitsandbytes is not installed where this runs, so the 4-bit tensors come from the torch reference of the CUDA kernels in
make_nf4_golden.py (same folder), and the serialized layout follows bitsandbytes@95f9af3 verbatim:
  nn/modules.py Linear4bit._save_to_state_dict: state dict = weight (and bias) + every item of quant_state.as_dict(packed=True)
  functional.py QuantState.as_dict(packed=True): tensors absmax, quant_map, [nested_absmax, nested_quant_map] and
      "quant_state.bitsandbytes__<type>" = utils.pack_dict_to_tensor({quant_type, blocksize, dtype, shape,
      [nested_blocksize, nested_dtype, nested_offset]}) = uint8 bytes of json.dumps(dict) (default separators)
  functional.py quantize_4bit: code = get_4bit_type(type) (torch.tensor(list) / max|.|: fp4's -0 is the int 0, so +0.0),
      compress_statistics: offset = absmax.mean(); quantize_blockwise(absmax - offset, blocksize=256) with
      create_dynamic_map() -> nested_absmax, nested_quant_map, nested_dtype "float32", nested_blocksize 256
  weight: uint8 [(n+1)//2, 1]
Files are written with safetensors' save_file(metadata={"format": "pt"}) as transformers does; config.json with
quantization_config = BitsAndBytesConfig(...).to_dict() through the model config's own to_json (sorted keys).

Writes <out>/bnb.tar holding:
  llama/config.json, llama/model.safetensors  LlamaForCausalLM (vocab 64, hidden 32, inter 40, 2 layers, 4 heads,
      2 kv heads), bf16, every Linear but lm_head NF4 + double quant (blocksize 64), compute dtype bfloat16
  llama/golden.safetensors  original.<key> (bf16 weight before quantization), dequant.<key> (bf16, what bnb's
      dequantize_4bit returns), absmax.<key> (F32, the dequantized nested absmax), input_ids I32 [1,12],
      logits F32 [1,12,64] (HF forward in fp32 of the model with every quantized Linear replaced by dequant.<key>)
  mixed/config.json, mixed/model.safetensors  loose Linear weights covering both types, nested and plain, odd n,
      partial blocks, blocksizes 32/64/128, dtypes f32/f16/bf16, plus plain float tensors (bias, norm, embedding)
  mixed/golden.safetensors  original.<key>, dequant.<key> (dtype of the weight), absmax.<key> (F32)
Usage: python3 tools/golden/make_bnb_checkpoint.py --out DIR
"""
import argparse
import io
import json
import os
import sys
import tarfile
import tempfile

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
from safetensors.torch import save_file, load_file

import make_nf4_golden as ng

F32 = torch.float32
ok = True


def check(name, cond):
    global ok
    ok &= bool(cond)
    print(("ok   " if cond else "FAIL ") + name)


def get_4bit_type(quant_type):
    # bitsandbytes functional.get_4bit_type, verbatim data, float32 default dtype
    if quant_type == "nf4":
        data = list(ng.NF4_CODE)
    else:
        data = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]
    data = torch.tensor(data)
    data.div_(data.abs().max())
    return data


def quantize(w, quant_type, nested, blocksize):
    """bnb quantize_4bit(w, blocksize, compress_statistics=nested, quant_type) -> (state dict items, dequant, absmax)."""
    x = w.float().reshape(-1)
    n = x.numel()
    packed, absmax = ng.quantize_4bit(x, quant_type, blocksize)
    qs = {"quant_type": quant_type, "blocksize": blocksize, "dtype": str(w.dtype).strip("torch."), "shape": list(w.shape)}
    items = {}
    if nested:
        dyn = ng.dynamic_map()
        offset = absmax.mean()
        qabs, absmax2 = ng.quantize_blockwise8(dyn, absmax - offset)
        absmax_dq = dyn[qabs.long()] * absmax2[torch.arange(absmax.numel()) // 256]
        absmax_dq = absmax_dq + offset
        items["absmax"] = qabs
        items["quant_map"] = get_4bit_type(quant_type)
        items["nested_absmax"] = absmax2
        items["nested_quant_map"] = dyn.clone()
        qs.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset.item()})
    else:
        absmax_dq = absmax
        items["absmax"] = absmax
        items["quant_map"] = get_4bit_type(quant_type)
    items[f"quant_state.bitsandbytes__{quant_type}"] = torch.tensor(list(json.dumps(qs).encode("utf-8")), dtype=torch.uint8)
    # CUDA kDequantizeBlockwise: fp32 product, stored in the output dtype
    deq = ng.dequantize_4bit(packed, absmax_dq, quant_type, n, blocksize).reshape(w.shape).to(w.dtype)
    return packed, items, deq, absmax_dq


def bnb_config(quant_type, double_quant, compute_dtype, as_object=False):
    """BitsAndBytesConfig(load_in_4bit=True, ...) (or its to_dict(), the quantization_config transformers writes)."""
    try:
        from transformers import BitsAndBytesConfig
        c = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                               bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)
        return c if as_object else c.to_dict()
    except Exception as e:  # the class may insist on bitsandbytes being installed
        check(f"BitsAndBytesConfig unavailable ({e!r}); writing its to_dict() by hand", False)
        return {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": str(compute_dtype).split(".")[1],
                "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": quant_type,
                "bnb_4bit_use_double_quant": double_quant, "llm_int8_enable_fp32_cpu_offload": False,
                "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None, "llm_int8_threshold": 6.0,
                "load_in_4bit": True, "load_in_8bit": False, "quant_method": "bitsandbytes"}


def quantized_state_dict(plain, spec):
    """plain: module state dict in order; spec: weight key -> (quant_type, nested, blocksize). Returns the saved state
    dict (Linear4bit._save_to_state_dict order: weight, bias, then the quant_state items), goldens."""
    sd, golden = {}, {}
    pending = {}
    for k, v in plain.items():
        if k in spec:
            qt, nested, bs = spec[k]
            packed, items, deq, absmax_dq = quantize(v, qt, nested, bs)
            sd[k] = packed
            module = k[: -len(".weight")]
            pending[module] = {k + "." + name: t for name, t in items.items()}
            golden[f"original.{k}"] = v
            golden[f"dequant.{k}"] = deq
            golden[f"absmax.{k}"] = absmax_dq
            check(f"{k}: |dequant - w| <= half max code gap * absmax",
                  float(((deq.float() - v.float()).abs().reshape(-1)
                         - (ng.code4(qt).sort().values.diff().max() / 2 + 0.01)
                         * absmax_dq[torch.arange(v.numel()) // bs]).max()) <= 0)
            if module + ".bias" not in plain:
                sd.update(pending.pop(module))
        else:
            sd[k] = v
            module = k.rsplit(".", 1)[0]
            if module in pending:
                sd.update(pending.pop(module))
    check("every quant_state emitted", not pending)
    return sd, golden


def write_dir(root, name, files):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for fname, writer in files.items():
        writer(os.path.join(d, fname))
    return d


def llama(root):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(4321)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      initializer_range=0.2, attn_implementation="eager")
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    g = torch.Generator().manual_seed(4322)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_((1 + 0.1 * torch.randn(p.shape, generator=g)).to(p.dtype))
    plain = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spec = {k: ("nf4", True, 64) for k in plain
            if k.endswith(".weight") and "proj" in k}  # all Linear layers; lm_head stays float (get_keys_to_not_convert)
    sd, golden = quantized_state_dict(plain, spec)

    # what transformers stores: the model config with the quantizer's config attached
    model.config.quantization_config = bnb_config("nf4", True, torch.bfloat16, as_object=True)
    model.config.dtype = torch.bfloat16

    deq_model = LlamaForCausalLM(cfg)
    deq_sd = {k: (golden[f"dequant.{k}"] if k in spec else v).float() for k, v in plain.items()}
    deq_model.load_state_dict(deq_sd)
    deq_model.eval()
    ids = torch.randint(0, 64, (1, 12), generator=g)
    with torch.no_grad():
        logits = deq_model(ids).logits.float()
    golden["input_ids"] = ids.to(torch.int32)
    golden["logits"] = logits
    check("llama logits finite and not flat", bool(torch.isfinite(logits).all()) and float(logits.std()) > 0.1)
    write_dir(root, "llama", {
        "config.json": lambda p: model.config.to_json_file(p, use_diff=True),
        "model.safetensors": lambda p: save_file(sd, p, metadata={"format": "pt"}),
        "golden.safetensors": lambda p: save_file({k: v.contiguous() for k, v in sorted(golden.items())}, p,
                                                  metadata={"script": "tools/golden/make_bnb_checkpoint.py",
                                                            "torch": torch.__version__}),
    })
    return sd, spec


def mixed(root):
    g = torch.Generator().manual_seed(4323)

    def rnd(shape, dtype, scale=0.05):
        return (torch.randn(shape, generator=g) * scale).to(dtype)

    plain = {
        "a.weight": rnd((7, 13), F32, 1.0),                # n = 91: odd, one partial block
        "b.weight": rnd((5, 3), torch.float16, 0.3),       # n = 15: odd, less than a block
        "c.weight": rnd((48, 20), torch.bfloat16),         # 960 = 7.5 blocks of 128
        "c.bias": rnd((48,), torch.bfloat16),
        "d.weight": rnd((67, 129), torch.bfloat16, 0.02),  # 8643 = 271 blocks of 32: two nested blocks, odd n
        "e.weight": rnd((24, 16), torch.bfloat16),         # even, whole blocks, plain absmax
        "embed.weight": rnd((11, 6), torch.float16, 1.0),
        "norm.weight": (1 + rnd((13,), F32, 0.1)).to(torch.bfloat16),
    }
    plain["e.weight"][3] = 0  # an all-zero block (packs 0x00 on CUDA)
    spec = {"a.weight": ("nf4", True, 64), "b.weight": ("fp4", False, 64), "c.weight": ("fp4", True, 128),
            "d.weight": ("nf4", True, 32), "e.weight": ("nf4", False, 64)}
    sd, golden = quantized_state_dict(plain, spec)
    qc = bnb_config("nf4", True, torch.bfloat16)
    write_dir(root, "mixed", {
        "config.json": lambda p: open(p, "w").write(json.dumps({"quantization_config": qc}, indent=2, sort_keys=True) + "\n"),
        "model.safetensors": lambda p: save_file(sd, p, metadata={"format": "pt"}),
        "golden.safetensors": lambda p: save_file({k: v.contiguous() for k, v in sorted(golden.items())}, p,
                                                  metadata={"script": "tools/golden/make_bnb_checkpoint.py",
                                                            "torch": torch.__version__}),
    })
    return sd, spec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    check("fp4 quant_map (python table) equals the CUDA LUT but for the sign of zero",
          bool((get_4bit_type("fp4") == ng.code4("fp4")).all()))
    with tempfile.TemporaryDirectory() as root:
        for name, build in (("llama", llama), ("mixed", mixed)):
            sd, spec = build(root)
            back = load_file(os.path.join(root, name, "model.safetensors"))
            check(f"{name}: model.safetensors reads back", back.keys() == sd.keys()
                  and all(torch.equal(back[k].view(torch.uint8), sd[k].contiguous().view(torch.uint8)) for k in sd))
            for k in spec:
                qs = [t for t in sd if t.startswith(k + ".quant_state.")]
                check(f"{name}/{k}: one quant_state {qs}", len(qs) == 1)
                print("    ", bytes(sd[qs[0]].tolist()).decode())
            with open(os.path.join(root, name, "config.json")) as f:
                print("    ", json.dumps(json.load(f)["quantization_config"], sort_keys=True))
        tar_path = os.path.join(args.out, "bnb.tar")
        with tarfile.open(tar_path, "w") as tar:
            for name in ("llama", "mixed"):
                for f in sorted(os.listdir(os.path.join(root, name))):
                    tar.add(os.path.join(root, name, f), arcname=f"{name}/{f}")
                    print(f"{name}/{f}: {os.path.getsize(os.path.join(root, name, f))} bytes")
    import transformers, safetensors
    print("torch", torch.__version__, "transformers", transformers.__version__, "safetensors", safetensors.__version__)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
