#!/usr/bin/env python3
"""Proof that ilgpu-tune's outputs are what Hugging Face transformers + PEFT expect (issue 7, item 9).

On a machine with torch, transformers 5.x, peft and an ilgpu-tune build (GPU or not) this:
  1. builds a tiny random Llama with transformers (the vocabulary of the embedded tiny tokenizer, hidden 64, 2 layers,
     4 heads / 2 KV heads, intermediate 128, fp32) into a temp folder with the tiny tokenizer files, and a PEFT LoRA adapter
     (r 8, alpha 16, dropout 0, all 7 linear targets) whose lora_B is seeded nonzero, saved with save_pretrained;
  2. trains that model with `ilgpu-tune train` (lora.init_adapter = that adapter, dump_batches) in a few settings
     (accumulation, gradient checkpointing, packed rows with padding);
  3. replays each run's micro-batches (work_dir/<launch>/batches.jsonl) with transformers + PEFT in fp32 eager attention on the CPU,
     with torch.optim.AdamW, clip_grad_norm_ and the same per-micro-batch cosine schedule, and compares the window-mean
     loss at every logged iteration: pass = relative deviation <= 1 % at every one;
  4. writes a fixture folder (tests/fixtures/tiny layout) whose adapter/ is OUR trained adapter and whose lora_logits /
     lora_loss / lora_grad.* come from PeftModel.from_pretrained(base, our adapter), and runs `ilgpu-tune parity` on it:
     our adapter loaded by PEFT gives our logits (limits 1e-4 logits/loss, 1e-3 grads);
  5. runs `ilgpu-tune convert merge BASE OUR_ADAPTER OUT`, loads OUT with AutoModelForCausalLM.from_pretrained and compares
     its logits with PeftModel(base, our adapter)'s (and its weights with PEFT's merge_and_unload).
Prints a summary and writes compat.md + compat.json into --report-dir.

    python3 tools/compat/check_compat.py --out /tmp/compat --report-dir benchmarks/results/nvidia-h100-80gb
The CLI is found as: $ILGPU_TUNE_CLI (a command line), else .gpu/app/IlgpuTune.Cli/ilgpu-tune.dll (staged by
shared/gpu/stage.sh; the carried .NET runtime is unpacked to /tmp/dotnet when no dotnet is on PATH), else the Release
build in src/IlgpuTune.Cli/bin.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import math
import platform
import shlex
import shutil
import subprocess
import time
import traceback

import torch
import torch.nn.functional as F
import transformers
import peft
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "src", "IlgpuTune.Training", "Assets", "tiny")
SEED = 1234
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAD_SEGMENT = 2147483647  # Batch.Assemble: padding is a segment of its own
LOSS_TOLERANCE = 0.01
OUTPUT_LIMIT = 1e-4

# The training runs: accumulation 1 logged every 10 (mmengine's window mean), accumulation 4 with gradient checkpointing
# logged every iteration, and packed rows (2-3 samples of ~90 tokens in 256) two to a micro-batch (so with padding) with
# accumulation 2.
RUNS = [
    dict(name="A", accumulative_counts=1, logging_steps=10, pack=False, batch_size=1, max_length=128, gradient_checkpointing=False),
    dict(name="B", accumulative_counts=4, logging_steps=1, pack=False, batch_size=1, max_length=128, gradient_checkpointing=True),
    dict(name="C", accumulative_counts=2, logging_steps=1, pack=True, batch_size=2, max_length=256, gradient_checkpointing=False),
]
ITERS, LR, MAX_NORM = 200, 1e-3, 1.0

RESULTS = {}
FAILURES = []
# --family: "llama" (the model above) or a fixture family of tests/fixtures/tiny (its config, with the tiny tokenizer's
# vocabulary): its base is random-initialised by transformers and written in the hub key layout our loader reads.
FAMILY = "llama"
FIXTURES = os.path.join(REPO, "tests", "fixtures", "tiny")
# MoE families: LoRA on attention only (transformers 5 fuses the experts into 3-D parameters PEFT's Linear LoRA does not
# wrap), as the fixtures' goldens do.
MOE_FAMILIES = ("mixtral", "qwen3_moe")


def log(msg=""):
    print(msg, flush=True)


def check(ok, what):
    log(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        FAILURES.append(what)
    return ok


# ---------------------------------------------------------------------------------------------------------------------
# the ilgpu-tune CLI


def find_cli():
    if os.environ.get("ILGPU_TUNE_CLI"):
        return shlex.split(os.environ["ILGPU_TUNE_CLI"])
    staged = os.path.join(REPO, ".gpu", "app", "IlgpuTune.Cli", "ilgpu-tune.dll")
    if os.path.exists(staged):
        dotnet = shutil.which("dotnet")
        if dotnet is None:
            root = os.environ.setdefault("DOTNET_ROOT", "/tmp/dotnet")
            if not os.path.exists(os.path.join(root, "dotnet")):
                os.makedirs(root, exist_ok=True)
                subprocess.run(["tar", "-xJf", os.path.join(REPO, ".gpu", "dotnet-runtime.tar.xz"), "-C", root], check=True)
            dotnet = os.path.join(root, "dotnet")
        return [dotnet, staged]
    return ["dotnet", os.path.join(REPO, "src", "IlgpuTune.Cli", "bin", "Release", "net10.0", "ilgpu-tune.dll")]


def cli(args, out, name, timeout=600):
    """Runs ilgpu-tune with args; its output goes to out/<name>.log and the tail to the console. Returns (rc, text, s)."""
    cmd = CLI + [str(a) for a in args]
    log(f"$ {' '.join(shlex.quote(c) for c in cmd)}")
    env = dict(os.environ, DOTNET_CLI_TELEMETRY_OPTOUT="1", DOTNET_NOLOGO="1")
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    dt = time.time() - t0
    with open(os.path.join(out, name + ".log"), "w") as f:
        f.write(p.stdout)
    lines = p.stdout.splitlines()
    for line in lines[-12:]:
        log("    | " + line)
    log(f"  -> exit {p.returncode} in {dt:.1f} s")
    return p.returncode, p.stdout, dt


# ---------------------------------------------------------------------------------------------------------------------
# the HF model and the initial adapter


def tokenizer_vocab_size():
    with open(os.path.join(TINY, "tokenizer.json")) as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [a["id"] for a in tok.get("added_tokens", [])]
    return max(ids) + 1


def build_family_base(dirname, tiny_cfg):
    """A random model of the fixture family's config (vocabulary: the tiny tokenizer's), saved with transformers; MoE
    experts rewritten to the per-expert hub keys by the golden script's moe_to_hub (transformers 5 saves them fused)."""
    with open(os.path.join(FIXTURES, FAMILY, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(vocab_size=tokenizer_vocab_size(), bos_token_id=tiny_cfg.get("bos_token_id"),
               eos_token_id=tiny_cfg.get("eos_token_id"), pad_token_id=tiny_cfg.get("pad_token_id"))
    for k in ("architectures", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float32)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".experts." in name and p.dim() >= 2:  # fused experts a from_config init may leave unset
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
        for _, m in model.named_modules():
            if "RMSNorm" in type(m).__name__:
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
    if FAMILY in MOE_FAMILIES:
        sys.path.insert(0, os.path.join(REPO, "tools", "golden"))
        from hub_layout import moe_to_hub
        os.makedirs(dirname, exist_ok=True)
        config.save_pretrained(dirname)
        save_file(moe_to_hub(FAMILY, {k: v.detach().contiguous() for k, v in model.state_dict().items()}, config.hidden_size),
                  os.path.join(dirname, "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(dirname)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY, fn), os.path.join(dirname, fn))
    n = sum(p.numel() for p in model.parameters())
    log(f"  base: {type(model).__name__} vocab {config.vocab_size}, {n:,} parameters -> {dirname}")
    return config


def build_base(dirname):
    with open(os.path.join(TINY, "config.json")) as f:
        tiny_cfg = json.load(f)
    if FAMILY != "llama":
        return build_family_base(dirname, tiny_cfg)
    kw = dict(vocab_size=tokenizer_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False, attention_dropout=0.0, initializer_range=0.02,
              bos_token_id=tiny_cfg.get("bos_token_id"), eos_token_id=tiny_cfg.get("eos_token_id"),
              pad_token_id=tiny_cfg.get("pad_token_id"))
    try:
        config = transformers.LlamaConfig(**kw, rope_parameters=dict(rope_type="default", rope_theta=10000.0))
    except TypeError:  # transformers 4.x
        config = transformers.LlamaConfig(**kw, rope_theta=10000.0)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm would show
        for _, m in model.named_modules():
            if "RMSNorm" in type(m).__name__:
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
    model.save_pretrained(dirname)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY, fn), os.path.join(dirname, fn))
    n = sum(p.numel() for p in model.parameters())
    log(f"  base: LlamaForCausalLM vocab {config.vocab_size}, {n:,} parameters -> {dirname}")
    return config


def load_base(dirname):
    return transformers.AutoModelForCausalLM.from_pretrained(dirname, dtype=torch.float32, attn_implementation="eager")


def lora_targets():
    return LORA_TARGETS[:4] if FAMILY in MOE_FAMILIES else LORA_TARGETS


def make_init_adapter(base_dir, dirname):
    torch.manual_seed(SEED + 2)  # PEFT's kaiming init of lora_A draws from the global generator
    lcfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(lora_targets()), bias="none",
                           task_type="CAUSAL_LM")
    pm = peft.get_peft_model(load_base(base_dir), lcfg)
    g = torch.Generator().manual_seed(SEED + 3)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(dirname, save_embedding_layers=False)
    keys = load_file(os.path.join(dirname, "adapter_model.safetensors"))
    log(f"  init adapter: {len(keys)} tensors -> {dirname}")


def lora_key(name):
    return name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


# ---------------------------------------------------------------------------------------------------------------------
# losses


def shifted_ce(logits, labels):
    """(sum, count) of CE(logits[t], labels[t+1]) over supervised targets; logits [n, V], labels [n]."""
    tgt = labels[1:]
    mask = tgt != -100
    if int(mask.sum()) == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[:-1][mask].float(), tgt[mask].long(), reduction="sum"), int(mask.sum())


