#!/usr/bin/env bash
# Issue 6's benchmark, on the GPU machine after `stage.sh src/IlgpuTune.Cli/IlgpuTune.Cli.csproj` (carry .gpu):
# a random-init Llama-2-7B shape, NF4 QLoRA r 64 on all 7 linear kinds, seq 2048, batch 1, gradient checkpointing
# (benchmarks/configs/qlora_llama2_7b_bench.yaml), then HF + PEFT bf16 LoRA on the same shape and card as the peer.
# Logs go to $OUT (or /tmp/out).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export DOTNET_ROOT=/tmp/dotnet; mkdir -p $DOTNET_ROOT; tar -xJf .gpu/dotnet-runtime.tar.xz -C $DOTNET_ROOT
T="$DOTNET_ROOT/dotnet .gpu/app/IlgpuTune.Cli/ilgpu-tune.dll"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
[ -f /tmp/m7b/config.json ] || python3 tools/bench/make_random_llama.py --shape llama2_7b --vocab 32000 --out /tmp/m7b
$T train benchmarks/configs/qlora_llama2_7b_bench.yaml --work-dir /tmp/q7b "$@" 2>&1 | tee "$OUT/train-qlora-llama2_7b.log"
python3 .gpu/bench/peer_hf_peft.py --shape llama2_7b --seq 2048 --bs 1 --ckpt 1 --mode lora 2>&1 | tail -1 | tee "$OUT/train-qlora-llama2_7b-peer.jsonl"
