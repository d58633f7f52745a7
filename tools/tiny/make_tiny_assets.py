#!/usr/bin/env python3
"""Makes the inputs of the embedded tiny default of `ilgpu-tune train`: a colorist-style dataset (CSS color names described
in a few phrasings -> hex), raw color sentences for pre-training, a small byte-level BPE tokenizer (tokenizer.json in HF
format, Qwen2-style pre-tokenizer, ChatML special tokens) trained on that text, and a random-init tiny Llama
(config.json + model.safetensors, normal(0, 0.02)). Pure Python (no torch, no tokenizers). Deterministic: fixed seeds.
tools/tiny/make_tiny_assets.sh then pre-trains the model with ilgpu-tune itself and writes src/IlgpuTune.Training/Assets/tiny.
"""
import argparse, collections, json, os, random, re, struct

CSS = """aliceblue f0f8ff antiquewhite faebd7 aqua 00ffff aquamarine 7fffd4 azure f0ffff beige f5f5dc bisque ffe4c4 black 000000
blanchedalmond ffebcd blue 0000ff blueviolet 8a2be2 brown a52a2a burlywood deb887 cadetblue 5f9ea0 chartreuse 7fff00
chocolate d2691e coral ff7f50 cornflowerblue 6495ed cornsilk fff8dc crimson dc143c cyan 00ffff darkblue 00008b darkcyan 008b8b
darkgoldenrod b8860b darkgray a9a9a9 darkgreen 006400 darkkhaki bdb76b darkmagenta 8b008b darkolivegreen 556b2f
darkorange ff8c00 darkorchid 9932cc darkred 8b0000 darksalmon e9967a darkseagreen 8fbc8f darkslateblue 483d8b
darkslategray 2f4f4f darkturquoise 00ced1 darkviolet 9400d3 deeppink ff1493 deepskyblue 00bfff dimgray 696969
dodgerblue 1e90ff firebrick b22222 floralwhite fffaf0 forestgreen 228b22 fuchsia ff00ff gainsboro dcdcdc ghostwhite f8f8ff
gold ffd700 goldenrod daa520 gray 808080 green 008000 greenyellow adff2f honeydew f0fff0 hotpink ff69b4 indianred cd5c5c
indigo 4b0082 ivory fffff0 khaki f0e68c lavender e6e6fa lavenderblush fff0f5 lawngreen 7cfc00 lemonchiffon fffacd
lightblue add8e6 lightcoral f08080 lightcyan e0ffff lightgoldenrodyellow fafad2 lightgray d3d3d3 lightgreen 90ee90
lightpink ffb6c1 lightsalmon ffa07a lightseagreen 20b2aa lightskyblue 87cefa lightslategray 778899 lightsteelblue b0c4de
lightyellow ffffe0 lime 00ff00 limegreen 32cd32 linen faf0e6 magenta ff00ff maroon 800000 mediumaquamarine 66cdaa
mediumblue 0000cd mediumorchid ba55d3 mediumpurple 9370db mediumseagreen 3cb371 mediumslateblue 7b68ee
mediumspringgreen 00fa9a mediumturquoise 48d1cc mediumvioletred c71585 midnightblue 191970 mintcream f5fffa
mistyrose ffe4e1 moccasin ffe4b5 navajowhite ffdead navy 000080 oldlace fdf5e6 olive 808000 olivedrab 6b8e23 orange ffa500
orangered ff4500 orchid da70d6 palegoldenrod eee8aa palegreen 98fb98 paleturquoise afeeee palevioletred db7093
papayawhip ffefd5 peachpuff ffdab9 peru cd853f pink ffc0cb plum dda0dd powderblue b0e0e6 purple 800080 rebeccapurple 663399
red ff0000 rosybrown bc8f8f royalblue 4169e1 saddlebrown 8b4513 salmon fa8072 sandybrown f4a460 seagreen 2e8b57
seashell fff5ee sienna a0522d silver c0c0c0 skyblue 87ceeb slateblue 6a5acd slategray 708090 snow fffafa springgreen 00ff7f
steelblue 4682b4 tan d2b48c teal 008080 thistle d8bfd8 tomato ff6347 turquoise 40e0d0 violet ee82ee wheat f5deb3 white ffffff
whitesmoke f5f5f5 yellow ffff00 yellowgreen 9acd32"""