def micro_batch_loss(model, b):
    """Our trainer's loss for one dumped micro-batch: mean CE over its supervised targets, each packed sample (segment)
    run on its own with its position ids (so no cross-sample attention), padding skipped."""
    size, length = b["Size"], b["Length"]
    ids = torch.tensor(b["input_ids"]).view(size, length)
    labels = torch.tensor(b["labels"]).view(size, length)
    pos = torch.tensor(b["position_ids"]).view(size, length)
    seg = b["segment_ids"]
    total, count, aux_extra = None, 0, None
    for r in range(size):
        t = 0
        while t < length:
            s = seg[r * length + t]
            e = t
            while e < length and seg[r * length + e] == s:
                e += 1
            if s != PAD_SEGMENT:
                out = model(input_ids=ids[r:r + 1, t:e], position_ids=pos[r:r + 1, t:e], use_cache=False)
                logits = out.logits[0]
                ls, n = shifted_ce(logits, labels[r, t:e])
                if getattr(out, "aux_loss", None) is not None:
                    # transformers adds router_aux_loss_coef x the load-balancing loss of the forward; one segment per
                    # micro-batch here (the MoE runs are unpacked, batch 1), so it is the micro-batch's as ours is
                    if size != 1 or any(x != s for x in seg):
                        raise RuntimeError("MoE replay needs one sample per micro-batch")
                    aux_extra = model.config.router_aux_loss_coef * out.aux_loss
                else:
                    aux_extra = None
                total = ls if total is None else total + ls
                count += n
            t = e
    return total / count if aux_extra is None else total / count + aux_extra


