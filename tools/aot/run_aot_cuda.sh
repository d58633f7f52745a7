#!/usr/bin/env bash
# Issue 22 in one device call: the Native AOT sample on CUDA through the driver runtime (precompiled PTX, no .NET, no CUDA
# toolkit) against its own CPU answer and the JIT CLI on the same GPU. Needs, carried in .gpu/ (the 26 MB binary packed,
# so that it fits the carry next to the staged CLI; fair.tar.xz is not needed here):
#   .gpu/aot.tar.xz   published and packed here (as tools/aot/check_aot_sample.sh publishes it):
#                     dotnet publish src/IlgpuTune.AotSample -r linux-x64 -c Release -o /tmp/aot-pub
#                     tar -C /tmp/aot-pub -cf - IlgpuTune.AotSample | xz -T2 -6 > .gpu/aot.tar.xz
#   .gpu/cli.tar.xz, .gpu/dotnet-runtime.tar.xz   bash benchmarks/stage_gpu.sh (the JIT CLI and its runtime)
# Steps (each with its own timeout and a time budget, so the call never hangs and ends within 4 minutes):
#   1. LoRA and QLoRA training steps on CUDA with the AOT binary (the LoRA run's adapter is the one chat uses);
#   2. greedy chat on the tiny model + adapter: AOT on CUDA == AOT on the CPU == `ilgpu-tune chat --device cuda`;
#   3. transformers parity through the driver runtime (fp32, then bf16 tensor-core products), per fixture family;
#   4. start-up: process start to first token (--max-new-tokens 1) and to the first training step done (max_iters 1),
#      AOT vs JIT CLI, median of 3, same GPU.
# Writes every output to $OUT and prints a compact summary (summary.txt).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -z "${AOT:-}" ]; then
  [ -x /tmp/aot/IlgpuTune.AotSample ] || { mkdir -p /tmp/aot && tar -xJf .gpu/aot.tar.xz -C /tmp/aot; }
  AOT=/tmp/aot/IlgpuTune.AotSample
fi
if [ -z "${JIT_CMD:-}" ]; then # the staged JIT CLI (a dry run elsewhere may set JIT_CMD="dotnet path/to/ilgpu-tune.dll")
  source benchmarks/staged_cli.sh
  JIT_CMD=$T
fi
read -ra JIT <<< "$JIT_CMD"
export ILGPUTUNE_CACHE=/tmp/aot-cache
chmod +x "$AOT" 2>/dev/null
S="$OUT/summary.txt"; : > "$S"
say() { echo "$*" | tee -a "$S"; }
# step NAME SECONDS CMD...: output to $OUT/NAME.txt, one summary line (exit code, seconds, last line).
BUDGET=${BUDGET:-210} # seconds: later steps are skipped past it, so the call stays under 4 minutes
step() {
  local name=$1 limit=$2; shift 2
  if (( SECONDS + limit / 2 > BUDGET )); then say "$name: skipped (time budget)"; return 124; fi
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" > "$OUT/$name.txt" 2>&1; local rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s; $(grep -v '^\s*$' "$OUT/$name.txt" | tail -1 | cut -c1-160)"
  return $rc
}
# chat NAME CMD...: as step, the answer (stdout) alone in $OUT/NAME.txt, stderr in $OUT/NAME.err.
chat() {
  local name=$1; shift
  if (( SECONDS + 20 > BUDGET )); then say "$name: skipped (time budget)"; return 124; fi
  local t0=$SECONDS
  timeout -k 5 40 "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"; local rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s; $(tail -1 "$OUT/$name.err" | cut -c1-160)"
}
# ms CMD...: wall milliseconds of one run (output to $OUT/timing.log); "fail" when it fails.
ms() {
  (( SECONDS > BUDGET + 20 )) && { echo skipped; return; }
  local t0; t0=$(date +%s%N)
  if timeout -k 5 30 "$@" >> "$OUT/timing.log" 2>&1; then echo $(( ($(date +%s%N) - t0) / 1000000 )); else echo fail; fi
}
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

say "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"
say "aot binary: $(stat -c %s "$AOT" 2>/dev/null || echo missing) bytes; no .NET on PATH: $(command -v dotnet || echo yes)"

