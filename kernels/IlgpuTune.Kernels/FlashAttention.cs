// Memory-O(seq) causal attention, FlashAttention-2 style, fp32 on CUDA cores (no tensor cores yet). Same maths, layouts and
// masking as Attention (Attention.ForwardCpu/BackwardCpu are the spec for o, logSumExp, dQ, dK, dV); no [seq, seq] buffer anywhere.
//   q, o[batch*seq, numHeads, headDim]; k, v[batch*seq, numKvHeads, headDim]; query head h reads kv head h / (numHeads/numKvHeads);
//   key j visible to query i iff j <= i, i - j < window when a sliding window is set, and, when segmentIds[batch*seq] is given,
//   seg[j] == seg[i]; headDim <= MaxHeadDim (256: Gemma 3).
//   -> o, logSumExp[batch, numHeads, seq] = log sum_j exp(s_ij) over visible keys, s_ij = (q_i . k_j) * scale (saved for backward).
// Tiles outside the causal band (and, with a window, wholly before it) are never visited: the forward and dQ kernels start at
//   the key tile of their first row's first visible key, the dK/dV kernel stops after its last key's last visible query.
// Forward: one group per (b, h, block of BlockQ query rows); K/V tiles of BlockK keys staged in shared memory; online softmax
//   keeps a running max m and sum l per row and rescales the output accumulator by exp(m_old - m_new) at each tile.
// Backward (FA2), with P_ij = exp(s_ij - lse_i) recomputed per tile and dP_ij = dO_i . v_j:
//   delta_i = dO_i . o_i  (= sum_j P_ij dP_ij, a pre-pass);  dS_ij = P_ij (dP_ij - delta_i)
//   dK_j = scale * sum_{h in group} sum_i dS_ij q_i ;  dV_j = sum_{h in group} sum_i P_ij dO_i   (one group per (b, kv head, key
//     block) loops over the group's query heads and query blocks: dK/dV written once)
//   dQ_i = scale * sum_j dS_ij k_j   (one group per (b, h, query block) loops over key blocks: a second kernel)
//   dQ, dK, dV are overwritten. Every sum is a fixed-order loop: deterministic, no atomics.
// Tiles live in dynamic shared memory with row stride Ld = headDim + 1 so the threads of a warp reading different rows hit
// different banks: 16-row tiles (the dK/dV kernel steps 8 query rows to fit six tiles) up to head dim 128, 8-row tiles (4) above,
// so every kernel stays under 48 KB.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class FlashAttention
{
    public const int MaxHeadDim = 256;

    /// <summary>Sizes and tile shape passed to the kernels as one argument (Window 0: none).</summary>
    internal readonly struct Dims(int seq, int numHeads, int numKvHeads, int headDim, float scale, int window, int block)
    {
        public readonly int Seq = seq, NumHeads = numHeads, NumKvHeads = numKvHeads, HeadDim = headDim, Window = window;
        public readonly int BlockQ = block, BlockK = block, BlockQKv = block / 2, Ld = headDim + 1;
        public readonly float Scale = scale;
        public int Groups => NumHeads / NumKvHeads;

        // The first key tile (a multiple of BlockK) that row i0 can see, and one past the last query row that key j can see.
        public int FirstKey(int i0) => Window > 0 ? Math.Max(0, i0 - Window + 1) / BlockK * BlockK : 0;
        public int QueryEnd(int j) => Window > 0 ? Math.Min(Seq, j + Window) : Seq;

        public int ForwardFloats => 2 * BlockQ * Ld + 2 * BlockK * Ld + BlockQ * BlockK + 3 * BlockQ;
        public int KeyValueFloats => 4 * BlockK * Ld + 2 * BlockQKv * Ld + 2 * BlockQKv * BlockK + 2 * BlockQKv;
        public int QueryFloats => 3 * BlockQ * Ld + 2 * BlockK * Ld + BlockQ * BlockK + 2 * BlockQ;
    }

    // Carves consecutive tiles out of the dynamic shared memory.
    struct Carver(ArrayView<float> sm)
    {
        int _at;

        public ArrayView<float> Next(int n)
        {
            var v = sm.SubView(_at, n);
            _at += n;
            return v;
        }
    }

    // ---- device kernels ----

    // Grid: batch * numHeads * ceil(seq / BlockQ) groups.
    static void ForwardKernel(FloatView q, FloatView kk, FloatView v, IntView segmentIds, Dims s, FloatView o, FloatView logSumExp)
    {
        int BlockQ = s.BlockQ, BlockK = s.BlockK, Ld = s.Ld;
        var sm = new Carver(SharedMemory.GetDynamic<float>());
        var qTile = sm.Next(BlockQ * Ld);
        var oAcc = sm.Next(BlockQ * Ld);
        var kTile = sm.Next(BlockK * Ld);
        var vTile = sm.Next(BlockK * Ld);
        var sTile = sm.Next(BlockQ * BlockK); // scores, then exp(s - m) of the tile
        var rowMax = sm.Next(BlockQ);
        var rowSum = sm.Next(BlockQ);
        var rowScale = sm.Next(BlockQ);
        int blocks = (s.Seq + BlockQ - 1) / BlockQ;
        int i0 = Grid.IdxX % blocks * BlockQ, h = Grid.IdxX / blocks % s.NumHeads;
        long tokenBase = (long)(Grid.IdxX / blocks / s.NumHeads) * s.Seq;
        int kvh = h / s.Groups, hd = s.HeadDim, tid = Group.IdxX, threads = Group.DimX;

        for (int e = tid; e < BlockQ * hd; e += threads)
        {
            int r = e / hd, d = e % hd, i = i0 + r;
            qTile[r * Ld + d] = i < s.Seq ? q[((tokenBase + i) * s.NumHeads + h) * hd + d] : 0f;
            oAcc[r * Ld + d] = 0f;
        }
        for (int r = tid; r < BlockQ; r += threads)
        {
            rowMax[r] = float.NegativeInfinity;
            rowSum[r] = 0f;
        }
        Group.Barrier();

        int keyEnd = Math.Min(s.Seq, i0 + BlockQ); // causal: later keys are invisible to the whole block
        for (int j0 = s.FirstKey(i0); j0 < keyEnd; j0 += BlockK)
        {
            LoadKv(kk, v, tokenBase, j0, kvh, s, kTile, vTile);
            Group.Barrier();
            for (int e = tid; e < BlockQ * BlockK; e += threads)
            {
                int r = e / BlockK, c = e % BlockK;
                sTile[e] = Visible(segmentIds, tokenBase, i0 + r, j0 + c, s)
                    ? Dot(qTile, r * Ld, kTile, c * Ld, hd) * s.Scale
                    : float.NegativeInfinity;
            }
            Group.Barrier();
            for (int r = tid; r < BlockQ; r += threads)
            {
                float old = rowMax[r], m = old;
                for (int c = 0; c < BlockK; c++) m = MathF.Max(m, sTile[r * BlockK + c]);
                // Nothing visible yet: keep the row at (m, l) = (-inf, 0) instead of producing exp(-inf + inf) = NaN.
                bool none = m == float.NegativeInfinity;
                float sum = 0f;
                for (int c = 0; c < BlockK; c++)
                {
                    float p = none ? 0f : MathF.Exp(sTile[r * BlockK + c] - m);
                    sTile[r * BlockK + c] = p;
                    sum += p;
                }
                float alpha = none ? 1f : MathF.Exp(old - m);
                rowScale[r] = alpha;
                rowSum[r] = rowSum[r] * alpha + sum;
                rowMax[r] = m;
            }
            Group.Barrier();
            for (int e = tid; e < BlockQ * hd; e += threads)
            {
                int r = e / hd, d = e % hd;
                float acc = oAcc[r * Ld + d] * rowScale[r];
                for (int c = 0; c < BlockK; c++) acc += sTile[r * BlockK + c] * vTile[c * Ld + d];
                oAcc[r * Ld + d] = acc;
            }
            Group.Barrier(); // the next tile overwrites kTile, vTile and sTile
        }

        for (int e = tid; e < BlockQ * hd; e += threads)
        {
            int r = e / hd, d = e % hd, i = i0 + r;
            float l = rowSum[r];
            if (i < s.Seq) o[((tokenBase + i) * s.NumHeads + h) * hd + d] = l > 0f ? oAcc[r * Ld + d] / l : 0f;
        }
        for (int r = tid; r < BlockQ; r += threads)
        {
            int i = i0 + r;
            // A row with no visible key cannot occur (i sees itself); +inf makes its recomputed P zero in backward.
            if (i < s.Seq)
                logSumExp[(tokenBase / s.Seq * s.NumHeads + h) * s.Seq + i] =
                    rowSum[r] > 0f ? rowMax[r] + MathF.Log(rowSum[r]) : float.PositiveInfinity;
        }
    }

    // One thread per row (b, h, i): delta = dO_i . o_i.
    static void DeltaKernel(Index1D row, FloatView dO, FloatView o, Dims s, FloatView delta)
    {
        int i = (int)(row % s.Seq);
        long bh = row / s.Seq;
        long off = ((bh / s.NumHeads * s.Seq + i) * s.NumHeads + bh % s.NumHeads) * s.HeadDim;
        float acc = 0f;
        for (int d = 0; d < s.HeadDim; d++) acc += dO[off + d] * o[off + d];
        delta[row] = acc;
    }

    // Grid: batch * numKvHeads * ceil(seq / BlockK) groups; each owns BlockK rows of dK and dV.
    static void BackwardKeyValueKernel(FloatView dO, FloatView q, FloatView kk, FloatView v, FloatView logSumExp, FloatView delta,
        IntView segmentIds, Dims s, FloatView dK, FloatView dV)
    {
        int BlockK = s.BlockK, BlockQKv = s.BlockQKv, Ld = s.Ld;
        var sm = new Carver(SharedMemory.GetDynamic<float>());
        var kTile = sm.Next(BlockK * Ld);
        var vTile = sm.Next(BlockK * Ld);
        var dKAcc = sm.Next(BlockK * Ld);
        var dVAcc = sm.Next(BlockK * Ld);
        var qTile = sm.Next(BlockQKv * Ld);
        var dOTile = sm.Next(BlockQKv * Ld);
        var pTile = sm.Next(BlockQKv * BlockK);
        var dSTile = sm.Next(BlockQKv * BlockK);
        var rowLse = sm.Next(BlockQKv);
        var rowDelta = sm.Next(BlockQKv);
        int blocks = (s.Seq + BlockK - 1) / BlockK;
        int j0 = Grid.IdxX % blocks * BlockK, kvh = Grid.IdxX / blocks % s.NumKvHeads;
        long b = Grid.IdxX / blocks / s.NumKvHeads, tokenBase = b * s.Seq;
        int hd = s.HeadDim, tid = Group.IdxX, threads = Group.DimX;

        LoadKv(kk, v, tokenBase, j0, kvh, s, kTile, vTile);
        for (int e = tid; e < BlockK * hd; e += threads)
        {
            int at = e / hd * Ld + e % hd;
            dKAcc[at] = 0f;
            dVAcc[at] = 0f;
        }
        Group.Barrier();

        for (int h = kvh * s.Groups; h < (kvh + 1) * s.Groups; h++)
        {
            long rowBase = (b * s.NumHeads + h) * s.Seq;
            // causal: query rows before j0 see none of these keys; with a window, rows past the last key's window neither
            int queryEnd = s.QueryEnd(Math.Min(s.Seq, j0 + BlockK) - 1);
            for (int i0 = j0 / BlockQKv * BlockQKv; i0 < queryEnd; i0 += BlockQKv)
            {
                for (int e = tid; e < BlockQKv * hd; e += threads)
                {
                    int r = e / hd, d = e % hd, i = i0 + r;
                    long off = ((tokenBase + i) * s.NumHeads + h) * hd + d;
                    qTile[r * Ld + d] = i < s.Seq ? q[off] : 0f;
                    dOTile[r * Ld + d] = i < s.Seq ? dO[off] : 0f;
                }
                for (int r = tid; r < BlockQKv; r += threads)
                {
                    int i = i0 + r;
                    rowLse[r] = i < s.Seq ? logSumExp[rowBase + i] : 0f;
                    rowDelta[r] = i < s.Seq ? delta[rowBase + i] : 0f;
                }
                Group.Barrier();
                for (int e = tid; e < BlockQKv * BlockK; e += threads)
                {
                    int r = e / BlockK, c = e % BlockK;
                    float p = 0f, dS = 0f;
                    if (Visible(segmentIds, tokenBase, i0 + r, j0 + c, s))
                    {
                        p = MathF.Exp(Dot(qTile, r * Ld, kTile, c * Ld, hd) * s.Scale - rowLse[r]);
                        dS = p * (Dot(dOTile, r * Ld, vTile, c * Ld, hd) - rowDelta[r]);
                    }
                    pTile[e] = p;
                    dSTile[e] = dS;
                }
                Group.Barrier();
                for (int e = tid; e < BlockK * hd; e += threads)
                {
                    int c = e / hd, d = e % hd;
                    float dk = dKAcc[c * Ld + d], dv = dVAcc[c * Ld + d];
                    for (int r = 0; r < BlockQKv; r++)
                    {
                        dk += dSTile[r * BlockK + c] * qTile[r * Ld + d];
                        dv += pTile[r * BlockK + c] * dOTile[r * Ld + d];
                    }
                    dKAcc[c * Ld + d] = dk;
                    dVAcc[c * Ld + d] = dv;
                }
                Group.Barrier(); // the next step overwrites the query-side tiles
            }
        }

        for (int e = tid; e < BlockK * hd; e += threads)
        {
            int c = e / hd, d = e % hd, j = j0 + c;
            if (j >= s.Seq) continue;
            long off = ((tokenBase + j) * s.NumKvHeads + kvh) * hd + d;
            dK[off] = dKAcc[c * Ld + d] * s.Scale;
            dV[off] = dVAcc[c * Ld + d];
        }
    }

    // Grid: batch * numHeads * ceil(seq / BlockQ) groups; each owns BlockQ rows of dQ.
    static void BackwardQueryKernel(FloatView dO, FloatView q, FloatView kk, FloatView v, FloatView logSumExp, FloatView delta,
        IntView segmentIds, Dims s, FloatView dQ)
    {
        int BlockQ = s.BlockQ, BlockK = s.BlockK, Ld = s.Ld;
        var sm = new Carver(SharedMemory.GetDynamic<float>());
        var qTile = sm.Next(BlockQ * Ld);
        var dOTile = sm.Next(BlockQ * Ld);
        var dQAcc = sm.Next(BlockQ * Ld);
        var kTile = sm.Next(BlockK * Ld);
        var vTile = sm.Next(BlockK * Ld);
        var dSTile = sm.Next(BlockQ * BlockK);
        var rowLse = sm.Next(BlockQ);
        var rowDelta = sm.Next(BlockQ);
        int blocks = (s.Seq + BlockQ - 1) / BlockQ;
        int i0 = Grid.IdxX % blocks * BlockQ, h = Grid.IdxX / blocks % s.NumHeads;
        long tokenBase = (long)(Grid.IdxX / blocks / s.NumHeads) * s.Seq, rowBase = (tokenBase / s.Seq * s.NumHeads + h) * s.Seq;
        int kvh = h / s.Groups, hd = s.HeadDim, tid = Group.IdxX, threads = Group.DimX;

        for (int e = tid; e < BlockQ * hd; e += threads)
        {
            int r = e / hd, d = e % hd, i = i0 + r;
            long off = ((tokenBase + i) * s.NumHeads + h) * hd + d;
            qTile[r * Ld + d] = i < s.Seq ? q[off] : 0f;
            dOTile[r * Ld + d] = i < s.Seq ? dO[off] : 0f;
            dQAcc[r * Ld + d] = 0f;
        }
        for (int r = tid; r < BlockQ; r += threads)
        {
            int i = i0 + r;
            rowLse[r] = i < s.Seq ? logSumExp[rowBase + i] : 0f;
            rowDelta[r] = i < s.Seq ? delta[rowBase + i] : 0f;
        }
        Group.Barrier();

        int keyEnd = Math.Min(s.Seq, i0 + BlockQ);
        for (int j0 = s.FirstKey(i0); j0 < keyEnd; j0 += BlockK)
        {
            LoadKv(kk, v, tokenBase, j0, kvh, s, kTile, vTile);
            Group.Barrier();
            for (int e = tid; e < BlockQ * BlockK; e += threads)
            {
                int r = e / BlockK, c = e % BlockK;
                float dS = 0f;
                if (Visible(segmentIds, tokenBase, i0 + r, j0 + c, s))
                {
                    float p = MathF.Exp(Dot(qTile, r * Ld, kTile, c * Ld, hd) * s.Scale - rowLse[r]);
                    dS = p * (Dot(dOTile, r * Ld, vTile, c * Ld, hd) - rowDelta[r]);
                }
                dSTile[e] = dS;
            }
            Group.Barrier();
            for (int e = tid; e < BlockQ * hd; e += threads)
            {
                int r = e / hd, d = e % hd;
                float acc = dQAcc[r * Ld + d];
                for (int c = 0; c < BlockK; c++) acc += dSTile[r * BlockK + c] * kTile[c * Ld + d];
                dQAcc[r * Ld + d] = acc;
            }
            Group.Barrier(); // the next tile overwrites kTile, vTile and dSTile
        }

        for (int e = tid; e < BlockQ * hd; e += threads)
        {
            int r = e / hd, d = e % hd, i = i0 + r;
            if (i < s.Seq) dQ[((tokenBase + i) * s.NumHeads + h) * hd + d] = dQAcc[r * Ld + d] * s.Scale;
        }
    }

    // Stages keys j0 .. j0+BlockK-1 of kv head kvh (zeros past seq) into the tiles; the caller synchronizes.
    static void LoadKv(FloatView kk, FloatView v, long tokenBase, int j0, int kvh, Dims s, ArrayView<float> kTile, ArrayView<float> vTile)
    {
        int hd = s.HeadDim, BlockK = s.BlockK, Ld = s.Ld;
        for (int e = Group.IdxX; e < BlockK * hd; e += Group.DimX)
        {
            int c = e / hd, d = e % hd, j = j0 + c;
            long off = ((tokenBase + j) * s.NumKvHeads + kvh) * hd + d;
            kTile[c * Ld + d] = j < s.Seq ? kk[off] : 0f;
            vTile[c * Ld + d] = j < s.Seq ? v[off] : 0f;
        }
    }

    // Query i sees key j: causal, inside the window, inside the row, same packed sample. Checks i first so j <= i < seq keeps j in range.
    static bool Visible(IntView segmentIds, long tokenBase, int i, int j, Dims s) =>
        i < s.Seq && j <= i && (s.Window == 0 || i - j < s.Window) &&
        (segmentIds.Length == 0 || segmentIds[tokenBase + j] == segmentIds[tokenBase + i]);

    static float Dot(ArrayView<float> a, int aOff, ArrayView<float> b, int bOff, int n)
    {
        float acc = 0f;
        for (int d = 0; d < n; d++) acc += a[aOff + d] * b[bOff + d];
        return acc;
    }

    // ---- launchers ----

    // q, o[batch*seq, numHeads, headDim]; kk, v[batch*seq, numKvHeads, headDim]; segmentIds[batch*seq] or an empty view
    // (one segment per row); logSumExp[batch, numHeads, seq]. o and logSumExp are overwritten.
    public static void Forward(KernelRegistry k, Attention.Inputs<float> x, Attention.Sizes s, Attention.Output output)
    {
        Validate(s);
        var (q, kk, v, segmentIds, _) = x;
        var (o, logSumExp) = output;
        Attention.Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Attention.Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length));
        Attention.Need(s.ScoreRows, (nameof(logSumExp), logSumExp.Length));
        if (segmentIds.Length != 0) Attention.Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        if (s.Tokens == 0) return;
        var forward = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, IntView, Dims, FloatView, FloatView>>(
            new("flashattention.forward", ForwardKernel));
        var dims = ToDims(s);
        forward(Config(k, Blocks(s, s.NumHeads, dims.BlockQ), dims.ForwardFloats), q, kk, v, segmentIds, dims, o, logSumExp);
    }

    // dO, q, o, dQ[batch*seq, numHeads, headDim]; kk, v, dK, dV[batch*seq, numKvHeads, headDim]; logSumExp from Forward and
    // delta (scratch, overwritten) [batch, numHeads, seq]; segmentIds as in Forward. dQ, dK, dV are overwritten.
    public static void Backward(KernelRegistry k, FloatView dO, Attention.Inputs<float> x, Attention.Sizes s, Attention.Output forward,
        FloatView delta, Attention.Grads grads)
    {
        Validate(s);
        var (q, kk, v, segmentIds, _) = x;
        var (o, logSumExp) = forward;
        var (dQ, dK, dV) = grads;
        Attention.Need(s.QueryElements, (nameof(dO), dO.Length), (nameof(q), q.Length), (nameof(o), o.Length), (nameof(dQ), dQ.Length));
        Attention.Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length), (nameof(dK), dK.Length), (nameof(dV), dV.Length));
        Attention.Need(s.ScoreRows, (nameof(logSumExp), logSumExp.Length), (nameof(delta), delta.Length));
        if (segmentIds.Length != 0) Attention.Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        if (s.Tokens == 0) return;
        var dims = ToDims(s);
        Delta(k, dO, o, s, delta);
        var keyValue = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, FloatView, FloatView, FloatView, IntView, Dims,
                FloatView, FloatView>>(
            new("flashattention.backward.keyvalue", BackwardKeyValueKernel));
        keyValue(Config(k, Blocks(s, s.NumKvHeads, dims.BlockK), dims.KeyValueFloats), dO, q, kk, v, logSumExp, delta, segmentIds, dims, dK, dV);
        var query = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, FloatView, FloatView, FloatView, IntView, Dims, FloatView>>(
            new("flashattention.backward.query", BackwardQueryKernel));
        query(Config(k, Blocks(s, s.NumHeads, dims.BlockQ), dims.QueryFloats), dO, q, kk, v, logSumExp, delta, segmentIds, dims, dQ);
    }

    // dO, o[batch*seq, numHeads, headDim] -> delta[batch, numHeads, seq] = rowsum(dO * o) (also FlashAttentionHalf's pre-pass)
    internal static void Delta(KernelRegistry k, FloatView dO, FloatView o, Attention.Sizes s, FloatView delta)
    {
        var pre = k.Get<Action<Index1D, FloatView, FloatView, Dims, FloatView>>(new("flashattention.backward.delta", DeltaKernel));
        pre(s.ScoreRows, dO, o, ToDims(s), delta);
    }

    // Tile loops stride by the group: 32 emulated threads keep CPU tests cheap, 128 on a GPU cover a 16x16 score tile in two steps.
    // The plan pieces (the driver runtime's backend launches with them too): 4 warps per group, the tiles in dynamic shared memory.
    internal static KernelConfig Config(LaunchTarget t, int groups, int floats) =>
        new(groups, t.Emulated ? 32 : 128, SharedMemoryConfig.RequestDynamic<float>(floats));

    static KernelConfig Config(KernelRegistry k, int groups, int floats) => Config(k.Target, groups, floats);

    internal static int Blocks(Attention.Sizes s, int heads, int block) => checked(s.Batch * heads * ((s.Seq + block - 1) / block));

    internal static Dims ToDims(Attention.Sizes s) =>
        new(s.Seq, s.NumHeads, s.NumKvHeads, s.HeadDim, s.ScoreScale, s.Window, s.HeadDim > 128 ? 8 : 16);

    internal static void Validate(Attention.Sizes s)
    {
        s.Validate();
        if (s.HeadDim > MaxHeadDim) throw new ArgumentException($"flash attention supports headDim <= {MaxHeadDim}, got {s.HeadDim}",
            nameof(s));
        if (!s.Causal) throw new ArgumentException("fp32 flash attention is causal only", nameof(s));
    }
}
