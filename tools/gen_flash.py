#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/FlashAttentionHalf.g.cs: the tensor-core flash-attention kernels (forward, backward dQ,
backward dK/dV), one body per head dim with every fragment a distinct local (ILGPU 1.5.3 does not unroll loops).
See the header of FlashAttentionHalf.cs for the algorithm. Run from the repository root: python3 tools/gen_flash.py"""
import os

HEAD_DIMS = [16, 32, 64, 128]
BM = 64  # rows per group: 4 warps x 16


def kv_block_q(d):
    """Query rows per step of the dK/dV kernel: 32 at d=128 keeps its 4 accumulator sets within the registers."""
    return 32 if d >= 128 else 64


def swz(row, chunks):
    """C# expression: the XOR applied to the 16-byte chunk index of tile row `row` (rows of `chunks` chunks)."""
    if chunks >= 8:
        return f"({row} & 7)"
    if chunks == 4:
        return f"(({row} >> 1) & 3)"
    return f"(({row} >> 2) & 1)"


class Body:
    def __init__(self, d):
        self.d, self.c, self.o = d, d // 8, []

    def w(self, s, ind=2):
        self.o.append("    " * ind + s)

    def lane_consts(self):
        c = self.c
        self.w("int g = lane >> 2, t4 = lane & 3, q8 = lane >> 3, r8 = lane & 7;")
        # A operand (non-trans) rows warp*16 + lane%16, chunk 2kk + lane/16
        self.w(f"int aRow = warp * 16 + (lane & 15), aSw = {swz('aRow', c)}, aHi = lane >> 4;")
        # B operand stored [n][k] (non-trans): n row (q8/2)*8 + r8 (+16 jp), chunk 2kk + q8%2
        self.w(f"int bRow = (q8 >> 1) * 8 + r8, bSw = {swz('bRow', c)}, bHi = q8 & 1;")
        # B operand stored [k][n] (trans): k row (q8%2)*8 + r8 (+16 kk), chunk 2dp + q8/2
        self.w(f"int vRow = (q8 & 1) * 8 + r8, vSw = {swz('vRow', c)}, vHi = q8 >> 1;")

    def a_addr(self, tile, kk):
        return f"{tile} + (uint)(aRow * {self.d * 2} + (((({2 * kk}) + aHi) ^ aSw) << 4))"

    def b_addr(self, tile, kk, jp):
        return f"{tile} + (uint)((bRow + {16 * jp}) * {self.d * 2} + (((({2 * kk}) + bHi) ^ bSw) << 4))"

    def v_addr(self, tile, kk, dp):
        return f"{tile} + (uint)((vRow + {16 * kk}) * {self.d * 2} + (((({2 * dp}) + vHi) ^ vSw) << 4))"

    def ldsm(self, addr, trans, outs, ind=3):
        self.w(f"default(TP).Ldsm({addr}, {'true' if trans else 'false'}, sm, scratch, ws, "
               + ", ".join(f"out uint {x}" for x in outs) + ");", ind)

    def mma(self, acc, a, b, ind=3):
        cs = ", ".join(f"ref {acc}_{e}" for e in range(4))
        self.w(f"default(TP).Mma<TH>({cs}, {a[0]}, {a[1]}, {a[2]}, {a[3]}, {b[0]}, {b[1]}, scratch, ws);", ind)

    def zeros(self, name, n, ind=2):
        self.w("float " + ", ".join(f"{name}{j}_{e} = 0f" for j in range(n) for e in range(4)) + ";", ind)

    def qk(self, acc, a_tile, a_regs, b_tile, n_rows, tag):
        """acc[16 x n_rows] = A[16 x d] . B[n_rows x d]^T; A from registers (a_regs) or the smem tile a_tile (warp rows)."""
        nt = n_rows // 8
        self.zeros(acc, nt, 3)
        for kk in range(self.d // 16):
            if a_regs is None:
                a = [f"{tag}a{kk}_{r}" for r in range(4)]
                self.ldsm(self.a_addr(a_tile, kk), False, a)
            else:
                a = [f"{a_regs}{kk}_{r}" for r in range(4)]
            for jp in range(nt // 2):
                b = [f"{tag}b{kk}_{jp}_{r}" for r in range(4)]
                self.ldsm(self.b_addr(b_tile, kk, jp), False, b)
                self.mma(f"{acc}{2 * jp}", a, b[0:2])
                self.mma(f"{acc}{2 * jp + 1}", a, b[2:4])

    def pack(self, src, k_rows, dst):
        """A fragments (16 x k_rows) from the C fragments src{n}_{e} (16 x k_rows): the m16n8 C layout pairs into A."""
        for kk in range(k_rows // 16):
            n0, n1 = 2 * kk, 2 * kk + 1
            self.w(f"uint {dst}{kk}_0 = default(TH).Pack<TP>({src}{n0}_0, {src}{n0}_1), {dst}{kk}_1 = default(TH).Pack<TP>({src}{n0}_2, {src}{n0}_3), "
                   f"{dst}{kk}_2 = default(TH).Pack<TP>({src}{n1}_0, {src}{n1}_1), {dst}{kk}_3 = default(TH).Pack<TP>({src}{n1}_2, {src}{n1}_3);", 3)

    def pv(self, acc, a, b_tile, k_rows, tag):
        """acc[16 x d] += A[16 x k_rows] . B[k_rows x d], B stored [k][d] (ldmatrix.trans)."""
        for kk in range(k_rows // 16):
            for dp in range(self.d // 16):
                b = [f"{tag}{kk}_{dp}_{r}" for r in range(4)]
                self.ldsm(self.v_addr(b_tile, kk, dp), True, b)
                self.mma(f"{acc}{2 * dp}", [f"{a}{kk}_{r}" for r in range(4)], b[0:2])
                self.mma(f"{acc}{2 * dp + 1}", [f"{a}{kk}_{r}" for r in range(4)], b[2:4])

    def preamble(self):
        self.w("var sm = SharedMemory.GetDynamic<ushort>();")
        self.w("var scratch = SharedMemory.GetDynamic<uint>();")
        self.w("int lane = Warp.LaneIdx, warp = Warp.WarpIdx, tid = Group.IdxX;")
        self.w("uint smBase = default(TP).SmemBase();")
        self.w("int ws = p.ScratchOffset + warp * ScratchPerWarp;")
        self.lane_consts()


def forward(d):
    b = Body(d)
    c, tile = b.c, BM * d * 2
    nt_s, nt_o = BM // 8, d // 8
    b.w(f"// Forward, head dim {d}. Grid x = batch * numHeads, y = query blocks of 64 (last first: causal blocks there are longest).", 1)
    b.w(f"static void Forward{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, IntView segmentIds, Params p, "
        "FloatView o, FloatView logSumExp)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.w(f"const int Chunks = {c}, Tile = {tile};")
    b.w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    b.w("int blocks = (p.Seq + 63) >> 6, qb = blocks - 1 - Grid.IdxY, i0 = qb * 64;")
    b.w("long tokenBase = (long)bIdx * p.Seq;")
    b.w("int nTiles = p.Causal != 0 ? qb + 1 : blocks;")
    b.w("// shared memory: Q | K x2 | V x2")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 0, 64, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    b.w("default(TP).CommitGroup();")
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, Tile, 64, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, 3 * Tile, 64, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p);")
    b.w("default(TP).CommitGroup();")
    b.w("default(TP).WaitGroups(1);")
    b.w("Group.Barrier();")
    for kk in range(d // 16):
        b.ldsm(b.a_addr("smBase", kk), False, [f"qa{kk}_{r}" for r in range(4)], 2)
    b.w("int row0 = i0 + warp * 16 + g, row1 = row0 + 8;")
    b.w("int seg0 = p.Segmented != 0 && row0 < p.Seq ? segmentIds[tokenBase + row0] : 0;")
    b.w("int seg1 = p.Segmented != 0 && row1 < p.Seq ? segmentIds[tokenBase + row1] : 0;")
    b.w("float m0 = float.NegativeInfinity, m1 = float.NegativeInfinity, l0 = 0f, l1 = 0f, sc = p.ScaleLog2;")
    b.zeros("o", nt_o)
    b.w("for (int t = 0; t < nTiles; t++)")
    b.w("{")
    b.w("default(TP).WaitGroups(0);", 3)
    b.w("Group.Barrier(); // tile t has landed, and every warp is done with tile t-1's buffers", 3)
    b.w("int cur = t & 1, j0 = t * 64;", 3)
    b.w("if (t + 1 < nTiles)", 3)
    b.w("{", 3)
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, (2 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, (4 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("}", 3)
    b.w("default(TP).CommitGroup();", 3)
    b.w("uint kS = smBase + (uint)((1 + cur) * Tile), vS = smBase + (uint)((3 + cur) * Tile);", 3)
    b.qk("s", None, "qa", "kS", BM, "k")
    b.w("if (p.Segmented != 0 || j0 + 64 > p.Seq || (p.Causal != 0 && j0 + 63 > i0))", 3)
    b.w("{", 3)
    for n in range(nt_s):
        for e in range(4):
            r = "row0, seg0" if e < 2 else "row1, seg1"
            b.w(f"if (!Visible(segmentIds, p, tokenBase, {r}, j0 + {8 * n} + 2 * t4 + {e & 1})) s{n}_{e} = float.NegativeInfinity;", 4)
    b.w("}", 3)
    for r, es in ((0, (0, 1)), (1, (2, 3))):
        terms = [f"s{n}_{e}" for n in range(nt_s) for e in es]
        expr = terms[0]
        for x in terms[1:]:
            expr = f"MathF.Max({expr}, {x})"
        b.w(f"float mx{r} = {expr};", 3)
        b.w(f"mx{r} = MathF.Max(mx{r}, default(TP).ShuffleXor(mx{r}, 1, scratch, ws));", 3)
        b.w(f"mx{r} = MathF.Max(mx{r}, default(TP).ShuffleXor(mx{r}, 2, scratch, ws));", 3)
        b.w(f"float mn{r} = MathF.Max(m{r}, mx{r} * sc);", 3)
        b.w(f"float mu{r} = mn{r} == float.NegativeInfinity ? 0f : mn{r}; // nothing visible yet: keep P = 0, not NaN", 3)
        b.w(f"float al{r} = default(TP).Exp2(m{r} - mu{r});", 3)
        b.w(f"m{r} = mn{r};", 3)
    for n in range(nt_s):
        for e in range(4):
            b.w(f"s{n}_{e} = default(TP).Exp2(s{n}_{e} * sc - mu{e // 2});", 3)
    b.w("l0 = l0 * al0 + (" + " + ".join(f"s{n}_{e}" for n in range(nt_s) for e in (0, 1)) + ");", 3)
    b.w("l1 = l1 * al1 + (" + " + ".join(f"s{n}_{e}" for n in range(nt_s) for e in (2, 3)) + ");", 3)
    for n in range(nt_o):
        b.w(f"o{n}_0 *= al0; o{n}_1 *= al0; o{n}_2 *= al1; o{n}_3 *= al1;", 3)
    b.pack("s", BM, "pa")
    b.pv("o", "pa", "vS", BM, "vb")
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    b.w("l0 += default(TP).ShuffleXor(l0, 1, scratch, ws); l0 += default(TP).ShuffleXor(l0, 2, scratch, ws);")
    b.w("l1 += default(TP).ShuffleXor(l1, 1, scratch, ws); l1 += default(TP).ShuffleXor(l1, 2, scratch, ws);")
    b.w("float inv0 = l0 > 0f ? 1f / l0 : 0f, inv1 = l1 > 0f ? 1f / l1 : 0f;")
    b.w(f"long ob0 = ((tokenBase + row0) * p.NumHeads + h) * {d} + 2 * t4, ob1 = ob0 + 8L * p.NumHeads * {d};")
    for r, es, inv in ((0, (0, 1), "inv0"), (1, (2, 3), "inv1")):
        b.w(f"if (row{r} < p.Seq)")
        b.w("{")
        for n in range(nt_o):
            b.w(f"o[ob{r} + {8 * n}] = o{n}_{es[0]} * {inv}; o[ob{r} + {8 * n + 1}] = o{n}_{es[1]} * {inv};", 3)
        b.w("}")
    b.w("long lb = (long)bh * p.Seq;")
    b.w("// A row with no visible key cannot occur (i sees itself); +inf makes its recomputed P zero in backward.")
    b.w("if (t4 == 0 && row0 < p.Seq) logSumExp[lb + row0] = l0 > 0f ? m0 * Ln2 + MathF.Log(l0) : float.PositiveInfinity;")
    b.w("if (t4 == 0 && row1 < p.Seq) logSumExp[lb + row1] = l1 > 0f ? m1 * Ln2 + MathF.Log(l1) : float.PositiveInfinity;")
    b.w("}", 1)
    return b.o


def backward_query(d):
    b = Body(d)
    c, tile = b.c, BM * d * 2
    nt_s, nt_o = BM // 8, d // 8
    b.w(f"// Backward dQ, head dim {d}. Grid as Forward: each group owns 64 rows of dQ and loops over key tiles.", 1)
    b.w(f"static void BackwardQuery{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
        "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dQ)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.w(f"const int Chunks = {c}, Tile = {tile};")
    b.w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    b.w("int blocks = (p.Seq + 63) >> 6, qb = blocks - 1 - Grid.IdxY, i0 = qb * 64;")
    b.w("long tokenBase = (long)bIdx * p.Seq, lb = (long)bh * p.Seq;")
    b.w("int nTiles = p.Causal != 0 ? qb + 1 : blocks;")
    b.w("// shared memory: Q | dO | K x2 | V x2")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 0, 64, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    b.w("LoadRows<TP>(dO, p.DOPtr, sm, smBase, Tile, 64, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, 2 * Tile, 64, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, 4 * Tile, 64, Chunks, tokenBase, 0, p.NumKvHeads, kvh, p);")
    b.w("default(TP).CommitGroup();")
    b.w("int row0 = i0 + warp * 16 + g, row1 = row0 + 8;")
    b.w("int seg0 = p.Segmented != 0 && row0 < p.Seq ? segmentIds[tokenBase + row0] : 0;")
    b.w("int seg1 = p.Segmented != 0 && row1 < p.Seq ? segmentIds[tokenBase + row1] : 0;")
    b.w("// rows past seq: lse +inf makes P zero")
    b.w("float lse0 = row0 < p.Seq ? logSumExp[lb + row0] * Log2E : float.PositiveInfinity, dl0 = row0 < p.Seq ? delta[lb + row0] : 0f;")
    b.w("float lse1 = row1 < p.Seq ? logSumExp[lb + row1] * Log2E : float.PositiveInfinity, dl1 = row1 < p.Seq ? delta[lb + row1] : 0f;")
    b.w("float sc = p.ScaleLog2;")
    b.zeros("dq", nt_o)
    b.w("for (int t = 0; t < nTiles; t++)")
    b.w("{")
    b.w("default(TP).WaitGroups(0);", 3)
    b.w("Group.Barrier(); // tile t has landed, and every warp is done with tile t-1's buffers", 3)
    b.w("int cur = t & 1, j0 = t * 64;", 3)
    b.w("if (t + 1 < nTiles)", 3)
    b.w("{", 3)
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, (3 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, (5 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("}", 3)
    b.w("default(TP).CommitGroup();", 3)
    b.w("uint kS = smBase + (uint)((2 + cur) * Tile), vS = smBase + (uint)((4 + cur) * Tile);", 3)
    b.qk("s", "smBase", None, "kS", BM, "q")
    b.qk("dp", "smBase + (uint)Tile", None, "vS", BM, "o")
    b.w("if (p.Segmented != 0 || j0 + 64 > p.Seq || (p.Causal != 0 && j0 + 63 > i0))", 3)
    b.w("{", 3)
    for n in range(nt_s):
        for e in range(4):
            r = "row0, seg0" if e < 2 else "row1, seg1"
            b.w(f"if (!Visible(segmentIds, p, tokenBase, {r}, j0 + {8 * n} + 2 * t4 + {e & 1})) s{n}_{e} = float.NegativeInfinity;", 4)
    b.w("}", 3)
    for n in range(nt_s):
        for e in range(4):
            r = e // 2
            b.w(f"s{n}_{e} = default(TP).Exp2(s{n}_{e} * sc - lse{r}); dp{n}_{e} = s{n}_{e} * (dp{n}_{e} - dl{r});", 3)
    b.pack("dp", BM, "ds")
    b.pv("dq", "ds", "kS", BM, "kb")
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    b.w(f"long ob0 = ((tokenBase + row0) * p.NumHeads + h) * {d} + 2 * t4, ob1 = ob0 + 8L * p.NumHeads * {d};")
    for r, es in ((0, (0, 1)), (1, (2, 3))):
        b.w(f"if (row{r} < p.Seq)")
        b.w("{")
        for n in range(nt_o):
            b.w(f"dQ[ob{r} + {8 * n}] = dq{n}_{es[0]} * p.Scale; dQ[ob{r} + {8 * n + 1}] = dq{n}_{es[1]} * p.Scale;", 3)
        b.w("}")
    b.w("}", 1)
    return b.o


def backward_key_value(d):
    b = Body(d)
    c, tile = b.c, BM * d * 2
    bq = kv_block_q(d)
    qtile = bq * d * 2
    nt_s, nt_o = bq // 8, d // 8
    b.w(f"// Backward dK/dV, head dim {d}. Grid x = batch * numKvHeads, y = key blocks of 64; each group loops over the query", 1)
    b.w(f"// heads of its kv head and their query tiles of {bq} rows, computing the transposed scores (keys are the fragment rows).", 1)
    b.w(f"static void BackwardKeyValue{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
        "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dK, FloatView dV)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.w("var stats = SharedMemory.GetDynamic<float>();")
    b.w("var statsInt = SharedMemory.GetDynamic<int>();")
    b.w(f"const int Chunks = {c}, Tile = {tile}, QTile = {qtile}, BQ = {bq};")
    b.w("// shared memory: K | V | Q x2 | dO x2 | per query row x2: lse*log2(e), delta, segment id")
    b.w("const int StatsAt = (2 * Tile + 4 * QTile) / 4;")
    b.w("int bkv = Grid.IdxX, bIdx = bkv / p.NumKvHeads, kvh = bkv - bIdx * p.NumKvHeads, j0 = Grid.IdxY * 64;")
    b.w("long tokenBase = (long)bIdx * p.Seq;")
    b.w("int iStart = p.Causal != 0 ? j0 / BQ : 0, nI = (p.Seq + BQ - 1) / BQ - iStart, total = p.Groups * nI;")
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, 0, 64, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, Tile, 64, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 2 * Tile, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p);")
    b.w("LoadRows<TP>(dO, p.DOPtr, sm, smBase, 2 * Tile + 2 * QTile, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p);")
    b.w("default(TP).CommitGroup();")
    b.w("if (tid < BQ)")
    b.w("{")
    b.w("LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bIdx * p.NumHeads + kvh * p.Groups, iStart * BQ + tid, "
        "out float sl, out float sd, out int ss);", 3)
    b.w("stats[StatsAt + tid] = sl; stats[StatsAt + 2 * BQ + tid] = sd; statsInt[StatsAt + 4 * BQ + tid] = ss;", 3)
    b.w("}")
    b.w("int key0 = j0 + warp * 16 + g, key1 = key0 + 8;")
    b.w("int seg0 = p.Segmented != 0 && key0 < p.Seq ? segmentIds[tokenBase + key0] : 0;")
    b.w("int seg1 = p.Segmented != 0 && key1 < p.Seq ? segmentIds[tokenBase + key1] : 0;")
    b.w("float sc = p.ScaleLog2;")
    b.zeros("dk", nt_o)
    b.zeros("dv", nt_o)
    b.w("for (int it = 0; it < total; it++)")
    b.w("{")
    b.w("default(TP).WaitGroups(0);", 3)
    b.w("Group.Barrier(); // step it has landed, and every warp is done with step it-1's buffers", 3)
    b.w("int cur = it & 1, i0 = (iStart + it % nI) * BQ;", 3)
    b.w("int hn = kvh * p.Groups + (it + 1) / nI, i0n = (iStart + (it + 1) % nI) * BQ;", 3)
    b.w("bool more = it + 1 < total;", 3)
    b.w("if (more)", 3)
    b.w("{", 3)
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 2 * Tile + (1 - cur) * QTile, BQ, Chunks, tokenBase, i0n, p.NumHeads, hn, p);", 4)
    b.w("LoadRows<TP>(dO, p.DOPtr, sm, smBase, 2 * Tile + (3 - cur) * QTile, BQ, Chunks, tokenBase, i0n, p.NumHeads, hn, p);", 4)
    b.w("}", 3)
    b.w("default(TP).CommitGroup();", 3)
    b.w("// next step's row statistics: loaded now, stored to shared memory after this step's math", 3)
    b.w("float nl = 0f, nd = 0f; int ns = 0;", 3)
    b.w("if (more && tid < BQ) LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bIdx * p.NumHeads + hn, i0n + tid, out nl, out nd, out ns);", 3)
    b.w("uint qS = smBase + (uint)(2 * Tile + cur * QTile), oS = smBase + (uint)(2 * Tile + (2 + cur) * QTile);", 3)
    b.w("int st = StatsAt + cur * BQ;", 3)
    b.qk("s", "smBase", None, "qS", bq, "k")
    b.qk("dp", "smBase + (uint)Tile", None, "oS", bq, "v")
    b.w("bool mask = p.Segmented != 0 || (p.Causal != 0 && j0 + 63 > i0);", 3)
    for n in range(nt_s):
        for e in (0, 1):
            col = f"{8 * n} + 2 * t4 + {e}"
            b.w(f"float lc{n}_{e} = stats[st + {col}], dc{n}_{e} = stats[st + 2 * BQ + {col}];", 3)
    b.w("if (mask)", 3)
    b.w("{", 3)
    for n in range(nt_s):
        for e in range(4):
            key, sg = ("key0", "seg0") if e < 2 else ("key1", "seg1")
            col = f"{8 * n} + 2 * t4 + {e & 1}"
            b.w(f"if ((p.Causal != 0 && {key} > i0 + {col}) || (p.Segmented != 0 && statsInt[st + 4 * BQ + {col}] != {sg})) "
                f"s{n}_{e} = float.NegativeInfinity;", 4)
    b.w("}", 3)
    for n in range(nt_s):
        for e in range(4):
            b.w(f"s{n}_{e} = default(TP).Exp2(s{n}_{e} * sc - lc{n}_{e & 1}); dp{n}_{e} = s{n}_{e} * (dp{n}_{e} - dc{n}_{e & 1});", 3)
    b.pack("s", bq, "pa")
    b.pv("dv", "pa", "oS", bq, "ob")
    b.pack("dp", bq, "ds")
    b.pv("dk", "ds", "qS", bq, "qb")
    b.w("if (more && tid < BQ)", 3)
    b.w("{", 3)
    b.w("int sn = StatsAt + (1 - cur) * BQ + tid;", 4)
    b.w("stats[sn] = nl; stats[sn + 2 * BQ] = nd; statsInt[sn + 4 * BQ] = ns;", 4)
    b.w("}", 3)
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    b.w(f"long ob0 = ((tokenBase + key0) * p.NumKvHeads + kvh) * {d} + 2 * t4, ob1 = ob0 + 8L * p.NumKvHeads * {d};")
    for r, es in ((0, (0, 1)), (1, (2, 3))):
        b.w(f"if (key{r} < p.Seq)")
        b.w("{")
        for n in range(nt_o):
            b.w(f"dK[ob{r} + {8 * n}] = dk{n}_{es[0]} * p.Scale; dK[ob{r} + {8 * n + 1}] = dk{n}_{es[1]} * p.Scale;", 3)
            b.w(f"dV[ob{r} + {8 * n}] = dv{n}_{es[0]}; dV[ob{r} + {8 * n + 1}] = dv{n}_{es[1]};", 3)
        b.w("}")
    b.w("}", 1)
    return b.o


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = ["// <auto-generated> by tools/gen_flash.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class FlashAttentionHalf", "{"]
    for d in HEAD_DIMS:
        for gen in (forward, backward_query, backward_key_value):
            out += gen(d)
            out.append("")
    out.append("    /// <summary>Query rows per step of the dK/dV kernel at each head dim.</summary>")
    out.append("    static int KeyValueBlockQ(int headDim) => headDim switch { " +
               ", ".join(f"{d} => {kv_block_q(d)}" for d in HEAD_DIMS) + ", _ => 0 };")
    out.append("}")
    path = os.path.join(root, "kernels", "IlgpuTune.Kernels", "FlashAttentionHalf.g.cs")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}: {len(out)} lines")


if __name__ == "__main__":
    main()
