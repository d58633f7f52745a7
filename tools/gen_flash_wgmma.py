#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/FlashAttentionHalf.Wgmma.g.cs: the Hopper (wgmma) flash-attention forward, one body per
head dim, and the backward's dK/dV and dQ kernels (head dim 128) (ILGPU 1.5.3 does not unroll loops), plus the PTX of its wgmma and accumulator sites, where the accumulators are
function-scope registers named in the instruction text (sacc: S, oacc: O). See FlashAttentionHalf.Wgmma.cs for the
algorithm. Run from the repository root: python3 tools/gen_flash_wgmma.py"""
from codegen import HALF_TYPES, branch, read_fragment, regs, wgmma, write, zero_regs

HEAD_DIMS = [64, 128]
KEYS = 128  # keys per K/V tile = N of the S product


def forward(d):
    keys, c = KEYS, d // 8
    ns, no = keys // 8, d // 8  # n8 fragments of S and of O
    o = []

    def w(s, ind=2):
        o.append("    " * ind + s)

    w(f"// Forward, head dim {d}, wgmma. Grid x = batch * numHeads, y = query blocks of 64 per warpgroup (last first).", 1)
    w(f"static void ForwardWgmma{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, IntView segmentIds, "
      "Params p, int stages, FloatView o, FloatView logSumExp)", 1)
    w("where TH : struct, IFlashWgmmaHalf where TP : struct, IFlashPlatform, IFlashWgmma", 2)
    w("{", 1)
    w(f"const int D = {d}, Chunks = {c}, Keys = {keys}, KvTile = Keys * D * 2;")
    w("var sm = SharedMemory.GetDynamic<ushort>();")
    w("var smf = SharedMemory.GetDynamic<float>();")
    w("var scratch = SharedMemory.GetDynamic<uint>();")
    w("int tid = Group.IdxX, threads = Group.DimX, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;")
    w("int rows = threads >> 1; // 64 query rows per warpgroup")
    w("uint smBase = default(TP).SmemBase();")
    w("// Q | K x stages | V x stages from a 1024-byte aligned start (the 128-byte swizzle repeats every 8 rows, on address bits)")
    w("int qAt = (int)(((smBase + 1023) & ~1023u) - smBase), kAt = qAt + rows * D * 2, vAt = kAt + stages * KvTile;")
    w("int ws = p.ScratchOffset + (tid >> 5) * ScratchPerWarp;")
    w(f"int accOff = p.ScratchOffset + (threads >> 5) * ScratchPerWarp + tid * {keys // 2 + d // 2}; // CPU emulation: accumulators")
    w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    w("int blocks = (p.Seq + rows - 1) / rows, i0 = (blocks - 1 - Grid.IdxY) * rows, keyTiles = (p.Seq + Keys - 1) / Keys;")
    w("long tokenBase = (long)bIdx * p.Seq;")
    w("int nTiles = p.Causal != 0 ? Math.Min(keyTiles, (i0 + rows + Keys - 1) / Keys) : keyTiles;")
    w("LoadRowsWg<TP>(q, p.QPtr, sm, smBase, qAt, rows, Chunks, tokenBase, i0, p.NumHeads, h, p, threads);")
    w("LoadKeysWg<TP>(kk, p.KPtr, sm, smBase, kAt, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p, threads);")
    w("default(TP).CommitGroup();")
    w("// Tile j of K and of V goes to slot j % stages; cp.async group 0 = Q, K_0; group j = K_j, V_(j-1), issued stages - 1 ahead.")
    w("for (int j = 1; j < stages - 1; j++)")
    w("{")
    w("if (j < nTiles) LoadKeysWg<TP>(kk, p.KPtr, sm, smBase, kAt + j * KvTile, Chunks, tokenBase, j * Keys, p.NumKvHeads, kvh, p, threads);", 3)
    w("if (j - 1 < nTiles) LoadKeysWg<TP>(v, p.VPtr, sm, smBase, vAt + (j - 1) * KvTile, Chunks, tokenBase, (j - 1) * Keys, p.NumKvHeads, kvh, p, threads);", 3)
    w("default(TP).CommitGroup();", 3)
    w("}")
    w("// The first iteration's P·V (P = 0) reads V slot stages - 1 (first written at iteration 1): zeros, not stale bits that could be NaN.")
    w("for (int idx = tid; idx < KvTile / 2; idx += threads) sm[(vAt + (stages - 1) * KvTile) / 2 + idx] = 0;")
    w("default(TP).WgDeclare(D, smf, accOff);")
    w("// Descriptors (128-byte swizzle): Q rows of this warpgroup, K-major, 64-wide panels rows * 128 bytes apart;")
    w("// K slot 0 likewise (panels Keys * 128 apart); V slot 0 MN-major (d contiguous), panels Keys * 128 apart, k16 = 2048 bytes.")
    w("ulong dQ = Gemm.WgDesc(smBase + (uint)(qAt + wg * 64 * 128), 16, 1024), qPanel = (ulong)(rows * 8);")
    w("ulong dK = Gemm.WgDesc(smBase + (uint)kAt, 16, 1024), dV = Gemm.WgDesc(smBase + (uint)vAt, Keys * 128, 1024);")
    w("int row0 = i0 + wg * 64 + warp * 16 + g, row1 = row0 + 8, wgRow = i0 + wg * 64;")
    w("int seg0 = p.Segmented != 0 && row0 < p.Seq ? segmentIds[tokenBase + row0] : 0, "
      "seg1 = p.Segmented != 0 && row1 < p.Seq ? segmentIds[tokenBase + row1] : 0;")
    w("float m0 = float.NegativeInfinity, m1 = float.NegativeInfinity, l0 = 0f, l1 = 0f, al0 = 1f, al1 = 1f, sc = p.ScaleLog2;")
    w("uint " + ", ".join(f"pa{k}_{r} = 0" for k in range(keys // 16) for r in range(4)) + ";")
    w("for (int t = 0; t < nTiles; t++)")
    w("{")
    w("default(TP).WaitGroups(stages - 2); // group t", 3)
    w("default(TP).FenceProxyAsync(); // cp.async and st.shared (generic proxy) -> wgmma reads (async proxy)", 3)
    w("Group.Barrier(); // K_t and V_(t-1) have landed; every warpgroup is done with S_(t-1) and P_(t-2)·V_(t-2)", 3)
    w("// slots: K_t (read now), t - 1 (S_(t-1) is done: K_(t+stages-1) goes there), t - 2 (P_(t-2)·V_(t-2) is done: V_(t+stages-2))", 3)
    w("int j0 = t * Keys, sl = t % stages, prev = sl == 0 ? stages - 1 : sl - 1, prev2 = prev == 0 ? stages - 1 : prev - 1;", 3)
    w("int kSlot = sl * KvTile, pSlot = prev * KvTile, jk = t + stages - 1, jv = jk - 1;", 3)
    w("ulong ks = (ulong)(kSlot >> 4), vs = (ulong)(pSlot >> 4);", 3)
    w("default(TP).WgFence();", 3)
    w("// S_t = Q·K_tᵀ (the first k16 step overwrites), then O += P_(t-1)·V_(t-1), which runs under this tile's softmax", 3)
    for k in range(d // 16):
        qoff = f"dQ + {k // 4} * qPanel + {2 * (k % 4)}"
        koff = f"dK + ks + {(k // 4) * keys * 8 + 2 * (k % 4)}"
        w(f"default(TP).WgmmaS<TH>({keys}, {'true' if k else 'false'}, {qoff}, {koff}, sm, smf, accOff);", 3)
    w("default(TP).WgCommit();", 3)
    w("default(TP).ScaleO(Keys, D, al0, al1, smf, accOff); // O to tile t-1's row maxima, before P_(t-1)·V_(t-1) joins it", 3)
    w("default(TP).WgFence();", 3)
    for k in range(keys // 16):
        w(f"default(TP).WgmmaPV<TH>({keys}, D, pa{k}_0, pa{k}_1, pa{k}_2, pa{k}_3, dV + vs + {128 * k}, sm, smf, accOff, scratch, ws);", 3)
    w("default(TP).WgCommit();", 3)
    w("// The copies are issued under the wgmma, off the critical path: their slots held K_(t-1) and V_(t-2), both done.", 3)
    w("if (jk < nTiles) LoadKeysWg<TP>(kk, p.KPtr, sm, smBase, kAt + pSlot, Chunks, tokenBase, jk * Keys, p.NumKvHeads, kvh, p, threads);", 3)
    w("if (jv < nTiles) LoadKeysWg<TP>(v, p.VPtr, sm, smBase, vAt + prev2 * KvTile, Chunks, tokenBase, jv * Keys, p.NumKvHeads, kvh, p, threads);", 3)
    w("default(TP).CommitGroup();", 3)
    w("default(TP).WgWait(1); // S_t is done", 3)
    for i in range(ns):
        w(f"default(TP).ReadS({keys}, {i}, smf, accOff, out float s{i}_0, out float s{i}_1, out float s{i}_2, out float s{i}_3);", 3)
    w("if (p.Segmented != 0 || j0 + Keys > p.Seq || (p.Causal != 0 && j0 + Keys - 1 > wgRow))", 3)
    w("{", 3)
    for i in range(ns):
        for e in range(4):
            r = e // 2
            w(f"if (!Visible(segmentIds, p, tokenBase, row{r}, seg{r}, j0 + {8 * i} + 2 * t4 + {e & 1})) s{i}_{e} = float.NegativeInfinity;", 4)
    w("}", 3)
    for r in range(2):
        es = (0, 1) if r == 0 else (2, 3)
        terms = [f"s{i}_{e}" for i in range(ns) for e in es]
        # balanced max tree
        while len(terms) > 1:
            terms = [f"MathF.Max({terms[j]}, {terms[j + 1]})" if j + 1 < len(terms) else terms[j] for j in range(0, len(terms), 2)]
        w(f"float mx{r} = {terms[0]};", 3)
        w(f"mx{r} = MathF.Max(mx{r}, default(TP).ShuffleXor(mx{r}, 1, scratch, ws));", 3)
        w(f"mx{r} = MathF.Max(mx{r}, default(TP).ShuffleXor(mx{r}, 2, scratch, ws));", 3)
        w(f"float mn{r} = MathF.Max(m{r}, mx{r} * sc);", 3)
        w(f"float mu{r} = mn{r} == float.NegativeInfinity ? 0f : mn{r}; // nothing visible yet: keep P = 0, not NaN", 3)
        w(f"al{r} = default(TP).Exp2(m{r} - mu{r});", 3)
        w(f"m{r} = mn{r};", 3)
    for i in range(ns):
        w(" ".join(f"s{i}_{e} = default(TP).Exp2(s{i}_{e} * sc - mu{e // 2});" for e in range(4)), 3)
    for r in range(2):
        es = (0, 1) if r == 0 else (2, 3)
        w(f"l{r} = l{r} * al{r} + (" + " + ".join(f"s{i}_{e}" for i in range(ns) for e in es) + ");", 3)
    w("// Once P_(t-1)·V_(t-1) is done (ptxas serializes every wgmma if a register one reads is redefined while it may run),", 3)
    w("// P_t in the A-fragment layout of the next P·V: the m64nNk16 accumulator fragment pairs into it.", 3)
    w("default(TP).WgWait(0);", 3)
    for k in range(keys // 16):
        a, b = 2 * k, 2 * k + 1
        w(f"pa{k}_0 = default(TH).Pack<TP>(s{a}_0, s{a}_1); pa{k}_1 = default(TH).Pack<TP>(s{a}_2, s{a}_3); "
          f"pa{k}_2 = default(TH).Pack<TP>(s{b}_0, s{b}_1); pa{k}_3 = default(TH).Pack<TP>(s{b}_2, s{b}_3);", 3)
    w("}")
    w("default(TP).WaitGroups(0);")
    w("default(TP).FenceProxyAsync();")
    w("Group.Barrier(); // the last V tile has landed")
    w("int vLast = (nTiles - 1) % stages * KvTile;")
    w("ulong vl = (ulong)(vLast >> 4);")
    w("default(TP).ScaleO(Keys, D, al0, al1, smf, accOff);")
    w("default(TP).WgFence();")
    for k in range(keys // 16):
        w(f"default(TP).WgmmaPV<TH>({keys}, D, pa{k}_0, pa{k}_1, pa{k}_2, pa{k}_3, dV + vl + {128 * k}, sm, smf, accOff, scratch, ws);")
    w("default(TP).WgCommit();")
    w("default(TP).WgWait(0);")
    w("long lb = (long)bh * p.Seq;")
    w("l0 += default(TP).ShuffleXor(l0, 1, scratch, ws); l0 += default(TP).ShuffleXor(l0, 2, scratch, ws);")
    w("l1 += default(TP).ShuffleXor(l1, 1, scratch, ws); l1 += default(TP).ShuffleXor(l1, 2, scratch, ws);")
    w("float inv0 = l0 > 0f ? 1f / l0 : 0f, inv1 = l1 > 0f ? 1f / l1 : 0f;")
    w("long ob0 = ((tokenBase + row0) * p.NumHeads + h) * D + 2 * t4, ob1 = ((tokenBase + row1) * p.NumHeads + h) * D + 2 * t4;")
    w("bool in0 = row0 < p.Seq, in1 = row1 < p.Seq;")
    for i in range(no):
        w(f"default(TP).ReadO({keys}, D, {i}, smf, accOff, out float o{i}_0, out float o{i}_1, out float o{i}_2, out float o{i}_3);")
        w(f"if (in0) {{ o[ob0 + {8 * i}] = o{i}_0 * inv0; o[ob0 + {8 * i + 1}] = o{i}_1 * inv0; }}")
        w(f"if (in1) {{ o[ob1 + {8 * i}] = o{i}_2 * inv1; o[ob1 + {8 * i + 1}] = o{i}_3 * inv1; }}")
    w("// A row with no visible key cannot occur (i sees itself); +inf makes its recomputed P zero in backward.")
    w("if (in0 && t4 == 0) logSumExp[lb + row0] = l0 > 0f ? m0 * Ln2 + MathF.Log(l0) : float.PositiveInfinity;")
    w("if (in1 && t4 == 0) logSumExp[lb + row1] = l1 > 0f ? m1 * Ln2 + MathF.Log(l1) : float.PositiveInfinity;")
    w("}", 1)
    return o


def ptx_sites():
    """The PTX of the wgmma and accumulator sites, one literal per (keys, head dim): accumulators sacc<keys/2> and oacc<d/2>."""
    o = []
    w = o.append
    keys = KEYS
    for t, ptype in HALF_TYPES:
        w(f"    internal partial struct {t} : IFlashWgmmaHalf")
        w("    {")
        w("        // S (+)= A·Bᵀ, both K-major in shared memory; accumulate false: the k16 step that starts S (scale-d 0).")
        w("        public void WgmmaSPtx(int keys, bool accumulate, ulong descA, ulong descB)")
        w("        {")
        w(f"            if (keys == {keys})")
        w(f"                CudaAsm.Emit(\"{wgmma(keys, ptype, regs('sacc', keys // 2), '%0', '%1', 'sz', '%2', '1, 1, 0, 0')}\", "
          "descA, descB, accumulate ? 1 : 0);")
        w("        }")
        w("")
        w("        // O += P·V: P from registers (the A fragment), V MN-major in shared memory (transpose flag).")
        w("        public void WgmmaPVPtx(int keys, int d, uint a0, uint a1, uint a2, uint a3, ulong descB)")
        w("        {")
        for i, d in enumerate(HEAD_DIMS):
            w(f"            {branch(i == 0)} (keys == {keys} && d == {d})")
            w(f"                CudaAsm.Emit(\"{wgmma(d, ptype, regs('oacc', d // 2), '{%0, %1, %2, %3}', '%4', 'po', '%5', '1, 1, 1')}\", "
              "a0, a1, a2, a3, descB, 1);")
        w("        }")
        w("    }")
        w("")
    w("    internal partial struct Ptx : IFlashWgmma")
    w("    {")
    w("        // Declares this thread's accumulators at function scope, O zeroed (S is overwritten by its first k16 step).")
    w("        public void WgDeclare(int d, ArrayView<float> smf, int accOff)")
    w("        {")
    w("            if (!CudaAsm.IsSupported) return;")
    for i, d in enumerate(HEAD_DIMS):
        zeros = zero_regs("oacc", d // 2)
        w(f"            {branch(i == 0)} (d == {d}) CudaAsm.Emit(\".reg .f32 sacc<{keys // 2}>; .reg .f32 oacc<{d // 2}>; {zeros}\");")
    w("        }")
    w("")
    w("        // Fragment i of S: rows g, g + 8 (g = lane / 4) of the warp's 16, columns 8i + 2(lane % 4), +1.")
    w("        public void ReadS(int keys, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)")
    w("        {")
    w("            Output<float> x0 = default, x1 = default, x2 = default, x3 = default;")
    w("            if (CudaAsm.IsSupported)")
    w("            {")
    for i in range(keys // 8):
        w(f"                {branch(i == 0)} (keys == {keys} && i == {i}) CudaAsm.EmitRef(\"{read_fragment('sacc', i)};\", ref x0, ref x1, ref x2, ref x3);")
    w("            }")
    w("            v0 = x0.Value; v1 = x1.Value; v2 = x2.Value; v3 = x3.Value;")
    w("        }")
    w("")
    w("        // O rows g (lo) and g + 8 (hi) times this tile's rescale factors.")
    w("        public void ScaleO(int keys, int d, float lo, float hi, ArrayView<float> smf, int accOff)")
    w("        {")
    w("            if (!CudaAsm.IsSupported) return;")
    for i, d in enumerate(HEAD_DIMS):
        muls = " ".join(f"mul.f32 oacc{j}, oacc{j}, %{(j % 4) // 2};" for j in range(d // 2))
        w(f"            {branch(i == 0)} (d == {d}) CudaAsm.Emit(\"{muls}\", lo, hi);")
    w("        }")
    w("")
    w("        // Fragment i of O, laid out as S's.")
    w("        public void ReadO(int keys, int d, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)")
    w("        {")
    w("            Output<float> x0 = default, x1 = default, x2 = default, x3 = default;")
    w("            if (CudaAsm.IsSupported)")
    w("            {")
    for i in range(max(HEAD_DIMS) // 8):
        w(f"                {branch(i == 0)} (i == {i}) CudaAsm.EmitRef(\"{read_fragment('oacc', i)};\", ref x0, ref x1, ref x2, ref x3);")
    w("            }")
    w("            v0 = x0.Value; v1 = x1.Value; v2 = x2.Value; v3 = x3.Value;")
    w("        }")
    w("    }")
    return o


BWD_HEAD_DIMS = [128]  # one: the emulation sizes its accumulators by WgmmaBackwardHeadDim
BWD_KEYS = 128  # keys per group of the wgmma dK/dV kernel: 64 per warpgroup
BWD_BQ = 64  # query rows per step = N of the Sᵀ and dPᵀ products


def backward_key_value(d):
    keys, bq, c = BWD_KEYS, BWD_BQ, d // 8
    ns, no = bq // 8, d // 8  # n8 fragments of Sᵀ (and dPᵀ) and of dK (and dV)
    o = []

    def w(s, ind=2):
        o.append("    " * ind + s)

    w(f"// Backward dK/dV, head dim {d}, wgmma. Grid x = batch * numKvHeads, y = key blocks of {keys} (64 per warpgroup); each group", 1)
    w(f"// loops over the query heads of its kv head and their query tiles of {bq} rows.", 1)
    w(f"static void BackwardKeyValueWgmma{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
      "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dK, FloatView dV)", 1)
    w("where TH : struct, IFlashWgmmaHalf where TP : struct, IFlashPlatform, IFlashWgmma", 2)
    w("{", 1)
    w(f"const int D = {d}, Chunks = {c}, Keys = {keys}, BQ = {bq}, Tile = Keys * D * 2, QTile = BQ * D * 2;")
    w("var sm = SharedMemory.GetDynamic<ushort>();")
    w("var smf = SharedMemory.GetDynamic<float>();")
    w("var statsInt = SharedMemory.GetDynamic<int>();")
    w("var scratch = SharedMemory.GetDynamic<uint>();")
    w("int tid = Group.IdxX, threads = Group.DimX, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;")
    w("uint smBase = default(TP).SmemBase();")
    w("// K | V | Q x2 | dO x2 from a 1024-byte aligned start, then per query row x2: lse*log2(e), delta, segment id")
    w("int kAt = (int)(((smBase + 1023) & ~1023u) - smBase), vAt = kAt + Tile, qAt = vAt + Tile, oAt = qAt + 2 * QTile, statsAt = (oAt + 2 * QTile) / 4;")
    w("int ws = p.ScratchOffset + (tid >> 5) * ScratchPerWarp;")
    w(f"int accOff = p.ScratchOffset + (threads >> 5) * ScratchPerWarp + tid * {bq + d}; // CPU emulation: accumulators")
    w("int bkv = Grid.IdxX, bIdx = bkv / p.NumKvHeads, kvh = bkv - bIdx * p.NumKvHeads, j0 = Grid.IdxY * Keys;")
    w("long tokenBase = (long)bIdx * p.Seq;")
    w("int iStart = p.Causal != 0 ? j0 / BQ : 0, iEnd = (p.Seq + BQ - 1) / BQ;")
    w("LoadKeysWg<TP>(kk, p.KPtr, sm, smBase, kAt, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p, threads);")
    w("LoadKeysWg<TP>(v, p.VPtr, sm, smBase, vAt, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p, threads);")
    w("// sorted packed rows: only the query tiles holding queries of the block's segments (keys j0 .. min(j0 + Keys, seq) - 1)")
    w("if (p.Sorted != 0)")
    w("{")
    w("TileSpan(segmentIds, p, tokenBase, BQ, j0, Math.Min(j0 + Keys, p.Seq) - 1, out int qFirst, out int qEnd);", 3)
    w("iStart = Math.Max(iStart, qFirst);", 3)
    w("iEnd = Math.Min(iEnd, qEnd);", 3)
    w("}")
    w("int nI = iEnd - iStart, total = nI > 0 ? p.Groups * nI : 0;")
    w("LoadRowsWg<TP>(q, p.QPtr, sm, smBase, qAt, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p, threads);")
    w("LoadRowsWg<TP>(dO, p.DOPtr, sm, smBase, oAt, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p, threads);")
    w("default(TP).CommitGroup();")
    w("if (tid < BQ)")
    w("{")
    w("LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bIdx * p.NumHeads + kvh * p.Groups, iStart * BQ + tid, "
      "out float sl, out float sd, out int ss);", 3)
    w("smf[statsAt + tid] = sl; smf[statsAt + 2 * BQ + tid] = sd; statsInt[statsAt + 4 * BQ + tid] = ss;", 3)
    w("}")
    w("default(TP).WgDeclareBackward(smf, accOff);")
    w("// Descriptors (128-byte swizzle): this warpgroup's 64 keys of K and V (A, K-major, panels Keys * 128 bytes apart); Q and dO")
    w("// K-major as the B of Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (panels BQ * 128 apart), MN-major as the B of dK += dSᵀ·Q and dV += Pᵀ·dO.")
    w("ulong kD = Gemm.WgDesc(smBase + (uint)(kAt + wg * 64 * 128), 16, 1024), vD = Gemm.WgDesc(smBase + (uint)(vAt + wg * 64 * 128), 16, 1024);")
    w("ulong qD = Gemm.WgDesc(smBase + (uint)qAt, 16, 1024), oD = Gemm.WgDesc(smBase + (uint)oAt, 16, 1024);")
    w("ulong qT = Gemm.WgDesc(smBase + (uint)qAt, BQ * 128, 1024), oT = Gemm.WgDesc(smBase + (uint)oAt, BQ * 128, 1024);")
    w("int key0 = j0 + wg * 64 + warp * 16 + g, key1 = key0 + 8;")
    w("int seg0 = p.Segmented != 0 && key0 < p.Seq ? segmentIds[tokenBase + key0] : 0, "
      "seg1 = p.Segmented != 0 && key1 < p.Seq ? segmentIds[tokenBase + key1] : 0;")
    w("float sc = p.ScaleLog2;")
    w("for (int it = 0; it < total; it++)")
    w("{")
    w("default(TP).WaitGroups(0);", 3)
    w("default(TP).FenceProxyAsync(); // cp.async and st.shared (generic proxy) -> wgmma reads (async proxy)", 3)
    w("Group.Barrier(); // step it has landed, and every warpgroup is done with step it-1's buffers", 3)
    w("int cur = it & 1, i0 = (iStart + it % nI) * BQ;", 3)
    w("int hn = kvh * p.Groups + (it + 1) / nI, i0n = (iStart + (it + 1) % nI) * BQ;", 3)
    w("bool more = it + 1 < total;", 3)
    w("if (more)", 3)
    w("{", 3)
    w("LoadRowsWg<TP>(q, p.QPtr, sm, smBase, qAt + (1 - cur) * QTile, BQ, Chunks, tokenBase, i0n, p.NumHeads, hn, p, threads);", 4)
    w("LoadRowsWg<TP>(dO, p.DOPtr, sm, smBase, oAt + (1 - cur) * QTile, BQ, Chunks, tokenBase, i0n, p.NumHeads, hn, p, threads);", 4)
    w("}", 3)
    w("default(TP).CommitGroup();", 3)
    w("// next step's row statistics: loaded now, stored to shared memory after this step's math", 3)
    w("float nl = 0f, nd = 0f; int nsg = 0;", 3)
    w("if (more && tid < BQ) LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bIdx * p.NumHeads + hn, i0n + tid, out nl, out nd, out nsg);", 3)
    w("ulong qs = (ulong)((cur * QTile) >> 4);", 3)
    w("int st = statsAt + cur * BQ;", 3)
    w("default(TP).WgFence();", 3)
    w("// Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (the first k16 step of each overwrites)", 3)
    for which, a, b in ((0, "kD", "qD"), (1, "vD", "oD")):
        for k in range(d // 16):
            aoff = f"{a} + {(k // 4) * keys * 8 + 2 * (k % 4)}"
            boff = f"{b} + qs + {(k // 4) * bq * 8 + 2 * (k % 4)}"
            w(f"default(TP).WgmmaScore<TH>({which}, {'true' if k else 'false'}, {aoff}, {boff}, sm, smf, accOff);", 3)
    w("default(TP).WgCommit();", 3)
    w("default(TP).WgWait(0);", 3)
    for i in range(ns):
        w(f"default(TP).ReadScore(0, {i}, smf, accOff, out float s{i}_0, out float s{i}_1, out float s{i}_2, out float s{i}_3);", 3)
        w(f"default(TP).ReadScore(1, {i}, smf, accOff, out float dp{i}_0, out float dp{i}_1, out float dp{i}_2, out float dp{i}_3);", 3)
    w("if (p.Segmented != 0 || (p.Causal != 0 && j0 + Keys - 1 > i0))", 3)
    w("{", 3)
    w("// non-short-circuit tests (the ids are in shared memory, always in range): each mask is a select, not a branch", 4)
    for i in range(ns):
        for e in range(4):
            col = f"{8 * i} + 2 * t4 + {e & 1}"
            r = e // 2
            w(f"if (((p.Causal != 0) & (key{r} > i0 + {col})) | ((p.Segmented != 0) & (statsInt[st + 4 * BQ + {col}] != seg{r}))) "
              f"s{i}_{e} = float.NegativeInfinity;", 4)
    w("}", 3)
    w("// P = exp2(s·scale·log2(e) - lse·log2(e)) (0 past seq: lse +inf), dS = P (dP - delta)", 3)
    for i in range(ns):
        for e in (0, 1):
            col = f"{8 * i} + 2 * t4 + {e}"
            w(f"float lc{i}_{e} = smf[st + {col}], dc{i}_{e} = smf[st + 2 * BQ + {col}];", 3)
    for i in range(ns):
        for e in range(4):
            w(f"s{i}_{e} = default(TP).Exp2(s{i}_{e} * sc - lc{i}_{e & 1}); dp{i}_{e} = s{i}_{e} * (dp{i}_{e} - dc{i}_{e & 1});", 3)
    w("// Pᵀ and dSᵀ in the A-fragment layout: the m64n64 accumulator fragment pairs into it", 3)
    for src, dst in (("s", "pa"), ("dp", "da")):
        for k in range(bq // 16):
            a, b = 2 * k, 2 * k + 1
            w(f"uint {dst}{k}_0 = default(TH).Pack<TP>({src}{a}_0, {src}{a}_1), {dst}{k}_1 = default(TH).Pack<TP>({src}{a}_2, {src}{a}_3), "
              f"{dst}{k}_2 = default(TH).Pack<TP>({src}{b}_0, {src}{b}_1), {dst}{k}_3 = default(TH).Pack<TP>({src}{b}_2, {src}{b}_3);", 3)
    w("default(TP).WgFence();", 3)
    w("// dV += Pᵀ·dO, dK += dSᵀ·Q: 16 queries per k16 step, dO and Q MN-major (2048 bytes per step)", 3)
    for which, a, b in ((1, "pa", "oT"), (0, "da", "qT")):
        for k in range(bq // 16):
            w(f"default(TP).WgmmaGrad<TH>({which}, {a}{k}_0, {a}{k}_1, {a}{k}_2, {a}{k}_3, {b} + qs + {128 * k}, sm, smf, accOff, scratch, ws);", 3)
    w("default(TP).WgCommit();", 3)
    w("default(TP).WgWait(0); // the A registers are redefined next step: ptxas serializes every wgmma if one may still read them", 3)
    w("if (more && tid < BQ)", 3)
    w("{", 3)
    w("int sn = statsAt + (1 - cur) * BQ + tid;", 4)
    w("smf[sn] = nl; smf[sn + 2 * BQ] = nd; statsInt[sn + 4 * BQ] = nsg;", 4)
    w("}", 3)
    w("}")
    w("default(TP).WaitGroups(0);")
    w("long ob0 = ((tokenBase + key0) * p.NumKvHeads + kvh) * D + 2 * t4, ob1 = ((tokenBase + key1) * p.NumKvHeads + kvh) * D + 2 * t4;")
    w("bool in0 = key0 < p.Seq, in1 = key1 < p.Seq;")
    for i in range(no):
        for which, name, scale in ((0, "dK", " * p.Scale"), (1, "dV", "")):
            x = f"{name[1].lower()}{i}"
            w(f"default(TP).ReadGrad({which}, {i}, smf, accOff, out float {x}_0, out float {x}_1, out float {x}_2, out float {x}_3);")
            w(f"if (in0) {{ {name}[ob0 + {8 * i}] = {x}_0{scale}; {name}[ob0 + {8 * i + 1}] = {x}_1{scale}; }}")
            w(f"if (in1) {{ {name}[ob1 + {8 * i}] = {x}_2{scale}; {name}[ob1 + {8 * i + 1}] = {x}_3{scale}; }}")
    w("}", 1)
    return o


def backward_query(d):
    keys, c = BWD_BQ, d // 8  # 64-key tiles: S and dP are m64n64, as Sᵀ and dPᵀ in the dK/dV kernel
    ns, no = keys // 8, d // 8
    o = []

    def w(s, ind=2):
        o.append("    " * ind + s)

    w(f"// Backward dQ, head dim {d}, wgmma. Grid x = batch * numHeads, y = query blocks of 64 per warpgroup (last first); each group", 1)
    w(f"// loops over the key tiles of {keys} its queries see.", 1)
    w(f"static void BackwardQueryWgmma{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
      "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dQ)", 1)
    w("where TH : struct, IFlashWgmmaHalf where TP : struct, IFlashPlatform, IFlashWgmma", 2)
    w("{", 1)
    w(f"const int D = {d}, Chunks = {c}, Keys = {keys}, KvTile = Keys * D * 2;")
    w("var sm = SharedMemory.GetDynamic<ushort>();")
    w("var smf = SharedMemory.GetDynamic<float>();")
    w("var scratch = SharedMemory.GetDynamic<uint>();")
    w("int tid = Group.IdxX, threads = Group.DimX, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t4 = lane & 3;")
    w("int rows = threads >> 1; // 64 query rows per warpgroup")
    w("uint smBase = default(TP).SmemBase();")
    w("// Q | dO | K x2 | V x2 from a 1024-byte aligned start")
    w("int qAt = (int)(((smBase + 1023) & ~1023u) - smBase), oAt = qAt + rows * D * 2, kAt = oAt + rows * D * 2, vAt = kAt + 2 * KvTile;")
    w("int ws = p.ScratchOffset + (tid >> 5) * ScratchPerWarp;")
    w(f"int accOff = p.ScratchOffset + (threads >> 5) * ScratchPerWarp + tid * {BWD_BQ + d}; // CPU emulation: accumulators")
    w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    w("int blocks = (p.Seq + rows - 1) / rows, i0 = (blocks - 1 - Grid.IdxY) * rows, keyTiles = (p.Seq + Keys - 1) / Keys;")
    w("long tokenBase = (long)bIdx * p.Seq;")
    w("int nTiles = p.Causal != 0 ? Math.Min(keyTiles, (i0 + rows + Keys - 1) / Keys) : keyTiles;")
    w("LoadRowsWg<TP>(q, p.QPtr, sm, smBase, qAt, rows, Chunks, tokenBase, i0, p.NumHeads, h, p, threads);")
    w("LoadRowsWg<TP>(dO, p.DOPtr, sm, smBase, oAt, rows, Chunks, tokenBase, i0, p.NumHeads, h, p, threads);")
    w("LoadRowsWg<TP>(kk, p.KPtr, sm, smBase, kAt, Keys, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p, threads);")
    w("LoadRowsWg<TP>(v, p.VPtr, sm, smBase, vAt, Keys, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p, threads);")
    w("default(TP).CommitGroup();")
    w("default(TP).WgDeclareBackward(smf, accOff);")
    w("// Descriptors (128-byte swizzle): this warpgroup's Q and dO rows (A, K-major, panels rows * 128 bytes apart); K and V slot 0")
    w("// K-major as the B of S = Q·Kᵀ and dP = dO·Vᵀ (panels Keys * 128 apart); K MN-major as the B of dQ += dS·K.")
    w("ulong qD = Gemm.WgDesc(smBase + (uint)(qAt + wg * 64 * 128), 16, 1024), oD = Gemm.WgDesc(smBase + (uint)(oAt + wg * 64 * 128), 16, 1024);")
    w("ulong kD = Gemm.WgDesc(smBase + (uint)kAt, 16, 1024), vD = Gemm.WgDesc(smBase + (uint)vAt, 16, 1024), qPanel = (ulong)(rows * 8);")
    w("ulong kT = Gemm.WgDesc(smBase + (uint)kAt, Keys * 128, 1024);")
    w("int row0 = i0 + wg * 64 + warp * 16 + g, row1 = row0 + 8, wgRow = i0 + wg * 64;")
    w("LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bh, row0, out float lse0, out float dl0, out int seg0);")
    w("LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bh, row1, out float lse1, out float dl1, out int seg1);")
    w("float sc = p.ScaleLog2;")
    w("for (int t = 0; t < nTiles; t++)")
    w("{")
    w("default(TP).WaitGroups(0);", 3)
    w("default(TP).FenceProxyAsync(); // cp.async and st.shared (generic proxy) -> wgmma reads (async proxy)", 3)
    w("Group.Barrier(); // tile t has landed, and every warpgroup is done with tile t-1's slot", 3)
    w("int j0 = t * Keys, cur = t & 1;", 3)
    w("if (t + 1 < nTiles)", 3)
    w("{", 3)
    w("LoadRowsWg<TP>(kk, p.KPtr, sm, smBase, kAt + (1 - cur) * KvTile, Keys, Chunks, tokenBase, j0 + Keys, p.NumKvHeads, kvh, p, threads);", 4)
    w("LoadRowsWg<TP>(v, p.VPtr, sm, smBase, vAt + (1 - cur) * KvTile, Keys, Chunks, tokenBase, j0 + Keys, p.NumKvHeads, kvh, p, threads);", 4)
    w("}", 3)
    w("default(TP).CommitGroup();", 3)
    w("ulong ks = (ulong)((cur * KvTile) >> 4);", 3)
    w("default(TP).WgFence();", 3)
    w("// S = Q·Kᵀ and dP = dO·Vᵀ (the first k16 step of each overwrites)", 3)
    for which, a, b in ((0, "qD", "kD"), (1, "oD", "vD")):
        for k in range(d // 16):
            aoff = f"{a} + {k // 4} * qPanel + {2 * (k % 4)}"
            boff = f"{b} + ks + {(k // 4) * keys * 8 + 2 * (k % 4)}"
            w(f"default(TP).WgmmaScore<TH>({which}, {'true' if k else 'false'}, {aoff}, {boff}, sm, smf, accOff);", 3)
    w("default(TP).WgCommit();", 3)
    w("default(TP).WgWait(0);", 3)
    for i in range(ns):
        w(f"default(TP).ReadScore(0, {i}, smf, accOff, out float s{i}_0, out float s{i}_1, out float s{i}_2, out float s{i}_3);", 3)
        w(f"default(TP).ReadScore(1, {i}, smf, accOff, out float dp{i}_0, out float dp{i}_1, out float dp{i}_2, out float dp{i}_3);", 3)
    w("if (p.Segmented != 0 || j0 + Keys > p.Seq || (p.Causal != 0 && j0 + Keys - 1 > wgRow))", 3)
    w("{", 3)
    for i in range(ns):
        for e in range(4):
            r = e // 2
            w(f"if (!Visible(segmentIds, p, tokenBase, row{r}, seg{r}, j0 + {8 * i} + 2 * t4 + {e & 1})) s{i}_{e} = float.NegativeInfinity;", 4)
    w("}", 3)
    w("// P = exp2(s·scale·log2(e) - lse·log2(e)) (0 past seq: lse +inf), dS = P (dP - delta)", 3)
    for i in range(ns):
        for e in range(4):
            r = e // 2
            w(f"s{i}_{e} = default(TP).Exp2(s{i}_{e} * sc - lse{r}); dp{i}_{e} = s{i}_{e} * (dp{i}_{e} - dl{r});", 3)
    w("// dS in the A-fragment layout of dQ += dS·K", 3)
    for k in range(keys // 16):
        a, b = 2 * k, 2 * k + 1
        w(f"uint da{k}_0 = default(TH).Pack<TP>(dp{a}_0, dp{a}_1), da{k}_1 = default(TH).Pack<TP>(dp{a}_2, dp{a}_3), "
          f"da{k}_2 = default(TH).Pack<TP>(dp{b}_0, dp{b}_1), da{k}_3 = default(TH).Pack<TP>(dp{b}_2, dp{b}_3);", 3)
    w("default(TP).WgFence();", 3)
    w("// dQ += dS·K: 16 keys per k16 step, K MN-major (2048 bytes per step)", 3)
    for k in range(keys // 16):
        w(f"default(TP).WgmmaGrad<TH>(0, da{k}_0, da{k}_1, da{k}_2, da{k}_3, kT + ks + {128 * k}, sm, smf, accOff, scratch, ws);", 3)
    w("default(TP).WgCommit();", 3)
    w("default(TP).WgWait(0); // the A registers are redefined next tile: ptxas serializes every wgmma if one may still read them", 3)
    w("}")
    w("default(TP).WaitGroups(0);")
    w("long ob0 = ((tokenBase + row0) * p.NumHeads + h) * D + 2 * t4, ob1 = ((tokenBase + row1) * p.NumHeads + h) * D + 2 * t4;")
    w("bool in0 = row0 < p.Seq, in1 = row1 < p.Seq;")
    for i in range(no):
        w(f"default(TP).ReadGrad(0, {i}, smf, accOff, out float q{i}_0, out float q{i}_1, out float q{i}_2, out float q{i}_3);")
        w(f"if (in0) {{ dQ[ob0 + {8 * i}] = q{i}_0 * p.Scale; dQ[ob0 + {8 * i + 1}] = q{i}_1 * p.Scale; }}")
        w(f"if (in1) {{ dQ[ob1 + {8 * i}] = q{i}_2 * p.Scale; dQ[ob1 + {8 * i + 1}] = q{i}_3 * p.Scale; }}")
    w("}", 1)
    return o


def ptx_sites_backward():
    """PTX of the backward kernels' sites: accumulators tacc (S or Sᵀ), pacc (dP or dPᵀ), kacc (dK or dQ), vacc (dV); `which`
    0 = S, dK/dQ; 1 = dP, dV."""
    o = []
    w = o.append
    bq = BWD_BQ
    for t, ptype in HALF_TYPES:
        w(f"    internal partial struct {t}")
        w("    {")
        w("        // S or dP (+)= A·Bᵀ, both K-major in shared memory; accumulate false: the k16 step that starts it (scale-d 0).")
        w("        public void WgmmaScorePtx(int which, bool accumulate, ulong descA, ulong descB)")
        w("        {")
        for which, name in ((0, "tacc"), (1, "pacc")):
            w(f"            {'if' if which == 0 else 'else'} {'(which == 0)' if which == 0 else ''}".rstrip())
            w(f"                CudaAsm.Emit(\"{wgmma(bq, ptype, regs(name, bq // 2), '%0', '%1', 'sz', '%2', '1, 1, 0, 0')}\", "
              "descA, descB, accumulate ? 1 : 0);")
        w("        }")
        w("")
        w("        // dK, dQ or dV += A·B: A (dSᵀ, dS or Pᵀ) from registers, B (Q, K or dO) MN-major in shared memory (transpose flag).")
        w("        public void WgmmaGradPtx(int which, uint a0, uint a1, uint a2, uint a3, ulong descB)")
        w("        {")
        for d in BWD_HEAD_DIMS:
            for which, name in ((0, "kacc"), (1, "vacc")):
                w(f"            {branch(which == 0)} (which == {which})")
                w(f"                CudaAsm.Emit(\"{wgmma(d, ptype, regs(name, d // 2), '{%0, %1, %2, %3}', '%4', 'pk', '%5', '1, 1, 1')}\", "
                  "a0, a1, a2, a3, descB, 1);")
        w("        }")
        w("    }")
        w("")
    d = max(BWD_HEAD_DIMS)
    w("    internal partial struct Ptx")
    w("    {")
    w("        // Declares the backward kernels' accumulators at function scope, the gradients zeroed (S, dP are overwritten by their first step).")
    w("        public void WgDeclareBackward(ArrayView<float> smf, int accOff)")
    w("        {")
    w("            if (!CudaAsm.IsSupported) return;")
    zeros = zero_regs("kacc", d // 2) + " " + zero_regs("vacc", d // 2)
    w(f"            CudaAsm.Emit(\".reg .f32 tacc<{bq // 2}>; .reg .f32 pacc<{bq // 2}>; .reg .f32 kacc<{d // 2}>; .reg .f32 vacc<{d // 2}>; {zeros}\");")
    w("        }")
    w("")
    w("        // Fragment i of S (which 0) or dP (1): rows g, g + 8 of the warp's 16, columns 8i + 2(lane % 4), +1.")
    w("        public void ReadScore(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)")
    w("        {")
    w("            Output<float> x0 = default, x1 = default, x2 = default, x3 = default;")
    w("            if (CudaAsm.IsSupported)")
    w("            {")
    first = True
    for which, name in ((0, "tacc"), (1, "pacc")):
        for i in range(bq // 8):
            w(f"                {branch(first)} (which == {which} && i == {i}) CudaAsm.EmitRef(\"{read_fragment(name, i)};\", ref x0, ref x1, ref x2, ref x3);")
            first = False
    w("            }")
    w("            v0 = x0.Value; v1 = x1.Value; v2 = x2.Value; v3 = x3.Value;")
    w("        }")
    w("")
    w("        // Fragment i of dK or dQ (which 0) or dV (1), laid out as S's.")
    w("        public void ReadGrad(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)")
    w("        {")
    w("            Output<float> x0 = default, x1 = default, x2 = default, x3 = default;")
    w("            if (CudaAsm.IsSupported)")
    w("            {")
    first = True
    for which, name in ((0, "kacc"), (1, "vacc")):
        for i in range(d // 8):
            w(f"                {branch(first)} (which == {which} && i == {i}) CudaAsm.EmitRef(\"{read_fragment(name, i)};\", ref x0, ref x1, ref x2, ref x3);")
            first = False
    w("            }")
    w("            v0 = x0.Value; v1 = x1.Value; v2 = x2.Value; v3 = x3.Value;")
    w("        }")
    w("    }")
    return o


def main():
    out = ["// <auto-generated> by tools/gen_flash_wgmma.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "using ILGPU.Runtime.Cuda;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class FlashAttentionHalf", "{"]
    out.append(f"    const int WgmmaKeys = {KEYS}; // keys per K/V tile of the wgmma forward")
    out.append("")
    for d in HEAD_DIMS:
        out += forward(d)
        out.append("")
    out += ptx_sites()
    out.append("")
    out.append(f"    // the wgmma dK/dV kernel's key block, query tile and head dim")
    out.append(f"    const int WgmmaBackwardKeys = {BWD_KEYS}, WgmmaBackwardQueries = {BWD_BQ}, WgmmaBackwardHeadDim = {BWD_HEAD_DIMS[0]};")
    out.append("")
    for d in BWD_HEAD_DIMS:
        out += backward_key_value(d)
        out.append("")
        out += backward_query(d)
        out.append("")
    out += ptx_sites_backward()
    out.append("}")
    write("kernels/IlgpuTune.Kernels/FlashAttentionHalf.Wgmma.g.cs", out)


if __name__ == "__main__":
    main()
