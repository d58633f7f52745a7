#!/usr/bin/env bash
# Rebuilds src/IlgpuTune.Training/Assets/tiny (the embedded default of `ilgpu-tune train`): tokenizer + data + random
# tiny Llama from make_tiny_assets.py, then the base is pre-trained on raw color sentences by ilgpu-tune itself
# (full fine-tuning on the CPU, a few minutes) and exported as an HF folder. Run from the repo root.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 tools/tiny/make_tiny_assets.py --out "$tmp/src"
dotnet build src/IlgpuTune.Cli -c Release -v q -nologo
cli="dotnet src/IlgpuTune.Cli/bin/Release/net10.0/ilgpu-tune.dll"
$cli train tools/tiny/pretrain.yaml --work-dir "$tmp/pre" --cfg-options "pretrained_model_name_or_path=$tmp/src" "data_path=$tmp/src/pretrain.jsonl"
out=src/IlgpuTune.Training/Assets/tiny
rm -rf "$out" && mkdir -p "$out"
$cli convert adapter "$(ls -d "$tmp"/pre/iter_* | sort -V | tail -1)" "$tmp/export"
cp "$tmp/export/model.safetensors" "$tmp/src/config.json" "$tmp/src/tokenizer.json" "$tmp/src/tokenizer_config.json" "$tmp/src/colorist.jsonl" "$tmp/src/self_cognition.json" "$out/"
ls -l "$out"
