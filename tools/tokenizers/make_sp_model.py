#!/usr/bin/python3
"""Trains the tiny SentencePiece BPE test model and records its ids on the tokenizer corpus.

Uses Debian's python3-sentencepiece (0.1.97, the library behind spm_train/spm_encode: `apt-get install python3-sentencepiece`;
run with /usr/bin/python3). The model is trained with Llama-2's tokenizer.model options (BPE, byte_fallback, identity
normalization, dummy prefix, no whitespace folding, split digits) plus two USER_DEFINED pieces as InternLM2 has, so it
exercises the same code paths as the real files. Writes, next to the other fixtures:
  tiny-sp-bpe.model           the model (a few KiB)
  expected-sp-ids.json        ids and decodes of every tokenizer-corpus.json string, from sentencepiece itself
Usage: /usr/bin/python3 make_sp_model.py tests/IlgpuTune.Data.Tests/Fixtures
"""
import io
import json
import os
import sys

import sentencepiece as spm

TRAINING_TEXT = """The quick brown fox jumps over the lazy dog.
Hello world! How are you doing today? I'm fine, thanks.
Machine learning models are trained on large amounts of text data.
def main():
    print("hello")
    return 0
你好，世界！今天天气很好，我们去公园散步吧。
机器学习是人工智能的一个分支。
<|im_start|>user
What is two plus two?<|im_end|>
<|im_start|>assistant
Two plus two is four.<|im_end|>
Numbers like 1, 12, 123 and 2024 appear in text.
"""


def main():
    fixtures = sys.argv[1]
    corpus = json.load(open(os.path.join(fixtures, "tokenizer-corpus.json"), encoding="utf-8"))
    lines = [l for l in (TRAINING_TEXT * 20).splitlines() if l.strip()]
    lines += [s.replace("\n", " ") for s in corpus if s.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model,
        model_type="bpe", vocab_size=700, byte_fallback=True, character_coverage=0.9995,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    data = model.getvalue()
    with open(os.path.join(fixtures, "tiny-sp-bpe.model"), "wb") as f:
        f.write(data)
    sp = spm.SentencePieceProcessor(model_proto=data)
    rows = []
    for i, s in enumerate(corpus):
        ids = sp.encode(s)
        rows.append({"index": i, "ids": ids, "pieces": [sp.id_to_piece(x) for x in ids], "decoded": sp.decode(ids)})
    out = {"versions": {"sentencepiece": spm.__version__}, "model": "tiny-sp-bpe.model", "vocab_size": sp.get_piece_size(),
           "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(), "rows": rows}
    with open(os.path.join(fixtures, "expected-sp-ids.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
