#!/usr/bin/env bash
# The training benchmarks of issue 6 and train-lora.md in one device call, after
# `stage.sh src/IlgpuTune.Cli/IlgpuTune.Cli.csproj` (carry .gpu): random-init Llama shapes, LoRA r 64 on all 7 linear
# kinds, seq 2048, batch 1, gradient checkpointing, bf16 tensor-core matmuls, each followed by HF + PEFT bf16 LoRA on the
# same shape and card. 7B: NF4 QLoRA with paged AdamW (benchmarks/configs/qlora_llama2_7b_bench.yaml); 1.1B: LoRA on a
# bf16 frozen base, AdamW on the device. Logs go to $OUT (or /tmp/out).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export DOTNET_ROOT=/tmp/dotnet; mkdir -p $DOTNET_ROOT; [ -x $DOTNET_ROOT/dotnet ] || tar -xJf .gpu/dotnet-runtime.tar.xz -C $DOTNET_ROOT
T="$DOTNET_ROOT/dotnet .gpu/app/IlgpuTune.Cli/ilgpu-tune.dll"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
CFG=benchmarks/configs/qlora_llama2_7b_bench.yaml
[ -f /tmp/m7b/config.json ] || python3 tools/bench/make_random_llama.py --shape llama2_7b --vocab 32000 --out /tmp/m7b > /dev/null
$T train $CFG --work-dir /tmp/q7 --cfg-options max_iters=10 > "$OUT/train-qlora-llama2_7b.log" 2>&1
grep "Iter(train)" "$OUT/train-qlora-llama2_7b.log" | sed 's/.*time: \([0-9.]*\).*memory: \([0-9]*\).*tokens\/s: \([0-9.]*\).*/7b time \1 memory \2 tokens\/s \3/'
python3 .gpu/bench/peer_hf_peft.py --shape llama2_7b --seq 2048 --bs 1 --ckpt 1 --mode lora 2>&1 | tail -1 | tee "$OUT/train-qlora-llama2_7b-peer.jsonl"
[ -f /tmp/m11/config.json ] || python3 tools/bench/make_random_llama.py --shape tinyllama_1.1b --vocab 32000 --out /tmp/m11 > /dev/null
$T train $CFG --work-dir /tmp/l11 --cfg-options pretrained_model_name_or_path=/tmp/m11 quantization=none paged_optimizer=false max_iters=10 \
  > "$OUT/train-lora-tinyllama_1.1b.log" 2>&1
grep "Iter(train)" "$OUT/train-lora-tinyllama_1.1b.log" | sed 's/.*time: \([0-9.]*\).*memory: \([0-9]*\).*tokens\/s: \([0-9.]*\).*/1.1b time \1 memory \2 tokens\/s \3/'
python3 .gpu/bench/peer_hf_peft.py --shape tinyllama_1.1b --seq 2048 --bs 1 --ckpt 1 --mode lora 2>&1 | tail -1 | tee "$OUT/train-lora-tinyllama_1.1b-peer.jsonl"
