#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/Gemm.g.cs: one GEMM kernel body per (layout, tile configuration), with everything
unrolled here because ILGPU 1.5.3 does not unroll loops: the warp's 64x64 tile (128 accumulators as distinct locals),
the ldmatrix/mma sequence of a K tile, each thread's cp.async chunks of a stage (addresses computed once before the K
loop, then advanced by one add per chunk), and the epilogue. Also the configuration enum and its shape table.
Run from the repository root: python3 tools/gen_gemm.py"""
from codegen import HALF_TYPES, branch, regs, wgmma, write, zero_regs

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
# Hopper (wgmma, sm_90a) configurations: name: (warpgroups along M, N per warpgroup = Bn, stages); K 64 per stage.
# Bm = 64 per warpgroup. W1N64 and W1N128 (one warpgroup, 128 threads) are the CPU-emulation test sizes.
WG_TILES = {
    "W1N64": (1, 64, 4),
    "W1N128": (1, 128, 4),
    "W2N128": (2, 128, 4),
    "W2N128S3": (2, 128, 3),
    "W2N256": (2, 256, 4),
}
# Fused NF4 weight (B operand read as packed 4-bit codes + block scales, dequantized in the load stage): the layouts of a
# linear layer's forward (NT, x·Wᵀ) and input grad (NN, dY·W), on the tiles Gemm.ChooseNf4 picks plus the emulation sizes.
NF4_LAYOUTS = ["NT", "NN"]
NF4_TILES = ["T1x1", "T1x2", "T2x2", "W1N64", "W1N128", "W2N128", "W2N256"]


def swz(r, c, chunks, rows=None):
    """C# expression of ChunkOffset(r, c, chunks) (see Gemm.cs)."""
    return f"ChunkOffset({r}, {c}, {chunks})"


def wg_swz(r, c, chunks, rows):
    """C# expression of WgChunkOffset(r, c, rows): 64-element panels of 128-byte rows (see Gemm.cs)."""
    return f"WgChunkOffset({r}, {c}, {rows})"


def tile_loads(op, kmajor, rows_mn, bk, threads):
    """Per-thread chunk plan of one operand's stage tile. K-major: [rows_mn][bk]; M/N-major: [bk][rows_mn].
    Returns (chunks per row, tile rows, rows per pass, passes)."""
    chunks = bk // 8 if kmajor else rows_mn // 8
    rows = rows_mn if kmajor else bk
    assert threads % chunks == 0, (op, chunks, threads)
    rpp = threads // chunks
    assert rows % rpp == 0
    return chunks, rows, rpp, rows // rpp


def emit_group_setup(w):
    """The group's C tile, batch and split, its K-tile range, and whether the straight-line cp.async path applies."""
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


def load_plans(w, a_k, b_k, bm, bn, bk, threads, a_bytes, offset, nf4=False):
    """Declares this thread's cp.async plan for both operands of a stage: its first chunk (row R, chunk C), its global
    element index and byte address at K tile 0, and the step between its chunks (rpp rows further). offset(r, c, chunks,
    rows) is the C# expression of a chunk's byte offset in the tile. nf4: B is the packed weight, read by element index
    (8 elements = one 32-bit word of codes) instead of by cp.async, so it has no byte address."""
    plans = []
    for op, kmaj, rows_mn, base in (("a", a_k, bm, "aOff"), ("b", b_k, bn, "bOff")):
        chunks, rows, rpp, passes = tile_loads(op, kmaj, rows_mn, bk, threads)
        mn0 = "m0" if op == "a" else "n0"
        ext_mn = "p.M" if op == "a" else "p.N"
        w(f"        int {op}R = tid / {chunks}, {op}C = tid - {op}R * {chunks};")
        if kmaj:
            # row = M/N index, contiguous K: element (mn0 + r, k0 + 8c) at base + (mn0 + r) * K + k0 + 8c
            w(f"        long {op}G = {base} + (long)({mn0} + {op}R) * p.K + {op}C * 8, {op}Step = (long){rpp} * p.K;")
            if not (nf4 and op == "b"):
                w(f"        ulong {op}P = p.{op.upper()}Ptr + (ulong){op}G * 2, {op}PStep = (ulong){op}Step * 2;")
            kstep = f"(long)kt * Bk"
        else:
            # row = K index, contiguous M/N: element (k0 + r, mn0 + 8c) at base + (k0 + r) * ext + mn0 + 8c
            w(f"        long {op}G = {base} + (long){op}R * {ext_mn} + {mn0} + {op}C * 8, {op}Step = (long){rpp} * {ext_mn};")
            if not (nf4 and op == "b"):
                w(f"        ulong {op}P = p.{op.upper()}Ptr + (ulong){op}G * 2, {op}PStep = (ulong){op}Step * 2;")
            kstep = f"(long)kt * Bk * {ext_mn}"
        period_ok = rpp % 8 == 0
        if period_ok:
            w(f"        int {op}D = {offset(op + 'R', op + 'C', chunks, rows)};")
        plans.append((op, chunks, rows, rpp, passes, period_ok, kstep, 0 if op == "a" else a_bytes, offset, nf4 and op == "b"))
    return plans


