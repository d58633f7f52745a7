#!/usr/bin/env python3
"""HF transformers + PEFT trained on exactly the packed rows ilgpu-tune trains on: the rows come from
`ilgpu-tune log-dataset ... --pack --show input_ids|labels|position_ids` (one file each), so both sides see the same
samples at the same row boundaries. Each step is one row (batch 1, no padding) with its position_ids, from which
transformers builds the block-diagonal mask (no attention across packed samples; checked in tools/golden), through SDPA
(or flash_attention_2 when the flash_attn package is installed). LoRA on all 7 linear kinds, fused AdamW.
Prints one JSON object: tokens/s over the timed rows, peak torch.cuda.max_memory_allocated for the whole run.
    python3 peer_hf_peft_packed.py --model /tmp/m7b --rows /tmp/rows --ckpt 1 --r 64 --warmup 3 --steps 10
"""
import argparse, importlib.util, json, os, random, time
import torch
from transformers import AutoModelForCausalLM


def read_rows(path):
    return [json.loads(line) for line in open(path) if line.startswith("[")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows", required=True, help="folder with input_ids.txt, labels.txt, position_ids.txt")
    ap.add_argument("--ckpt", type=int, default=1)
    ap.add_argument("--r", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ids, labels, pos = (read_rows(os.path.join(a.rows, f"{n}.txt")) for n in ("input_ids", "labels", "position_ids"))
    assert len(ids) == len(labels) == len(pos) and all(len(x) == len(y) == len(z) for x, y, z in zip(ids, labels, pos))
    order = list(range(len(ids)))
    random.Random(a.seed).shuffle(order)  # a random sample of rows, as the trainer's shuffled sampler draws them
    order = order[: a.warmup + a.steps]
    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation=attn).cuda()
    m.train()  # from_pretrained returns eval mode, where transformers skips gradient checkpointing
    if a.ckpt:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    from peft import LoraConfig, get_peft_model
    m = get_peft_model(m, LoraConfig(r=a.r, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, fused=True)

    def step(k):
        t = lambda x: torch.tensor([x], device="cuda")
        loss = m(input_ids=t(ids[k]), labels=t(labels[k]), position_ids=t(pos[k])).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return len(ids[k])

    for k in order[: a.warmup]:
        step(k)
    torch.cuda.synchronize()
    t0, tokens = time.time(), 0
    for k in order[a.warmup:]:
        tokens += step(k)
    torch.cuda.synchronize()
    dt = time.time() - t0
    print(json.dumps(dict(peer="transformers+peft", attn=attn, torch=torch.__version__,
        device=torch.cuda.get_device_name(), model=a.model, r=a.r, ckpt=a.ckpt, rows=len(order) - a.warmup,
        tokens=tokens, tokens_per_s=round(tokens / dt, 1), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
        trainable_params=sum(p.numel() for p in params))))


if __name__ == "__main__":
    main()
