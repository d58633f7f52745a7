#!/usr/bin/env python3
"""torch.save golden files for IlgpuTune's pytorch_model.bin reader (src/IlgpuTune.IO/TorchCheckpoint.cs).

Writes <out>/torch/ (commit it as tests/fixtures/torch/):
  tensors.bin, tensors.safetensors   torch.save(TENSORS) in the zip format; expected values (each entry .contiguous())
  tensors_legacy.bin                 the same dict, _use_new_zipfile_serialization=False
  tensors_p4.bin                     the same dict, pickle_protocol=4 (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE)
  module.bin, module.safetensors     torch.save(nn.Module.state_dict()): an OrderedDict whose _metadata is a BUILD
  evil.bin                           a dict holding an object that pickles as os.system(...): must be refused
  llama/                             the tiny Llama fixture as transformers 4.x save_pretrained(safe_serialization=False)
                                     shards it: two plain-dict torch.save shards + pytorch_model.bin.index.json
  llama_legacy/pytorch_model.bin     torch.save(model.state_dict()) in the legacy format
  MANIFEST.md
Needs torch; the llama parts use transformers when installed (else they rebuild the state dict from model.safetensors). Each part is independent: a failing part prints FAIL and the
script exits 1 after writing the others.  Usage:
  python3 tools/golden/make_torch_bin.py --out /tmp/gold [--tiny tests/fixtures/tiny/llama] [--tar $OUT/torch.tar]
"""
import argparse
import json
import os
import shutil
import struct
import sys
import traceback
from collections import OrderedDict

import torch

SCRIPT = "tools/golden/make_torch_bin.py"
FAILURES = []

ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def raw_bytes(t):
    """Row-major little-endian bytes of t (no numpy needed; bf16 included)."""
    flat = t.detach().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).tolist())


def write_safetensors(path, tensors):
    """Minimal safetensors writer (formats.md §1.1): header sorted by name, data in that order."""
    header, blobs, offset = {"__metadata__": {"format": "pt", "script": SCRIPT}}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = raw_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    inv = {v: k for k, v in ST_DTYPES.items()}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = torch.tensor(list(data[8 + n + b:8 + n + end]), dtype=torch.uint8)
        out[name] = raw.view(inv[e["dtype"]]).reshape(e["shape"])
    return out


def make_tensors():
    g = torch.Generator().manual_seed(0)

    def randn(*s):
        return torch.randn(*s, generator=g)

    base = randn(6, 5)
    tied = randn(3, 4)
    return {
        "f32": randn(3, 5),
        "f16": randn(4, 3).half(),
        "bf16": randn(2, 7).bfloat16(),
        "f64": randn(5).double(),
        "i64": torch.arange(-6, 6).reshape(3, 4),
        "i32": torch.arange(-5, 5, dtype=torch.int32),
        "i16": torch.tensor([-300, 0, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "base": base,
        "row_slice": base[2:4],                       # shares base's storage, offset 10
        "col_slice": base[:, 1::2],                   # strides (5, 2), offset 1
        "transposed": randn(4, 6).t(),                # strides (1, 6)
        "permuted": randn(2, 3, 4).permute(2, 0, 1),  # strides (1, 12, 4)
        "expanded": randn(3, 1).expand(3, 4),         # stride 0
        "half_view": randn(8).half()[1::3],           # f16, offset 1, stride 3
        "tied_a": tied,
        "tied_b": tied,                               # the same tensor again: a memo reference in the pickle
        "param": torch.nn.Parameter(randn(2, 3)),     # torch._utils._rebuild_parameter
    }


def describe(tensors):
    rows = ["| name | dtype | shape | stride | storage_offset |", "|---|---|---|---|---|"]
    for k, t in tensors.items():
        rows.append(f"| {k} | {ST_DTYPES[t.dtype]} | {list(t.shape)} | {list(t.stride())} | {t.storage_offset()} |")
    return "\n".join(rows)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.detach(), b.detach())


def roundtrip_ok(path, expected, weights_only=True):
    got = torch.load(path, weights_only=weights_only)
    return list(got.keys()) == list(expected.keys()) and all(same(got[k], expected[k]) for k in expected)


def part_tensors(out, manifest):
    tensors = make_tensors()
    torch.save(tensors, os.path.join(out, "tensors.bin"))
    torch.save(tensors, os.path.join(out, "tensors_legacy.bin"), _use_new_zipfile_serialization=False)
    torch.save(tensors, os.path.join(out, "tensors_p4.bin"), pickle_protocol=4)
    write_safetensors(os.path.join(out, "tensors.safetensors"), {k: v.detach().clone() for k, v in tensors.items()})
    for f in ("tensors.bin", "tensors_legacy.bin"):
        check(roundtrip_ok(os.path.join(out, f), tensors), f"{f} loads back (weights_only) equal")
    # torch's weights_only unpickler (2.11 included) lacks the protocol-4 FRAME opcode
    check(roundtrip_ok(os.path.join(out, "tensors_p4.bin"), tensors, weights_only=False), "tensors_p4.bin loads back equal")
    exp = read_safetensors(os.path.join(out, "tensors.safetensors"))
    check(all(same(exp[k], tensors[k].contiguous()) for k in tensors), "tensors.safetensors reads back equal")
    manifest.append("## tensors.bin / tensors_legacy.bin / tensors_p4.bin (expected: tensors.safetensors)\n\n" + describe(tensors))


def part_module(out, manifest):
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2, bias=False),
                            torch.nn.BatchNorm1d(2))
    sd = m.state_dict()
    check(isinstance(sd, OrderedDict) and hasattr(sd, "_metadata"), "state_dict is an OrderedDict with _metadata")
    torch.save(sd, os.path.join(out, "module.bin"))
    write_safetensors(os.path.join(out, "module.safetensors"), {k: v.clone() for k, v in sd.items()})
    check(roundtrip_ok(os.path.join(out, "module.bin"), sd), "module.bin loads back equal")
    manifest.append("## module.bin (expected: module.safetensors)\n\n" + describe(sd))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ilgpu-tune-pwned",))