def chunk_dst(plan, j, slot, panels):
    """C# expression of the shared-memory byte offset of this thread's j-th chunk of a plan's tile in the stage at slot."""
    op, chunks, rows, rpp, passes, period_ok, kstep, tile_off, offset, _ = plan
    if period_ok:
        # rows a multiple of 8 apart share their swizzle: a constant offset
        step = j * rpp * (128 if panels else chunks * 16)
        return f"{slot} + {tile_off + step} + {op}D"
    return f"{slot} + {tile_off} + {offset(f'{op}R + {j * rpp}', op + 'C', chunks, rows)}"


def emit_nf4_fetch(w, plan, ind, kt, declare):
    """First half of a fused NF4 tile load: this thread's words of packed codes (8 elements each) and their block scales
    into registers qw<j>, qs<j>; every word load is issued before the scales' (no branch between them)."""
    op, chunks, rows, rpp, passes, period_ok, kstep, tile_off, offset, _ = plan
    w(f"{ind}long qg = {op}G + {kstep.replace('kt', kt)};")
    for j in range(passes):
        w(f"{ind}{'uint ' if declare else ''}qw{j} = q.Words[(qg + {op}Step * {j}) >> 3];")
    for j in range(passes):
        w(f"{ind}{'float ' if declare else ''}qs{j} = Nf4Scale(q, (qg + {op}Step * {j}) >> q.Log2Block);")


def emit_nf4_store(w, plan, ind, slot, panels):
    """Second half: the registers dequantized to 16 bits, each chunk one 16-byte shared-memory store."""
    for j in range(plan[4]):
        w(f"{ind}Nf4Chunk<TH, TP>(q, sm, smBase, {chunk_dst(plan, j, slot, panels)}, qw{j}, qs{j});")


def emit_load_block(w, plans, indent, kt, slot, a_k, b_k, panels, defer=False):
    """Loads K tile kt into the stage at byte offset slot: straight-line cp.async when the group tile is in range (K
    tiles < ktFull), else the guarded LoadStage. panels: the wgmma layout (WgChunkOffset), else ChunkOffset. A fused NF4
    B operand is fetched into registers first and stored dequantized after A's cp.async; defer: leave the store to the
    caller (emit_nf4_store, when qNext), so that the mma of a k16 step hide the fetch's latency."""
    ind = " " * indent
    nf4 = any(pl[-1] for pl in plans)
    w(f"{ind}if (fast && {kt} < ktFull)")
    w(f"{ind}{{")
    for plan in plans:
        if plan[-1]:
            emit_nf4_fetch(w, plan, ind + "    ", kt, not defer)
    for plan in plans:
        op, chunks, rows, rpp, passes, period_ok, kstep, tile_off, offset, q = plan
        if q:
            continue
        w(f"{ind}    long {op}g = {op}G + {kstep.replace('kt', kt)};")
        w(f"{ind}    ulong {op}p = {op}P + (ulong)({kstep.replace('kt', kt)}) * 2;")
        for j in range(passes):
            w(f"{ind}    default(TP).CopyChunk({op}, {op}p, {op}g, sm, smBase, {chunk_dst(plan, j, slot, panels)});")
            if j + 1 < passes:
                w(f"{ind}    {op}g += {op}Step; {op}p += {op}PStep;")
    for plan in plans:
        if plan[-1]:
            if defer:
                w(f"{ind}    qNext = true;")
            else:
                emit_nf4_store(w, plan, ind + "    ", slot, panels)
    w(f"{ind}}}")
    if nf4:
        w(f"{ind}else LoadStageNf4<TH, TP>(a, q, sm, p, smBase, {slot}, {kt}, m0, n0, aOff, {'true' if a_k else 'false'}, "
          f"{'true' if b_k else 'false'}, Bm, Bn, Bk, Threads, {'true' if panels else 'false'});")
    else:
        w(f"{ind}else LoadStage<TP>(a, b, sm, p, smBase, {slot}, {kt}, m0, n0, aOff, bOff, {'true' if a_k else 'false'}, "
          f"{'true' if b_k else 'false'}, Bm, Bn, Bk, Threads, {'true' if panels else 'false'});")


