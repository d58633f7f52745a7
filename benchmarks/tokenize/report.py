"""Turns run-tokenize.sh's JSON lines into a markdown table: per tokenizer, corpus and mode, ours vs HF tokenizers."""
import json, sys

rows, load = [], ""
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "load" in r:
        load = r["load"]
        continue
    r["load"] = load
    rows.append(r)
print("# Tokenizer speed on fresh text (benchmarks/tokenize/run-tokenize.sh)\n")
print("Each row: one process per implementation, a new tokenizer, the first tenth of the corpus as warm-up, then the rest")
print("(strings never seen before) encoded once without special tokens. `one core`: ours single-threaded vs HF's encodeBatch on")
print("one Rayon thread; `all cores`: ours EncodeBatch vs HF encodeBatch. CPU s = process CPU time (steadier than wall time on")
print("this shared machine); speed-up = HF time / our time. `ids` = FNV-1a over all ids in order: equal hashes mean identical output.\n")
print("| tokenizer | corpus | mode | strings | chars | tokens | ours wall s | ours CPU s | HF wall s | HF CPU s | speed-up (CPU) | speed-up (wall) | ids equal | load avg |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
ours = [r for r in rows if r["impl"] == "ilgpu-tune"]
hf = [r for r in rows if r["impl"] == "hf-tokenizers"]
for o in ours:
    mode = "one core" if o["mode"] == "single" else "all cores"
    h = next(x for x in hf if x["tokenizer"] == o["tokenizer"] and x["corpus"] == o["corpus"]
             and (x["threads"] == 1) == (o["mode"] == "single"))
    print(f"| {o['tokenizer']} | {o['corpus']} | {mode} | {o['strings']:,} | {o['chars']:,} | {o['tokens']:,} | {o['seconds']:.3f} | "
          f"{o['cpu_seconds']:.3f} | {h['seconds']:.3f} | {h['cpu_seconds']:.3f} | {h['cpu_seconds'] / o['cpu_seconds']:.2f}x | "
          f"{h['seconds'] / o['seconds']:.2f}x | {'yes' if o['ids_fnv'] == h['ids_fnv'] else 'NO'} | {o['load']} |")
