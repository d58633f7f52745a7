#!/usr/bin/env bash
# Issue 15's start-up numbers (a timing harness, not a test): wall time of a whole process that loads the embedded tiny
# model and prints one token (time to first token), and of one that runs one training step (time to first step), for the
# JIT CLI (`dotnet ilgpu-tune.dll`) and the Native AOT sample, on the managed CPU path. Median of RUNS (default 5) runs
# each, after one warm-up run (file cache). Needs the AOT binary: AOT=path/to/IlgpuTune.AotSample (tools/aot/check_aot_sample.sh
# publishes it; or `dotnet publish src/IlgpuTune.AotSample -r linux-x64 -c Release -o /tmp/aot`).
# Usage: AOT=/tmp/aot/IlgpuTune.AotSample benchmarks/run_startup_bench.sh > benchmarks/results/<machine>/startup.md
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
AOT=${AOT:?set AOT to the published IlgpuTune.AotSample binary}
CLI=(dotnet src/IlgpuTune.Cli/bin/Release/net10.0/ilgpu-tune.dll)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ILGPUTUNE_CACHE=$tmp/cache
"$AOT" train tiny_llama_lora_colorist_e3 --work-dir "$tmp/w0" --max-iters 1 >/dev/null  # unpacks the tiny assets
model=$(ls -d "$ILGPUTUNE_CACHE"/tiny-*)

# median wall milliseconds of "$@" over RUNS runs (one warm-up first)
median_ms() {
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  local times=()
  for _ in $(seq "$RUNS"); do
    local t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    times+=($(( ($(date +%s%N) - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}

cli_token=$(median_ms "${CLI[@]}" chat "$model" --prompt-template auto --prompt hi --max-new-tokens 1 --device cpu)
aot_token=$(median_ms "$AOT" chat "$model" --template auto --prompt hi --max-new-tokens 1)
cli_step=$(median_ms bash -c "${CLI[*]} train tiny_llama_lora_colorist_e3 --work-dir \$(mktemp -d -p $tmp) --cfg-options max_iters=1 device=cpu")
aot_step=$(median_ms bash -c "$AOT train tiny_llama_lora_colorist_e3 --work-dir \$(mktemp -d -p $tmp) --max-iters 1")

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
cat <<MD
# Start-up: JIT CLI vs Native AOT sample (issue 15)

Machine: $cpu, $(nproc) cores; $(dotnet --version) SDK; managed CPU path; embedded tiny Llama (+ LoRA adapter for training).
Median wall time of a whole process over $RUNS runs after a warm-up (\`benchmarks/run_startup_bench.sh\`, $(date -u +%F)).

| | JIT CLI (\`dotnet ilgpu-tune.dll\`) | Native AOT (\`IlgpuTune.AotSample\`) |
|---|---|---|
| load model + first token (\`chat --max-new-tokens 1\`) | $cli_token ms | $aot_token ms |
| first training step (\`train … max_iters=1\`, incl. writing the checkpoint and adapter) | $cli_step ms | $aot_step ms |
MD
