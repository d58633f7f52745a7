#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/Gemm.g.cs: one GEMM kernel body per (layout, tile configuration), with everything
unrolled here because ILGPU 1.5.3 does not unroll loops: the warp's 64x64 tile (128 accumulators as distinct locals),
the ldmatrix/mma sequence of a K tile, each thread's cp.async chunks of a stage (addresses computed once before the K
loop, then advanced by one add per chunk), and the epilogue. Also the configuration enum and its shape table.
Run from the repository root: python3 tools/gen_gemm.py"""
import itertools, os

MI, NJ = 4, 8  # m16 tiles and n8 tiles per warp (64x64)
EPI_STRIDE = 72  # Gemm.EpiStride
LAYOUTS = {"NT": (True, True), "NN": (True, False), "TN": (False, False)}  # (A K-major, B K-major)
TYPES = ["Bf16", "F16"]
# name: (warps along M, warps along N, K per stage, stages). T1x1 is the CPU-emulation default (32 threads).
TILES = {
    "T1x1": (1, 1, 32, 4),
    "T2x1": (2, 1, 64, 4),
    "T1x2": (1, 2, 64, 4),
    "T2x2": (2, 2, 64, 3),
    "T2x2K32": (2, 2, 32, 4),
    "T2x2K32S6": (2, 2, 32, 6),
    "T2x4": (2, 4, 64, 3),
    "T4x2": (4, 2, 64, 3),
    "T2x4S4": (2, 4, 64, 4),
}


def swz(r, c, chunks):
    """C# expression of ChunkOffset(r, c, chunks) (see Gemm.cs)."""
    return f"ChunkOffset({r}, {c}, {chunks})"


def tile_loads(op, kmajor, rows_mn, bk, threads):
    """Per-thread chunk plan of one operand's stage tile. K-major: [rows_mn][bk]; M/N-major: [bk][rows_mn].
    Returns (chunks per row, tile rows, rows per pass, passes)."""
    chunks = bk // 8 if kmajor else rows_mn // 8
    rows = rows_mn if kmajor else bk
    assert threads % chunks == 0, (op, chunks, threads)
    rpp = threads // chunks
    assert rows % rpp == 0
    return chunks, rows, rpp, rows // rpp


