#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/FlashAttentionHalf.g.cs: the tensor-core flash-attention kernels (forward, backward dQ,
backward dK/dV), one body per head dim with every fragment a distinct local (ILGPU 1.5.3 does not unroll loops).
See the header of FlashAttentionHalf.cs for the algorithm. Run from the repository root: python3 tools/gen_flash.py"""
from codegen import write

HEAD_DIMS = [16, 32, 64, 128]
BM = 64  # rows per group: 4 warps x 16


def kv_block_q(d):
    """Query rows per step of the dK/dV kernel: 32 from d=32 keeps its 4 accumulator sets within the registers."""
    return 32 if d >= 32 else 64


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
        # Chunk c = 2j + hi lands at (c & ~7) + ((c & 7) ^ sw) (sw < 8): four lane offsets per operand, the rest immediates.
        for x in "abv":
            self.w(f"int {x}Base = {x}Row * {self.d * 2}, " + ", ".join(
                f"{x}X{j} = ((({2 * j}) + {x}Hi) ^ {x}Sw) << 4" for j in range(min(4, max(1, c // 2)))) + ";")

    def addr(self, x, tile, row_off, chunk2):
        """Lane address for operand x (a/b/v) at row offset row_off and chunk pair index chunk2 (chunk = 2*chunk2 + hi)."""
        hi = (2 * chunk2) & ~7
        const = row_off * self.d * 2 + hi * 16
        return f"{tile} + (uint)({x}Base + {x}X{chunk2 % 4} + {const})"

    def a_addr(self, tile, kk):
        return self.addr("a", tile, 0, kk)

    def b_addr(self, tile, kk, jp):
        return self.addr("b", tile, 16 * jp, kk)

    def v_addr(self, tile, kk, dp):
        return self.addr("v", tile, 16 * kk, dp)

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


def query_mask(b, mi_n, nt, ks):
    """Masks the scores s{mi}_{n}_{e} of query rows row{mi}{r} (segments seg{mi}{r}) against keys j0 + ks*8*nt ..: key col is
    visible iff col < seq, not causal or col <= row, no window or row - col < window, and not segmented or seg[col] == seg[row]. Each lane loads its columns'
    ids once (clamped into the row, so the loads need no branch; a column past seq is masked by the first test anyway), and
    the tests use non-short-circuit operators, so each mask compiles to a select, not a branch."""
    b.w("if (mask)", 3)
    b.w("{", 3)
    for n in range(nt):
        col = [f"col{n}_{c}" for c in (0, 1)]
        b.w(f"int {col[0]} = j0 + {8 * (ks * nt + n)} + 2 * t4, {col[1]} = {col[0]} + 1, cs{n}_0 = 0, cs{n}_1 = 0;", 4)
        b.w("if (p.Segmented != 0)", 4)
        b.w("{", 4)
        for c in (0, 1):
            b.w(f"cs{n}_{c} = segmentIds[tokenBase + Math.Min({col[c]}, p.Seq - 1)];", 5)
        b.w("}", 4)
        for mi in range(mi_n):
            for e in range(4):
                r, c = e // 2, e & 1
                b.w(f"if (({col[c]} >= p.Seq) | ((p.Causal != 0) & ({col[c]} > row{mi}{r})) | ((p.Window != 0) & (row{mi}{r} - {col[c]} >= p.Window)) "
                    f"| ((p.Segmented != 0) & (cs{n}_{c} != seg{mi}{r}))) s{mi}_{n}_{e} = float.NegativeInfinity;", 4)
    b.w("}", 3)


def key_tiles(b):
    """Sorted packed rows: key tiles [tFirst, nTiles) narrowed to those holding keys of the block's segments (its queries
    i0 .. min(i0 + Rows, seq) - 1); a skipped tile is fully masked for every query of the block."""
    b.w("// sorted packed rows: only the key tiles holding keys of the block's segments (the others are masked for all its rows)")
    b.w("if (p.Sorted != 0)")
    b.w("{")
    b.w("TileSpan(segmentIds, p, tokenBase, 64, i0, Math.Min(i0 + Rows, p.Seq) - 1, out tFirst, out int tEnd);", 3)
    b.w("nTiles = Math.Min(nTiles, tEnd);", 3)
    b.w("}")
    b.w("// sliding window: the key tiles wholly before the first row's window are masked for the whole block")
    b.w("if (p.Window != 0) tFirst = Math.Max(tFirst, Math.Max(0, i0 - p.Window + 1) >> 6);")


FWD_MI = 2  # m16 tiles per warp in the forward: each K/V fragment feeds 2x the mma of a 16-row warp (half the ldmatrix traffic)
FWD_BM = 4 * 16 * FWD_MI
Q_REGS_MAX_D = 32


def fwd_sub(d):
    """Keys per softmax step inside a 64-key tile: 32 at d=128 halves the live score fragments (registers)."""
    return 32 if d >= 128 else 64


def forward(d):
    b = Body(d)
    c, tile = b.c, 64 * d * 2
    nt_s, nt_o, mi_n = 64 // 8, d // 8, FWD_MI
    q_regs = d <= Q_REGS_MAX_D  # Q fragments held in registers, or re-read from shared memory where registers are short
    b.w(f"// Forward, head dim {d}. Grid x = batch * numHeads, y = query blocks of {FWD_BM} (last first: causal blocks there are longest).", 1)
    b.w(f"static void Forward{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, IntView segmentIds, Params p, "
        "FloatView o, FloatView logSumExp)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.w(f"const int Chunks = {c}, Tile = {tile}, Rows = {FWD_BM};")
    b.w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    b.w("int blocks = (p.Seq + Rows - 1) / Rows, qb = blocks - 1 - Grid.IdxY, i0 = qb * Rows, keyTiles = (p.Seq + 63) >> 6;")
    b.w("long tokenBase = (long)bIdx * p.Seq;")
    b.w("int tFirst = 0, nTiles = p.Causal != 0 ? Math.Min(keyTiles, (i0 + Rows) >> 6) : keyTiles;")
    b.w(f"// shared memory: Q ({FWD_BM} rows) | K x2 | V x2 (64 rows each)")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 0, Rows, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    b.w("default(TP).CommitGroup();")
    key_tiles(b)
    b.w(f"const int KAt = {FWD_BM // 64} * Tile, VAt = KAt + 2 * Tile;")
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, KAt + (tFirst & 1) * Tile, 64, Chunks, tokenBase, tFirst * 64, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, VAt + (tFirst & 1) * Tile, 64, Chunks, tokenBase, tFirst * 64, p.NumKvHeads, kvh, p);")
    b.w("default(TP).CommitGroup();")
    b.w("default(TP).WaitGroups(1);")
    b.w("Group.Barrier();")
    # warp owns rows warp*16*MI .. : A address row = warp*16*MI + 16*mi + lane%16
    b.o = [x.replace("int aRow = warp * 16 + (lane & 15)", f"int aRow = warp * {16 * mi_n} + (lane & 15)") for x in b.o]

    def a_addr(kk, mi):
        return b.addr("a", "smBase", 16 * mi, kk)
    if q_regs:
        for mi in range(mi_n):
            for kk in range(d // 16):
                b.ldsm(a_addr(kk, mi), False, [f"qa{mi}_{kk}_{r}" for r in range(4)], 2)
    b.w(f"int rowBase = i0 + warp * {16 * mi_n} + g;")
    rows = [(mi, r) for mi in range(mi_n) for r in range(2)]
    for mi, r in rows:
        b.w(f"int row{mi}{r} = rowBase + {16 * mi + 8 * r}, seg{mi}{r} = p.Segmented != 0 && row{mi}{r} < p.Seq ? segmentIds[tokenBase + row{mi}{r}] : 0;")
        b.w(f"float m{mi}{r} = float.NegativeInfinity, l{mi}{r} = 0f;")
    b.w("float sc = p.ScaleLog2;")
    for mi in range(mi_n):
        b.zeros(f"o{mi}_", nt_o)
    b.w("for (int t = tFirst; t < nTiles; t++)")
    b.w("{")
    b.w("default(TP).WaitGroups(0);", 3)
    b.w("Group.Barrier(); // tile t has landed, and every warp is done with tile t-1's buffers", 3)
    b.w("int cur = t & 1, j0 = t * 64;", 3)
    b.w("if (t + 1 < nTiles)", 3)
    b.w("{", 3)
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, KAt + (1 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, VAt + (1 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("}", 3)
    b.w("default(TP).CommitGroup();", 3)
    b.w("uint kS = smBase + (uint)(KAt + cur * Tile), vS = smBase + (uint)(VAt + cur * Tile);", 3)
    b.w("bool mask = p.Segmented != 0 || j0 + 64 > p.Seq || (p.Causal != 0 && j0 + 63 > i0) || (p.Window != 0 && i0 + Rows - 1 - j0 >= p.Window);", 3)
    sub = fwd_sub(d)
    nt = sub // 8
    for ks in range(64 // sub):
        b.w(f"{{ // keys j0 + {ks * sub} .. j0 + {ks * sub + sub - 1}", 3)
        for mi in range(mi_n):
            b.zeros(f"s{mi}_", nt, 3)
        for kk in range(d // 16):
            if q_regs:
                a = [[f"qa{mi}_{kk}_{r}" for r in range(4)] for mi in range(mi_n)]
            else:
                a = []
                for mi in range(mi_n):
                    names = [f"qa{ks}_{mi}_{kk}_{r}" for r in range(4)]
                    b.ldsm(a_addr(kk, mi), False, names)
                    a.append(names)
            for jp in range(nt // 2):
                bb = [f"kb{ks}_{kk}_{jp}_{r}" for r in range(4)]
                b.ldsm(b.b_addr("kS", kk, ks * nt // 2 + jp), False, bb)
                for mi in range(mi_n):
                    b.mma(f"s{mi}_{2 * jp}", a[mi], bb[0:2])
                    b.mma(f"s{mi}_{2 * jp + 1}", a[mi], bb[2:4])
        query_mask(b, mi_n, nt, ks)
        b.w("{", 3)
        for mi, r in rows:
            es = (0, 1) if r == 0 else (2, 3)
            terms = [f"s{mi}_{n}_{e}" for n in range(nt) for e in es]
            expr = terms[0]
            for x in terms[1:]:
                expr = f"MathF.Max({expr}, {x})"
            k = f"{mi}{r}"
            b.w(f"float mx{k} = {expr};", 4)
            b.w(f"mx{k} = MathF.Max(mx{k}, default(TP).ShuffleXor(mx{k}, 1, scratch, ws));", 4)
            b.w(f"mx{k} = MathF.Max(mx{k}, default(TP).ShuffleXor(mx{k}, 2, scratch, ws));", 4)
            b.w(f"float mn{k} = MathF.Max(m{k}, mx{k} * sc);", 4)
            b.w(f"float mu{k} = mn{k} == float.NegativeInfinity ? 0f : mn{k}; // nothing visible yet: keep P = 0, not NaN", 4)
            b.w(f"float al{k} = default(TP).Exp2(m{k} - mu{k});", 4)
            b.w(f"m{k} = mn{k};", 4)
        for mi in range(mi_n):
            for n in range(nt):
                for e in range(4):
                    b.w(f"s{mi}_{n}_{e} = default(TP).Exp2(s{mi}_{n}_{e} * sc - mu{mi}{e // 2});", 4)
        for mi, r in rows:
            es = (0, 1) if r == 0 else (2, 3)
            b.w(f"l{mi}{r} = l{mi}{r} * al{mi}{r} + (" + " + ".join(f"s{mi}_{n}_{e}" for n in range(nt) for e in es) + ");", 4)
        for mi in range(mi_n):
            for n in range(nt_o):
                b.w(f"o{mi}_{n}_0 *= al{mi}0; o{mi}_{n}_1 *= al{mi}0; o{mi}_{n}_2 *= al{mi}1; o{mi}_{n}_3 *= al{mi}1;", 4)
        b.w("}", 3)
        for mi in range(mi_n):
            b.pack(f"s{mi}_", sub, f"pa{ks}_{mi}_")
        for kk in range(sub // 16):
            for dp in range(d // 16):
                bb = [f"vb{ks}_{kk}_{dp}_{r}" for r in range(4)]
                b.ldsm(b.v_addr("vS", ks * sub // 16 + kk, dp), True, bb)
                for mi in range(mi_n):
                    pa = [f"pa{ks}_{mi}_{kk}_{r}" for r in range(4)]
                    b.mma(f"o{mi}_{2 * dp}", pa, bb[0:2])
                    b.mma(f"o{mi}_{2 * dp + 1}", pa, bb[2:4])
        b.w("}", 3)
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    b.w("long lb = (long)bh * p.Seq;")
    for mi, r in rows:
        k = f"{mi}{r}"
        es = (0, 1) if r == 0 else (2, 3)
        b.w(f"l{k} += default(TP).ShuffleXor(l{k}, 1, scratch, ws); l{k} += default(TP).ShuffleXor(l{k}, 2, scratch, ws);")
        b.w(f"if (row{k} < p.Seq)")
        b.w("{")
        b.w(f"float inv = l{k} > 0f ? 1f / l{k} : 0f;", 3)
        b.w(f"long ob = ((tokenBase + row{k}) * p.NumHeads + h) * {d} + 2 * t4;", 3)
        for n in range(nt_o):
            b.w(f"o[ob + {8 * n}] = o{mi}_{n}_{es[0]} * inv; o[ob + {8 * n + 1}] = o{mi}_{n}_{es[1]} * inv;", 3)
        b.w("// A row with no visible key cannot occur (i sees itself); +inf makes its recomputed P zero in backward.", 3)
        b.w(f"if (t4 == 0) logSumExp[lb + row{k}] = l{k} > 0f ? m{k} * Ln2 + MathF.Log(l{k}) : float.PositiveInfinity;", 3)
        b.w("}")
    b.w("}", 1)
    return b.o


# dQ kernel: m16 tiles per warp, and keys per step (S and dP of 32 rows x 32 keys fit the registers at d=64; at d=128 even
# that spills, so one m16 tile per warp there)
BQ_MI = {16: 2, 32: 2, 64: 2, 128: 1}
BQ_SUB = {16: 64, 32: 64, 64: 32, 128: 64}


def backward_query(d):
    b = Body(d)
    c, tile = b.c, 64 * d * 2
    nt_o, mi_n, sub = d // 8, BQ_MI[d], BQ_SUB[d]
    nt, rows_n = sub // 8, 64 * BQ_MI[d]
    b.w(f"// Backward dQ, head dim {d}. Grid x = batch * numHeads, y = query blocks of {rows_n} (last first); each group owns those rows", 1)
    b.w(f"// of dQ ({16 * mi_n} per warp) and loops over key tiles.", 1)
    b.w(f"static void BackwardQuery{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
        "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dQ)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.o = [x.replace("int aRow = warp * 16 + (lane & 15)", f"int aRow = warp * {16 * mi_n} + (lane & 15)") for x in b.o]
    b.w(f"const int Chunks = {c}, Tile = {tile}, Rows = {rows_n}, QAt = 0, OAt = {mi_n} * Tile, KAt = 2 * OAt, VAt = KAt + 2 * Tile;")
    b.w("int bh = Grid.IdxX, bIdx = bh / p.NumHeads, h = bh - bIdx * p.NumHeads, kvh = h / p.Groups;")
    b.w("int blocks = (p.Seq + Rows - 1) / Rows, qb = blocks - 1 - Grid.IdxY, i0 = qb * Rows, keyTiles = (p.Seq + 63) >> 6;")
    b.w("long tokenBase = (long)bIdx * p.Seq, lb = (long)bh * p.Seq;")
    b.w("int tFirst = 0, nTiles = p.Causal != 0 ? Math.Min(keyTiles, (i0 + Rows) >> 6) : keyTiles;")
    b.w(f"// shared memory: Q | dO ({rows_n} rows each) | K x2 | V x2 (64 rows each)")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, QAt, Rows, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    b.w("LoadRows<TP>(dO, p.DOPtr, sm, smBase, OAt, Rows, Chunks, tokenBase, i0, p.NumHeads, h, p);")
    key_tiles(b)
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, KAt + (tFirst & 1) * Tile, 64, Chunks, tokenBase, tFirst * 64, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, VAt + (tFirst & 1) * Tile, 64, Chunks, tokenBase, tFirst * 64, p.NumKvHeads, kvh, p);")
    b.w("default(TP).CommitGroup();")
    b.w(f"int rowBase = i0 + warp * {16 * mi_n} + g;")
    rows = [(mi, r) for mi in range(mi_n) for r in range(2)]
    for mi, r in rows:
        k = f"{mi}{r}"
        b.w(f"int row{k} = rowBase + {16 * mi + 8 * r}, seg{k} = p.Segmented != 0 && row{k} < p.Seq ? segmentIds[tokenBase + row{k}] : 0;")
        b.w(f"// rows past seq: lse +inf makes P zero")
        b.w(f"float lse{k} = row{k} < p.Seq ? logSumExp[lb + row{k}] * Log2E : float.PositiveInfinity, dl{k} = row{k} < p.Seq ? delta[lb + row{k}] : 0f;")
    b.w("float sc = p.ScaleLog2;")
    for mi in range(mi_n):
        b.zeros(f"dq{mi}_", nt_o)
    b.w("for (int t = tFirst; t < nTiles; t++)")
    b.w("{")
    b.w("default(TP).WaitGroups(0);", 3)
    b.w("Group.Barrier(); // tile t has landed, and every warp is done with tile t-1's buffers", 3)
    b.w("int cur = t & 1, j0 = t * 64;", 3)
    b.w("if (t + 1 < nTiles)", 3)
    b.w("{", 3)
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, KAt + (1 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, VAt + (1 - cur) * Tile, 64, Chunks, tokenBase, j0 + 64, p.NumKvHeads, kvh, p);", 4)
    b.w("}", 3)
    b.w("default(TP).CommitGroup();", 3)
    b.w("uint kS = smBase + (uint)(KAt + cur * Tile), vS = smBase + (uint)(VAt + cur * Tile);", 3)
    b.w("bool mask = p.Segmented != 0 || j0 + 64 > p.Seq || (p.Causal != 0 && j0 + 63 > i0) || (p.Window != 0 && i0 + Rows - 1 - j0 >= p.Window);", 3)
    for ks in range(64 // sub):
        b.w(f"{{ // keys j0 + {ks * sub} .. j0 + {ks * sub + sub - 1}", 3)
        for acc, a_tile, b_tile, tag in (("s", "QAt", "kS", "q"), ("dp", "OAt", "vS", "o")):
            for mi in range(mi_n):
                b.zeros(f"{acc}{mi}_", nt, 3)
            for kk in range(d // 16):
                a = []
                for mi in range(mi_n):
                    names = [f"{tag}a{ks}_{mi}_{kk}_{r}" for r in range(4)]
                    b.ldsm(b.addr("a", f"smBase + (uint){a_tile}", 16 * mi, kk), False, names)
                    a.append(names)
                for jp in range(nt // 2):
                    bb = [f"{tag}b{ks}_{kk}_{jp}_{r}" for r in range(4)]
                    b.ldsm(b.b_addr(b_tile, kk, ks * nt // 2 + jp), False, bb)
                    for mi in range(mi_n):
                        b.mma(f"{acc}{mi}_{2 * jp}", a[mi], bb[0:2])
                        b.mma(f"{acc}{mi}_{2 * jp + 1}", a[mi], bb[2:4])
        query_mask(b, mi_n, nt, ks)
        for mi in range(mi_n):
            for n in range(nt):
                for e in range(4):
                    k = f"{mi}{e // 2}"
                    b.w(f"s{mi}_{n}_{e} = default(TP).Exp2(s{mi}_{n}_{e} * sc - lse{k}); dp{mi}_{n}_{e} = s{mi}_{n}_{e} * (dp{mi}_{n}_{e} - dl{k});", 3)
        for mi in range(mi_n):
            b.pack(f"dp{mi}_", sub, f"ds{ks}_{mi}_")
        for kk in range(sub // 16):
            for dp in range(d // 16):
                bb = [f"kt{ks}_{kk}_{dp}_{r}" for r in range(4)]
                b.ldsm(b.v_addr("kS", ks * sub // 16 + kk, dp), True, bb)
                for mi in range(mi_n):
                    da = [f"ds{ks}_{mi}_{kk}_{r}" for r in range(4)]
                    b.mma(f"dq{mi}_{2 * dp}", da, bb[0:2])
                    b.mma(f"dq{mi}_{2 * dp + 1}", da, bb[2:4])
        b.w("}", 3)
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    for mi, r in rows:
        k = f"{mi}{r}"
        es = (0, 1) if r == 0 else (2, 3)
        b.w(f"if (row{k} < p.Seq)")
        b.w("{")
        b.w(f"long ob = ((tokenBase + row{k}) * p.NumHeads + h) * {d} + 2 * t4;", 3)
        for n in range(nt_o):
            b.w(f"dQ[ob + {8 * n}] = dq{mi}_{n}_{es[0]} * p.Scale; dQ[ob + {8 * n + 1}] = dq{mi}_{n}_{es[1]} * p.Scale;", 3)
        b.w("}")
    b.w("}", 1)
    return b.o


KV_MI = {16: 2, 32: 2, 64: 2, 128: 1}  # m16 key tiles per warp in the dK/dV kernel (dK and dV of 32 keys do not fit at d=128)


def backward_key_value(d):
    b = Body(d)
    c, mi_n = b.c, KV_MI[d]
    keys = 64 * mi_n
    tile = keys * d * 2
    bq = kv_block_q(d)
    qtile = bq * d * 2
    nt_s, nt_o = bq // 8, d // 8
    b.w(f"// Backward dK/dV, head dim {d}. Grid x = batch * numKvHeads, y = key blocks of {keys} ({16 * mi_n} per warp); each group loops", 1)
    b.w(f"// over the query heads of its kv head and their query tiles of {bq} rows, computing the transposed scores (keys are the", 1)
    b.w("// fragment rows).", 1)
    b.w(f"static void BackwardKeyValue{d}Kernel<TH, TP>(ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v, ArrayView<ushort> dO, "
        "IntView segmentIds, FloatView logSumExp, FloatView delta, Params p, FloatView dK, FloatView dV)", 1)
    b.w("where TH : struct, IFlashHalf where TP : struct, IFlashPlatform", 2)
    b.w("{", 1)
    b.preamble()
    b.o = [x.replace("int aRow = warp * 16 + (lane & 15)", f"int aRow = warp * {16 * mi_n} + (lane & 15)") for x in b.o]
    b.w("var stats = SharedMemory.GetDynamic<float>();")
    b.w("var statsInt = SharedMemory.GetDynamic<int>();")
    b.w(f"const int Chunks = {c}, Tile = {tile}, QTile = {qtile}, BQ = {bq}, Keys = {keys};")
    b.w(f"// shared memory: K | V ({keys} rows each) | Q x2 | dO x2 | per query row x2: lse*log2(e), delta, segment id")
    b.w("const int StatsAt = (2 * Tile + 4 * QTile) / 4;")
    b.w("int bkv = Grid.IdxX, bIdx = bkv / p.NumKvHeads, kvh = bkv - bIdx * p.NumKvHeads, j0 = Grid.IdxY * Keys;")
    b.w("long tokenBase = (long)bIdx * p.Seq;")
    b.w("int iStart = p.Causal != 0 ? j0 / BQ : 0, iEnd = (p.Seq + BQ - 1) / BQ;")
    b.w("LoadRows<TP>(kk, p.KPtr, sm, smBase, 0, Keys, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p);")
    b.w("LoadRows<TP>(v, p.VPtr, sm, smBase, Tile, Keys, Chunks, tokenBase, j0, p.NumKvHeads, kvh, p);")
    b.w("// sorted packed rows: only the query tiles holding queries of the block's segments (keys j0 .. min(j0 + Keys, seq) - 1)")
    b.w("if (p.Sorted != 0)")
    b.w("{")
    b.w("TileSpan(segmentIds, p, tokenBase, BQ, j0, Math.Min(j0 + Keys, p.Seq) - 1, out int qFirst, out int qEnd);", 3)
    b.w("iStart = Math.Max(iStart, qFirst);", 3)
    b.w("iEnd = Math.Min(iEnd, qEnd);", 3)
    b.w("}")
    b.w("// sliding window: query tiles wholly past the last key's window see none of the block's keys")
    b.w("if (p.Window != 0) iEnd = Math.Min(iEnd, (Math.Min(j0 + Keys, p.Seq) - 1 + p.Window - 1) / BQ + 1);")
    b.w("int nI = iEnd - iStart, total = p.Groups * nI;")
    b.w("LoadRows<TP>(q, p.QPtr, sm, smBase, 2 * Tile, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p);")
    b.w("LoadRows<TP>(dO, p.DOPtr, sm, smBase, 2 * Tile + 2 * QTile, BQ, Chunks, tokenBase, iStart * BQ, p.NumHeads, kvh * p.Groups, p);")
    b.w("default(TP).CommitGroup();")
    b.w("if (tid < BQ)")
    b.w("{")
    b.w("LoadStats(segmentIds, logSumExp, delta, p, tokenBase, bIdx * p.NumHeads + kvh * p.Groups, iStart * BQ + tid, "
        "out float sl, out float sd, out int ss);", 3)
    b.w("stats[StatsAt + tid] = sl; stats[StatsAt + 2 * BQ + tid] = sd; statsInt[StatsAt + 4 * BQ + tid] = ss;", 3)
    b.w("}")
    b.w(f"int keyBase = j0 + warp * {16 * mi_n} + g;")
    rows = [(mi, r) for mi in range(mi_n) for r in range(2)]
    for mi, r in rows:
        k = f"{mi}{r}"
        b.w(f"int key{k} = keyBase + {16 * mi + 8 * r}, seg{k} = p.Segmented != 0 && key{k} < p.Seq ? segmentIds[tokenBase + key{k}] : 0;")
    b.w("float sc = p.ScaleLog2;")
    for mi in range(mi_n):
        b.zeros(f"dk{mi}_", nt_o)
        b.zeros(f"dv{mi}_", nt_o)
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
    for acc, a_tile, b_tile, tag in (("s", "smBase", "qS", "k"), ("dp", "smBase + (uint)Tile", "oS", "v")):
        for mi in range(mi_n):
            b.zeros(f"{acc}{mi}_", nt_s, 3)
        for kk in range(d // 16):
            a = []
            for mi in range(mi_n):
                names = [f"{tag}a{mi}_{kk}_{r}" for r in range(4)]
                b.ldsm(b.addr("a", a_tile, 16 * mi, kk), False, names)
                a.append(names)
            for jp in range(nt_s // 2):
                bb = [f"{tag}b{kk}_{jp}_{r}" for r in range(4)]
                b.ldsm(b.b_addr(b_tile, kk, jp), False, bb)
                for mi in range(mi_n):
                    b.mma(f"{acc}{mi}_{2 * jp}", a[mi], bb[0:2])
                    b.mma(f"{acc}{mi}_{2 * jp + 1}", a[mi], bb[2:4])
    b.w("bool mask = p.Segmented != 0 || (p.Causal != 0 && j0 + Keys - 1 > i0) || (p.Window != 0 && i0 + BQ - 1 - j0 >= p.Window);", 3)
    for n in range(nt_s):
        for e in (0, 1):
            col = f"{8 * n} + 2 * t4 + {e}"
            b.w(f"float lc{n}_{e} = stats[st + {col}], dc{n}_{e} = stats[st + 2 * BQ + {col}];", 3)
    b.w("if (mask)", 3)
    b.w("{", 3)
    b.w("// non-short-circuit tests (the ids are in shared memory, always in range): each mask is a select, not a branch", 4)
    for mi in range(mi_n):
        for n in range(nt_s):
            for e in range(4):
                k = f"{mi}{e // 2}"
                col = f"{8 * n} + 2 * t4 + {e & 1}"
                b.w(f"if (((p.Causal != 0) & (key{k} > i0 + {col})) | ((p.Window != 0) & (i0 + {col} - key{k} >= p.Window)) "
                    f"| ((p.Segmented != 0) & (statsInt[st + 4 * BQ + {col}] != seg{k}))) s{mi}_{n}_{e} = float.NegativeInfinity;", 4)
    b.w("}", 3)
    for mi in range(mi_n):
        for n in range(nt_s):
            for e in range(4):
                b.w(f"s{mi}_{n}_{e} = default(TP).Exp2(s{mi}_{n}_{e} * sc - lc{n}_{e & 1}); "
                    f"dp{mi}_{n}_{e} = s{mi}_{n}_{e} * (dp{mi}_{n}_{e} - dc{n}_{e & 1});", 3)
    for src, dst, acc, tile, tag in (("s", "pa", "dv", "oS", "ob"), ("dp", "ds", "dk", "qS", "qb")):
        for mi in range(mi_n):
            b.pack(f"{src}{mi}_", bq, f"{dst}{mi}_")
        for kk in range(bq // 16):
            for dp in range(d // 16):
                bb = [f"{tag}{kk}_{dp}_{r}" for r in range(4)]
                b.ldsm(b.v_addr(tile, kk, dp), True, bb)
                for mi in range(mi_n):
                    pa = [f"{dst}{mi}_{kk}_{r}" for r in range(4)]
                    b.mma(f"{acc}{mi}_{2 * dp}", pa, bb[0:2])
                    b.mma(f"{acc}{mi}_{2 * dp + 1}", pa, bb[2:4])
    b.w("if (more && tid < BQ)", 3)
    b.w("{", 3)
    b.w("int sn = StatsAt + (1 - cur) * BQ + tid;", 4)
    b.w("stats[sn] = nl; stats[sn + 2 * BQ] = nd; statsInt[sn + 4 * BQ] = ns;", 4)
    b.w("}", 3)
    b.w("}")
    b.w("default(TP).WaitGroups(0);")
    for mi, r in rows:
        k = f"{mi}{r}"
        es = (0, 1) if r == 0 else (2, 3)
        b.w(f"if (key{k} < p.Seq)")
        b.w("{")
        b.w(f"long ob = ((tokenBase + key{k}) * p.NumKvHeads + kvh) * {d} + 2 * t4;", 3)
        for n in range(nt_o):
            b.w(f"dK[ob + {8 * n}] = dk{mi}_{n}_{es[0]} * p.Scale; dK[ob + {8 * n + 1}] = dk{mi}_{n}_{es[1]} * p.Scale;", 3)
            b.w(f"dV[ob + {8 * n}] = dv{mi}_{n}_{es[0]}; dV[ob + {8 * n + 1}] = dv{mi}_{n}_{es[1]};", 3)
        b.w("}")
    b.w("}", 1)
    return b.o


def main():
    out = ["// <auto-generated> by tools/gen_flash.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class FlashAttentionHalf", "{"]
    for d in HEAD_DIMS:
        for gen in (forward, backward_query, backward_key_value):
            out += gen(d)
            out.append("")
    out.append(f"    const int ForwardRows = {FWD_BM}; // query rows per forward group")
    out.append("    /// <summary>Query rows per group of the dQ kernel at each head dim.</summary>")
    out.append("    static int BackwardQueryRows(int headDim) => headDim switch { " +
               ", ".join(f"{d} => {64 * BQ_MI[d]}" for d in HEAD_DIMS) + ", _ => 0 };")
    out.append("    /// <summary>Keys per group of the dK/dV kernel at each head dim.</summary>")
    out.append("    static int KeyValueKeys(int headDim) => headDim switch { " +
               ", ".join(f"{d} => {64 * KV_MI[d]}" for d in HEAD_DIMS) + ", _ => 0 };")
    out.append("    /// <summary>Query rows per step of the dK/dV kernel at each head dim.</summary>")
    out.append("    static int KeyValueBlockQ(int headDim) => headDim switch { " +
               ", ".join(f"{d} => {kv_block_q(d)}" for d in HEAD_DIMS) + ", _ => 0 };")
    out.append("}")
    write("kernels/IlgpuTune.Kernels/FlashAttentionHalf.g.cs", out)


if __name__ == "__main__":
    main()
