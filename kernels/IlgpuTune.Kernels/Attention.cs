// Naive causal scaled-dot-product attention with grouped KV heads (GQA), HF eager numerics: scores = (q . k) * scale,
// scale = 1/sqrt(headDim), fp32 softmax. This is the reference the later flash-attention kernel is tested against.
//   q[batch*seq, numHeads, headDim], k, v[batch*seq, numKvHeads, headDim] (token-major, as the projections write them);
//   query head h reads kv head h / (numHeads/numKvHeads).
//   Key j is visible to query i iff j <= i and, when segmentIds[batch*seq] is given (packed samples), seg[j] == seg[i].
//   -> probs[batch, numHeads, seq, seq] (softmax rows, 0 at masked keys; saved for backward), o[batch*seq, numHeads, headDim]
// Backward (dQ, dK, dV overwritten), per query row i of head h with dP_ij = dO_i . v_j:
//   dS_ij = P_ij * (dP_ij - sum_j' P_ij' dP_ij')       (0 at masked keys because P is; probs carries the mask)
//   dQ_i  = scale * sum_j dS_ij k_j
//   dK_j  = scale * sum_{h in group} sum_i dS_ij q_i ;  dV_j = sum_{h in group} sum_i P_ij dO_i
// Kernels: one group per score row for the softmax parts, one thread per output element for the rest; every sum is a
// plain loop (deterministic, no atomics). The CPU reference is also the CPU training path: Parallel.For over heads.
// ForwardWithCache (inference only, so it has no backward: the house rule "no forward without backward" is about ops
// that training differentiates): `queries` new tokens at absolute positions queryStart.. attend to a KV cache.
//   q, o[queries, numHeads, headDim]; kCache, vCache[>= keys, numKvHeads, headDim] with keys = queryStart + queries
//   (rows 0..queryStart-1 cached earlier, the rest appended for these queries); key j visible to query i iff j <= queryStart + i.
//   -> probs[queries, numHeads, keys] (scratch), o. Same arithmetic as Forward, so a prefill equals the uncached forward.
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class Attention
{
    // ---- device kernels ----

    // One group per score row (b, h, i): masked scores, then an in-place softmax.
    static void ForwardProbsKernel(FloatView q, FloatView kk, IntView segmentIds, int seq, int numHeads, int numKvHeads, int headDim,
        float scale, FloatView probs)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        int i = (int)(row % seq);
        int h = (int)(row / seq % numHeads);
        long tokenBase = row / seq / numHeads * seq;
        int kvh = h / (numHeads / numKvHeads);
        bool packed = segmentIds.Length > 0;
        int segment = packed ? segmentIds[tokenBase + i] : 0;
        long qOff = ((tokenBase + i) * numHeads + h) * headDim;
        long pOff = row * seq;

        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < seq; j += Group.DimX)
        {
            float s = float.NegativeInfinity;
            if (j <= i && (!packed || segmentIds[tokenBase + j] == segment))
            {
                long kOff = ((tokenBase + j) * numKvHeads + kvh) * headDim;
                float dot = 0f;
                for (int d = 0; d < headDim; d++) dot += q[qOff + d] * kk[kOff + d];
                s = dot * scale;
            }
            probs[pOff + j] = s;
            max = MathF.Max(max, s);
        }
        max = Reduce.GroupMax(max, scratch);
        // A row with every key masked cannot occur (i sees itself) but must not produce NaN.
        bool empty = max == float.NegativeInfinity;
        float sum = 0f;
        for (int j = Group.IdxX; j < seq; j += Group.DimX)
        {
            float e = empty ? 0f : MathF.Exp(probs[pOff + j] - max);
            probs[pOff + j] = e;
            sum += e;
        }
        sum = Reduce.GroupSum(sum, scratch);
        float inv = sum > 0f ? 1f / sum : 0f;
        for (int j = Group.IdxX; j < seq; j += Group.DimX)
            probs[pOff + j] *= inv;
    }

    // One thread per o element (token, h, d): o = sum_j P_ij v_j.
    static void ForwardOutputKernel(Index1D idx, FloatView probs, FloatView v, int seq, int numHeads, int numKvHeads, int headDim, FloatView o)
    {
        int d = idx % headDim;
        long tokenHead = idx / headDim;
        int h = (int)(tokenHead % numHeads);
        long token = tokenHead / numHeads;
        int i = (int)(token % seq);
        long tokenBase = token - i;
        int kvh = h / (numHeads / numKvHeads);
        long pOff = ((tokenBase / seq * numHeads + h) * seq + i) * seq;
        float acc = 0f;
        for (int j = 0; j <= i; j++)
            acc += probs[pOff + j] * v[((tokenBase + j) * numKvHeads + kvh) * headDim + d];
        o[idx] = acc;
    }

    // One group per score row (b, h, i): dScores = P * (dP - rowsum(P * dP)) with dP_ij = dO_i . v_j.
    static void BackwardScoresKernel(FloatView dO, FloatView v, FloatView probs, int seq, int numHeads, int numKvHeads, int headDim,
        FloatView dScores)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        int i = (int)(row % seq);
        int h = (int)(row / seq % numHeads);
        long tokenBase = row / seq / numHeads * seq;
        int kvh = h / (numHeads / numKvHeads);
        long oOff = ((tokenBase + i) * numHeads + h) * headDim;
        long pOff = row * seq;

        float rowDot = 0f;
        for (int j = Group.IdxX; j < seq; j += Group.DimX)
        {
            float dp = 0f;
            if (j <= i)
            {
                long vOff = ((tokenBase + j) * numKvHeads + kvh) * headDim;
                for (int d = 0; d < headDim; d++) dp += dO[oOff + d] * v[vOff + d];
            }
            dScores[pOff + j] = dp;
            rowDot += probs[pOff + j] * dp;
        }
        rowDot = Reduce.GroupSum(rowDot, scratch);
        // Each thread rewrites only the entries it wrote above: no barrier needed.
        for (int j = Group.IdxX; j < seq; j += Group.DimX)
            dScores[pOff + j] = probs[pOff + j] * (dScores[pOff + j] - rowDot);
    }

    // One thread per dQ element (token, h, d).
    static void BackwardQueryKernel(Index1D idx, FloatView dScores, FloatView kk, int seq, int numHeads, int numKvHeads, int headDim,
        float scale, FloatView dQ)
    {
        int d = idx % headDim;
        long tokenHead = idx / headDim;
        int h = (int)(tokenHead % numHeads);
        long token = tokenHead / numHeads;
        int i = (int)(token % seq);
        long tokenBase = token - i;
        int kvh = h / (numHeads / numKvHeads);
        long pOff = ((tokenBase / seq * numHeads + h) * seq + i) * seq;
        float acc = 0f;
        for (int j = 0; j <= i; j++)
            acc += dScores[pOff + j] * kk[((tokenBase + j) * numKvHeads + kvh) * headDim + d];
        dQ[idx] = acc * scale;
    }

    // One thread per dK/dV element (token j, kv head, d), summing over the query heads of its group and the rows i >= j.
    static void BackwardKeyValueKernel(Index1D idx, FloatView dScores, FloatView probs, FloatView q, FloatView dO, int seq, int numHeads,
        int numKvHeads, int headDim, float scale, FloatView dK, FloatView dV)
    {
        int d = idx % headDim;
        long tokenHead = idx / headDim;
        int kvh = (int)(tokenHead % numKvHeads);
        long token = tokenHead / numKvHeads;
        int j = (int)(token % seq);
        long tokenBase = token - j;
        int groups = numHeads / numKvHeads;
        float dk = 0f, dv = 0f;
        for (int h = kvh * groups; h < (kvh + 1) * groups; h++)
        {
            long pBase = (tokenBase / seq * numHeads + h) * seq * seq;
            for (int i = j; i < seq; i++)
            {
                long p = pBase + (long)i * seq + j;
                long qOff = ((tokenBase + i) * numHeads + h) * headDim + d;
                dk += dScores[p] * q[qOff];
                dv += probs[p] * dO[qOff];
            }
        }
        dK[idx] = dk * scale;
        dV[idx] = dv;
    }

    // One group per score row (i, h) of the cached forward: visible scores, then an in-place softmax.
    static void CachedProbsKernel(FloatView q, FloatView kCache, int queryStart, int keys, int numHeads, int numKvHeads, int headDim,
        float scale, FloatView probs)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        int i = (int)(row / numHeads);
        int h = (int)(row % numHeads);
        int kvh = h / (numHeads / numKvHeads);
        int last = queryStart + i;
        long qOff = row * headDim;
        long pOff = row * keys;

        float max = float.NegativeInfinity;
        for (int j = Group.IdxX; j < keys; j += Group.DimX)
        {
            float s = float.NegativeInfinity;
            if (j <= last)
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
            float e = MathF.Exp(probs[pOff + j] - max); // key 0 is always visible, so max is finite
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
        int headDim, FloatView o)
    {
        int d = idx % headDim;
        long row = idx / headDim;
        int i = (int)(row / numHeads);
        int h = (int)(row % numHeads);
        int kvh = h / (numHeads / numKvHeads);
        long pOff = row * keys;
        float acc = 0f;
        for (int j = 0; j <= queryStart + i; j++)
            acc += probs[pOff + j] * vCache[((long)j * numKvHeads + kvh) * headDim + d];
        o[idx] = acc;
    }

    // ---- launchers ----

    // q, o[batch*seq, numHeads, headDim]; kk, v[batch*seq, numKvHeads, headDim]; segmentIds[batch*seq] or an empty view
    // (one segment per row); probs[batch, numHeads, seq, seq]
    public static void Forward(KernelRegistry k, FloatView q, FloatView kk, FloatView v, IntView segmentIds, int batch, int seq, int numHeads,
        int numKvHeads, int headDim, FloatView probs, FloatView o)
    {
        var s = new Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        if (segmentIds.Length != 0) Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        if (s.Tokens == 0) return;
        var scores = k.Get<Action<KernelConfig, FloatView, FloatView, IntView, int, int, int, int, float, FloatView>>(
            new("attention.forward.probs", ForwardProbsKernel));
        scores(new KernelConfig(s.ScoreRows, k.RowGroupSize), q, kk, segmentIds, seq, numHeads, numKvHeads, headDim, Scale(headDim), probs);
        var output = k.Get<Action<Index1D, FloatView, FloatView, int, int, int, int, FloatView>>(
            new("attention.forward.output", ForwardOutputKernel));
        output(s.QueryElements, probs, v, seq, numHeads, numKvHeads, headDim, o);
    }

    // dO, q, dQ[batch*seq, numHeads, headDim]; kk, v, dK, dV[batch*seq, numKvHeads, headDim]; probs from Forward and
    // dScores (scratch, overwritten) [batch, numHeads, seq, seq]. dQ, dK, dV are overwritten.
    public static void Backward(KernelRegistry k, FloatView dO, FloatView q, FloatView kk, FloatView v, FloatView probs, int batch, int seq,
        int numHeads, int numKvHeads, int headDim, FloatView dScores, FloatView dQ, FloatView dK, FloatView dV)
    {
        var s = new Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(dO), dO.Length), (nameof(q), q.Length), (nameof(dQ), dQ.Length));
        Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length), (nameof(dK), dK.Length), (nameof(dV), dV.Length));
        Need(s.Probs, (nameof(probs), probs.Length), (nameof(dScores), dScores.Length));
        if (s.Tokens == 0) return;
        float scale = Scale(headDim);
        var scores = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, int, int, int, int, FloatView>>(
            new("attention.backward.scores", BackwardScoresKernel));
        scores(new KernelConfig(s.ScoreRows, k.RowGroupSize), dO, v, probs, seq, numHeads, numKvHeads, headDim, dScores);
        var query = k.Get<Action<Index1D, FloatView, FloatView, int, int, int, int, float, FloatView>>(
            new("attention.backward.query", BackwardQueryKernel));
        query(s.QueryElements, dScores, kk, seq, numHeads, numKvHeads, headDim, scale, dQ);
        var keyValue = k.Get<Action<Index1D, FloatView, FloatView, FloatView, FloatView, int, int, int, int, float, FloatView, FloatView>>(
            new("attention.backward.keyvalue", BackwardKeyValueKernel));
        keyValue(s.KeyValueElements, dScores, probs, q, dO, seq, numHeads, numKvHeads, headDim, scale, dK, dV);
    }

    // Inference only (no backward). q, o[queries, numHeads, headDim]; kCache, vCache[>= queryStart + queries, numKvHeads, headDim];
    // probs (scratch, overwritten) [queries, numHeads, queryStart + queries]
    public static void ForwardWithCache(KernelRegistry k, FloatView q, FloatView kCache, FloatView vCache, int queryStart, int queries,
        int numHeads, int numKvHeads, int headDim, FloatView probs, FloatView o)
    {
        var s = new CachedSizes(queryStart, queries, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.CacheElements, (nameof(kCache), kCache.Length), (nameof(vCache), vCache.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        if (queries == 0) return;
        var scores = k.Get<Action<KernelConfig, FloatView, FloatView, int, int, int, int, int, float, FloatView>>(
            new("attention.cached.probs", CachedProbsKernel));
        scores(new KernelConfig(s.ScoreRows, k.RowGroupSize), q, kCache, queryStart, s.Keys, numHeads, numKvHeads, headDim, Scale(headDim), probs);
        var output = k.Get<Action<Index1D, FloatView, FloatView, int, int, int, int, int, FloatView>>(
            new("attention.cached.output", CachedOutputKernel));
        output(s.QueryElements, probs, vCache, queryStart, s.Keys, numHeads, numKvHeads, headDim, o);
    }

    // HF eager multiplies by the Python double head_dim**-0.5, which torch rounds to fp32.
    internal static float Scale(int headDim) => (float)(1.0 / Math.Sqrt(headDim));

    internal readonly record struct Sizes(int Batch, int Seq, int NumHeads, int NumKvHeads, int HeadDim)
    {
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
            return this;
        }
    }

    readonly record struct CachedSizes(int QueryStart, int Queries, int NumHeads, int NumKvHeads, int HeadDim)
    {
        public int Keys => checked(QueryStart + Queries);
        public int ScoreRows => checked(Queries * NumHeads);
        public int QueryElements => checked(ScoreRows * HeadDim);
        public long CacheElements => (long)Keys * NumKvHeads * HeadDim;
        public long Probs => (long)ScoreRows * Keys;
        public int Groups => NumHeads / NumKvHeads;

        public CachedSizes Validate()
        {
            if (QueryStart < 0 || Queries < 0 || HeadDim <= 0 || NumHeads <= 0 || NumKvHeads <= 0 || NumHeads % NumKvHeads != 0)
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

    // q, o[batch*seq, numHeads, headDim]; k, v[batch*seq, numKvHeads, headDim]; segmentIds[batch*seq] or empty;
    // probs[batch, numHeads, seq, seq]
    public static unsafe void ForwardCpu<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<int> segmentIds, int batch,
        int seq, int numHeads, int numKvHeads, int headDim, Span<T> probs, Span<T> o) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var s = new Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.KeyValueElements, (nameof(k), k.Length), (nameof(v), v.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        if (!segmentIds.IsEmpty) Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        // Parallel.For bodies cannot capture spans: pin them and rebuild them inside.
        fixed (T* pq = q, pk = k, pv = v, pp = probs, po = o)
        fixed (int* ps = segmentIds)
        {
            var (Q, K, V, P, O) = (new Pinned<T>(pq, q.Length), new Pinned<T>(pk, k.Length), new Pinned<T>(pv, v.Length),
                new Pinned<T>(pp, probs.Length), new Pinned<T>(po, o.Length));
            var S = new Pinned<int>(ps, segmentIds.Length);
            Parallel.For(0, batch * numHeads, bh => ForwardHead(Q.Span, K.Span, V.Span, S.Span, s, bh / numHeads, bh % numHeads, P.Span, O.Span));
        }
    }

    static void ForwardHead<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<int> segmentIds, Sizes s, int b, int h,
        Span<T> probs, Span<T> o) where T : IFloatingPointIeee754<T>
    {
        int seq = s.Seq, headDim = s.HeadDim, kvh = h / s.Groups;
        T scale = T.CreateChecked(1.0 / Math.Sqrt(headDim));
        for (int i = 0; i < seq; i++)
        {
            var qi = q.Slice(((b * seq + i) * s.NumHeads + h) * headDim, headDim);
            var p = probs.Slice(((b * s.NumHeads + h) * seq + i) * seq, seq);
            T max = T.NegativeInfinity;
            for (int j = 0; j < seq; j++)
            {
                bool visible = j <= i && (segmentIds.IsEmpty || segmentIds[b * seq + j] == segmentIds[b * seq + i]);
                p[j] = visible ? TensorPrimitives.Dot(qi, KvRow(k, s, b, j, kvh)) * scale : T.NegativeInfinity;
                max = T.Max(max, p[j]);
            }
            T sum = T.Zero;
            for (int j = 0; j < seq; j++)
            {
                p[j] = T.IsNegativeInfinity(max) ? T.Zero : T.Exp(p[j] - max);
                sum += p[j];
            }
            if (sum > T.Zero) TensorPrimitives.Divide(p, sum, p);

            var oi = o.Slice(((b * seq + i) * s.NumHeads + h) * headDim, headDim);
            oi.Clear();
            for (int j = 0; j <= i; j++)
                if (p[j] != T.Zero) TensorPrimitives.MultiplyAdd(KvRow(v, s, b, j, kvh), p[j], oi, oi);
        }
    }

    // dO, q, dQ[batch*seq, numHeads, headDim]; k, v, dK, dV[batch*seq, numKvHeads, headDim]; probs[batch, numHeads, seq, seq].
    // dQ, dK, dV are overwritten.
    public static unsafe void BackwardCpu<T>(ReadOnlySpan<T> dO, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> probs,
        int batch, int seq, int numHeads, int numKvHeads, int headDim, Span<T> dQ, Span<T> dK, Span<T> dV)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var s = new Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(dO), dO.Length), (nameof(q), q.Length), (nameof(dQ), dQ.Length));
        Need(s.KeyValueElements, (nameof(k), k.Length), (nameof(v), v.Length), (nameof(dK), dK.Length), (nameof(dV), dV.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        fixed (T* pdo = dO, pq = q, pk = k, pv = v, pp = probs, pdq = dQ, pdk = dK, pdv = dV)
        {
            var (DO, Q, K, V, P) = (new Pinned<T>(pdo, dO.Length), new Pinned<T>(pq, q.Length), new Pinned<T>(pk, k.Length),
                new Pinned<T>(pv, v.Length), new Pinned<T>(pp, probs.Length));
            var (DQ, DK, DV) = (new Pinned<T>(pdq, dQ.Length), new Pinned<T>(pdk, dK.Length), new Pinned<T>(pdv, dV.Length));
            // One task per (batch, kv head) owns its dK/dV rows and the dQ rows of its query heads: no races, fixed order.
            Parallel.For(0, batch * numKvHeads, bkv =>
                BackwardKvHead(DO.Span, Q.Span, K.Span, V.Span, P.Span, s, bkv / numKvHeads, bkv % numKvHeads, DQ.Span, DK.Span, DV.Span));
        }
    }

    static void BackwardKvHead<T>(ReadOnlySpan<T> dO, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> probs, Sizes s,
        int b, int kvh, Span<T> dQ, Span<T> dK, Span<T> dV) where T : IFloatingPointIeee754<T>
    {
        int seq = s.Seq, headDim = s.HeadDim;
        T scale = T.CreateChecked(1.0 / Math.Sqrt(headDim));
        for (int j = 0; j < seq; j++)
        {
            KvRow(dK, s, b, j, kvh).Clear();
            KvRow(dV, s, b, j, kvh).Clear();
        }
        var dP = new T[seq];
        for (int h = kvh * s.Groups; h < (kvh + 1) * s.Groups; h++)
            for (int i = 0; i < seq; i++)
            {
                int qOff = ((b * seq + i) * s.NumHeads + h) * headDim;
                var qi = q.Slice(qOff, headDim);
                var dOi = dO.Slice(qOff, headDim);
                var p = probs.Slice(((b * s.NumHeads + h) * seq + i) * seq, seq);
                T rowDot = T.Zero;
                for (int j = 0; j <= i; j++)
                {
                    dP[j] = TensorPrimitives.Dot(dOi, KvRow(v, s, b, j, kvh));
                    rowDot += p[j] * dP[j];
                }
                var dQi = dQ.Slice(qOff, headDim);
                dQi.Clear();
                for (int j = 0; j <= i; j++)
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

    // Inference only. q, o[queries, numHeads, headDim]; kCache, vCache[>= queryStart + queries, numKvHeads, headDim];
    // probs[queries, numHeads, queryStart + queries]
    public static unsafe void ForwardWithCacheCpu<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache, int queryStart,
        int queries, int numHeads, int numKvHeads, int headDim, Span<T> probs, Span<T> o) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var s = new CachedSizes(queryStart, queries, numHeads, numKvHeads, headDim).Validate();
        Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Need(s.CacheElements, (nameof(kCache), kCache.Length), (nameof(vCache), vCache.Length));
        Need(s.Probs, (nameof(probs), probs.Length));
        fixed (T* pq = q, pk = kCache, pv = vCache, pp = probs, po = o)
        {
            var (Q, K, V, P, O) = (new Pinned<T>(pq, q.Length), new Pinned<T>(pk, kCache.Length), new Pinned<T>(pv, vCache.Length),
                new Pinned<T>(pp, probs.Length), new Pinned<T>(po, o.Length));
            Parallel.For(0, s.ScoreRows, row => CachedRow(Q.Span, K.Span, V.Span, s, row, P.Span, O.Span));
        }
    }

    // Score row `row` = (query i, head h): the same steps as ForwardHead over the keys 0..queryStart+i.
    static void CachedRow<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache, CachedSizes s, int row, Span<T> probs,
        Span<T> o) where T : IFloatingPointIeee754<T>
    {
        int headDim = s.HeadDim, i = row / s.NumHeads, kvh = row % s.NumHeads / s.Groups, visible = s.QueryStart + i + 1;
        T scale = T.CreateChecked(1.0 / Math.Sqrt(headDim));
        var qi = q.Slice(row * headDim, headDim);
        var p = probs.Slice(row * s.Keys, s.Keys);
        p[visible..].Clear();
        T max = T.NegativeInfinity;
        for (int j = 0; j < visible; j++)
        {
            p[j] = TensorPrimitives.Dot(qi, kCache.Slice((j * s.NumKvHeads + kvh) * headDim, headDim)) * scale;
            max = T.Max(max, p[j]);
        }
        T sum = T.Zero;
        for (int j = 0; j < visible; j++)
        {
            p[j] = T.Exp(p[j] - max);
            sum += p[j];
        }
        TensorPrimitives.Divide(p[..visible], sum, p[..visible]);
        var oi = o.Slice(row * headDim, headDim);
        oi.Clear();
        for (int j = 0; j < visible; j++)
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