def lr_at(k, total):
    # warmup_ratio 0: CosineAnnealingLR(T_max = total, eta_min 0) stepped per micro-batch, closed form
    return LR * (1 + math.cos(math.pi * min(k, total - 1) / total)) / 2


# ---------------------------------------------------------------------------------------------------------------------
# 2 + 3: train with ilgpu-tune, replay with HF + PEFT


def train_ours(run, base_dir, init_dir, out, device):
    work = os.path.join(out, "work_" + run["name"])
    shutil.rmtree(work, ignore_errors=True)
    cfg = {
        "pretrained_model_name_or_path": base_dir, "tokenizer": base_dir, "dtype": "float32",
        "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": lora_targets(), "init_adapter": init_dir},
        "data_path": [os.path.join(TINY, "colorist.jsonl")], "dataset_map_fn": "colors", "prompt_template": "qwen_chat",
        "system_template": "colorist", "max_length": run["max_length"], "pack_to_max_length": run["pack"],
        "shuffle_before_pack": True, "batch_size": run["batch_size"], "accumulative_counts": run["accumulative_counts"],
        "max_iters": ITERS, "lr": LR, "betas": [0.9, 0.999], "weight_decay": 0.0, "max_norm": MAX_NORM, "warmup_ratio": 0.0,
        "gradient_checkpointing": run["gradient_checkpointing"], "save_steps": 100000, "save_total_limit": 1,
        "logging_steps": run["logging_steps"], "dump_batches": True, "device": device, "seed": 42,
    }
    path = os.path.join(out, f"compat_{run['name']}.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)  # JSON is YAML
    rc, text, dt = cli(["train", path, "--work-dir", work], out, f"train_{run['name']}")
    if rc != 0:
        raise RuntimeError(f"ilgpu-tune train (run {run['name']}) exited {rc}")
    # One launch into a fresh work dir: its log folder work/YYYYmmdd_HHMMSS/ holds vis_data/scalars.json and batches.jsonl.
    launch = os.path.join(work, sorted(d for d in os.listdir(work) if d[:8].isdigit())[-1])
    with open(os.path.join(launch, "vis_data", "scalars.json")) as f:
        scalars = [json.loads(l) for l in f if l.strip()]
    with open(os.path.join(launch, "batches.jsonl")) as f:
        batches = [json.loads(l) for l in f if l.strip()]
    return work, scalars, batches, dt


def replay_hf(run, base_dir, init_dir, batches):
    model = peft.PeftModel.from_pretrained(load_base(base_dir), init_dir, is_trainable=True)
    model.train()
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    k = run["accumulative_counts"]
    remainder = ITERS % k
    losses, norms, lrs = [], [], []
    last_norm = None
    t0 = time.time()
    for it, b in enumerate(batches):
        if b["iter"] != it:
            raise RuntimeError(f"batches.jsonl: line {it} has iter {b['iter']}")
        divisor = k if it < ITERS - remainder else remainder
        loss = micro_batch_loss(model, b)
        (loss / divisor).backward()
        losses.append(loss.item())
        lr = lr_at(it, ITERS)
        if (it + 1) % k == 0 or it + 1 == ITERS:
            last_norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM).item()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        norms.append(last_norm)
        lrs.append(lr)
    final = {lora_key(n): p.detach().clone() for n, p in zip(names, params)}
    return losses, norms, lrs, final, time.time() - t0


