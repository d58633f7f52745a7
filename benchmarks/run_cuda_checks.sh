#!/usr/bin/env bash
# CUDA checks after a structural change, in one device call (after
# `bash benchmarks/stage_gpu.sh benchmarks/IlgpuTune.GpuBench/IlgpuTune.GpuBench.csproj`, carry .gpu):
# transformers parity of every tiny family (fp32, bf16, QLoRA), NF4 bytes, the attention and GEMM kernel checks, the
# tiny demo trained on CUDA through the CLI, and a 1.1B-shape LoRA step for tokens/s. Outputs go to $OUT (or /tmp/out).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B="bash .gpu/run.sh IlgpuTune.GpuBench"
# run.sh unpacks the .NET runtime into /tmp/dotnet; the CLI's assembly is ilgpu-tune.dll
[ -x /tmp/dotnet/dotnet ] || { mkdir -p /tmp/dotnet && tar -xJf .gpu/dotnet-runtime.tar.xz -C /tmp/dotnet; }
export DOTNET_ROOT=/tmp/dotnet
T="/tmp/dotnet/dotnet .gpu/app/IlgpuTune.Cli/ilgpu-tune.dll"
F=$(ls -d tests/fixtures/tiny/*/ | sed "s:/$::")   # every family with a golden
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
step() { local name=$1; shift; local t0=$SECONDS; timeout 240 "$@" > "$OUT/$name.txt" 2>&1; local rc=$?; echo "$name: exit $rc in $((SECONDS - t0)) s; $(tail -1 "$OUT/$name.txt")"; }
step parity-cuda $T parity $F --device cuda
step parity-cuda-bf16 $T parity $F --device cuda --bf16
step parity-cuda-qlora-bf16 $T parity tests/fixtures/tiny/llama --device cuda --bf16 --qlora tests/fixtures/qlora/qlora.safetensors
${SKIP_KERNELS:+:} step nf4-cuda $B nf4 tests/fixtures/nf4/nf4.safetensors
${SKIP_KERNELS:+:} step attention-quick $B attention --quick --out "$OUT"
step demo-cuda $T train tiny_llama_lora_colorist_e3 --work-dir /tmp/demo --cfg-options device=cuda
[ -f /tmp/m11/config.json ] || python3 tools/bench/make_random_llama.py --shape tinyllama_1.1b --vocab 32000 --out /tmp/m11 > /dev/null
step train-lora-1.1b $T train benchmarks/configs/qlora_llama2_7b_bench.yaml --work-dir /tmp/l11 --cfg-options pretrained_model_name_or_path=/tmp/m11 quantization=none paged_optimizer=false max_iters=10
grep "Iter(train)" "$OUT/train-lora-1.1b.txt" | tail -5
grep -h "parity:" "$OUT"/parity-*.txt
