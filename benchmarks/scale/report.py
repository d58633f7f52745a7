"""run-scale.sh's JSON lines as a markdown table (this tree vs the baseline commit vs cat)."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1])]
cat = next(r for r in rows if r["what"] == "cat")
print("# Dataset preparation at scale (benchmarks/scale/run-scale.sh)\n")
size = next((r["data_bytes"] for r in rows if "data_bytes" in r), 0)
print(f"XTuner conversation set of {cat['records']:,} records, {size / 1e6:,.0f} MB (make_conversations.py: half Chinese, 1-3 turns), Qwen3 tokenizer,")
print("qwen_chat, max_length 2048, packing; DataPipeline.Prepare into an empty cache, then again (cache hit: key + open, the")
print("tokenizer already loaded). Machine: cpu-epyc-2core (2 cores, shared; load average beside each row). Baseline = the tree")
print("before issue 20's data work (BASELINE_COMMIT, d6f60ac), built and run by the same script.")
print(f"Physical baseline: `cat` of the file to /dev/null, {cat['seconds']:.2f} s (load {cat['load']}).\n")
print("| tree | samples | tokens | prepare s | CPU s | samples/s | cache hit s | cache bytes/token | peak RSS MB | load avg |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    if r["what"] == "cat":
        continue
    print(f"| {r['what']} | {r['samples']:,} | {r['tokens']:,} | {r['prepare_s']:.1f} | {r['prepare_cpu_s']:.1f} | {r['samples_per_s']:.0f} | "
          f"{r['cache_hit_s']:.3f} | {r['cache_bytes_per_token']:.2f} | {r['peak_working_set_mb']} | {r['load']} |")
cur = next((r for r in rows if r["what"] == "current"), None)
base = next((r for r in rows if r["what"] == "baseline"), None)
if cur and base:
    print(f"\nbaseline / current: wall {base['prepare_s'] / cur['prepare_s']:.2f}x, CPU {base['prepare_cpu_s'] / cur['prepare_cpu_s']:.2f}x, "
          f"cache size {base['cache_bytes_per_token'] / cur['cache_bytes_per_token']:.2f}x smaller")
    print(f"current / baseline: wall {cur['prepare_s'] / base['prepare_s']:.3f} (target <= 0.333), CPU {cur['prepare_cpu_s'] / base['prepare_cpu_s']:.3f}; "
          f"cache hit {cur['cache_hit_s']:.3f} s (target <= 2 s)")
if cur and base and cur["load"] != base["load"]:
    print("\nThe trees ran one after the other (run-scale.sh ONLY=baseline, then ONLY=current) under different loads: compare the CPU "
          "seconds as well as the wall time.")
