#!/usr/bin/env bash
# Issue 21's CUDA table in one short device call (after `bash benchmarks/stage_gpu.sh`, carry .gpu): transformers parity
# of every fixture family on CUDA through the precompiled PTX (fp32 and bf16), the same fp32 cases through ILGPU's JIT
# (ILGPU_TUNE_JIT=1: both load paths must agree), QLoRA parity, the tiny DPO demo on CUDA, and the 200-step HF + PEFT
# loss-curve replay (tools/compat/check_compat.py) for a dense and an MoE family ($COMPAT_FAMILIES). Outputs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source benchmarks/staged_cli.sh
F=$(ls -d tests/fixtures/tiny/*/ | sed "s:/$::")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
step() { local name=$1; shift; local t0=$SECONDS; timeout 150 "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; echo "$name: exit $rc in $((SECONDS - t0)) s; $(tail -1 "$OUT/$name.txt")"; }
step parity-cuda $T parity $F --device cuda
step parity-cuda-bf16 $T parity $F --device cuda --bf16
step parity-cuda-jit env ILGPU_TUNE_JIT=1 $T parity $F --device cuda
step parity-cuda-qlora-bf16 $T parity tests/fixtures/tiny/llama --device cuda --bf16 --qlora tests/fixtures/qlora/qlora.safetensors
step dpo-cuda $T train tiny_llama_lora_color_dpo --work-dir /tmp/dpo --cfg-options device=cuda dtype=bfloat16
grep -h "rewards/accuracies" "$OUT/dpo-cuda.txt" | tail -1 | grep -o "rewards/accuracies: [0-9.]*  rewards/margins: [-0-9.]*"
python3 tools/bench/parity_table.py "$OUT" > "$OUT/families-cuda.md"; tail -1 "$OUT/families-cuda.md"
for fam in ${COMPAT_FAMILIES-qwen3 qwen3_moe}; do
  ILGPU_TUNE_CLI="$T" step compat-$fam python3 tools/compat/check_compat.py --family $fam --out /tmp/compat-$fam \
    --report-dir "$OUT" --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  grep -E "^  run |all checks passed|FAILURES" "$OUT/compat-$fam.txt"
done
# At most 8 files come back from a device call: the raw outputs travel as one archive beside the tables.
(cd "$OUT" && tar -czf cuda-families-raw.tgz --remove-files $(ls *.txt *.json 2>/dev/null | grep -v '^device.txt$'))