NF4_PARAMS = ("ArrayView<ushort> a, ArrayView<uint> qWords, ArrayView<byte> qBytes, ArrayView<byte> qAbsmax, FloatView qScales, "
              "FloatView qOffset, FloatView qCode8, FloatView qCode4, int log2Block, FloatView bias, Params p, FloatView cF, "
              "ArrayView<ushort> cH")


def signature(w, name, tile, nf4):
    """The kernel's head: B as 16-bit elements, or (nf4) as the packed weight's views."""
    if nf4:
        w(f"    static void {name}Nf4Kernel{tile}<TH, TP>({NF4_PARAMS})")
        w("        where TH : struct, INf4Half where TP : struct, IPlatform")
    else:
        w(f"    static void {name}Kernel{tile}<TH, TP>(ArrayView<ushort> a, ArrayView<ushort> b, FloatView bias, Params p, FloatView cF, ArrayView<ushort> cH)")
        w("        where TH : struct, IHalf where TP : struct, IPlatform")


def kernel(name, a_k, b_k, tile, nf4=False):
    wmn, wnn, bk, stages = TILES[tile]
    bm, bn, threads = wmn * 64, wnn * 64, wmn * wnn * 32
    a_bytes = bm * bk * 2
    stage_bytes = (bm + bn) * bk * 2
    ks = bk // 16
    o = []
    w = o.append
    w(f"    // {name}, {tile}: {bm}x{bn} group tile, {threads} threads, K {bk} per stage, {stages} stages; "
      f"{'A K-major' if a_k else 'A M-major (ldmatrix.trans)'}, {'B K-major' if b_k else 'B N-major (ldmatrix.trans)'}"
      f"{'; B the NF4 weight, dequantized in the load stage' if nf4 else ''}.")
    signature(w, name, tile, nf4)
    w("    {")
    smem_main = max(stages * stage_bytes, wmn * wnn * 64 * EPI_STRIDE * 4)  # SharedBytes in Gemm.cs: the same
    w(f"        const int Bm = {bm}, Bn = {bn}, Bk = {bk}, Stages = {stages}, Threads = {threads}, StageBytes = {stage_bytes}, SmemMain = {smem_main};")
    w("        var sm = SharedMemory.GetDynamic<ushort>();")
    w("        var scratch = SharedMemory.GetDynamic<uint>();")
    w("        var smf = SharedMemory.GetDynamic<float>();")
    w("        int tid = Group.IdxX, lane = Warp.LaneIdx, warp = Warp.WarpIdx;")
    w(f"        int wm = warp / {wnn}, wn = warp - wm * {wnn};")
    emit_group_setup(w)
    w("        int ws = SmemMain / 4 + warp * ScratchPerWarp;")
    if nf4:
        w("        var q = Nf4Source.Of(qWords, qBytes, qAbsmax, qScales, qOffset, qCode8, qCode4, log2Block);")
    w("        int q8 = lane / 8, r8 = lane % 8;")

    plans = load_plans(w, a_k, b_k, bm, bn, bk, threads, a_bytes, swz, nf4)

    def load_block(indent, kt, slot, defer=False):
        emit_load_block(w, plans, indent, kt, slot, a_k, b_k, False, defer)

    # Per-lane ldmatrix offsets inside a stage's A / B tile. Row starts are multiples of 64 bytes and the swizzled chunk index (2x + h) ^ s = ((h ^ s) ^ 2x), so the offset of
    # k16 step kk (K-major) or of m/n16 tile x (M/N-major) is the lane's first offset XOR 32x: no register per step.
    if a_k:
        w("        int ar = wm * 64 + lane % 16;")
        w(f"        uint aL = (uint){swz('ar', 'lane / 16', bk // 8)};")
    else:
        w(f"        uint aL = (uint)(((q8 / 2) * 8 + r8) * Bm * 2 + wm * 128 + ((q8 % 2) ^ r8) * 16);")
    if b_k:
        w("        int br = wn * 64 + (q8 / 2) * 8 + r8;")
        w(f"        uint bL = (uint){swz('br', 'q8 % 2', bk // 8)};")
    else:
        w(f"        uint bL = (uint)(((q8 % 2) * 8 + r8) * Bn * 2 + wn * 128 + ((q8 / 2) ^ r8) * 16);")
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
        if kk == 0 and nf4:
            # the packed weight's words of tile `next` are fetched here and stored dequantized after this step's mma
            qpasses = plans[1][4]
            w("            int next = kt + Stages - 1;")
            w("            int wr = (rd == 0 ? Stages * StageBytes : rd) - StageBytes; // tile kt-1's stage")
            w("            bool qNext = false;")
            w("            uint " + ", ".join(f"qw{j} = 0" for j in range(qpasses)) + ";")
            w("            float " + ", ".join(f"qs{j} = 0f" for j in range(qpasses)) + ";")
            w("            if (next < kt1)")
            w("            {")
            load_block(16, "next", "wr", defer=True)
            w("            }")
            w("            default(TP).CommitGroup();")
        elif kk == 0:
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
        if kk == 0 and nf4:
            w("            if (qNext)")
            w("            {")
            emit_nf4_store(w, plans[1], " " * 16, "wr", False)
            w("            }")
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