def compare_curves(run, scalars, losses, norms, lrs):
    rows, prev = [], 0
    for s in scalars:
        it = s["iter"]
        hf = sum(losses[prev:it]) / (it - prev)
        dev = abs(s["loss"] - hf) / abs(hf)
        gn = None if s.get("grad_norm") is None or norms[it - 1] is None else \
            abs(s["grad_norm"] - norms[it - 1]) / max(abs(norms[it - 1]), 1e-30)
        rows.append(dict(iter=it, ours=s["loss"], hf=hf, rel=dev, ours_grad_norm=s.get("grad_norm"), hf_grad_norm=norms[it - 1],
                         grad_norm_rel=gn, ours_lr=s["lr"], hf_lr=lrs[it - 1], lr_rel=abs(s["lr"] - lrs[it - 1]) / lrs[it - 1]
                         if lrs[it - 1] else abs(s["lr"])))
        prev = it
    return rows


def compare_adapters(our_dir, hf_final):
    ours = load_file(os.path.join(our_dir, "adapter_model.safetensors"))
    if set(ours) != set(hf_final):
        raise RuntimeError(f"adapter keys differ: {sorted(set(ours) ^ set(hf_final))[:6]}")
    worst = 0.0
    for key, ref in hf_final.items():
        worst = max(worst, (ours[key].float() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30))
    return worst


def do_run(run, base_dir, init_dir, out, device):
    name = run["name"]
    log(f"== run {name}: " + ", ".join(f"{k} {v}" for k, v in run.items() if k != "name"))
    work, scalars, batches, ours_s = train_ours(run, base_dir, init_dir, out, device)
    check(len(batches) == ITERS, f"run {name}: {len(batches)} micro-batches dumped")
    losses, norms, lrs, final, hf_s = replay_hf(run, base_dir, init_dir, batches)
    rows = compare_curves(run, scalars, losses, norms, lrs)
    for r in rows:
        log(f"  iter {r['iter']:4d}  loss ours {r['ours']:.6f}  hf {r['hf']:.6f}  rel {r['rel']:.2e}  "
            f"grad_norm ours {r['ours_grad_norm'] or 0:.5f} hf {r['hf_grad_norm'] or 0:.5f}  lr rel {r['lr_rel']:.1e}")
    worst = max(rows, key=lambda r: r["rel"])
    adapter_rel = compare_adapters(os.path.join(work, "adapter"), final)
    tokens = sum(sum(1 for s in b["segment_ids"] if s != PAD_SEGMENT) for b in batches)
    res = dict(run, logged=len(rows), max_rel=worst["rel"], max_rel_iter=worst["iter"],
               mean_rel=sum(r["rel"] for r in rows) / len(rows),
               max_grad_norm_rel=max((r["grad_norm_rel"] or 0) for r in rows),
               max_lr_rel=max(r["lr_rel"] for r in rows), first=rows[0], last=rows[-1], final_adapter_rel=adapter_rel,
               tokens=tokens, ours_seconds=ours_s, hf_seconds=hf_s, rows=rows)
    check(worst["rel"] <= LOSS_TOLERANCE and all(math.isfinite(r["rel"]) for r in rows),
          f"run {name}: loss within 1 % at all {len(rows)} logged iterations (max {worst['rel']:.2e} at iter {worst['iter']}; "
          f"loss {rows[0]['hf']:.4f} -> {rows[-1]['hf']:.4f})")
    log(f"  final adapter: max |ours - hf| / max |hf| = {adapter_rel:.2e}; grad_norm max rel {res['max_grad_norm_rel']:.2e}")
    RESULTS.setdefault("runs", {})[name] = res
    return work, batches


