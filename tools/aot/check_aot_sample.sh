#!/usr/bin/env bash
# Issue 15's AOT check: publish src/IlgpuTune.AotSample with Native AOT (full trimming; trim/AOT warnings are errors),
# run a few training steps in the native binary on the embedded tiny model, then ask it one question with the adapter it
# wrote and require the answer `ilgpu-tune chat` gives for the same model, adapter and options. No GPU needed.
# Native AOT links with clang and zlib: installed with apt-get when missing (a clean CI box).
set -euo pipefail
cd "$(dirname "$0")/../.."
linker=()
if ! command -v clang >/dev/null; then
  if command -v clang-14 >/dev/null; then linker=(-p:CppCompilerAndLinker=clang-14)
  else apt-get update -qq && apt-get install -y -qq clang zlib1g-dev >/dev/null; fi
fi
[ -e /usr/include/zlib.h ] || { apt-get update -qq && apt-get install -y -qq zlib1g-dev >/dev/null; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ILGPUTUNE_CACHE=$tmp/cache

dotnet publish src/IlgpuTune.AotSample -r linux-x64 -c Release -o "$tmp/aot" "${linker[@]}"
aot=$tmp/aot/IlgpuTune.AotSample

"$aot" train tiny_llama_lora_colorist_e3 --work-dir "$tmp/work" --max-iters 3 | tee "$tmp/train.txt"
grep -q '^trained 3 iterations' "$tmp/train.txt"
adapter=$(sed -n 's/.*; adapter \(.*\)$/\1/p' "$tmp/train.txt")
[ -d "$adapter" ] || { echo "the AOT sample's training wrote no adapter folder ('$adapter')"; exit 1; }
model=$(ls -d "$ILGPUTUNE_CACHE"/tiny-*)

dotnet build src/IlgpuTune.Cli -c Release -v q -nologo >/dev/null
ask=(--prompt "What color is the sky?" --temperature 0 --max-new-tokens 24)
expected=$(dotnet src/IlgpuTune.Cli/bin/Release/net10.0/ilgpu-tune.dll chat "$model" --adapter "$adapter" --prompt-template auto --device cpu "${ask[@]}" 2>/dev/null)
actual=$("$aot" chat "$model" --adapter "$adapter" --template auto "${ask[@]}" 2>/dev/null)
if [ "$expected" != "$actual" ]; then
  printf 'AOT sample answer differs from ilgpu-tune chat:\n  aot:  %q\n  chat: %q\n' "$actual" "$expected"
  exit 1
fi
printf 'AOT sample OK (%s MB native binary): %q\n' "$(( $(stat -c %s "$aot") / 1048576 ))" "$actual"
