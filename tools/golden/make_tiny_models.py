#!/usr/bin/env python3
"""Tiny random-init causal LMs + golden tensors for IlgpuTune's parity tests.

For each arch in ARCHS (llama, mistral, qwen2, internlm2, qwen3, internlm, phi3, gemma3_text, mistral_sw,
mixtral, qwen3_moe) this writes <out>/<arch>/:
  config.json, model.safetensors  (save_pretrained; internlm2 hand-written with InternLM2 names + fused wqkv)
  golden.safetensors              (inputs, logits, loss, full-model grads, LoRA logits/loss/grads, packed case)
  adapter/                        (adapter_config.json + adapter_model.safetensors as PEFT writes them)
and <out>/MANIFEST.md. See tools/golden/README.md for the exact contents and formulas.

Runs on CPU in fp32 with deterministic algorithms and one thread, so reruns give identical bytes.
Needs torch, transformers (5.x), peft, safetensors.  Usage:
  python3 tools/golden/make_tiny_models.py --out /tmp/tiny [--tar /path/tiny.tar]
"""
import os
import sys

# PEFT writes target_modules from a set: fix the string-hash seed so adapter_config.json is reproducible.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import io
import json
import math
import shutil
import struct
import tarfile
import tempfile
import traceback

import torch
import torch.nn.functional as F
import transformers
import peft
import safetensors
from safetensors.torch import save_file, load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hub_layout  # noqa: E402

SCRIPT = "tools/golden/make_tiny_models.py"
BASE_SEED = 1234
# Seeds follow the index here: append new archs, never reorder (the committed fixtures of the first four stay byte-equal).
ARCHS = ["llama", "mistral", "qwen2", "internlm2",
         "qwen3", "internlm", "phi3", "gemma3_text", "mistral_sw", "mixtral", "qwen3_moe"]
MOE_ARCHS = ("mixtral", "qwen3_moe")
SLIDING_WINDOW = 8  # mistral_sw and gemma3_text's sliding layer: rows 8..15 of a 16-token row see a truncated past

SHAPES = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
)
BATCH, SEQ = 2, 16
PACKED_LENS = (7, 9)
LORA_R, LORA_ALPHA = 4, 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INTERNLM2_LORA_TARGETS = ["o_proj", "gate_proj", "up_proj", "down_proj"]
# PEFT's names for Phi-3's fused projections; MoE goldens put LoRA on attention only (experts are fused 3-D
# parameters in transformers 5, which PEFT's module LoRA does not reach).
LORA_TARGETS_BY_ARCH = {
    "internlm2": INTERNLM2_LORA_TARGETS,
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
}

# Llama module path -> InternLM2 module path (formats.md §3.3).
INTERNLM2_RENAMES = [
    ("model.embed_tokens.", "model.tok_embeddings."),
    (".input_layernorm.", ".attention_norm."),
    (".post_attention_layernorm.", ".ffn_norm."),
    (".self_attn.o_proj.", ".attention.wo."),
    (".mlp.gate_proj.", ".feed_forward.w1."),
    (".mlp.up_proj.", ".feed_forward.w3."),
    (".mlp.down_proj.", ".feed_forward.w2."),
]

FAILURES = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


# ----------------------------------------------------------------------------------------------------------------
# model construction