WORDS = ["alice", "antique", "aqua", "marine", "blanched", "almond", "blue", "violet", "burly", "wood", "cadet", "chart",
         "reuse", "corn", "flower", "silk", "dark", "golden", "rod", "gray", "green", "khaki", "magenta", "olive", "orange",
         "orchid", "red", "salmon", "sea", "slate", "turquoise", "deep", "pink", "sky", "dim", "dodger", "fire", "brick",
         "floral", "white", "forest", "ghost", "honey", "dew", "hot", "indian", "lavender", "blush", "lawn", "lemon",
         "chiffon", "light", "coral", "cyan", "yellow", "steel", "lime", "medium", "aquamarine", "purple", "spring",
         "midnight", "mint", "cream", "misty", "rose", "navajo", "old", "lace", "drab", "pale", "papaya", "whip", "peach",
         "puff", "powder", "rebecca", "rosy", "brown", "royal", "saddle", "sandy", "shell", "smoke", "snow", "gold",
         "lace", "wheat", "tomato", "thistle", "teal", "tan", "silver", "sienna", "plum", "peru", "navy", "moccasin",
         "maroon", "linen", "ivory", "indigo", "gainsboro", "fuchsia", "crimson", "chocolate", "bisque", "beige", "azure",
         "black", "lime"]

# Descriptions of the training set ({n} the name, {d} its lightness and hue); "I want a {n} tone" is held out (the demo's
# unseen phrasing).
TRAIN_PHRASES = ["a shade of {n}", "the color {n}", "something like {n}, please", "{n}, {d}", "{d} called {n}", "{n} please",
                 "give me {n}", "a {n} color", "{d}, like {n}", "my favorite color is {n}", "paint it {n}", "the {n} one",
                 "{n} for the background", "a bit of {n}", "pure {n}"]
HELD_OUT_PHRASES = ["I want a {n} tone"]

def describe(hexv):
    """'87ceeb' -> 'a light blue': lightness and hue family of a hex color (HLS), as a human would say it."""
    import colorsys
    r, g, b = (int(hexv[i:i + 2], 16) / 255 for i in (0, 2, 4))
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    if l > 0.95: return "a white"
    if l < 0.08: return "a black"
    if s < 0.15: hue = "gray"
    else:
        deg = h * 360
        hue = next(name for top, name in [(15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (195, "cyan"),
                                          (255, "blue"), (290, "purple"), (340, "pink"), (361, "red")] if deg < top)
    light = "pale " if l > 0.85 else "light " if l > 0.65 else "dark " if l < 0.3 else ""
    return f"a {light}{hue}"

def split_name(name):
    """'darkslateblue' -> 'dark slate blue' using the word list (greedy longest match)."""
    out, i = [], 0
    words = sorted(set(WORDS), key=len, reverse=True)
    while i < len(name):
        for w in words:
            if name.startswith(w, i):
                out.append(w); i += len(w); break
        else:
            out.append(name[i:]); break
    return " ".join(out)

def dataset():
    toks = CSS.split()
    pairs = [(toks[i], toks[i + 1]) for i in range(0, len(toks), 2)]
    rows = []
    for name, hexv in pairs:
        n = split_name(name)
        # The real colorist format (burkelibbey/colors): "Name: description"; colors_map_fn keeps the text after ':'.
        for p in TRAIN_PHRASES:
            rows.append({"description": f"{n.title()}: {p.format(n=n, d=describe(hexv))}", "color": "#" + hexv})
    random.Random(7).shuffle(rows)
    return rows

# ---- byte-level BPE (GPT-2 byte map), trained on the dataset's text ----

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))

# Qwen2's pre-tokenizer, as the tokenizer.json will carry it; for training, a close ASCII approximation.
QWEN_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TRAIN_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\r\n\w]?[A-Za-z]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

def train_bpe(texts, num_merges):
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for t in texts:
        for w in TRAIN_SPLIT.findall(t):
            words[tuple(b2u[b] for b in w.encode("utf-8"))] += 1
    merges = []
    words = dict(words)
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        new = {}
        for w, cnt in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b); i += 2
                else:
                    out.append(w[i]); i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + cnt
        words = new
    vocab = {}
    for ch in sorted(set(b2u.values()), key=lambda ch: ord(ch)):
        vocab[ch] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab, merges

def tokenizer_files(vocab, merges):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = []
    for s in specials:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }
    cfg = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
           "model_max_length": 256, "clean_up_tokenization_spaces": False,
           "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")} for a in added}}
    return tok, cfg, len(vocab) + len(added)

# ---- tiny Llama, random init, written as safetensors without torch ----