def part_evil(out, manifest):
    path = os.path.join(out, "evil.bin")
    torch.save({"w": torch.zeros(2), "evil": Evil()}, path)
    try:
        torch.load(path, weights_only=True)
        check(False, "evil.bin is refused by torch.load(weights_only=True)")
    except Exception as e:  # torch raises UnpicklingError naming the global
        check("system" in str(e), f"evil.bin is refused by torch.load(weights_only=True): {str(e).splitlines()[0][:100]}")
    manifest.append("## evil.bin\n\n`{'w': zeros(2), 'evil': <object whose __reduce__ is os.system('echo pwned > "
                    "/tmp/ilgpu-tune-pwned')>}`: the reader must refuse it (GLOBAL posix.system) without running anything.")


def llama_state_dict(tiny):
    """model.state_dict() of the tiny Llama: via transformers when installed, else rebuilt from model.safetensors as an
    OrderedDict carrying the per-module _metadata that nn.Module.state_dict() attaches (same pickle structure)."""
    ref = read_safetensors(os.path.join(tiny, "model.safetensors"))
    try:
        from transformers import AutoModelForCausalLM
        import transformers
    except ImportError:
        names = sorted(ref, key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
        sd = OrderedDict((k, ref[k].clone()) for k in names)
        modules = [""] + sorted({k.rsplit(".", 1)[0][:i] for k in names for i in range(len(k)) if k[i] == "."})
        sd._metadata = OrderedDict((m, {"version": 1}) for m in modules)
        return sd, ref, "rebuilt from model.safetensors (transformers not installed)"
    sd = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    return sd, ref, f"AutoModelForCausalLM.from_pretrained(...).state_dict(), transformers {transformers.__version__}"


def part_llama(out, tiny, manifest):
    sd, ref, how = llama_state_dict(tiny)
    check(sorted(sd) == sorted(ref) and all(same(sd[k], ref[k]) for k in ref), "llama state_dict == model.safetensors")

    # Sharded as transformers 4.x save_pretrained(safe_serialization=False): plain-dict shards, greedy by bytes.
    d = os.path.join(out, "llama")
    os.makedirs(d, exist_ok=True)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    shards, current, size = [], [], 0
    for k, t in sd.items():
        n = t.numel() * t.element_size()
        if current and size + n > total // 2:
            shards.append(current)
            current, size = [], 0
        current.append(k)
        size += n
    shards.append(current)
    weight_map = {}
    for i, names in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save({k: sd[k] for k in names}, os.path.join(d, fname))
        weight_map.update({k: fname for k in names})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    dl = os.path.join(out, "llama_legacy")
    os.makedirs(dl, exist_ok=True)
    torch.save(sd, os.path.join(dl, "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    for target in (d, dl):
        for f in ("config.json", "generation_config.json"):
            shutil.copy(os.path.join(tiny, f), os.path.join(target, f))
    check(roundtrip_ok(os.path.join(dl, "pytorch_model.bin"), sd), "llama_legacy loads back equal")
    back = {}
    for i in range(len(shards)):
        back.update(torch.load(os.path.join(d, f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"), weights_only=True))
    check(sorted(back) == sorted(sd) and all(same(back[k], sd[k]) for k in sd), "llama shards load back equal")
    manifest.append(f"## llama/, llama_legacy/\n\nFrom `{tiny}`: {how}; {len(shards)} shards; "
                    "state_dict == model.safetensors.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", default="tests/fixtures/tiny/llama")
    ap.add_argument("--tar", help="also pack <out>/torch into this tar (the device returns few files)")
    args = ap.parse_args()
    out = os.path.join(args.out, "torch")
    os.makedirs(out, exist_ok=True)
    manifest = [f"# tests/fixtures/torch — manifest\n\nGenerated by `{SCRIPT}` with torch {torch.__version__}, "
                f"Python {sys.version.split()[0]}. Every file loads back with `torch.load(weights_only=True)` except evil.bin."]
    parts = [("tensors", lambda: part_tensors(out, manifest)), ("module", lambda: part_module(out, manifest)),
             ("evil", lambda: part_evil(out, manifest)), ("llama", lambda: part_llama(out, args.tiny, manifest))]
    for name, run in parts:
        print(name)
        try:
            run()
        except Exception:
            traceback.print_exc()
            check(False, f"part {name} raised")
    files = []
    for root, _, names in os.walk(out):
        for n in sorted(names):
            p = os.path.join(root, n)
            files.append(f"| {os.path.relpath(p, out)} | {os.path.getsize(p)} |")
    manifest.append("## files\n\n| file | bytes |\n|---|---|\n" + "\n".join(sorted(files)))
    with open(os.path.join(out, "MANIFEST.md"), "w") as f:
        f.write("\n\n".join(manifest) + "\n")
    if args.tar:
        import tarfile
        with tarfile.open(args.tar, "w") as t:
            t.add(out, arcname="torch")
    print("FAILURES: " + (", ".join(FAILURES) if FAILURES else "none"))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