def arch_config(arch):
    """(config class, model class, kwargs, expected inv_freq recipe) for the transformers model that computes goldens."""
    common = dict(SHAPES, initializer_range=0.2, attention_dropout=0.0, attn_implementation="eager")
    if arch == "llama":
        rope = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=32)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=False)
        return transformers.LlamaConfig, transformers.LlamaForCausalLM, kw, rope
    if arch == "mistral":
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=False, sliding_window=None)
        return transformers.MistralConfig, transformers.MistralForCausalLM, kw, rope
    if arch == "qwen2":
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)
        return transformers.Qwen2Config, transformers.Qwen2ForCausalLM, kw, rope
    if arch == "internlm2":
        # Goldens come from an unscaled Llama: dynamic NTK never triggers at seq <= max_position_embeddings.
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-5, tie_word_embeddings=False)
        return transformers.LlamaConfig, transformers.LlamaForCausalLM, kw, rope
    if arch == "qwen3":
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, attention_bias=False)
        return transformers.Qwen3Config, transformers.Qwen3ForCausalLM, kw, rope
    if arch == "internlm":
        # InternLM v1 (internlm-chat-7b) is Llama with bias on q, k, v and o, multi-head (no GQA); written under its own
        # model_type with the remote code's config keys. Dynamic NTK does not trigger at seq <= max_position_embeddings.
        rope = dict(rope_type="default", rope_theta=1e4)
        kw = dict(common, num_key_value_heads=SHAPES["num_attention_heads"], rms_norm_eps=1e-6,
                  tie_word_embeddings=False, attention_bias=True, mlp_bias=False)
        return transformers.LlamaConfig, transformers.LlamaForCausalLM, kw, rope
    if arch == "phi3":
        rope = dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5)
        kw = dict({k: v for k, v in common.items() if k != "head_dim"}, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  resid_pdrop=0.0, embd_pdrop=0.0, sliding_window=None, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, original_max_position_embeddings=SHAPES["max_position_embeddings"],
                  partial_rotary_factor=0.5)
        return transformers.Phi3Config, transformers.Phi3ForCausalLM, kw, rope
    if arch == "gemma3_text":
        # Layer 0 sliding (window 8, local rope base 1e4), layer 1 full (rope base 1e6); query_pre_attn_scalar 24 != D so
        # the attention scale is not 1/sqrt(D).
        rope = dict(rope_type="default", rope_theta=1e6, rope_local_base_freq=1e4)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=SLIDING_WINDOW,
                  query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh",
                  layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=None,
                  attn_logit_softcapping=None, pad_token_id=0, eos_token_id=1, bos_token_id=2)
        return transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, kw, rope
    if arch == "mistral_sw":
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=False, sliding_window=SLIDING_WINDOW)
        return transformers.MistralConfig, transformers.MistralForCausalLM, kw, rope
    if arch == "mixtral":
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None, num_local_experts=4,
                  num_experts_per_tok=2, output_router_logits=True, router_aux_loss_coef=0.02, router_jitter_noise=0.0)
        return transformers.MixtralConfig, transformers.MixtralForCausalLM, kw, rope
    if arch == "qwen3_moe":
        # Layer 1 is a dense MLP (mlp_only_layers), so both block kinds occur; aux loss from layer 0's router only.
        rope = dict(rope_type="default", rope_theta=1e6)
        kw = dict(common, rms_norm_eps=1e-6, tie_word_embeddings=False, num_experts=4, num_experts_per_tok=2,
                  moe_intermediate_size=48, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1],
                  output_router_logits=True, router_aux_loss_coef=0.02, use_sliding_window=False,
                  attention_bias=False)
        return transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM, kw, rope
    raise ValueError(arch)


def config_candidates(cfg_cls, kw, rope):
    """Ways to spell the rope settings, newest transformers first; build_model keeps the first whose rotary buffers
    match expected_inv_freq (a v5 config accepts unknown kwargs silently, so a TypeError alone proves nothing)."""
    base = {k: v for k, v in rope.items() if k not in ("rope_local_base_freq", "partial_rotary_factor")}
    if "rope_local_base_freq" in rope:  # Gemma 3: one rope per layer type
        local = dict(base, rope_theta=rope["rope_local_base_freq"])
        yield lambda: cfg_cls(**kw, rope_parameters={"full_attention": dict(base), "sliding_attention": local})
        yield lambda: cfg_cls(**kw, rope_parameters=dict(base), rope_local_base_freq=rope["rope_local_base_freq"])
        yield lambda: cfg_cls(**kw, rope_theta=rope["rope_theta"], rope_local_base_freq=rope["rope_local_base_freq"])
        return
    if "partial_rotary_factor" in rope:
        yield lambda: cfg_cls(**kw, rope_parameters=dict(base, partial_rotary_factor=rope["partial_rotary_factor"]))
    yield lambda: cfg_cls(**kw, rope_parameters=dict(base))
    legacy = {k: v for k, v in base.items() if k != "rope_theta"}
    scaling = None if legacy.get("rope_type") == "default" else legacy
    yield lambda: cfg_cls(**kw, rope_theta=rope["rope_theta"], rope_scaling=scaling)


def expected_inv_freqs(rope, head_dim):
    """Every inv_freq vector the model must hold: one per rope base (Gemma 3 has a local and a global one)."""
    dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    thetas = [rope["rope_theta"]] + ([rope["rope_local_base_freq"]] if "rope_local_base_freq" in rope else [])
    return [expected_inv_freq(dict(rope, rope_theta=t), dim) for t in thetas]


