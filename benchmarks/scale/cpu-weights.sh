#!/usr/bin/env bash
# Issue 20 item 3, measured: `chat` on a 7B-shape bf16 folder on the managed CPU path (peak RSS vs the folder size), and
# the load of its NF4 copy vs `cat FOLDER/* > /dev/null`. Builds the folder with tools/IlgpuTune.ScaleWeights (random bf16,
# Llama-2-7B shape, 3 shards, the Llama 2 tokenizer), deletes everything it made at the end. Needs ~30 GB of disk and
# ~15 GiB of free memory (check `free -g`); run it alone. Results (markdown) on stdout.
#   benchmarks/scale/cpu-weights.sh [WORK_DIR]
# SCALE_WEIGHTS=path/to/IlgpuTune.ScaleWeights.dll uses a built builder instead of building tools/IlgpuTune.ScaleWeights.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d /tmp/cpu-weights.XXXX)}"
mkdir -p "$work"
trap 'rm -rf "$work/llama7b" "$work/llama7b-nf4"' EXIT
cli="$root/src/IlgpuTune.Cli/bin/Release/net10.0/ilgpu-tune.dll"
[ -f "$cli" ] || dotnet build "$root/src/IlgpuTune.Cli" -c Release >/dev/null
builder="${SCALE_WEIGHTS:-}"
if [ -z "$builder" ]; then
  dotnet build "$root/tools/IlgpuTune.ScaleWeights" -c Release >/dev/null
  builder="$root/tools/IlgpuTune.ScaleWeights/bin/Release/net10.0/IlgpuTune.ScaleWeights.dll"
fi
tokdir="$(bash "$root/tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh")"
export ILGPUTUNE_DEVICE=cpu

secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }
rss() { grep "Maximum resident" "$1" | awk '{print $6}'; }   # KiB

dotnet "$builder" "$work/llama7b" --tokenizer "$tokdir/llama2" --shape "${SHAPE:-7b}" >/dev/null
size=$(du -sb "$work/llama7b" | cut -f1)
cat_s=$(secs sh -c "cat '$work'/llama7b/* > /dev/null")

chat=(dotnet "$cli" chat "$work/llama7b" --prompt "${PROMPT:-The capital of France is}" --max-new-tokens 4 --temperature 0 --no-streamer)
/usr/bin/time -v "${chat[@]}" > "$work/chat.out" 2> "$work/chat.time"
chat_rss=$(rss "$work/chat.time")
chat_s=$(grep "Elapsed (wall" "$work/chat.time" | awk '{print $NF}')

dotnet "$cli" convert quantize "$work/llama7b" "$work/llama7b-nf4" >/dev/null
nf4=$(du -sb "$work/llama7b-nf4" | cut -f1)
nf4_cat=$(secs sh -c "cat '$work'/llama7b-nf4/* > /dev/null")
/usr/bin/time -v dotnet fsi "$root/benchmarks/scale/load-time.fsx" "$work/llama7b-nf4" > "$work/nf4.out" 2> "$work/nf4.time"
nf4_rss=$(rss "$work/nf4.time")
nf4_load=$(grep -o "loaded in [0-9.]* s" "$work/nf4.out" | awk '{print $3}')

awk -v size="$size" -v cat_s="$cat_s" -v rss="$chat_rss" -v chat_s="$chat_s" -v nf4="$nf4" -v nf4_cat="$nf4_cat" \
    -v nf4_rss="$nf4_rss" -v nf4_load="$nf4_load" 'BEGIN {
  gb = 1e9
  printf "| measurement | value |\n|---|---|\n"
  printf "| bf16 folder | %.2f GB |\n", size / gb
  printf "| `cat folder/* > /dev/null` | %s s |\n", cat_s
  printf "| `chat --max-new-tokens 4`: peak RSS | %.2f GB (%.2fx the folder) |\n", rss * 1024 / gb, rss * 1024 / size
  printf "| `chat --max-new-tokens 4`: wall time | %s |\n", chat_s
  printf "| NF4 folder | %.2f GB |\n", nf4 / gb
  printf "| `cat nf4-folder/* > /dev/null` | %s s (%.0f MB/s) |\n", nf4_cat, nf4 / 1e6 / nf4_cat
  printf "| NF4 load (ModelLoader.Load as chat) | %s s (%.0f MB/s, %.2fx cat) |\n", nf4_load, nf4 / 1e6 / nf4_load, nf4_load / nf4_cat
  printf "| NF4 load: peak RSS | %.2f GB (%.2fx the folder) |\n", nf4_rss * 1024 / gb, nf4_rss * 1024 / nf4
}'
echo
echo "chat answer (random weights): $(tr '\n' ' ' < "$work/chat.out")"
