"""Writes an XTuner conversation dataset of the issue-20 shape: N records (default 200,000, ~577 MB), half Chinese,
1-3 turns each, texts drawn from the fresh-text corpora of benchmarks/tokenize (.corpus/english.json, chinese.json):
every record is a different combination, so no two samples tokenize the same.
    python3 make_conversations.py OUT.jsonl [N]
"""
import json, os, random, sys

here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, "..", "tokenize", ".corpus")
english = json.load(open(os.path.join(corpus, "english.json")))
chinese = json.load(open(os.path.join(corpus, "chinese.json")))
out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
rng = random.Random(20)

def text(pool, parts):
    return "\n".join(pool[rng.randrange(len(pool))] for _ in range(parts))

with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        pool = chinese if i % 2 else english
        turns = []
        for t in range(rng.randint(1, 3)):
            turn = {"input": text(pool, 1)[:600], "output": text(pool, rng.randint(1, 3 if pool is english else 5))[:2400]}
            if t == 0:
                turn["system"] = "You are a helpful assistant." if pool is english else "你是一个乐于助人的助手。"
            turns.append(turn)
        f.write(json.dumps({"conversation": turns}, ensure_ascii=False) + "\n")
