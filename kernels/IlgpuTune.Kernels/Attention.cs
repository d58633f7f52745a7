// Scaled-dot-product attention with grouped KV heads (GQA), HF eager numerics: scores = (q . k) * scale,
// scale = 1/sqrt(headDim) unless Sizes.Scale says otherwise (Gemma 3: query_pre_attn_scalar**-0.5), fp32 softmax.
//   q[batch*seq, numHeads, headDim], k, v[batch*seq, numKvHeads, headDim] (token-major, as the projections write them);
//   query head h reads kv head h / (numHeads/numKvHeads).
//   Key j is visible to query i iff (j <= i, when causal) and, when segmentIds[batch*seq] is given (packed samples), seg[j] == seg[i],
//   and, with a sliding window W > 0, i - j < W (transformers' sliding_window_overlay: kv_idx > q_idx - W; Mistral, Gemma 3).
// ForwardCpu/BackwardCpu are the one CPU reference of that math (o, logSumExp, optionally probs; backward recomputes each
// softmax row): the spec every attention kernel is tested against, and the CPU training path (Parallel.For over heads).
// Backward (dQ, dK, dV overwritten), per query row i of head h with P the softmax row and dP_ij = dO_i . v_j:
//   dS_ij = P_ij * (dP_ij - sum_j' P_ij' dP_ij'),  dQ_i = scale * sum_j dS_ij k_j,
//   dK_j  = scale * sum_{h in group} sum_i dS_ij q_i ;  dV_j = sum_{h in group} sum_i P_ij dO_i
// Training on the GPU uses FlashAttention / FlashAttentionHalf; the naive GPU kernels live with the tests (NaiveAttention).
// ForwardWithCache (inference only, so it has no backward: the house rule "no forward without backward" is about ops
// that training differentiates): `queries` new tokens at absolute positions queryStart.. attend to a KV cache.
//   q, o[queries, numHeads, headDim]; kCache, vCache[>= keys, numKvHeads, headDim] with keys = queryStart + queries
//   (rows 0..queryStart-1 cached earlier, the rest appended for these queries); key j visible to query i iff j <= queryStart + i
//   and, with a window W > 0, queryStart + i - j < W.
//   -> probs[queries, numHeads, keys] (scratch), o. Same arithmetic as ForwardCpu, so a prefill equals the uncached forward.
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class Attention
{
    // ---- device kernels ----

    // One group per score row (i, h) of the cached forward: visible scores, then an in-place softmax.
    static void CachedProbsKernel(FloatView q, FloatView kCache, int queryStart, int keys, int numHeads, int numKvHeads, int headDim,
        float scale, int window, FloatView probs)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        int i = (int)(row / numHeads);
        int h = (int)(row % numHeads);
        int kvh = h / (numHeads / numKvHeads);
        int last = queryStart + i, first = window > 0 ? Math.Max(0, last - window + 1) : 0;
        long qOff = row * headDim;
        long pOff = row * keys;

        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < keys; j += Group.DimX)
        {
            float s = float.NegativeInfinity;
            if (j <= last && j >= first)
            {
                long kOff = ((long)j * numKvHeads + kvh) * headDim;
                float dot = 0f;
                for (int d = 0; d < headDim; d++) dot += q[qOff + d] * kCache[kOff + d];
                s = dot * scale;
            }
            probs[pOff + j] = s;
            max = MathF.Max(max, s);
        }
        max = Reduce.GroupMax(max, scratch);
        float sum = 0f;
        for (int j = Group.IdxX; j < keys; j += Group.DimX)
        {
            float e = MathF.Exp(probs[pOff + j] - max); // key `last` is always visible, so max is finite
            probs[pOff + j] = e;
            sum += e;
        }
        sum = Reduce.GroupSum(sum, scratch);
        float inv = 1f / sum;
        for (int j = Group.IdxX; j < keys; j += Group.DimX)
            probs[pOff + j] *= inv;
    }

    // One thread per o element (i, h, d) of the cached forward: o = sum_j P_ij v_j.
    static void CachedOutputKernel(Index1D idx, FloatView probs, FloatView vCache, int queryStart, int keys, int numHeads, int numKvHeads,
        int headDim, int window, FloatView o)
    {
        int d = idx % headDim;
        long row = idx / headDim;
        int i = (int)(row / numHeads);
        int h = (int)(row % numHeads);
        int kvh = h / (numHeads / numKvHeads);
        long pOff = row * keys;
        float acc = 0f;
        int last = queryStart + i;
        for (int j = window > 0 ? Math.Max(0, last - window + 1) : 0; j <= last; j++)
            acc += probs[pOff + j] * vCache[((long)j * numKvHeads + kvh) * headDim + d];
        o[idx] = acc;
    }

    // ---- launchers ----

    // Inference only (no backward). q, o[queries, numHeads, headDim]; kCache, vCache[>= queryStart + queries, numKvHeads, headDim];
    // probs (scratch, overwritten) [queries, numHeads, queryStart + queries]; window 0 = none; scale null = 1/sqrt(headDim).
    public static void ForwardWithCache(KernelRegistry k, FloatView q, FloatView kCache, FloatView vCache, int queryStart, int queries,
        int numHeads, int numKvHeads, int headDim, FloatView probs, FloatView o, int window = 0, float? scale = null)
    {
        var s = new CachedSizes(queryStart, queries, numHeads, numKvHeads, headDim, window).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.CacheElements, (nameof(kCache), kCache.Length), (nameof(vCache), vCache.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        if (queries == 0) return;
        var scores = k.Get<Action<KernelConfig, FloatView, FloatView, int, int, int, int, int, float, int, FloatView>>(
            new("attention.cached.probs", CachedProbsKernel));
        scores(new KernelConfig(s.ScoreRows, k.RowGroupSize), q, kCache, queryStart, s.Keys, numHeads, numKvHeads, headDim,
            scale ?? Scale(headDim), window, probs);
        var output = k.Get<Action<Index1D, FloatView, FloatView, int, int, int, int, int, int, FloatView>>(
            new("attention.cached.output", CachedOutputKernel));
        output(s.QueryElements, probs, vCache, queryStart, s.Keys, numHeads, numKvHeads, headDim, window, o);
    }

    // HF eager multiplies by the Python double head_dim**-0.5, which torch rounds to fp32.
    internal static float Scale(int headDim) => (float)(1.0 / Math.Sqrt(headDim));

    static T ScaleAs<T>(float? scale, int headDim) where T : IFloatingPointIeee754<T> =>
        scale is { } sc ? T.CreateChecked(sc) : T.CreateChecked(1.0 / Math.Sqrt(headDim));

    // The tensors an attention kernel reads: q[batch*seq, numHeads, headDim], k, v[batch*seq, numKvHeads, headDim] (fp32, or half
    // bits as ushort); segmentIds[batch*seq] or an empty view (one segment per row); SegmentsSorted: the ids never decrease
    // along a row (FlashAttentionHalf.SegmentsSorted), so fully masked tiles may be skipped.
    public readonly record struct Inputs<T>(ArrayView<T> Q, ArrayView<T> K, ArrayView<T> V, IntView SegmentIds, bool SegmentsSorted = false)
        where T : unmanaged;

    // What a flash forward writes and its backward reads: o[batch*seq, numHeads, headDim], logSumExp[batch, numHeads, seq].
    public readonly record struct Output(FloatView O, FloatView LogSumExp);

    // dQ[batch*seq, numHeads, headDim], dK, dV[batch*seq, numKvHeads, headDim] (fp32, overwritten).
    public readonly record struct Grads(FloatView DQ, FloatView DK, FloatView DV);

    // batch rows of seq tokens; numHeads query heads over numKvHeads key/value heads (GQA); causal masks keys after the query;
    // Window > 0 also masks keys W or more positions before it (i - j >= W); Scale null means 1/sqrt(HeadDim).
    public readonly record struct Sizes(int Batch, int Seq, int NumHeads, int NumKvHeads, int HeadDim, bool Causal = true, int Window = 0,
        float? Scale = null)
    {
        public float ScoreScale => Scale ?? Attention.Scale(HeadDim);

        // The CPU reference's scale in its own precision (fp64 references keep 1/sqrt(headDim) unrounded).
        public T ScaleAs<T>() where T : IFloatingPointIeee754<T> => Attention.ScaleAs<T>(Scale, HeadDim);

        public int Tokens => checked(Batch * Seq);
        public int ScoreRows => checked(Batch * NumHeads * Seq);
        public int QueryElements => checked(Tokens * NumHeads * HeadDim);
        public int KeyValueElements => checked(Tokens * NumKvHeads * HeadDim);
        public long Probs => (long)ScoreRows * Seq;
        public int Groups => NumHeads / NumKvHeads;

        public Sizes Validate()
        {
            if (Batch < 0 || Seq < 0 || HeadDim <= 0 || NumHeads <= 0 || NumKvHeads <= 0 || NumHeads % NumKvHeads != 0)
                throw new ArgumentException($"invalid attention sizes {this}: numHeads must be a positive multiple of numKvHeads");
            if (Window < 0 || Window > 0 && !Causal)
                throw new ArgumentException($"invalid attention sizes {this}: a sliding window is a positive number of keys, causal only");
            if (Scale is { } sc && !(float.IsFinite(sc) && sc > 0f)) throw new ArgumentException($"invalid attention scale {sc}");
            return this;
        }
    }

    readonly record struct CachedSizes(int QueryStart, int Queries, int NumHeads, int NumKvHeads, int HeadDim, int Window = 0)
    {
        public int Keys => checked(QueryStart + Queries);
        public int ScoreRows => checked(Queries * NumHeads);
        public int QueryElements => checked(ScoreRows * HeadDim);
        public long CacheElements => (long)Keys * NumKvHeads * HeadDim;
        public long Probs => (long)ScoreRows * Keys;
        public int Groups => NumHeads / NumKvHeads;

        public CachedSizes Validate()
        {
            if (QueryStart < 0 || Queries < 0 || HeadDim <= 0 || NumHeads <= 0 || NumKvHeads <= 0 || NumHeads % NumKvHeads != 0 || Window < 0)
                throw new ArgumentException($"invalid cached attention sizes {this}: numHeads must be a positive multiple of numKvHeads");
            return this;
        }
    }

    // Out-of-range indexing in a kernel corrupts memory (or kills the CPU emulator), so buffer sizes are checked up front.
    internal static void Need(long need, params (string Name, long Have)[] buffers)
    {
        foreach (var (name, have) in buffers)
            if (have < need) throw new ArgumentException($"{name} holds {have} elements, needs {need}", name);
    }

    // ---- CPU reference: the spec, and the CPU training path ----

    // The one CPU reference of the attention math (the naive, flash and half kernels are all tested against it).
    // q, o[batch*seq, numHeads, headDim]; k, v[batch*seq, numKvHeads, headDim]; segmentIds[batch*seq] or empty
    // -> o, logSumExp[batch, numHeads, seq] (or empty), probs[batch, numHeads, seq, seq] (or empty; softmax rows, 0 at masked keys).
    // Key j is visible to query i iff (j <= i or not s.Causal) and, when packed, seg[j] == seg[i], and i - j < s.Window when set.
    public static unsafe void ForwardCpu<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<int> segmentIds, Sizes s,
        Span<T> o, Span<T> logSumExp, Span<T> probs = default) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckCpu(q.Length, k.Length, v.Length, segmentIds.Length, s.Validate());
        Need(s.QueryElements, (nameof(o), o.Length));
        if (!logSumExp.IsEmpty) Need(s.ScoreRows, (nameof(logSumExp), logSumExp.Length));
        if (!probs.IsEmpty) Need(s.Probs, (nameof(probs), probs.Length));
        // Parallel.For bodies cannot capture spans: pin them and rebuild them inside.
        fixed (T* pq = q, pk = k, pv = v, pp = probs, po = o, pl = logSumExp)
        fixed (int* ps = segmentIds)
        {
            var (Q, K, V, P, O, L) = (new Pinned<T>(pq, q.Length), new Pinned<T>(pk, k.Length), new Pinned<T>(pv, v.Length),
                new Pinned<T>(pp, probs.Length), new Pinned<T>(po, o.Length), new Pinned<T>(pl, logSumExp.Length));
            var S = new Pinned<int>(ps, segmentIds.Length);
            Parallel.For(0, s.Batch * s.NumHeads, bh =>
                ForwardHead(Q.Span, K.Span, V.Span, S.Span, s, bh / s.NumHeads, bh % s.NumHeads, P.Span, O.Span, L.Span));
        }
    }

    static void ForwardHead<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<int> segmentIds, Sizes s, int b, int h,
        Span<T> probs, Span<T> o, Span<T> logSumExp) where T : IFloatingPointIeee754<T>
    {
        int seq = s.Seq, headDim = s.HeadDim, kvh = h / s.Groups;
        var row = probs.IsEmpty ? new T[seq] : null;
        for (int i = 0; i < seq; i++)
        {
            var p = row ?? probs.Slice(((b * s.NumHeads + h) * seq + i) * seq, seq);
            T lse = RowProbs(q, k, segmentIds, s, b, h, i, p);
            if (!logSumExp.IsEmpty) logSumExp[(b * s.NumHeads + h) * seq + i] = lse;
            var oi = o.Slice(((b * seq + i) * s.NumHeads + h) * headDim, headDim);
            oi.Clear();
            for (int j = 0; j < seq; j++)
                if (p[j] != T.Zero) TensorPrimitives.MultiplyAdd(KvRow(v, s, b, j, kvh), p[j], oi, oi);
        }
    }

    // dO, q, dQ[batch*seq, numHeads, headDim]; k, v, dK, dV[batch*seq, numKvHeads, headDim]; segmentIds as in ForwardCpu.
    // Recomputes each softmax row (as flash backward does). dQ, dK, dV are overwritten.
    public static unsafe void BackwardCpu<T>(ReadOnlySpan<T> dO, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v,
        ReadOnlySpan<int> segmentIds, Sizes s, Span<T> dQ, Span<T> dK, Span<T> dV) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CheckCpu(q.Length, k.Length, v.Length, segmentIds.Length, s.Validate());
        Need(s.QueryElements, (nameof(dO), dO.Length), (nameof(dQ), dQ.Length));
        Need(s.KeyValueElements, (nameof(dK), dK.Length), (nameof(dV), dV.Length));
        fixed (T* pdo = dO, pq = q, pk = k, pv = v, pdq = dQ, pdk = dK, pdv = dV)
        fixed (int* ps = segmentIds)
        {
            var (DO, Q, K, V) = (new Pinned<T>(pdo, dO.Length), new Pinned<T>(pq, q.Length), new Pinned<T>(pk, k.Length),
                new Pinned<T>(pv, v.Length));
            var (DQ, DK, DV) = (new Pinned<T>(pdq, dQ.Length), new Pinned<T>(pdk, dK.Length), new Pinned<T>(pdv, dV.Length));
            var S = new Pinned<int>(ps, segmentIds.Length);
            // One task per (batch, kv head) owns its dK/dV rows and the dQ rows of its query heads: no races, fixed order.
            Parallel.For(0, s.Batch * s.NumKvHeads, bkv =>
                BackwardKvHead(DO.Span, Q.Span, K.Span, V.Span, S.Span, s, bkv / s.NumKvHeads, bkv % s.NumKvHeads, DQ.Span, DK.Span,
                    DV.Span));
        }
    }

    static void BackwardKvHead<T>(ReadOnlySpan<T> dO, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<int> segmentIds,
        Sizes s, int b, int kvh, Span<T> dQ, Span<T> dK, Span<T> dV) where T : IFloatingPointIeee754<T>
    {
        int seq = s.Seq, headDim = s.HeadDim;
        T scale = s.ScaleAs<T>();
        for (int j = 0; j < seq; j++)
        {
            KvRow(dK, s, b, j, kvh).Clear();
            KvRow(dV, s, b, j, kvh).Clear();
        }
        var (p, dP) = (new T[seq], new T[seq]);
        for (int h = kvh * s.Groups; h < (kvh + 1) * s.Groups; h++)
            for (int i = 0; i < seq; i++)
            {
                RowProbs(q, k, segmentIds, s, b, h, i, p);
                int qOff = ((b * seq + i) * s.NumHeads + h) * headDim;
                var qi = q.Slice(qOff, headDim);
                var dOi = dO.Slice(qOff, headDim);
                T rowDot = T.Zero;
                for (int j = 0; j < seq; j++)
                {
                    dP[j] = p[j] == T.Zero ? T.Zero : TensorPrimitives.Dot(dOi, KvRow(v, s, b, j, kvh));
                    rowDot += p[j] * dP[j];
                }
                var dQi = dQ.Slice(qOff, headDim);
                dQi.Clear();
                for (int j = 0; j < seq; j++)
                {
                    if (p[j] == T.Zero) continue; // masked key: dS and the dV term vanish
                    T dS = p[j] * (dP[j] - rowDot) * scale;
                    TensorPrimitives.MultiplyAdd(KvRow(k, s, b, j, kvh), dS, dQi, dQi);
                    var dKj = KvRow(dK, s, b, j, kvh);
                    TensorPrimitives.MultiplyAdd(qi, dS, dKj, dKj);
                    var dVj = KvRow(dV, s, b, j, kvh);
                    TensorPrimitives.MultiplyAdd(dOi, p[j], dVj, dVj);
                }
            }
    }

    // Softmax row i of head h into p[seq] (0 at masked keys); returns its log-sum-exp.
    static T RowProbs<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<int> segmentIds, Sizes s, int b, int h, int i, Span<T> p)
        where T : IFloatingPointIeee754<T>
    {
        int seq = s.Seq, kvh = h / s.Groups;
        T scale = s.ScaleAs<T>();
        var qi = q.Slice(((b * seq + i) * s.NumHeads + h) * s.HeadDim, s.HeadDim);
        T max = T.NegativeInfinity;
        for (int j = 0; j < seq; j++)
        {
            bool visible = (!s.Causal || j <= i) && (s.Window == 0 || i - j < s.Window) &&
                (segmentIds.IsEmpty || segmentIds[b * seq + j] == segmentIds[b * seq + i]);
            p[j] = visible ? TensorPrimitives.Dot(qi, KvRow(k, s, b, j, kvh)) * scale : T.NegativeInfinity;
            max = T.Max(max, p[j]);
        }
        // A row with every key masked cannot occur (i sees itself) but must not produce NaN.
        if (T.IsNegativeInfinity(max))
        {
            p.Clear();
            return max;
        }
        T sum = T.Zero;
        for (int j = 0; j < seq; j++) sum += p[j] = T.Exp(p[j] - max);
        TensorPrimitives.Divide(p, sum, p);
        return max + T.Log(sum);
    }

    static void CheckCpu(int q, int k, int v, int segments, Sizes s)
    {
        Need(s.QueryElements, (nameof(q), q));
        Need(s.KeyValueElements, (nameof(k), k), (nameof(v), v));
        if (segments != 0) Need(s.Tokens, ("segmentIds", segments));
    }

    // Inference only. q, o[queries, numHeads, headDim]; kCache, vCache[>= queryStart + queries, numKvHeads, headDim];
    // probs[queries, numHeads, queryStart + queries]; window 0 = none; scale null = 1/sqrt(headDim).
    public static unsafe void ForwardWithCacheCpu<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache, int queryStart,
        int queries, int numHeads, int numKvHeads, int headDim, Span<T> probs, Span<T> o, int window = 0, float? scale = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var s = new CachedSizes(queryStart, queries, numHeads, numKvHeads, headDim, window).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.CacheElements, (nameof(kCache), kCache.Length), (nameof(vCache), vCache.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        fixed (T* pq = q, pk = kCache, pv = vCache, pp = probs, po = o)
        {
            var (Q, K, V, P, O) = (new Pinned<T>(pq, q.Length), new Pinned<T>(pk, kCache.Length), new Pinned<T>(pv, vCache.Length),
                new Pinned<T>(pp, probs.Length), new Pinned<T>(po, o.Length));
            T sc = ScaleAs<T>(scale, headDim);
            Parallel.For(0, s.ScoreRows, row => CachedRow(Q.Span, K.Span, V.Span, s, sc, row, P.Span, O.Span));
        }
    }

    // Score row `row` = (query i, head h): the same steps as ForwardHead over the keys 0..queryStart+i.
    static void CachedRow<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache, CachedSizes s, T scale, int row,
        Span<T> probs, Span<T> o) where T : IFloatingPointIeee754<T>
    {
        int headDim = s.HeadDim, i = row / s.NumHeads, kvh = row % s.NumHeads / s.Groups, visible = s.QueryStart + i + 1;
        int first = s.Window > 0 ? Math.Max(0, visible - s.Window) : 0;
        var qi = q.Slice(row * headDim, headDim);
        var p = probs.Slice(row * s.Keys, s.Keys);
        p[visible..].Clear();
        p[..first].Clear();
        T max = T.NegativeInfinity;
        for (int j = first; j < visible; j++)
        {
            p[j] = TensorPrimitives.Dot(qi, kCache.Slice((j * s.NumKvHeads + kvh) * headDim, headDim)) * scale;
            max = T.Max(max, p[j]);
        }
        T sum = T.Zero;
        for (int j = first; j < visible; j++)
        {
            p[j] = T.Exp(p[j] - max);
            sum += p[j];
        }
        TensorPrimitives.Divide(p[first..visible], sum, p[first..visible]);
        var oi = o.Slice(row * headDim, headDim);
        oi.Clear();
        for (int j = first; j < visible; j++)
            if (p[j] != T.Zero) TensorPrimitives.MultiplyAdd(vCache.Slice((j * s.NumKvHeads + kvh) * headDim, headDim), p[j], oi, oi);
    }

    // Row j of batch b, kv head kvh in a [batch*seq, numKvHeads, headDim] tensor.
    static ReadOnlySpan<T> KvRow<T>(ReadOnlySpan<T> t, Sizes s, int b, int j, int kvh) =>
        t.Slice(((b * s.Seq + j) * s.NumKvHeads + kvh) * s.HeadDim, s.HeadDim);

    static Span<T> KvRow<T>(Span<T> t, Sizes s, int b, int j, int kvh) =>
        t.Slice(((b * s.Seq + j) * s.NumKvHeads + kvh) * s.HeadDim, s.HeadDim);

    // A pinned span's address and length, so a Parallel.For body can rebuild the span.
    readonly unsafe struct Pinned<T>(T* pointer, int length) where T : unmanaged
    {
        public Span<T> Span => new(pointer, length);
    }
}
