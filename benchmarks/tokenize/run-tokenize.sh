#!/usr/bin/env bash
# Fresh-text tokenizer benchmark: ours (FreshTokenize in IlgpuTune.Benchmarks) beside HF tokenizers (Rust, through the
# npm package @anush008/tokenizers under node), same corpora, same run. Writes benchmarks/results/<machine>/tokenize-fresh.{jsonl,md}.
#   benchmarks/tokenize/run-tokenize.sh [machine-folder]     (default: cpu-epyc-2core)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
machine="${1:-cpu-epyc-2core}"
out="$root/benchmarks/results/$machine"
mkdir -p "$out"
tokdir="$(bash "$root/tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh")"
(cd "$here" && [ -d node_modules/@anush008/tokenizers ] || npm install --no-audit --no-fund --silent)
(cd "$here" && node make-corpus.mjs)
dotnet build "$root/benchmarks/IlgpuTune.Benchmarks" -c Release -v q -nologo | grep -E "error|rror\(s\)" || true
dll="$root/benchmarks/IlgpuTune.Benchmarks/bin/Release/net10.0/IlgpuTune.Benchmarks.dll"
jsonl="$out/tokenize-fresh.jsonl"
: > "$jsonl"
for tok in qwen3 llama3; do
  for corpus in english chinese code mixed; do
    c="$here/.corpus/$corpus.json"
    # one core each: ours single-threaded, HF's batch encoder on one Rayon thread (its fastest one-core path)
    echo "{\"load\":\"$(uptime | sed 's/.*load average: //')\"}" >> "$jsonl"
    dotnet "$dll" fresh-tokenize "$tokdir/$tok" "$c" single >> "$jsonl"
    (cd "$here" && RAYON_NUM_THREADS=1 node hf.mjs "$tokdir/$tok" "$c" batch) >> "$jsonl"
    # all cores: ours EncodeBatch, HF encodeBatch with its default thread pool
    dotnet "$dll" fresh-tokenize "$tokdir/$tok" "$c" batch >> "$jsonl"
    (cd "$here" && node hf.mjs "$tokdir/$tok" "$c" batch) >> "$jsonl"
  done
done
python3 "$here/report.py" "$jsonl" > "$out/tokenize-fresh.md"
cat "$out/tokenize-fresh.md"