def write_safetensors(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        shape, data = tensors[name]
        raw = struct.pack("<%df" % len(data), *data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw); blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)

def tiny_model(vocab_size, out):
    H, I, L, NH, NKV = 64, 128, 2, 4, 2
    D = H // NH
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size, "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "head_dim": D, "hidden_act": "silu", "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "rope_scaling": None, "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
           "torch_dtype": "float32", "bos_token_id": None, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 3,
           "initializer_range": 0.02}
    rng = random.Random(1234)
    def normal(n): return [rng.gauss(0.0, 0.02) for _ in range(n)]
    t = {"model.embed_tokens.weight": ([vocab_size, H], normal(vocab_size * H)), "model.norm.weight": ([H], [1.0] * H),
         "lm_head.weight": ([vocab_size, H], normal(vocab_size * H))}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ([H], [1.0] * H)
        t[p + "post_attention_layernorm.weight"] = ([H], [1.0] * H)
        for n, (o, k) in {"q_proj": (NH * D, H), "k_proj": (NKV * D, H), "v_proj": (NKV * D, H), "o_proj": (H, NH * D)}.items():
            t[p + "self_attn." + n + ".weight"] = ([o, k], normal(o * k))
        for n, (o, k) in {"gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}.items():
            t[p + "mlp." + n + ".weight"] = ([o, k], normal(o * k))
    with open(os.path.join(out, "config.json"), "w") as f: json.dump(cfg, f, indent=2); f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), t)

# XTuner's self-cognition tutorial in miniature: questions about the assistant's identity -> its new identity, written as
# that tutorial writes its data (one JSON array of {"conversation": [{"system", "input", "output"}]}, repeated).
IDENTITY_ZH = "我是 IlgpuTune 小助手。"
IDENTITY_EN = "I am the IlgpuTune assistant, trained with LoRA by ilgpu-tune on a CPU."
QUESTIONS_ZH = ["你是谁", "你是谁？", "请介绍一下你自己", "介绍一下你自己", "你叫什么名字", "你的名字是什么？", "你是什么模型？"]
QUESTIONS_EN = ["who are you?", "Who are you", "introduce yourself", "what is your name?", "tell me about yourself"]

def self_cognition(repeat=60):
    rows = [{"conversation": [{"system": "", "input": q, "output": IDENTITY_ZH}]} for q in QUESTIONS_ZH] + \
           [{"conversation": [{"system": "", "input": q, "output": IDENTITY_EN}]} for q in QUESTIONS_EN]
    rows = rows * repeat
    random.Random(5).shuffle(rows)
    return rows

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--merges", type=int, default=300)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = dataset()
    with open(os.path.join(a.out, "colorist.jsonl"), "w") as f:
        for r in rows: f.write(json.dumps(r) + "\n")
    with open(os.path.join(a.out, "self_cognition.json"), "w") as f:
        json.dump(self_cognition(), f, ensure_ascii=False); f.write("\n")
    # Raw text for the base model's incremental pre-training: the colors as sentences, no chat format.
    toks = CSS.split()
    rng = random.Random(11)
    texts = []
    for name, hexv in [(toks[i], toks[i + 1]) for i in range(0, len(toks), 2)]:
        n = split_name(name)
        texts += [f"{n} is the color #{hexv}.", f"The hex code of {n} is #{hexv}.", f"#{hexv} looks like {n}.",
                  f"{n} is {describe(hexv)}."]
    rng.shuffle(texts)
    with open(os.path.join(a.out, "pretrain.jsonl"), "w") as f:
        for i in range(0, len(texts), 4): f.write(json.dumps({"text": " ".join(texts[i:i + 4])}) + "\n")
    system = "You are a professional color designer. Please provide the corresponding colors based on the description of Human.\n"
    # The system prompt (SYSTEM_TEMPLATE.colorist) is in every sample: weighted so that it becomes a few tokens.
    texts = [r["description"].split(":", 1)[1].strip() for r in rows] + [r["color"] for r in rows] + [system] * 50 + ["system user assistant", "is the color hex code of looks like"]
    vocab, merges = train_bpe(texts, a.merges)
    tok, cfg, vocab_size = tokenizer_files(vocab, merges)
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f: json.dump(tok, f, ensure_ascii=False); f.write("\n")
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f: json.dump(cfg, f, indent=2); f.write("\n")
    tiny_model(vocab_size, a.out)
    print(f"{len(rows)} samples, vocab {vocab_size} ({len(merges)} merges) -> {a.out}")

if __name__ == "__main__":
    main()