def expected_inv_freq(rope, head_dim):
    """formats.md §8.1, independent of transformers. head_dim = the rotated dims (partial rotary: a fraction of D)."""
    inv = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope["rope_type"] == "default":
        return inv
    assert rope["rope_type"] == "llama3"
    factor, lo, hi, orig = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"], \
        rope["original_max_position_embeddings"]
    low_wl, high_wl = orig / lo, orig / hi
    wl = 2 * math.pi / inv
    f = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (orig / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * f / factor + smooth * f
    medium = ~(wl < high_wl) & ~(wl > low_wl)
    return torch.where(medium, smoothed, f)


def rotary_buffers(model):
    """Every inv_freq-like buffer (v5 may name Gemma 3's per-layer-type buffers e.g. `sliding_attention_inv_freq`)."""
    return [(n, b) for n, b in model.named_buffers() if "inv_freq" in n and "original" not in n]


def build_model(arch, seed):
    cfg_cls, model_cls, kw, rope = arch_config(arch)
    want = expected_inv_freqs(rope, SHAPES["head_dim"])
    tried = []
    for make in config_candidates(cfg_cls, kw, rope):
        torch.manual_seed(seed)
        try:
            config = make()
            config._attn_implementation = "eager"
            model = model_cls(config)
        except (TypeError, ValueError, KeyError) as e:
            tried.append(repr(e)[:200])
            continue
        bufs = rotary_buffers(model)
        got_all = all(any(b.shape == w.shape and torch.allclose(b, w, rtol=1e-6, atol=0) for _, b in bufs) for w in want)
        none_else = all(any(b.shape == w.shape and torch.allclose(b, w, rtol=1e-6, atol=0) for w in want) for _, b in bufs)
        if bufs and got_all and none_else:
            break
        tried.append(f"rotary buffers {[(n, tuple(b.shape)) for n, b in bufs]} do not match")
    else:
        raise RuntimeError(f"{arch}: no config spelling gives the expected rotary frequencies: {tried}")
    for t in tried:
        print(f"  note: config spelling skipped: {t}")
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    model = model.to(torch.float32)
    g = torch.Generator().manual_seed(seed + 1_000_000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # MoE experts are fused 3-D parameters in transformers 5 that its init may leave as they are; initialise
            # them here like every other matrix so the fixture does not depend on that.
            if ".experts." in name and p.dim() >= 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for _, m in model.named_modules():
            if "RMSNorm" in type(m).__name__:
                # Gemma's norm scales by (1 + w), its weight is stored around 0; the others scale by w, stored around 1.
                centre = 0.0 if "Gemma" in type(m).__name__ else 1.0
                m.weight.copy_(centre + 0.1 * torch.randn(m.weight.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.train()
    check(model.config._attn_implementation == "eager", f"attn_implementation = {model.config._attn_implementation}")
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    check(all(p == 0.0 for p in drops) and float(getattr(model.config, "attention_dropout", 0.0)) == 0.0,
          f"all dropouts 0 ({len(drops)} Dropout modules)")
    bufs = rotary_buffers(model)
    check(len(bufs) > 0, f"inv_freq ({rope['rope_type']}) matches formats.md §8.1 in {len(bufs)} rotary buffer(s)"
          + (f", {len(want)} distinct bases" if len(want) > 1 else ""))
    return model


# ----------------------------------------------------------------------------------------------------------------
# InternLM2 mapping


def to_internlm2_name(name):
    if name == "lm_head.weight":
        return "output.weight"
    for a, b in INTERNLM2_RENAMES:
        name = name.replace(a, b)
    return name


def fuse_wqkv(q, k, v):
    """q [nH*D, X], k/v [nKV*D, X] -> wqkv [(nH+2nKV)*D, X], rows viewed as [nKV, G+2, D, X] (formats.md §3.3)."""
    nkv, d = SHAPES["num_key_value_heads"], SHAPES["head_dim"]
    g = SHAPES["num_attention_heads"] // nkv
    x = q.shape[-1]
    return torch.cat([q.reshape(nkv, g, d, x), k.reshape(nkv, 1, d, x), v.reshape(nkv, 1, d, x)], dim=1) \
        .reshape(-1, x).contiguous()


def split_wqkv(w):
    nkv, d = SHAPES["num_key_value_heads"], SHAPES["head_dim"]
    g = SHAPES["num_attention_heads"] // nkv
    w4 = w.reshape(nkv, g + 2, d, w.shape[-1])
    return (w4[:, :g].reshape(-1, w.shape[-1]), w4[:, g].reshape(-1, w.shape[-1]),
            w4[:, g + 1].reshape(-1, w.shape[-1]))


def llama_to_internlm2(tensors):
    """Llama-named dict (weights or grads) -> InternLM2-named dict with fused wqkv."""
    out = {}
    for i in range(SHAPES["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        out[f"model.layers.{i}.attention.wqkv.weight"] = fuse_wqkv(
            tensors[p + "q_proj.weight"], tensors[p + "k_proj.weight"], tensors[p + "v_proj.weight"])
    for name, t in tensors.items():
        if any(s in name for s in (".q_proj.", ".k_proj.", ".v_proj.")):
            continue
        out[to_internlm2_name(name)] = t.contiguous()
    return out


def internlm2_config_json(config):
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "attn_implementation": "eager",
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
        },
        "bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": SHAPES["hidden_size"],
        "initializer_range": 0.2,
        "intermediate_size": SHAPES["intermediate_size"],
        "max_position_embeddings": SHAPES["max_position_embeddings"],
        "model_type": "internlm2",
        "num_attention_heads": SHAPES["num_attention_heads"],
        "num_hidden_layers": SHAPES["num_hidden_layers"],
        "num_key_value_heads": SHAPES["num_key_value_heads"],
        "pad_token_id": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": SHAPES["vocab_size"],
    }


def internlm2_reference_logits(sd, input_ids, eps, theta):
    """Hand-written InternLM2 forward over InternLM2-named tensors (mirrors the remote modeling_internlm2.py)."""
    nh, nkv, d = SHAPES["num_attention_heads"], SHAPES["num_key_value_heads"], SHAPES["head_dim"]
    g = nh // nkv
    b, s = input_ids.shape

    def rms(h, w):
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))

    def rot(t):
        return torch.cat([-t[..., d // 2:], t[..., :d // 2]], dim=-1)

    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((s, s), float("-inf")).triu(1)
    x = sd["model.tok_embeddings.weight"][input_ids]
    for i in range(SHAPES["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "attention_norm.weight"])
        qkv = (h @ sd[p + "attention.wqkv.weight"].T).view(b, s, nkv, g + 2, d)
        q = qkv[..., :g, :].reshape(b, s, nh, d).transpose(1, 2)
        k = qkv[..., g, :].transpose(1, 2)
        v = qkv[..., g + 1, :].transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1) @ v
        x = x + a.transpose(1, 2).reshape(b, s, nh * d) @ sd[p + "attention.wo.weight"].T
        h = rms(x, sd[p + "ffn_norm.weight"])
        f = F.silu(h @ sd[p + "feed_forward.w1.weight"].T) * (h @ sd[p + "feed_forward.w3.weight"].T)
        x = x + f @ sd[p + "feed_forward.w2.weight"].T
    return rms(x, sd["model.norm.weight"]) @ sd["output.weight"].T


# ----------------------------------------------------------------------------------------------------------------
# losses and inputs


def shifted_ce_sum(logits, labels):
    """Sum of CE(logits[t], labels[t+1]) over t with labels[t+1] != -100, and that count. logits [B,S,V]."""
    lg = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()
    lb = labels[:, 1:].reshape(-1).long()
    return F.cross_entropy(lg, lb, ignore_index=-100, reduction="sum"), int((lb != -100).sum())


def make_inputs(seed):
    g = torch.Generator().manual_seed(seed + 2_000_000)
    v = SHAPES["vocab_size"]
    input_ids = torch.randint(0, v, (BATCH, SEQ), generator=g)
    labels = input_ids.clone()
    labels[0, :3] = -100
    labels[1, -2:] = -100
    samples = [torch.randint(0, v, (n,), generator=g) for n in PACKED_LENS]
    sample_labels = []
    for j, ids in enumerate(samples):
        lab = ids.clone()
        lab[: 2 + j] = -100  # a "prompt" of 2 (sample 0) / 3 (sample 1) tokens; position 0 is never a target
        sample_labels.append(lab)
    return input_ids, labels, samples, sample_labels


# ----------------------------------------------------------------------------------------------------------------
# safetensors header reading (no torch; also used for MANIFEST)


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def save_sorted(tensors, path, metadata):
    """safetensors file with header keys in sorted order. safetensors.save_file emits __metadata__ in Rust
    HashMap order, which changes from run to run once there are several keys; this keeps reruns byte-identical."""
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def internlm_config_json(config):
    """InternLM v1's remote-code config (internlm-chat-7b): `bias` on q/k/v/o, `rotary`, no num_key_value_heads (MHA)."""
    return {
        "architectures": ["InternLMForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_internlm.InternLMConfig",
            "AutoModel": "modeling_internlm.InternLMForCausalLM",
            "AutoModelForCausalLM": "modeling_internlm.InternLMForCausalLM",
        },
        "bias": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": SHAPES["hidden_size"],
        "initializer_range": 0.2,
        "intermediate_size": SHAPES["intermediate_size"],
        "max_position_embeddings": SHAPES["max_position_embeddings"],
        "model_type": "internlm",
        "num_attention_heads": SHAPES["num_attention_heads"],
        "num_hidden_layers": SHAPES["num_hidden_layers"],
        # internlm-chat-7b says 0; the golden Llama has no padding_idx (every embedding row gets its gradient), so the
        # file says so too.
        "pad_token_id": None,
        "rms_norm_eps": config.rms_norm_eps,
        "rotary": {"base": 10000, "type": "dynamic"},
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": SHAPES["vocab_size"],
    }


def moe_to_hub(arch, tensors):
    """The per-expert hub layout of a transformers-5 MoE state dict (hub_layout.py); the reload check in run_arch proves
    the layout by loading it back with from_pretrained."""
    return hub_layout.moe_to_hub(arch, tensors, SHAPES["hidden_size"])


def own_aux_loss(router_logits, num_experts, top_k):
    """transformers' load_balancing_loss_func without an attention mask, written out: over the MoE layers' router
    logits concatenated along tokens, E * sum_e (fraction of top-k picks per rank k of expert e, averaged over k...)
    = E * sum_{k,e} mean_t onehot(topk_t)[k, e] * mean_t softmax_t[e]."""
    cat = torch.cat([l for l in router_logits if l is not None], dim=0).float()
    probs = torch.softmax(cat, dim=-1)
    _, sel = torch.topk(probs, top_k, dim=-1)
    mask = F.one_hot(sel, num_experts).float()  # [T, k, E]
    return (mask.mean(0) * probs.mean(0)[None, :]).sum() * num_experts


def aux_of(arch, model, res):
    """(aux_loss, coef) of a forward whose config has output_router_logits; (0, 0) for dense archs."""
    if arch not in MOE_ARCHS:
        return torch.zeros(()), 0.0
    cfg = model.config
    e = cfg.num_local_experts if arch == "mixtral" else cfg.num_experts
    own = own_aux_loss(res.router_logits, e, cfg.num_experts_per_tok)
    check(res.aux_loss is not None and torch.allclose(res.aux_loss.detach().float(), own.detach(), rtol=1e-6, atol=1e-7),
          f"HF aux_loss {float(res.aux_loss):.6f} == own load-balancing loss {float(own):.6f}")
    return res.aux_loss.detach().clone().float().reshape(()), float(cfg.router_aux_loss_coef)


def reload_check(arch, out, input_ids, logits):
    """from_pretrained of what was written gives the same logits: the on-disk names, layout and config are what
    transformers reads (for MoE: the per-expert hub layout goes through transformers' own conversion)."""
    model_cls = arch_config(arch)[1]
    m2 = model_cls.from_pretrained(out, attn_implementation="eager").float()
    m2.train()
    with torch.no_grad():
        d = (m2(input_ids=input_ids, use_cache=False).logits - logits).abs().max().item()
    check(d < 1e-5, f"from_pretrained({arch}/) reproduces the logits (max|d| = {d:.2e})")


def sliding_window_check(model, input_ids):
    """The window's inequality as transformers applies it: against the same weights without a window, rows i < W
    (whose whole past is within i - j < W) are equal and every later row differs."""
    cfg2 = type(model.config)(**{k: v for k, v in model.config.to_dict().items() if k not in ("sliding_window",)},
                              sliding_window=None)
    cfg2._attn_implementation = "eager"
    m2 = type(model)(cfg2).float()
    m2.load_state_dict(model.state_dict())
    m2.train()
    with torch.no_grad():
        a = model(input_ids=input_ids, use_cache=False).logits
        b = m2(input_ids=input_ids, use_cache=False).logits
    d = (a - b).abs().amax(dim=(0, 2))
    w = SLIDING_WINDOW
    check(d[:w].max().item() < 1e-6 and bool((d[w:] > 1e-4).all()),
          f"sliding window {w}: rows 0..{w - 1} equal to no window, rows {w}.. differ (key j seen iff i - j < {w})")


def lora_key(peft_name):
    return peft_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


# ----------------------------------------------------------------------------------------------------------------


def run_arch(arch, idx, out_root):
    seed = BASE_SEED + idx
    out = os.path.join(out_root, arch)
    os.makedirs(out, exist_ok=True)
    print(f"== {arch} (seed {seed})")
    model = build_model(arch, seed)
    input_ids, labels, samples, sample_labels = make_inputs(seed)
    golden = {"input_ids": input_ids.to(torch.int32), "labels": labels.to(torch.int32)}

    # --- full model: logits, loss, grads
    model.zero_grad(set_to_none=True)
    res = model(input_ids=input_ids, labels=labels, use_cache=False)
    res.loss.backward()
    loss = res.loss.detach().clone()
    logits = res.logits.detach().clone()
    aux, coef = aux_of(arch, model, res)
    s, n = shifted_ce_sum(logits, labels)
    check(torch.allclose(loss, s / n + coef * aux, rtol=1e-6, atol=1e-6),
          f"HF loss {loss.item():.6f} == own shifted CE {(s / n).item():.6f} (n={n})"
          + (f" + {coef} * aux {aux.item():.6f}" if coef else ""))
    check(abs(loss.item() - math.log(SHAPES["vocab_size"])) > 0.1, f"loss not flat ln(V)={math.log(SHAPES['vocab_size']):.4f}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    check(all(p.grad is not None for p in params.values()), f"{len(params)} trainable params all have grads")
    weights = {name: p.detach().clone().contiguous() for name, p in params.items()}
    grads = {name: p.grad.detach().clone().contiguous() for name, p in params.items()}
    golden["logits"] = logits
    golden["loss"] = loss.reshape(())
    if arch in MOE_ARCHS:
        golden["aux_loss"] = aux
    if arch == "mistral_sw":
        sliding_window_check(model, input_ids)

    # --- weights on disk
    if arch == "internlm2":
        iw = llama_to_internlm2(weights)
        save_file(iw, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(internlm2_config_json(model.config), f, indent=2, sort_keys=True)
            f.write("\n")
        ok = True
        for i in range(SHAPES["num_hidden_layers"]):
            q, k, v = split_wqkv(iw[f"model.layers.{i}.attention.wqkv.weight"])
            p = f"model.layers.{i}.self_attn."
            ok &= torch.equal(q, weights[p + "q_proj.weight"]) and torch.equal(k, weights[p + "k_proj.weight"]) \
                and torch.equal(v, weights[p + "v_proj.weight"])
        check(ok, "internlm2 wqkv split round-trips to llama q/k/v exactly")
        grads = llama_to_internlm2(grads)
        # independent check of layout + names: hand InternLM2 forward/backward on the mapped weights
        ref = {k2: t.clone().requires_grad_(True) for k2, t in iw.items()}
        rl = internlm2_reference_logits(ref, input_ids, model.config.rms_norm_eps, 1e6)
        rs, rn = shifted_ce_sum(rl, labels)
        (rs / rn).backward()
        dl = (rl.detach() - logits).abs().max().item()
        dg = max((ref[k2].grad - grads[k2]).abs().max().item() / (grads[k2].abs().max().item() + 1e-12) for k2 in ref)
        check(dl < 1e-4 and dg < 1e-4 and set(ref) == set(grads),
              f"hand InternLM2 forward: max|dlogits|={dl:.2e}, max rel dgrad={dg:.2e}")
    elif arch == "internlm":
        save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(internlm_config_json(model.config), f, indent=2, sort_keys=True)
            f.write("\n")
        check(all(f"model.layers.0.self_attn.{p}_proj.bias" in weights for p in "qkvo"), "internlm: q/k/v/o biases")
    elif arch in MOE_ARCHS:
        model.save_pretrained(out)  # config.json + generation_config.json; the weights are rewritten in hub layout
        for fn in os.listdir(out):
            if fn.startswith("model") and (fn.endswith(".safetensors") or fn.endswith(".json")):
                os.remove(os.path.join(out, fn))
        hub = moe_to_hub(arch, weights)
        save_file(hub, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        grads = moe_to_hub(arch, grads)
        check(set(grads) == set(hub), f"{arch}: {len(hub)} hub-layout tensors, grads mapped alike")
        reload_check(arch, out, input_ids, logits)
    else:
        model.save_pretrained(out)  # v5: always safetensors (safe_serialization was removed)
        if ARCHS.index(arch) >= 4:
            reload_check(arch, out, input_ids, logits)
        keys = set(st_header(os.path.join(out, "model.safetensors"))) - {"__metadata__"}
        check(keys == set(weights), f"model.safetensors keys == named_parameters ({len(keys)} tensors)"
              + ("" if keys == set(weights) else f" diff {sorted(keys ^ set(weights))}"))
        disk = load_file(os.path.join(out, "model.safetensors"))
        check(all(torch.equal(disk[k2], weights[k2]) for k2 in keys & set(weights)), "saved weights equal in-memory")
    for name, t in grads.items():
        golden["grad." + name] = t

    # --- packed case: each sample separately, concatenated
    with torch.no_grad():
        per = [model(input_ids=ids[None], use_cache=False).logits for ids in samples]
        packed_logits = torch.cat(per, dim=1)
        tot, cnt = 0.0, 0
        for lg, lab in zip(per, sample_labels):
            s1, n1 = shifted_ce_sum(lg, lab[None])
            tot, cnt = tot + s1, cnt + n1
        packed_loss = (tot / cnt).reshape(())
        packed_ids = torch.cat(samples)[None]
        packed_labels = torch.cat(sample_labels)[None]
        packed_pos = torch.cat([torch.arange(n) for n in PACKED_LENS])[None]
        gs, gn = shifted_ce_sum(packed_logits, packed_labels)
        check(abs((gs / gn).item() - packed_loss.item()) < 1e-6,
              f"packed loss {packed_loss.item():.6f} == global-shift CE on packed_labels (n={gn})")
        try:
            hf_packed = model(input_ids=packed_ids, position_ids=packed_pos, use_cache=False).logits
            d = (hf_packed - packed_logits).abs().max().item()
            print(f"  info  HF forward of packed ids with position_ids only: max|d| vs separate = {d:.2e}"
                  f" ({'HF detected packing' if d < 1e-4 else 'HF attended across samples'})")
        except Exception as e:  # informative only
            print(f"  info  HF packed forward raised {e!r}")
    golden["packed_input_ids"] = packed_ids.to(torch.int32)
    golden["packed_position_ids"] = packed_pos.to(torch.int32)
    golden["packed_cu_seqlens"] = torch.tensor([0, PACKED_LENS[0], sum(PACKED_LENS)], dtype=torch.int32)
    golden["packed_labels"] = packed_labels.to(torch.int32)
    golden["packed_logits"] = packed_logits.contiguous()
    golden["packed_loss"] = packed_loss.float()

    # --- LoRA
    model.zero_grad(set_to_none=True)
    targets = LORA_TARGETS_BY_ARCH.get(arch, LORA_TARGETS)
    lcfg = peft.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=list(targets),
                           bias="none", task_type="CAUSAL_LM")
    pm = peft.get_peft_model(model, lcfg)
    pm.train()
    g = torch.Generator().manual_seed(seed + 3_000_000)
    lora_params = {}
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
                lora_params[name] = p
    trainable = [name for name, p in pm.named_parameters() if p.requires_grad]
    check(sorted(trainable) == sorted(lora_params), f"only LoRA params trainable ({len(trainable)})")
    lres = pm(input_ids=input_ids, labels=labels, use_cache=False)
    lres.loss.backward()
    laux, coef = aux_of(arch, model, lres)
    s, n = shifted_ce_sum(lres.logits.detach(), labels)
    check(torch.allclose(lres.loss.detach(), s / n + coef * laux, rtol=1e-6, atol=1e-6),
          f"LoRA loss {lres.loss.item():.6f} == own CE" + (" + coef * aux" if coef else ""))
    if arch in MOE_ARCHS:
        golden["lora_aux_loss"] = laux
    check((lres.logits.detach() - logits).abs().max().item() > 1e-3, "LoRA changes logits")
    golden["lora_logits"] = lres.logits.detach().clone().contiguous()
    golden["lora_loss"] = lres.loss.detach().clone().reshape(())

    adir = os.path.join(out, "adapter")
    tmp = tempfile.mkdtemp()
    pm.save_pretrained(tmp, save_embedding_layers=False)
    saved = load_file(os.path.join(tmp, "adapter_model.safetensors"))
    lgrads = {lora_key(name): p.grad.detach().clone().contiguous() for name, p in lora_params.items()}
    check(set(saved) == set(lgrads), f"PEFT-saved adapter keys == lora_grad keys ({len(saved)})"
          + ("" if set(saved) == set(lgrads) else f" diff {sorted(set(saved) ^ set(lgrads))[:6]}"))
    check(all(torch.equal(saved[k2], lora_params[n2].detach()) for n2 in lora_params for k2 in [lora_key(n2)]
              if k2 in saved), "PEFT-saved adapter tensors equal in-memory LoRA weights")
    os.makedirs(adir, exist_ok=True)
    if arch == "internlm2":
        with open(os.path.join(tmp, "adapter_config.json")) as f:
            acfg = json.load(f)
        acfg["target_modules"] = ["wo", "w1", "w2", "w3"]
        with open(os.path.join(adir, "adapter_config.json"), "w") as f:
            f.write(json.dumps(acfg, indent=2, sort_keys=True))
        save_file({to_internlm2_name(k2): t.contiguous() for k2, t in saved.items()},
                  os.path.join(adir, "adapter_model.safetensors"), metadata={"format": "pt"})
        lgrads = {to_internlm2_name(k2): t for k2, t in lgrads.items()}
    else:
        for fn in ("adapter_config.json", "adapter_model.safetensors"):  # not PEFT's boilerplate README.md
            shutil.copy(os.path.join(tmp, fn), os.path.join(adir, fn))
    shutil.rmtree(tmp)
    for k2, t in lgrads.items():
        golden["lora_grad." + k2] = t

    meta = {"format_version": "1", "script": SCRIPT, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "seed": str(seed), "arch": arch}
    gpath = os.path.join(out, "golden.safetensors")
    save_sorted(golden, gpath, meta)
    back = load_file(gpath)
    check(set(back) == set(golden) and all(torch.equal(back[k2], golden[k2].to(back[k2].dtype)) for k2 in golden)
          and all(back[k2].dtype == golden[k2].dtype for k2 in golden), f"golden.safetensors reads back ({len(golden)} tensors)")
    print(f"  {arch}: loss={loss.item():.6f} lora_loss={golden['lora_loss'].item():.6f} "
          f"packed_loss={packed_loss.item():.6f} | {len(grads)} grads, {len(lgrads)} lora grads, "
          f"|logits| std={logits.std().item():.3f}, embed std={weights[next(iter(weights))].std().item():.3f}")
    return loss.item()


def write_manifest(out_root):
    lines = ["# tests/fixtures/tiny — manifest", "",
             f"Generated by `{SCRIPT}` (see tools/golden/README.md) with torch {torch.__version__}, "
             f"transformers {transformers.__version__}, peft {peft.__version__}, safetensors {safetensors.__version__}.",
             ""]
    for arch in ARCHS:
        d = os.path.join(out_root, arch)
        if not os.path.isdir(d):
            continue
        lines += [f"## {arch}", "", "| file | bytes |", "|---|---|"]
        files = sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
        total = 0
        for f in files:
            sz = os.path.getsize(os.path.join(d, f))
            total += sz
            lines.append(f"| {f} | {sz} |")
        lines += [f"| (total) | {total} |", ""]
        for f in files:
            if not f.endswith(".safetensors"):
                continue
            h = st_header(os.path.join(d, f))
            lines += [f"### {arch}/{f}", ""]
            if "__metadata__" in h:
                lines += [f"metadata: `{json.dumps(h['__metadata__'], sort_keys=True)}`", ""]
            lines += ["| tensor | dtype | shape |", "|---|---|---|"]
            for name in sorted(k for k in h if k != "__metadata__"):
                lines.append(f"| {name} | {h[name]['dtype']} | {h[name]['shape']} |")
            lines.append("")
    with open(os.path.join(out_root, "MANIFEST.md"), "w") as f:
        f.write("\n".join(lines))


def write_tar(out_root, tar_path):
    def norm(ti):
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
        return ti

    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tf:
        for r, ds, fs in os.walk(out_root):
            ds.sort()
            for f in sorted(fs):
                p = os.path.join(r, f)
                tf.add(p, arcname=os.path.relpath(p, out_root), filter=norm)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tar", default=None, help="also pack <out> into this tar file")
    ap.add_argument("--archs", default=",".join(ARCHS))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    print(f"python {sys.version.split()[0]} torch {torch.__version__} transformers {transformers.__version__} "
          f"peft {peft.__version__} safetensors {safetensors.__version__}")
    os.makedirs(args.out, exist_ok=True)
    losses = {}
    for idx, arch in enumerate(ARCHS):
        if arch not in args.archs.split(","):
            continue
        try:
            losses[arch] = run_arch(arch, idx, args.out)
        except Exception:
            traceback.print_exc()
            FAILURES.append(f"{arch}: exception")
    write_manifest(args.out)
    if args.tar:
        write_tar(args.out, args.tar)
    print("losses:", json.dumps(losses))
    print("FAILURES:" if FAILURES else "all checks passed", *FAILURES, sep="\n  ")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