def wg_kernel(name, a_k, b_k, tile, nf4=False):
    """Hopper body: warpgroup w of the group owns C rows 64w..64w+63 of the Bm x Bn tile and issues one
    wgmma.mma_async m64nBnk16 per k16 step, A and B read from the stage through shared-memory matrix descriptors."""
    wgs, bn, stages = WG_TILES[tile]
    bm, bk, threads = 64 * wgs, 64, 128 * wgs
    a_bytes = bm * bk * 2
    stage_bytes = (bm + bn) * bk * 2
    epi = bn + 8
    smem_main = max(stages * stage_bytes, bm * epi * 4)  # SharedBytes in Gemm.cs: the same
    o = []
    w = o.append
    w(f"    // {name}, {tile}: {bm}x{bn} group tile, {wgs} warpgroup(s) of 128 threads, K {bk} per stage, {stages} stages; "
      f"wgmma m64n{bn}k16, {'A K-major' if a_k else 'A M-major'}, {'B K-major' if b_k else 'B N-major'}"
      f"{'; B the NF4 weight, dequantized in the load stage' if nf4 else ''}.")
    signature(w, name, tile, nf4)
    w("    {")
    w(f"        const int Bm = {bm}, Bn = {bn}, Bk = {bk}, Stages = {stages}, Threads = {threads}, StageBytes = {stage_bytes}, "
      f"SmemMain = {smem_main}, EpiW = {epi};")
    w("        var sm = SharedMemory.GetDynamic<ushort>();")
    w("        var smf = SharedMemory.GetDynamic<float>();")
    w("        int tid = Group.IdxX, wg = tid / 128, t = tid - wg * 128;")
    emit_group_setup(w)
    w("        // The ring starts 1024-byte aligned: the 128-byte swizzle repeats every 8 rows of 128 bytes, on address bits.")
    w("        int ring = (int)(((smBase + 1023) & ~1023u) - smBase);")
    w(f"        int accOff = (SmemMain + 1024) / 4 + tid * {bn // 2}; // CPU emulation: this thread's accumulators")
    if nf4:
        w("        var q = Nf4Source.Of(qWords, qBytes, qAbsmax, qScales, qOffset, qCode8, qCode4, log2Block);")
    plans = load_plans(w, a_k, b_k, bm, bn, bk, threads, a_bytes, wg_swz, nf4)

    def load_block(indent, kt, slot):
        emit_load_block(w, plans, indent, kt, slot, a_k, b_k, True)

    w(f"        default(TP).WgAccZero({bn}, smf, accOff);")
    w("        // Ring of Stages slots, tile kt in slot kt % Stages, loads issued Stages - 2 tiles ahead: the slot a load")
    w("        // overwrites held tile kt-2, whose wgmma every warpgroup has waited for before this iteration's barrier.")
    w("        for (int s = 0; s < Stages - 2; s++)")
    w("        {")
    w("            if (kt0 + s < kt1)")
    w("            {")
    w("                int kl = kt0 + s, slot = ring + s * StageBytes;")
    load_block(16, "kl", "slot")
    w("            }")
    w("            default(TP).CommitGroup();")
    w("        }")
    # descriptors: A rows (K-major) or M panel (M-major) of this warpgroup at wg * 8192; B the whole tile
    lbo_a = 16 if a_k else bk * 128
    lbo_b = 16 if b_k else bk * 128
    step_a = 2 if a_k else 128  # k16 step: 32 bytes along a 128-byte row, or two 8-row groups (2048 bytes)
    step_b = 2 if b_k else 128
    w(f"        ulong dA = WgDesc(smBase + (uint)(ring + wg * {64 * 128}), {lbo_a}, 1024), dB = WgDesc(smBase + (uint)(ring + {a_bytes}), {lbo_b}, 1024);")
    w("        int rd = 0; // byte offset of K tile kt's slot in the ring")
    w("        for (int kt = kt0; kt < kt1; kt++)")
    w("        {")
    w("            default(TP).WaitGroups(Stages - 3);")
    w("            default(TP).FenceProxyAsync(); // cp.async and st.shared (generic proxy) -> wgmma reads (async proxy)")
    w("            Group.Barrier();")
    w("            default(TP).WgFence();")
    w("            ulong sd = (ulong)(rd >> 4);")
    for kk in range(bk // 16):
        w(f"            default(TP).Wgmma<TH>({bn}, {'false' if a_k else 'true'}, {'false' if b_k else 'true'}, "
          f"dA + sd + {kk * step_a}, dB + sd + {kk * step_b}, sm, smf, accOff);")
    w("            default(TP).WgCommit();")
    w("            int next = kt + Stages - 2;")
    w("            if (next < kt1)")
    w("            {")
    w("                int wr = rd + (Stages - 2) * StageBytes;")
    w("                if (wr >= Stages * StageBytes) wr -= Stages * StageBytes;")
    w("                wr += ring;")
    load_block(16, "next", "wr")
    w("            }")
    w("            default(TP).CommitGroup();")
    w("            default(TP).WgWait(1); // this warpgroup's wgmma of tile kt-1 are done")
    w("            rd += StageBytes;")
    w("            if (rd == Stages * StageBytes) rd = 0;")
    w("        }")
    w("        default(TP).WaitGroups(0);")
    w("        default(TP).WgWait(0);")
    w("        // Epilogue through shared memory: the accumulators go to a Bm x EpiW fp32 patch over the ring (fragment: row")
    w("        // 16 * warp + lane / 4 (+8), columns 8i + 2 * (lane % 4) (+1)), then each thread writes four adjacent columns")
    w("        // per step, a warp 128 contiguous columns of one row.")
    w("        Group.Barrier(); // every warpgroup is done reading the ring")
    w("        int fl = t % 32;")
    w("        default(TP).WgStoreAcc(Bn, smf, smBase, ring + ((wg * 64 + (t / 32) * 16 + fl / 4) * EpiW + (fl % 4) * 2) * 4, accOff);")
    w("        Group.Barrier();")
    w("        bool quads = inside && p.VecC != 0;")
    w("        for (int idx = tid; idx < Bm * Bn / 4; idx += Threads)")
    w("        {")
    w("            int r = idx / (Bn / 4), c4 = (idx - r * (Bn / 4)) * 4;")
    w("            default(TP).LoadShared4(smf, smBase, ring + (r * EpiW + c4) * 4, out float v0, out float v1, out float v2, out float v3);")
    w("            StoreQuad<TP>(p, bias, cF, cH, cOff, m0 + r, n0 + c4, mStart, nStart, quads, v0, v1, v2, v3);")
    w("        }")
    w("    }")
    return o


def wg_ptx():
    """PTX of the wgmma sites, one literal per configuration: the accumulators are function-scope registers wacc<N/2>
    named in the instruction text (not asm operands: CudaAsm takes at most ~44, and operands pass through .local slots)."""
    o = []
    w = o.append
    ns = sorted({bn for (_, bn, _) in WG_TILES.values()})
    for t, ptype in HALF_TYPES:
        w(f"    internal partial struct {t}")
        w("    {")
        w("        // wgmma.mma_async m64nNk16, fp32 accumulators wacc0.. (scale-d 1: they start at zero), descriptors A and B.")
        w("        public void WgmmaPtx(int n, bool transA, bool transB, ulong descA, ulong descB)")
        w("        {")
        first = True
        for n in ns:
            for ta in (0, 1):
                for tb in (0, 1):
                    cond = f"n == {n} && {'' if ta else '!'}transA && {'' if tb else '!'}transB"
                    w(f"            {branch(first)} ({cond})")
                    w(f"                CudaAsm.Emit(\"{wgmma(n, ptype, regs('wacc', n // 2), '%0', '%1', 'wp', '%2', f'1, 1, {ta}, {tb}')}\", "
                      "descA, descB, 1);")
                    first = False
        w("        }")
        w("    }")
        w("")
    w("    internal partial struct Ptx")
    w("    {")
    w("        // Declares this thread's n/2 accumulators (function scope, so the wgmma and WgStoreAcc sites see them) as zero.")
    w("        public void WgAccZero(int n, ArrayView<float> smf, int accOff)")
    w("        {")
    w("            if (!CudaAsm.IsSupported) return;")
    for i, n in enumerate(ns):
        zeros = zero_regs("wacc", n // 2)
        w(f"            {branch(i == 0)} (n == {n}) CudaAsm.Emit(\".reg .f32 wacc<{n // 2}>; {zeros}\");")
    w("        }")
    w("")
    w("        // Parks the accumulators in an fp32 patch of n + 8 floats per row: d[4i + 2h + e] at row +8h, column 8i + e.")
    w("        public void WgStoreAcc(int n, ArrayView<float> smf, uint smBase, int off, int accOff)")
    w("        {")
    w("            if (!CudaAsm.IsSupported) return;")
    for i, n in enumerate(ns):
        stride = n + 8
        sts = " ".join(f"st.shared.v2.f32 [%0+{(8 * h * stride + 8 * j) * 4}], {{wacc{4 * j + 2 * h}, wacc{4 * j + 2 * h + 1}}};"
                       for j in range(n // 8) for h in range(2))
        w(f"            {branch(i == 0)} (n == {n}) CudaAsm.Emit(\"{sts}\", smBase + (uint)off);")
    w("        }")
    w("    }")
    w("")
    return o


def main():
    out = ["// <auto-generated> by tools/gen_gemm.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "using ILGPU.Runtime.Cuda;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class Gemm", "{"]
    out.append("    /// <summary>Tile configurations a launch can pick (tests and the GPU bench force one): TWmxWn = warps along M x N,")
    out.append("    /// each warp 64x64 of C; K per stage and ring depth in <see cref=\"Shape\"/>.</summary>")
    out.append("    internal enum TileConfig { " + ", ".join(list(TILES) + list(WG_TILES)) + " }")
    out.append("")
    out.append("    /// <summary>Group tile, K per pipeline stage, stages of the cp.async ring, threads, and whether it is a wgmma tile.</summary>")
    out.append("    internal static (int Bm, int Bn, int Bk, int Stages, int Threads, bool Wgmma) Shape(TileConfig t) => t switch")
    out.append("    {")
    for t, (a, b, c, d) in TILES.items():
        out.append(f"        TileConfig.{t} => ({a * 64}, {b * 64}, {c}, {d}, {a * b * 32}, false),")
    for t, (g, n, st) in WG_TILES.items():
        out.append(f"        TileConfig.{t} => ({g * 64}, {n}, 64, {st}, {g * 128}, true),")
    out.append("        _ => throw new ArgumentOutOfRangeException(nameof(t)),")
    out.append("    };")
    out.append("")
    out.append("    /// <summary>The tiles with a fused-NF4 kernel (NT and NN).</summary>")
    out.append("    internal static readonly TileConfig[] Nf4Tiles = [" + ", ".join(f"TileConfig.{t}" for t in NF4_TILES) + "];")
    out.append("")
    for tile in TILES:
        for name, (a_k, b_k) in LAYOUTS.items():
            out += kernel(name, a_k, b_k, tile)
            out.append("")
    for tile in WG_TILES:
        for name, (a_k, b_k) in LAYOUTS.items():
            out += wg_kernel(name, a_k, b_k, tile)
            out.append("")
    for tile in NF4_TILES:
        for name in NF4_LAYOUTS:
            a_k, b_k = LAYOUTS[name]
            out += (wg_kernel if tile in WG_TILES else kernel)(name, a_k, b_k, tile, nf4=True)
            out.append("")
    out += wg_ptx()
    while out[-1] == "":
        out.pop()
    out.append("}")
    write("kernels/IlgpuTune.Kernels/Gemm.g.cs", out)


if __name__ == "__main__":
    main()