def kernel(name, a_k, b_k, tile):
    wmn, wnn, bk, stages = TILES[tile]
    bm, bn, threads = wmn * 64, wnn * 64, wmn * wnn * 32
    a_bytes = bm * bk * 2
    stage_bytes = (bm + bn) * bk * 2
    ks = bk // 16
    o = []
    w = o.append
    w(f"    // {name}, {tile}: {bm}x{bn} group tile, {threads} threads, K {bk} per stage, {stages} stages; "
      f"{'A K-major' if a_k else 'A M-major (ldmatrix.trans)'}, {'B K-major' if b_k else 'B N-major (ldmatrix.trans)'}.")
    w(f"    static void {name}Kernel{tile}<TH, TP>(ArrayView<ushort> a, ArrayView<ushort> b, FloatView bias, Params p, FloatView cF, ArrayView<ushort> cH)")
    w("        where TH : struct, IHalf where TP : struct, IPlatform")
    w("    {")
    smem_main = max(stages * stage_bytes, wmn * wnn * 64 * EPI_STRIDE * 4)  # SharedBytes in Gemm.cs: the same
    w(f"        const int Bm = {bm}, Bn = {bn}, Bk = {bk}, Stages = {stages}, Threads = {threads}, StageBytes = {stage_bytes}, SmemMain = {smem_main};")
    w("        var sm = SharedMemory.GetDynamic<ushort>();")
    w("        var scratch = SharedMemory.GetDynamic<uint>();")
    w("        var smf = SharedMemory.GetDynamic<float>();")
    w("        int tid = Group.IdxX, lane = Warp.LaneIdx, warp = Warp.WarpIdx;")
    w(f"        int wm = warp / {wnn}, wn = warp - wm * {wnn};")
    w("        TileOf(Grid.IdxX, (p.M + Bm - 1) / Bm, (p.N + Bn - 1) / Bn, out int tm, out int tn);")
    w("        // A tail tile slides back to end at M (N) when the matrix holds a whole tile, so its loads stay whole and in range")
    w("        // (the fast path); it then stores only from its own start mStart (nStart) on, leaving the overlap to its neighbour.")
    w("        int mStart = tm * Bm, nStart = tn * Bn;")
    w("        int m0 = Math.Min(mStart, Math.Max(p.M - Bm, 0)), n0 = Math.Min(nStart, Math.Max(p.N - Bn, 0));")
    w("        int z = Grid.IdxZ, bIdx = z / p.Splits, split = z - bIdx * p.Splits;")
    w("        long aOff = bIdx * p.StrideA, bOff = bIdx * p.StrideB, cOff = bIdx * p.StrideC + split * p.SplitStrideC;")
    w("        int kt0 = split * p.TilesPerSplit, kt1 = Math.Min((p.K + Bk - 1) / Bk, kt0 + p.TilesPerSplit), ktFull = p.K / Bk;")
    w("        // Whole group tile in range with aligned rows: cp.async every chunk, no per-chunk tests (K tiles < ktFull).")
    w("        bool inside = m0 + Bm <= p.M && n0 + Bn <= p.N;")
    w("        bool fast = inside && p.VecA != 0 && p.VecB != 0;")
    w("        uint smBase = default(TP).SmemBase();")
    w("        int ws = SmemMain / 4 + warp * ScratchPerWarp;")
    w("        int q = lane / 8, r8 = lane % 8;")

    # cp.async plans: this thread's first chunk (row r0, chunk c), its global element index at K tile 0, and the
    # global step between its chunks (rpp rows further) and between K tiles.
    plans = []
    for op, kmaj, rows_mn, base in (("a", a_k, bm, "aOff"), ("b", b_k, bn, "bOff")):
        chunks, rows, rpp, passes = tile_loads(op, kmaj, rows_mn, bk, threads)
        mn0 = "m0" if op == "a" else "n0"
        ext_mn = "p.M" if op == "a" else "p.N"
        w(f"        int {op}R = tid / {chunks}, {op}C = tid - {op}R * {chunks};")
        if kmaj:
            # row = M/N index, contiguous K: element (mn0 + r, k0 + 8c) at base + (mn0 + r) * K + k0 + 8c
            w(f"        long {op}G = {base} + (long)({mn0} + {op}R) * p.K + {op}C * 8, {op}Step = (long){rpp} * p.K;")
            w(f"        ulong {op}P = p.{op.upper()}Ptr + (ulong){op}G * 2, {op}PStep = (ulong){op}Step * 2;")
            kstep = f"(long)kt * Bk"
        else:
            # row = K index, contiguous M/N: element (k0 + r, mn0 + 8c) at base + (k0 + r) * ext + mn0 + 8c
            w(f"        long {op}G = {base} + (long){op}R * {ext_mn} + {mn0} + {op}C * 8, {op}Step = (long){rpp} * {ext_mn};")
            w(f"        ulong {op}P = p.{op.upper()}Ptr + (ulong){op}G * 2, {op}PStep = (ulong){op}Step * 2;")
            kstep = f"(long)kt * Bk * {ext_mn}"
        period_ok = rpp % 8 == 0
        if period_ok:
            w(f"        int {op}D = {swz(op + 'R', op + 'C', chunks)};")
        plans.append((op, chunks, rpp, passes, period_ok, kstep, 0 if op == "a" else a_bytes))

    def load_block(indent, kt, slot):
        ind = " " * indent
        w(f"{ind}if (fast && {kt} < ktFull)")
        w(f"{ind}{{")
        for op, chunks, rpp, passes, period_ok, kstep, tile_off in plans:
            w(f"{ind}    long {op}g = {op}G + {kstep.replace('kt', kt)};")
            w(f"{ind}    ulong {op}p = {op}P + (ulong)({kstep.replace('kt', kt)}) * 2;")
            for j in range(passes):
                if period_ok:
                    dst = f"{slot} + {tile_off + j * rpp * chunks * 16} + {op}D"
                else:
                    dst = f"{slot} + {tile_off} + {swz(f'{op}R + {j * rpp}', op + 'C', chunks)}"
                w(f"{ind}    default(TP).CopyChunk({op}, {op}p, {op}g, sm, smBase, {dst});")
                if j + 1 < passes:
                    w(f"{ind}    {op}g += {op}Step; {op}p += {op}PStep;")
        w(f"{ind}}}")
        w(f"{ind}else LoadStage<TP>(a, b, sm, p, smBase, {slot}, {kt}, m0, n0, aOff, bOff, {'true' if a_k else 'false'}, "
          f"{'true' if b_k else 'false'}, Bm, Bn, Bk, Threads);")

    # Per-lane ldmatrix offsets inside a stage's A / B tile. Row starts are multiples of 64 bytes and the swizzled chunk index (2x + h) ^ s = ((h ^ s) ^ 2x), so the offset of
    # k16 step kk (K-major) or of m/n16 tile x (M/N-major) is the lane's first offset XOR 32x: no register per step.
    if a_k:
        w("        int ar = wm * 64 + lane % 16;")
        w(f"        uint aL = (uint){swz('ar', 'lane / 16', bk // 8)};")
    else:
        w(f"        uint aL = (uint)(((q / 2) * 8 + r8) * Bm * 2 + wm * 128 + ((q % 2) ^ r8) * 16);")
    if b_k:
        w("        int br = wn * 64 + (q / 2) * 8 + r8;")
        w(f"        uint bL = (uint){swz('br', 'q % 2', bk // 8)};")
    else:
        w(f"        uint bL = (uint)(((q % 2) * 8 + r8) * Bn * 2 + wn * 128 + ((q / 2) ^ r8) * 16);")
    for i in range(MI):
        w("        " + "float " + ", ".join(f"c{i}_{j}_{e} = 0f" for j in range(NJ) for e in range(4)) + ";")
    w("        for (int s = 0; s < Stages - 1; s++)")
    w("        {")
    w("            if (kt0 + s < kt1)")
    w("            {")
    w("                int kl = kt0 + s, slot = s * StageBytes;")
    load_block(16, "kl", "slot")
    w("            }")
    w("            default(TP).CommitGroup();")
    w("        }")
    # Fragments of k16 step kk from the stage at aS/bS: A as a{kk}_{i}_{r}, B as b{kk}_{j}_{h}. decl: declare them here.
    def frag_loads(indent, kk, src_kk, decl):
        ind = " " * indent
        o_ = "out uint " if decl else "out "
        for i in range(MI):
            if a_k:
                addr = f"aS + (aL ^ {32 * src_kk}) + {i * 16 * bk * 2}"
                tr = "false"
            else:
                addr = f"aS + (aL ^ {32 * i}) + {src_kk * 16 * bm * 2}"
                tr = "true"
            w(f"{ind}default(TP).Ldsm({addr}, {tr}, sm, scratch, ws, " + ", ".join(f"{o_}a{kk}_{i}_{r}" for r in range(4)) + ");")
        for jp in range(NJ // 2):
            if b_k:
                addr = f"bS + (bL ^ {32 * src_kk}) + {jp * 16 * bk * 2}"
                tr = "false"
            else:
                addr = f"bS + (bL ^ {32 * jp}) + {src_kk * 16 * bn * 2}"
                tr = "true"
            outs = [f"b{kk}_{2 * jp}_0", f"b{kk}_{2 * jp}_1", f"b{kk}_{2 * jp + 1}_0", f"b{kk}_{2 * jp + 1}_1"]
            w(f"{ind}default(TP).Ldsm({addr}, {tr}, sm, scratch, ws, " + ", ".join(f"{o_}{x}" for x in outs) + ");")

    # Software pipeline (as CUTLASS's multistage main loop): the fragments of the next k16 step are read from shared
    # memory while this step's mma run; the barrier for the next K tile comes before the last step's mma, so its
    # first fragments load under them; the cp.async of K tile kt+Stages-1 are issued after the first fragment loads.
    w("        default(TP).WaitGroups(Stages - 2);")
    w("        Group.Barrier();")
    w("        int rd = 0; // byte offset of K tile kt's stage in the ring")
    w(f"        uint aS = smBase, bS = smBase + {a_bytes};")
    frag_loads(8, 0, 0, True)
    w("        for (int kt = kt0; kt < kt1; kt++)")
    w("        {")
    for kk in range(ks):
        if kk == ks - 1:
            w("            // tile kt+1 has landed for every thread, and everyone has its last fragments of tile kt-1's stage")
            w("            if (kt + 1 < kt1)")
            w("            {")
            w("                default(TP).WaitGroups(Stages - 2);")
            w("                Group.Barrier();")
            w("            }")
            w("            rd += StageBytes;")
            w("            if (rd == Stages * StageBytes) rd = 0;")
            w(f"            aS = smBase + (uint)rd; bS = aS + {a_bytes};")
            frag_loads(12, f"n", 0, True)
        else:
            frag_loads(12, kk + 1, kk + 1, True)
        if kk == 0:
            w("            int next = kt + Stages - 1;")
            w("            if (next < kt1)")
            w("            {")
            w("                int wr = (rd == 0 ? Stages * StageBytes : rd) - StageBytes; // tile kt-1's stage")
            load_block(16, "next", "wr")
            w("            }")
            w("            default(TP).CommitGroup();")
        for i in range(MI):
            js = range(NJ) if i % 2 == 0 else reversed(range(NJ))  # serpentine: reuse the last B fragment
            for j in js:
                cs = ", ".join(f"ref c{i}_{j}_{e}" for e in range(4))
                aa = ", ".join(f"a{kk}_{i}_{r}" for r in range(4))
                w(f"            default(TP).Mma<TH>({cs}, {aa}, b{kk}_{j}_0, b{kk}_{j}_1, scratch, ws);")
    # carry the next tile's first fragments into the kk = 0 registers
    w("            " + " ".join(f"a0_{i}_{r} = an_{i}_{r};" for i in range(MI) for r in range(4)))
    w("            " + " ".join(f"b0_{j}_{h} = bn_{j}_{h};" for j in range(NJ) for h in range(2)))
    w("        }")
    w("        default(TP).WaitGroups(0);")
    w("        // Epilogue through shared memory: each warp parks its 64x64 fp32 tile in a patch over the ring (rows padded")
    w("        // to EpiStride floats against bank conflicts), then each half-warp writes one 64-wide row segment: 16 (fp32)")
    w("        // or 8 (16-bit) contiguous bytes per lane, whole 128-byte lines per row instead of 16-byte pieces.")
    w("        Group.Barrier(); // every warp is done reading the ring")
    w("        int patch = warp * (64 * EpiStride * 4), fr = lane / 4, fc = (lane % 4) * 2;")
    for i in range(MI):
        for j in range(NJ):
            off = f"patch + ((fr + {i * 16}) * EpiStride + fc + {j * 8}) * 4"
            w(f"        default(TP).StoreShared2(smf, smBase, {off}, c{i}_{j}_0, c{i}_{j}_1);")
            w(f"        default(TP).StoreShared2(smf, smBase, {off} + 8 * EpiStride * 4, c{i}_{j}_2, c{i}_{j}_3);")
    w("        Warp.Barrier();")
    w("        int qr = lane / 16, qc = (lane % 16) * 4;")
    w("        int row = m0 + wm * 64 + qr, col = n0 + wn * 64 + qc;")
    w("        bool quads = inside && p.VecC != 0;")
    for r in range(32):
        w(f"        default(TP).LoadShared4(smf, smBase, patch + ({2 * r} + qr) * EpiStride * 4 + qc * 4, out float v{r}_0, out float v{r}_1, out float v{r}_2, out float v{r}_3);")
        w(f"        StoreQuad<TP>(p, bias, cF, cH, cOff, row + {2 * r}, col, mStart, nStart, quads, v{r}_0, v{r}_1, v{r}_2, v{r}_3);")
    w("    }")
    return o


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = ["// <auto-generated> by tools/gen_gemm.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "using ILGPU.Runtime.Cuda;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class Gemm", "{"]
    out.append("    /// <summary>Tile configurations a launch can pick (tests and the GPU bench force one): TWmxWn = warps along M x N,")
    out.append("    /// each warp 64x64 of C; K per stage and ring depth in <see cref=\"Shape\"/>.</summary>")
    out.append("    internal enum TileConfig { " + ", ".join(TILES) + " }")
    out.append("")
    out.append("    /// <summary>Warps along M and N, K per pipeline stage, and stages of the cp.async ring.</summary>")
    out.append("    internal static (int WarpsM, int WarpsN, int Bk, int Stages) Shape(TileConfig t) => t switch")
    out.append("    {")
    for t, (a, b, c, d) in TILES.items():
        out.append(f"        TileConfig.{t} => ({a}, {b}, {c}, {d}),")
    out.append("        _ => throw new ArgumentOutOfRangeException(nameof(t)),")
    out.append("    };")
    out.append("")
    for tile in TILES:
        for name, (a_k, b_k) in LAYOUTS.items():
            out += kernel(name, a_k, b_k, tile)
            out.append("")
    sig = "KernelConfig, ArrayView<ushort>, ArrayView<ushort>, FloatView, Params, FloatView, ArrayView<ushort>"
    out.append(f"    static Action<{sig}> Load(Accelerator acc, GemmLayout layout, HalfType type, TileConfig tile, bool emulated) => (layout, type, tile, emulated) switch")
    out.append("    {")
    for (name, t, tile, emu) in itertools.product(LAYOUTS, TYPES, TILES, [False, True]):
        ht = "BFloat16" if t == "Bf16" else "Float16"
        plat = "Emulated" if emu else "Ptx"
        out.append(f"        (GemmLayout.{name}, HalfType.{ht}, TileConfig.{tile}, {'true' if emu else 'false'}) => acc.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, FloatView, Params, FloatView, ArrayView<ushort>>({name}Kernel{tile}<{t}, {plat}>),")
    out.append("        _ => throw new ArgumentOutOfRangeException(nameof(tile)),")
    out.append("    };")
    out.append("}")
    path = os.path.join(root, "kernels", "IlgpuTune.Kernels", "Gemm.g.cs")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}: {len(out)} lines")


if __name__ == "__main__":
    main()
