#!/usr/bin/env bash
# Weights at scale (issue 20 items 4-5): builds a Llama-2-7B-shape bf16 HF folder (hidden 4096, intermediate 11008, 32
# layers, vocab 32000, 3 shards, 13.5 GB, random weights, the tiny tokenizer) and a PEFT LoRA adapter (r 64, every linear)
# with the project's own writer (tools/IlgpuTune.ScaleWeights), then times, each from a cold page cache for its inputs:
#   cp -r FOLDER X && sync          the physical baseline for writing a folder
#   cat FOLDER/* > /dev/null        the physical baseline for reading it
#   ilgpu-tune convert quantize FOLDER Q && sync      (NF4, double quant)
#   ilgpu-tune convert merge FOLDER ADAPTER M && sync (bf16)
# with peak RSS (/usr/bin/time -v) and peak anonymous memory (RssAnon sampled every 0.2 s: the allocated part; the rest
# of the RSS is reclaimable mapped file pages). "Cold" = the inputs' pages dropped with posix_fadvise(DONTNEED) after a
# sync (only our files; no global drop_caches). Writes benchmarks/results/<machine>/weights-scale.{jsonl,md}.
#   benchmarks/scale/run-weights.sh [machine-folder]     SHAPE=mid|small for a quick try (default 7b)
#   OLD_CLI=path/to/ilgpu-tune.dll to time another build beside this one; KEEP=1 keeps the generated folders.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
machine="${1:-cpu-epyc-2core}"
shape="${SHAPE:-7b}"
work="${WEIGHTS_WORK:-/tmp/ilgpu-tune-weights}"
out="$root/benchmarks/results/$machine"
mkdir -p "$out" "$work"
[ -n "${SKIP_BUILD:-}" ] || for p in tools/IlgpuTune.ScaleWeights src/IlgpuTune.Cli; do
  dotnet build "$root/$p" -c Release -v q -nologo | grep -E " error |rror\(s\)" || true
done
tool="$root/tools/IlgpuTune.ScaleWeights/bin/Release/net10.0/IlgpuTune.ScaleWeights.dll"
cli="$root/src/IlgpuTune.Cli/bin/Release/net10.0/ilgpu-tune.dll"
model="$work/model-$shape" adapter="$work/adapter-$shape"
if [ ! -f "$model/model.safetensors.index.json" ] || [ ! -f "$adapter/adapter_config.json" ]; then
  rm -rf "$model" "$adapter"
  t0=$(date +%s.%N)
  dotnet "$tool" "$model" --tokenizer "$root/src/IlgpuTune.Training/Assets/tiny" --adapter "$adapter" --shape "$shape" --r 64
  sync
  echo "built in $(echo "$(date +%s.%N) - $t0" | bc) s"
fi

evict() { # drop the page cache of every file under the given folders (after writing back dirty pages)
  sync
  find "$@" -type f -print0 | xargs -0 python3 -c '
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)'
}

jsonl="$out/weights-scale.jsonl"
: > "$jsonl"
# measure NAME INPUT_DIRS... -- COMMAND...: cold inputs, wall time of COMMAND then sync, peak RSS and peak RssAnon.
measure() {
  local name="$1"; shift
  local log; log="$work/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')"
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  evict "${inputs[@]}"
  local load; load="$(sed 's/ [^ ]*$//' /proc/loadavg | cut -d' ' -f1-3)"
  local avail; avail="$(free -g | awk '/^Mem:/ {print $7}')"
  local t0; t0=$(date +%s.%N)
  /usr/bin/time -v -o "$log.time" "$@" > "$log.log" 2>&1 &
  local tpid=$! anon=0
  while kill -0 "$tpid" 2>/dev/null; do
    for c in $(pgrep -P "$tpid" || true); do
      local a; a=$(awk '/^RssAnon:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
      [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
    done
    sleep 0.2
  done
  wait "$tpid" || { echo "$name failed:"; tail -5 "$log.log"; exit 1; }
  sync
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
  local rss; rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log.time")
  local cpu; cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f", s}' "$log.time")
  printf '{"what":"%s","seconds":%.2f,"cpu_seconds":%s,"peak_rss_mb":%d,"peak_anon_mb":%d,"load":"%s","avail_gb":%s}\n' \
    "$name" "$secs" "$cpu" "$((rss / 1024))" "$((anon / 1024))" "$load" "$avail" | tee -a "$jsonl"
}

du_gb() { du -sb "$1" | awk '{printf "%.2f", $1 / 1e9}'; }
rm -rf "$work/copy" "$work/quantized" "$work/merged"
measure "cp -r + sync" "$model" -- cp -r "$model" "$work/copy"
rm -rf "$work/copy"
measure "cat > /dev/null" "$model" -- sh -c "cat '$model'/* > /dev/null"
measure "convert quantize" "$model" -- dotnet "$cli" convert quantize "$model" "$work/quantized"
quantized_gb=$(du_gb "$work/quantized")
rm -rf "$work/quantized"
measure "convert merge" "$model" "$adapter" -- dotnet "$cli" convert merge "$model" "$adapter" "$work/merged"
rm -rf "$work/merged"
if [ -n "${OLD_CLI:-}" ]; then
  measure "convert quantize (OLD_CLI)" "$model" -- dotnet "$OLD_CLI" convert quantize "$model" "$work/quantized"
  rm -rf "$work/quantized"
  measure "convert merge (OLD_CLI)" "$model" "$adapter" -- dotnet "$OLD_CLI" convert merge "$model" "$adapter" "$work/merged"
  rm -rf "$work/merged"
fi

python3 - "$jsonl" "$out/weights-scale.md" "$shape" "$(du_gb "$model")" "$(du_gb "$adapter")" "$quantized_gb" "$machine" <<'EOF'
import json, sys, platform, subprocess
jsonl, md, shape, model_gb, adapter_gb, quantized_gb, machine = sys.argv[1:]
rows = [json.loads(l) for l in open(jsonl)]
cp = next(r for r in rows if r["what"] == "cp -r + sync")["seconds"]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    f"# Weights at scale: convert quantize / convert merge vs cp and cat ({machine})",
    "",
    f"Model: {shape}-shape Llama bf16 HF folder, {model_gb} GB in 3 shards (random weights, tools/IlgpuTune.ScaleWeights); "
    f"adapter: PEFT LoRA r 64 on every linear, {adapter_gb} GB fp32; quantized output {quantized_gb} GB (NF4, double quant).",
    f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
    "shared with other jobs (load average at each start below). Each row starts with its inputs' pages evicted "
    "(sync + posix_fadvise DONTNEED) and includes the final sync. Written by benchmarks/scale/run-weights.sh.",
    "",
    "| operation | seconds | × cp -r + sync | CPU seconds (user+sys) | cores used | peak RSS (MB) | peak anon (MB) | load avg (1/5/15 min) | free GB at start |",
    "|---|---:|---:|---:|---:|---:|---:|---|---:|",
]
for r in rows:
    lines.append(f"| {r['what']} | {r['seconds']:.1f} | {r['seconds'] / cp:.2f} | {r['cpu_seconds']:.1f} | {r['cpu_seconds'] / r['seconds']:.2f} | "
                 f"{r['peak_rss_mb']} | {r['peak_anon_mb']} | {r['load']} | {r['avail_gb']} |")
lines += ["", "peak anon = the process's anonymous (allocated) memory, sampled every 0.2 s; the rest of the RSS is file pages "
          "mapped from the inputs, which the kernel reclaims under pressure."]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
[ -n "${KEEP:-}" ] || rm -rf "$model" "$adapter"
