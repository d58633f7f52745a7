"""run-scale.sh's JSON lines as a markdown table (this tree vs the baseline commit vs cat)."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1])]
cat = next(r for r in rows if r["what"] == "cat")
print("# Dataset preparation at scale (benchmarks/scale/run-scale.sh)\n")
print(f"XTuner conversation set of {cat['records']:,} records (make_conversations.py: half Chinese, 1-3 turns), Qwen3 tokenizer,")
print("qwen_chat, max_length 2048, packing; DataPipeline.Prepare into an empty cache, then again (cache hit).")
print(f"Physical baseline: `cat` of the file to /dev/null, {cat['seconds']:.2f} s (load {cat['load']}).\n")
print("| tree | samples | tokens | prepare s | CPU s | samples/s | cache hit s | cache bytes/token | peak RSS MB | load avg |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    if r["what"] == "cat":
        continue
    print(f"| {r['what']} | {r['samples']:,} | {r['tokens']:,} | {r['prepare_s']:.1f} | {r['prepare_cpu_s']:.1f} | {r['samples_per_s']:.0f} | "
          f"{r['cache_hit_s']:.2f} | {r['cache_bytes_per_token']:.2f} | {r['peak_working_set_mb']} | {r['load']} |")
cur = next((r for r in rows if r["what"] == "current"), None)
base = next((r for r in rows if r["what"] == "baseline"), None)
if cur and base:
    print(f"\nbaseline / current: wall {base['prepare_s'] / cur['prepare_s']:.2f}x, CPU {base['prepare_cpu_s'] / cur['prepare_cpu_s']:.2f}x, "
          f"cache size {base['cache_bytes_per_token'] / cur['cache_bytes_per_token']:.2f}x smaller")
