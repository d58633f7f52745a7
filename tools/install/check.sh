#!/usr/bin/env bash
# CI check of README.md's "## Install" block: runs its commands exactly as written, with the install folder
# (~/.ilgpu-tune) moved into a temporary folder, then checks that `ilgpu-tune` runs from PATH as a user would type it.
set -euo pipefail
cd "$(dirname "$0")/../.."
block=$(awk '/^## Install/{q=1; next} q&&/^## /{exit} q&&/^```/{n++; next} q&&n==1{print}' README.md)
[[ -n "$block" ]] || { echo "README.md: no command block under '## Install'" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
script=${block//\~\/.ilgpu-tune/$tmp/.ilgpu-tune}
script=${script//\$HOME\/.ilgpu-tune/$tmp/.ilgpu-tune}
echo "$script" | sed 's/^/+ /'
bash -euo pipefail -c "$script"
export PATH="$tmp/.ilgpu-tune/bin:$PATH"
[[ "$(command -v ilgpu-tune)" == "$tmp/.ilgpu-tune/bin/ilgpu-tune" ]] || { echo "ilgpu-tune is not on PATH after the install" >&2; exit 1; }
out=$(cd "$tmp" && ilgpu-tune list-cfg -p tiny)
grep -qx tiny_llama_lora_colorist_e3 <<<"$out" || { echo "installed ilgpu-tune: list-cfg lacks tiny_llama_lora_colorist_e3:"$'\n'"$out" >&2; exit 1; }
(cd "$tmp" && ilgpu-tune copy-cfg tiny_llama_lora_colorist_e3 . --format py >/dev/null && [[ -s tiny_llama_lora_colorist_e3_copy.py ]])
echo "install check: ilgpu-tune installed from README's Install block runs from PATH"