# ---------------------------------------------------------------------------------------------------------------------
# 4: our adapter in PEFT gives our logits (`ilgpu-tune parity` on a fixture written here)


def parity_inputs(batches, pad_id):
    """Two dumped single-sample rows, right-padded to one length (pads come after every real token, so causal attention
    keeps them out of the real positions' logits on both sides)."""
    rows = [b for b in batches if b["Size"] == 1][:2]
    length = max(b["Length"] for b in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.int32)
    labels = torch.full((len(rows), length), -100, dtype=torch.int32)
    for i, b in enumerate(rows):
        ids[i, :b["Length"]] = torch.tensor(b["input_ids"], dtype=torch.int32)
        labels[i, :b["Length"]] = torch.tensor(b["labels"], dtype=torch.int32)
    return ids, labels


def batch_loss(logits, labels):
    total, count = None, 0
    for r in range(logits.shape[0]):
        s, n = shifted_ce(logits[r], labels[r].long())
        total = s if total is None else total + s
        count += n
    return total / count


def write_fixture(fixture, base_dir, adapter_dir, ids, labels):
    shutil.rmtree(fixture, ignore_errors=True)
    os.makedirs(fixture)
    for fn in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(base_dir, fn), os.path.join(fixture, fn))
    shutil.copytree(adapter_dir, os.path.join(fixture, "adapter"))
    golden = {"input_ids": ids.contiguous(), "labels": labels.contiguous()}
    model = load_base(base_dir)
    model.train()
    logits = model(input_ids=ids.long(), use_cache=False).logits
    loss = batch_loss(logits, labels)
    loss.backward()
    golden["logits"] = logits.detach().contiguous()
    golden["loss"] = loss.detach().reshape(())
    for n, p in model.named_parameters():
        golden["grad." + n] = p.grad.detach().contiguous()
    pm = peft.PeftModel.from_pretrained(load_base(base_dir), adapter_dir, is_trainable=True)
    pm.train()
    lora = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    ll = pm(input_ids=ids.long(), use_cache=False).logits
    lloss = batch_loss(ll, labels)
    lloss.backward()
    golden["lora_logits"] = ll.detach().contiguous()
    golden["lora_loss"] = lloss.detach().reshape(())
    for n, p in lora.items():
        golden["lora_grad." + lora_key(n)] = p.grad.detach().contiguous()
    save_file(golden, os.path.join(fixture, "golden.safetensors"), metadata={"script": "tools/compat/check_compat.py"})
    log(f"  fixture {fixture}: input {tuple(ids.shape)}, HF loss {loss.item():.6f}, PEFT-with-our-adapter loss "
        f"{lloss.item():.6f}, {len(lora)} LoRA tensors")
    return (ll.detach() - logits.detach()).abs().max().item()


def parse_parity(text):
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and "/" in parts[0] and parts[6] in ("yes", "NO"):
            try:
                rows.append(dict(case=parts[0], tensor=parts[1], max_abs=float(parts[2]), max_ref=float(parts[3]),
                                 rel=float(parts[4]), limit=float(parts[5]), ok=parts[6] == "yes"))
            except ValueError:
                pass
    return rows


def do_parity(work, batches, base_dir, out, device, pad_id):
    log("== our adapter in PEFT vs our engine (ilgpu-tune parity)")
    ids, labels = parity_inputs(batches, pad_id)
    fixture = os.path.join(out, "fixture", "llama")
    lora_effect = write_fixture(fixture, base_dir, os.path.join(work, "adapter"), ids, labels)
    rc, text, dt = cli(["parity", fixture, "--device", device], out, "parity")
    rows = parse_parity(text)

    def pick(case, pred):
        sel = [r for r in rows if r["case"].endswith(case) and pred(r["tensor"])]
        return max(sel, key=lambda r: r["rel"]) if sel else None

    res = dict(exit_code=rc, compared=len(rows), failed=sum(not r["ok"] for r in rows), lora_effect=lora_effect,
               input_shape=list(ids.shape),
               lora_logits=pick("/lora", lambda t: t == "lora_logits"), lora_loss=pick("/lora", lambda t: t == "lora_loss"),
               lora_grad=pick("/lora", lambda t: t.startswith("lora_grad.")), logits=pick("/full", lambda t: t == "logits"),
               loss=pick("/full", lambda t: t == "loss"), grad=pick("/full", lambda t: t.startswith("grad.")), seconds=dt)
    RESULTS["parity"] = res
    check(rc == 0 and len(rows) > 0 and res["failed"] == 0 and res["lora_logits"] is not None,
          f"parity: exit {rc}, {len(rows)} tensors, {res['failed']} failed; lora_logits rel "
          f"{(res['lora_logits'] or {}).get('rel', float('nan')):.2e}, lora_loss rel {(res['lora_loss'] or {}).get('rel', float('nan')):.2e}, "
          f"worst lora grad rel {(res['lora_grad'] or {}).get('rel', float('nan')):.2e}")
    return ids, labels


