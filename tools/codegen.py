"""The emitter the kernel generators share (gen_gemm.py, gen_flash.py, gen_flash_wgmma.py): register lists and the
wgmma instruction text of inline-PTX sites, if/else-if chains over configurations, and writing a generated file, or with
--check comparing it to the file in the tree (CI regenerates every *.g.cs this way and fails on a difference)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (C# half type, PTX type) of the two 16-bit element types.
HALF_TYPES = (("Bf16", "bf16"), ("F16", "f16"))


def regs(name, n):
    """'name0, name1, ..' : n PTX registers named in instruction text."""
    return ", ".join(f"{name}{i}" for i in range(n))


def zero_regs(name, n):
    """PTX that sets registers name0..name(n-1) to 0.0f."""
    return " ".join(f"mov.f32 {name}{j}, 0f00000000;" for j in range(n))


def branch(first):
    """The keyword of one arm of an if/else-if chain."""
    return "if" if first else "else if"


def wgmma(n, ptype, acc, a, b, pred, scale_d, imm):
    """One predicated wgmma.mma_async m64nNk16 with fp32 accumulators acc: A is a descriptor or a register fragment, B a
    descriptor; scale_d is the asm operand holding 0 (overwrite) or 1 (accumulate); imm the scale/transpose immediates."""
    return (f"{{ .reg .pred {pred}; setp.ne.b32 {pred}, {scale_d}, 0; wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptype}.{ptype} "
            f"{{{acc}}}, {a}, {b}, {pred}, {imm}; }}")


def write(relpath, lines):
    """Writes lines to ROOT/relpath; with --check on the command line, only compares and exits 1 when they differ."""
    path = os.path.join(ROOT, relpath)
    text = "\n".join(lines) + "\n"
    if "--check" in sys.argv[1:]:
        with open(path, encoding="utf-8", newline="") as f:
            same = f.read() == text
        print(f"{relpath}: {'up to date' if same else 'DIFFERS from its generator'}")
        if not same:
            sys.exit(1)
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {path}: {len(lines)} lines")


def read_fragment(name, i):
    """PTX that copies fragment i (registers name4i..name4i+3) to asm outputs %0..%3."""
    return "; ".join(f"mov.f32 %{e}, {name}{4 * i + e}" for e in range(4))