# 1. training on CUDA through the AOT binary
step aot-train-lora 60 "$AOT" train tiny_llama_lora_colorist_e3 --device cuda --work-dir /tmp/w-lora --max-iters 3
adapter=$(sed -n 's/.*; adapter \(.*\)$/\1/p' "$OUT/aot-train-lora.txt")
step aot-train-qlora 60 "$AOT" train tiny_llama_qlora_colorist_e3 --device cuda --work-dir /tmp/w-qlora --max-iters 3
model=$(ls -d "$ILGPUTUNE_CACHE"/tiny-* 2>/dev/null | head -1)
if [ -z "$model" ] || [ -z "$adapter" ]; then
  say "no model/adapter from the CUDA LoRA run; chat and timings use a CPU run's adapter"
  step aot-train-lora-cpu 90 "$AOT" train tiny_llama_lora_colorist_e3 --device cpu --work-dir /tmp/w-cpu --max-iters 3
  adapter=$(sed -n 's/.*; adapter \(.*\)$/\1/p' "$OUT/aot-train-lora-cpu.txt")
  model=$(ls -d "$ILGPUTUNE_CACHE"/tiny-* 2>/dev/null | head -1)
fi

# 2. greedy chat: AOT CUDA == AOT CPU == JIT CLI CUDA (fp32, then the base weights in NF4: --bits 4)
ask=(--prompt "What color is the sky?" --temperature 0 --max-new-tokens 24)
chat aot-chat-cuda "$AOT" chat "$model" --adapter "$adapter" --template auto --device cuda "${ask[@]}"
chat aot-chat-cpu "$AOT" chat "$model" --adapter "$adapter" --template auto --device cpu "${ask[@]}"
chat jit-chat-cuda "${JIT[@]}" chat "$model" --adapter "$adapter" --prompt-template auto --device cuda "${ask[@]}"
chat aot-chat-cuda-nf4 "$AOT" chat "$model" --adapter "$adapter" --template auto --device cuda --bits 4 "${ask[@]}"
chat jit-chat-cuda-nf4 "${JIT[@]}" chat "$model" --adapter "$adapter" --prompt-template auto --device cuda --bits 4 "${ask[@]}"
answer() { head -c 300 "$OUT/$1.txt" | tr '\n' ' '; }
same() { [ -s "$OUT/$1.txt" ] && cmp -s "$OUT/$1.txt" "$OUT/$2.txt" && echo equal || echo DIFFERENT; }
say "chat answer (AOT, CUDA): $(answer aot-chat-cuda)"
say "chat equalities: AOT cuda vs AOT cpu: $(same aot-chat-cuda aot-chat-cpu); AOT cuda vs JIT cuda: $(same aot-chat-cuda jit-chat-cuda); nf4 AOT vs JIT: $(same aot-chat-cuda-nf4 jit-chat-cuda-nf4)"

# 3. parity through the driver runtime, per family (fp32 limits, then bf16 limits)
for f in tests/fixtures/tiny/*/; do
  fam=$(basename "$f")
  step "parity-aot-$fam" 25 "$AOT" parity "$f" --device cuda
  step "parity-aot-$fam-bf16" 25 "$AOT" parity "$f" --device cuda --bf16
done

# 4. start-up, median of 3: first token, first training step
: > "$OUT/timing.log"
one=(--prompt "What color is the sky?" --temperature 0 --max-new-tokens 1)
a=(); j=(); ta=(); tj=()
for i in 1 2 3; do
  a+=("$(ms "$AOT" chat "$model" --adapter "$adapter" --template auto --device cuda "${one[@]}")")
  j+=("$(ms "${JIT[@]}" chat "$model" --adapter "$adapter" --prompt-template auto --device cuda "${one[@]}")")
  ta+=("$(ms "$AOT" train tiny_llama_lora_colorist_e3 --device cuda --work-dir "/tmp/t-aot-$i" --max-iters 1)")
  tj+=("$(ms "${JIT[@]}" train tiny_llama_lora_colorist_e3 --work-dir "/tmp/t-jit-$i" --cfg-options device=cuda max_iters=1)")
done
say "start-up on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), ms from process start, median of 3 (runs):"
say "  first token (chat, 1 new token):  AOT $(median3 "${a[@]}")  (${a[*]})   JIT CLI $(median3 "${j[@]}")  (${j[*]})"
say "  first training step (max_iters 1): AOT $(median3 "${ta[@]}")  (${ta[*]})   JIT CLI $(median3 "${tj[@]}")  (${tj[*]})"