# ---------------------------------------------------------------------------------------------------------------------
# 5: our merged folder in AutoModelForCausalLM gives the adapter-on-base logits


def do_merge(work, base_dir, out, ids):
    log("== convert merge -> AutoModelForCausalLM.from_pretrained")
    adapter = os.path.join(work, "adapter")
    merged = os.path.join(out, "merged")
    rc, text, dt = cli(["convert", "merge", base_dir, adapter, merged, "--dtype", "float32"], out, "merge")
    if rc != 0:
        raise RuntimeError(f"convert merge exited {rc}")
    x = ids.long()
    pm = peft.PeftModel.from_pretrained(load_base(base_dir), adapter)
    pm.eval()
    with torch.no_grad():
        ref = pm(input_ids=x, use_cache=False).logits
        peft_merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32, attn_implementation="eager",
                                                                output_loading_info=True)
    model, info = loaded if isinstance(loaded, tuple) else (loaded, {})
    model.eval()
    with torch.no_grad():
        got = model(input_ids=x, use_cache=False).logits
    max_abs = (got - ref).abs().max().item()
    max_ref = ref.abs().max().item()
    ours_sd = model.state_dict()
    weight_rel = max((ours_sd[k] - v).abs().max().item() / max(v.abs().max().item(), 1e-30) for k, v in peft_merged.items())
    files = sorted(os.listdir(merged))
    res = dict(files=files, missing_keys=list(info.get("missing_keys", [])), unexpected_keys=list(info.get("unexpected_keys", [])),
               mismatched_keys=[str(m) for m in info.get("mismatched_keys", [])], max_abs=max_abs, max_ref=max_ref,
               rel=max_abs / max_ref, weights_vs_peft_merge_rel=weight_rel, dtype=str(next(model.parameters()).dtype),
               same_keys=set(ours_sd) == set(peft_merged), seconds=dt)
    RESULTS["merge"] = res
    check(not res["missing_keys"] and not res["unexpected_keys"] and not res["mismatched_keys"] and res["same_keys"],
          f"merged folder loads cleanly ({', '.join(files)})")
    check(res["rel"] <= OUTPUT_LIMIT, f"merged logits vs PeftModel(base, our adapter): max|d| {max_abs:.2e}, rel {res['rel']:.2e}; "
          f"weights vs PEFT merge_and_unload rel {weight_rel:.2e}")


# ---------------------------------------------------------------------------------------------------------------------
# report


def fmt(x, spec=".2e"):
    return "n/a" if x is None else format(x, spec)


