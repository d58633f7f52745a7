#!/usr/bin/env bash
# Issue 22 item 3 in one short device step (after `bash benchmarks/stage_gpu.sh`, carry .gpu): a TinyLlama-1.1B-shape
# LoRA training step (bf16, r 64 on all 7 linear kinds, packed 2,048-token rows of the embedded colorist set) run by the
# staged JIT CLI twice on the same GPU: through ILGPU's CUDA accelerator (device=cuda) and through the driver runtime the
# Native AOT app uses (device=driver; precompiled PTX launched with cuLaunchKernel, same kernels and plans). Tokens/s over
# iterations 4-12 of each. Writes $OUT/driver-step.md.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source benchmarks/staged_cli.sh
M=/tmp/m-tinyllama
TINY=src/IlgpuTune.Training/Assets/tiny
# the embedded tokenizer's vocabulary (559), so the colorist set trains it; every other size is TinyLlama-1.1B's
[ -f $M/config.json ] || python3 tools/bench/make_random_llama.py --shape tinyllama_1.1b --vocab 559 --out $M > /dev/null
cp $TINY/tokenizer.json $TINY/tokenizer_config.json $M/
rate() { grep "Iter(train)" "$1" | awk '{ for (i = 1; i < NF; i++) { if ($i == "time:") t = $(i+1); if ($i == "tokens/s:") r = $(i+1); if ($i == "memory:") m = $(i+1) }
  k++; if (k > 3) { tt += t; tok += t * r } } END { if (tt > 0) printf "%.0f tokens/s over %d iterations, peak %.2f GiB", tok / tt, k - 3, m / 1024; else print "no timed iterations" }'; }
{
  echo "# TinyLlama-1.1B-shape LoRA step: ILGPU's CUDA accelerator vs the driver runtime ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
  echo
  for dev in cuda driver; do
    timeout 150 $T train tiny_llama_lora_colorist_e3 --work-dir /tmp/ds-$dev --overwrite --cfg-options \
      pretrained_model_name_or_path=$M tokenizer=$M device=$dev dtype=bfloat16 max_length=2048 pack_to_max_length=true \
      lora.r=64 lora.lora_alpha=16 "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" \
      max_iters=12 logging_steps=1 save_steps=1000 evaluation_freq=1000 > "$OUT/driver-step-$dev.log" 2>&1
    echo "- device=$dev (exit $?): $(rate "$OUT/driver-step-$dev.log"); loss $(grep -o 'loss: [0-9.]*' "$OUT/driver-step-$dev.log" | sed -n '1p;$p' | tr '\n' ' ')"
  done
} | tee "$OUT/driver-step.md"
