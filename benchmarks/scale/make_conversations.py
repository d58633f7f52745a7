"""Writes an XTuner conversation dataset of the issue-20 shape: N records (default 200,000, ~580 MB), half Chinese,
1-3 turns each, texts drawn from the fresh-text corpora of benchmarks/tokenize (.corpus/english.json, chinese.json).
English records combine Brown paragraphs; Chinese text is made of the corpus's phrases (cut at punctuation) joined in
random order, mostly without punctuation between them, so Chinese pre-tokenizer pieces are new strings as in a large
real corpus, not repeats of a few thousand phrases that a word cache would remember.
    python3 make_conversations.py OUT.jsonl [N]
"""
import json, os, random, re, sys

here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, "..", "tokenize", ".corpus")
english = json.load(open(os.path.join(corpus, "english.json")))
chinese = json.load(open(os.path.join(corpus, "chinese.json")))
out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
rng = random.Random(20)

phrases = [p for s in chinese for p in re.split(r"[，。！？；：、“”（）,.!?;:()\s{}0-9]+", s) if len(p) >= 2]

def chinese_paragraph():
    out = []
    for _ in range(rng.randint(4, 16)):
        out.append(phrases[rng.randrange(len(phrases))])
        out.append(rng.choices(["", "，", "。"], [7, 2, 1])[0])
    return "".join(out[:-1]) + "。"

def text(pool, parts):
    if pool is chinese:
        return "\n".join(chinese_paragraph() for _ in range(parts))
    return "\n".join(pool[rng.randrange(len(pool))] for _ in range(parts))

with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        pool = chinese if i % 2 else english
        turns = []
        for t in range(rng.randint(1, 3)):
            turn = {"input": text(pool, 1)[:600], "output": text(pool, rng.randint(1, 5 if pool is english else 8))[:3000]}
            if t == 0:
                turn["system"] = "You are a helpful assistant." if pool is english else "你是一个乐于助人的助手。"
            turns.append(turn)
        f.write(json.dumps({"conversation": turns}, ensure_ascii=False) + "\n")