def write_report(report_dir, meta):
    os.makedirs(report_dir, exist_ok=True)
    RESULTS["meta"] = meta
    RESULTS["failures"] = FAILURES
    stem = "compat" if FAMILY == "llama" else f"compat-{FAMILY}"
    with open(os.path.join(report_dir, stem + ".json"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    L = ["# Compatibility with transformers + PEFT (issue 7, item 9)", "",
         f"Produced by `tools/compat/check_compat.py` on {meta['device']} ({meta['date']}): torch {meta['torch']}, "
         f"transformers {meta['transformers']}, peft {meta['peft']}; ilgpu-tune {meta['commit']} on device `{meta['train_device']}`; "
         f"HF side in fp32, eager attention, on the CPU. Full numbers: `compat.json`.", "",
         (f"Model: tiny random `LlamaForCausalLM` built by transformers (vocab {meta['vocab']}, hidden 64, 2 layers, 4 heads / "
          "2 KV heads, intermediate 128, fp32, RMSNorm weights 1 + 0.1·N(0,1)); LoRA r 8, alpha 16, dropout 0 on q/k/v/o/gate/up/down, "
          if FAMILY == "llama" else
          f"Model: tiny random `{FAMILY}` built by transformers from `tests/fixtures/tiny/{FAMILY}/config.json` with the tiny "
          f"tokenizer's vocabulary ({meta['vocab']}), fp32, RMSNorm weights 1 + 0.1·N(0,1)"
          + (", MoE experts written in the hub's per-expert keys, router aux loss included on both sides" if FAMILY in MOE_FAMILIES else "")
          + f"; LoRA r 8, alpha 16, dropout 0 on {'/'.join(lora_targets())}, ") +
         "initial adapter made by PEFT (`get_peft_model` + seeded nonzero lora_B, `save_pretrained`) and given to both sides "
         "(`lora.init_adapter`). Data: the embedded colorist set, qwen_chat template. "
         f"{ITERS} iterations, lr {LR} (cosine per micro-batch, no warmup), AdamW (0.9, 0.999, eps 1e-8, wd 0), max_norm {MAX_NORM}.",
         "", "## Summary", "", "| check | result | pass |", "|---|---|---|"]
    p = RESULTS.get("parity")
    if p:
        L.append(f"| our adapter → `PeftModel.from_pretrained` gives our logits (`ilgpu-tune parity`, input {p['input_shape']}) | "
                 f"lora_logits rel {fmt((p['lora_logits'] or {}).get('rel'))} (max abs {fmt((p['lora_logits'] or {}).get('max_abs'))}), "
                 f"lora_loss rel {fmt((p['lora_loss'] or {}).get('rel'))}, worst LoRA grad rel {fmt((p['lora_grad'] or {}).get('rel'))}; "
                 f"base logits rel {fmt((p['logits'] or {}).get('rel'))}, worst base grad rel {fmt((p['grad'] or {}).get('rel'))}; "
                 f"{p['compared']} tensors, {p['failed']} failed (limits 1e-4 outputs, 1e-3 grads; the adapter moves logits by "
                 f"{p['lora_effect']:.2e}) | {'yes' if p['exit_code'] == 0 and p['failed'] == 0 else 'NO'} |")
    m = RESULTS.get("merge")
    if m:
        L.append(f"| `convert merge` → `AutoModelForCausalLM.from_pretrained` gives adapter-on-base logits | "
                 f"max abs {fmt(m['max_abs'])} of max {fmt(m['max_ref'], '.3f')} (rel {fmt(m['rel'])}); weights vs PEFT "
                 f"`merge_and_unload` rel {fmt(m['weights_vs_peft_merge_rel'])}; missing/unexpected keys "
                 f"{len(m['missing_keys'])}/{len(m['unexpected_keys'])} | {'yes' if m['rel'] <= OUTPUT_LIMIT and not m['missing_keys'] and not m['unexpected_keys'] else 'NO'} |")
    for name, r in RESULTS.get("runs", {}).items():
        desc = (f"accumulative_counts {r['accumulative_counts']}, batch {r['batch_size']}, "
                f"{'packed' if r['pack'] else 'unpacked'}, max_length {r['max_length']}, logging_steps {r['logging_steps']}"
                f"{', gradient checkpointing' if r['gradient_checkpointing'] else ''}")
        L.append(f"| run {name} loss curve vs HF + PEFT ({desc}) | max rel dev {fmt(r['max_rel'])} (iter {r['max_rel_iter']}), "
                 f"mean {fmt(r['mean_rel'])} over {r['logged']} logged iters; loss {r['first']['hf']:.4f} → {r['last']['hf']:.4f}; "
                 f"grad_norm max rel {fmt(r['max_grad_norm_rel'])}; final adapter rel {fmt(r['final_adapter_rel'])} | "
                 f"{'yes' if r['max_rel'] <= LOSS_TOLERANCE else 'NO'} |")
    for name, r in RESULTS.get("runs", {}).items():
        L += ["", f"## Run {name}: loss at logged iterations", "",
              "| iter | ilgpu-tune | HF + PEFT | rel dev | grad_norm ours | grad_norm HF |", "|---|---|---|---|---|---|"]
        rows = r["rows"]
        shown = rows if len(rows) <= 25 else [x for x in rows if x["iter"] % 10 == 0 or x["iter"] <= 4 or x["iter"] == r["max_rel_iter"]]
        for x in shown:
            L.append(f"| {x['iter']} | {x['ours']:.6f} | {x['hf']:.6f} | {x['rel']:.2e} | {fmt(x['ours_grad_norm'], '.5f')} | "
                     f"{fmt(x['hf_grad_norm'], '.5f')} |")
        if len(shown) < len(rows):
            L.append(f"| (all {len(rows)} in compat.json) | | | | | |")
    L += ["", "## Verdict", "", "all checks passed" if not FAILURES else "FAILED: " + "; ".join(FAILURES), ""]
    with open(os.path.join(report_dir, stem + ".md"), "w") as f:
        f.write("\n".join(L))
    log(f"report: {report_dir}/{stem}.md, {stem}.json")


def main():
    global CLI, FAMILY
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="scratch folder (models, work dirs, logs)")
    ap.add_argument("--report-dir", default=os.path.join(REPO, "benchmarks", "results", "nvidia-h100-80gb"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="ilgpu-tune's device")
    ap.add_argument("--runs", default=None, help="default A,B,C (llama), A,B (MoE: one sample per micro-batch), A,B,C else")
    ap.add_argument("--family", default="llama", help="llama, or a family folder of tests/fixtures/tiny (e.g. qwen3, qwen3_moe)")
    ap.add_argument("--budget", type=float, default=420, help="seconds; later runs are skipped once past it")
    ap.add_argument("--commit", default=os.environ.get("ILGPU_TUNE_COMMIT", "(unknown commit)"))
    args = ap.parse_args()
    FAMILY = args.family
    if FAMILY != "llama" and not os.path.isdir(os.path.join(FIXTURES, FAMILY)):
        ap.error(f"--family {FAMILY}: no tests/fixtures/tiny/{FAMILY}")
    if args.runs is None:
        args.runs = "A,B" if FAMILY in MOE_FAMILIES else "A,B,C"
    t_start = time.time()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    CLI = find_cli()
    dev_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    meta = dict(family=FAMILY, device=dev_name, date=time.strftime("%Y-%m-%d"), torch=torch.__version__, transformers=transformers.__version__,
                peft=peft.__version__, commit=args.commit, train_device=args.device)
    log(f"python {sys.version.split()[0]} torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}; "
        f"{dev_name}; cli: {' '.join(CLI)}")
    base_dir, init_dir = os.path.join(out, "base"), os.path.join(out, "init_adapter")
    config = None
    try:
        log("== tiny model + initial adapter")
        config = build_base(base_dir)
        make_init_adapter(base_dir, init_dir)
        meta["vocab"] = config.vocab_size
        first = None
        for run in RUNS:
            if run["name"] not in args.runs.split(","):
                continue
            if first is not None and time.time() - t_start > args.budget:
                log(f"== run {run['name']} skipped: past the {args.budget:.0f} s budget")
                RESULTS.setdefault("skipped", []).append(run["name"])
                continue
            try:
                work, batches = do_run(run, base_dir, init_dir, out, args.device)
            except Exception:
                traceback.print_exc()
                FAILURES.append(f"run {run['name']}: exception")
                continue
            if first is None and FAMILY != "llama":
                first = (work, batches)  # the family's parity is the fixture's (`ilgpu-tune parity`); merge is llama's
            if first is None:
                first = (work, batches)
                pad_id = config.pad_token_id or 0
                try:
                    ids, _ = do_parity(work, batches, base_dir, out, args.device, pad_id)
                except Exception:
                    traceback.print_exc()
                    FAILURES.append("parity: exception")
                    ids = parity_inputs(batches, pad_id)[0]
                try:
                    do_merge(work, base_dir, out, ids)
                except Exception:
                    traceback.print_exc()
                    FAILURES.append("merge: exception")
            write_report(args.report_dir, meta)
    except Exception:
        traceback.print_exc()
        FAILURES.append("setup: exception")
    meta.setdefault("vocab", config.vocab_size if config is not None else None)
    write_report(args.report_dir, meta)
    log(f"== summary ({time.time() - t_start:.0f} s)")
    for name, r in RESULTS.get("runs", {}).items():
        log(f"  run {name}: loss max rel dev {r['max_rel']:.2e} (iter {r['max_rel_iter']}) over {r['logged']} logged, "
            f"final adapter rel {r['final_adapter_rel']:.2e}, ours {r['ours_seconds']:.1f} s, HF {r['hf_seconds']:.1f} s")
    p = RESULTS.get("parity")
    if p:
        log(f"  parity (our adapter in PEFT): exit {p['exit_code']}, lora_logits rel {fmt((p['lora_logits'] or {}).get('rel'))}, "
            f"lora_loss rel {fmt((p['lora_loss'] or {}).get('rel'))}, lora grads rel {fmt((p['lora_grad'] or {}).get('rel'))}")
    m = RESULTS.get("merge")
    if m:
        log(f"  merged in AutoModelForCausalLM vs PeftModel: logits max abs {m['max_abs']:.2e} rel {m['rel']:.2e}, "
            f"weights vs merge_and_unload rel {m['weights_vs_peft_merge_rel']:.2e}")
    log("all checks passed" if not FAILURES else "FAILURES:\n  " + "\n  ".join(FAILURES))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
