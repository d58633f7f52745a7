// Mixture-of-experts pieces of a sparse MLP block (transformers' MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock), T tokens,
// E experts, K = num_experts_per_tok, slot s = t*K + k:
//   Router:  p_t = softmax(logits_t) in fp32; the K largest p (ties: lower expert first) in descending order give
//            experts[t, k] and weights[t, k] = p_e, divided by their sum when normalize (Mixtral always, Qwen3-MoE when
//            norm_topk_prob). Backward, with S = sum of the selected p (1 without normalize), w_k = p_{e_k} / S:
//              dp_{e_k} = (dw_k - [normalize] sum_k' dw_k' w_k') / S, dp = 0 elsewhere;  dlogit = p * (dp - p . dp).
//   Sort:    a stable counting sort of the slots by expert: counts[e], order[r] = slot of sorted row r (experts in order,
//            slots ascending within one). Two passes of one group per expert over the slots (count, then place at the
//            exclusive prefix of the earlier experts' counts plus the thread's own prefix): no atomics, no per-token loop.
//   Gather:  one expert's rows xe[r] = x[order[offset + r] / K] (offset = the earlier experts' counts); its backward adds
//            them back: dX[t] += dXe[r]. An expert sees each token at most once, so one launch has no write conflicts.
//   Combine: y[t] += weights[slot] * ye[r] (experts one after another, each once per token); backward
//            dYe[r] = weights[slot] * dY[t], dWeights[slot] = dY[t] . ye[r].
//   Load balancing (transformers' load_balancing_loss_func over the layers' router logits, mask m_t = attention_mask or 1):
//            D = layers * sum_t m_t;  f_e = (1/D) sum_{layers,t} m_t #{k: experts[t,k] = e};  P_e = (1/D) sum_{layers,t} m_t p_te
//            loss = E * sum_e f_e P_e. AuxStats adds one layer's unscaled sums (counts, probs); the caller combines them.
//            The top-k indicator carries no gradient, so dLogits_t = softmax backward of g_e = (dLoss E f_e / D) * m_t
//            (AuxBackward with grad[e] = dLoss E f_e / D).
// Everything here is fp32 with one thread per token row or per element, sums in fixed order: deterministic.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class Moe
{
    /// <summary>The most experts a router kernel handles (per-thread loops over them).</summary>
    public const int MaxExperts = 1024;
    const int SortThreads = 256;

    // ---- device kernels ----

    // Row t of softmax(logits): max and 1/sum of exp(l - max); p_e = exp(l_e - max) * inv.
    static (float Max, float Inv) SoftmaxRow(FloatView logits, long off, int e)
    {
        float m = float.NegativeInfinity;
        for (int i = 0; i < e; i++) m = MathF.Max(m, logits[off + i]);
        float sum = 0f;
        for (int i = 0; i < e; i++) sum += MathF.Exp(logits[off + i] - m);
        return (m, 1f / sum);
    }

    // (value, index) ordering of the top-k: a is ranked above b iff pa > pb, or equal and ia < ib.
    static bool Above(float pa, int ia, float pb, int ib) => pa > pb || pa == pb && ia < ib;

    static void RouterForwardKernel(Index1D t, FloatView logits, int e, int topK, int normalize, FloatView weights, IntView experts)
    {
        long off = (long)t.X * e;
        var (m, inv) = SoftmaxRow(logits, off, e);
        float prevP = float.PositiveInfinity, sum = 0f;
        int prevI = -1;
        for (int k = 0; k < topK; k++)
        {
            float bestP = float.NegativeInfinity;
            int bestI = -1;
            for (int i = 0; i < e; i++)
            {
                float p = MathF.Exp(logits[off + i] - m) * inv;
                if (Above(prevP, prevI, p, i) && (bestI < 0 || Above(p, i, bestP, bestI)))
                {
                    bestP = p;
                    bestI = i;
                }
            }
            weights[(long)t.X * topK + k] = bestP;
            experts[(long)t.X * topK + k] = bestI;
            sum += bestP;
            (prevP, prevI) = (bestP, bestI);
        }
        if (normalize != 0)
            for (int k = 0; k < topK; k++) weights[(long)t.X * topK + k] /= sum;
    }

    static void RouterBackwardKernel(Index1D t, FloatView dWeights, FloatView logits, IntView experts, int e, int topK, int normalize,
        FloatView dLogits)
    {
        long off = (long)t.X * e, kOff = (long)t.X * topK;
        var (m, inv) = SoftmaxRow(logits, off, e);
        float s = 1f, wd = 0f;
        if (normalize != 0)
        {
            s = 0f;
            for (int k = 0; k < topK; k++) s += MathF.Exp(logits[off + experts[kOff + k]] - m) * inv;
            for (int k = 0; k < topK; k++) wd += dWeights[kOff + k] * MathF.Exp(logits[off + experts[kOff + k]] - m) * inv / s;
        }
        float dot = 0f; // p . dp over the selected experts
        for (int k = 0; k < topK; k++)
        {
            float p = MathF.Exp(logits[off + experts[kOff + k]] - m) * inv;
            dot += p * (dWeights[kOff + k] - wd) / s;
        }
        for (int i = 0; i < e; i++)
        {
            float p = MathF.Exp(logits[off + i] - m) * inv, dp = 0f;
            for (int k = 0; k < topK; k++)
                if (experts[kOff + k] == i) dp = (dWeights[kOff + k] - wd) / s;
            dLogits[off + i] = p * (dp - dot);
        }
    }

    // Group e, thread t counts the slots of expert e in its chunk [t*chunk, (t+1)*chunk).
    static int ChunkCount(IntView experts, int slots, int chunk, int e)
    {
        int n = 0, end = Math.Min(slots, (Group.IdxX + 1) * chunk);
        for (int s = Group.IdxX * chunk; s < end; s++)
            if (experts[s] == e) n++;
        return n;
    }

    static void SortCountKernel(IntView experts, int slots, int chunk, IntView counts)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        float n = Reduce.GroupSum(ChunkCount(experts, slots, chunk, Grid.IdxX), scratch); // exact: counts < 2^24
        if (Group.IdxX == 0) counts[Grid.IdxX] = (int)n;
    }

    static void SortPlaceKernel(IntView experts, IntView counts, int slots, int chunk, IntView order)
    {
        var starts = SharedMemory.Allocate<int>(SortThreads);
        int e = Grid.IdxX, tid = Group.IdxX;
        starts[tid] = ChunkCount(experts, slots, chunk, e);
        Group.Barrier();
        if (tid == 0)
        {
            int at = 0;
            for (int x = 0; x < e; x++) at += counts[x];
            for (int x = 0; x < Group.DimX; x++)
            {
                int c = starts[x];
                starts[x] = at;
                at += c;
            }
        }
        Group.Barrier();
        int w = starts[tid], end = Math.Min(slots, (tid + 1) * chunk);
        for (int s = tid * chunk; s < end; s++)
            if (experts[s] == e) order[w++] = s;
    }

    static void GatherKernel(Index1D i, FloatView x, IntView order, int offset, int topK, int hidden, FloatView xe)
    {
        int r = i / hidden, d = i % hidden;
        xe[i] = x[(long)(order[offset + r] / topK) * hidden + d];
    }

    static void GatherBackwardKernel(Index1D i, FloatView dXe, IntView order, int offset, int topK, int hidden, FloatView dX)
    {
        int r = i / hidden, d = i % hidden;
        dX[(long)(order[offset + r] / topK) * hidden + d] += dXe[i];
    }

    static void CombineKernel(Index1D i, FloatView ye, FloatView weights, IntView order, int offset, int topK, int hidden, FloatView y)
    {
        int r = i / hidden, d = i % hidden, slot = order[offset + r];
        y[(long)(slot / topK) * hidden + d] += weights[slot] * ye[i];
    }

    // One group per row r of the expert: dYe row and the dot for dWeights.
    static void CombineBackwardKernel(FloatView dY, FloatView ye, FloatView weights, IntView order, int offset, int topK, int hidden,
        FloatView dYe, FloatView dWeights)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long r = Grid.IdxX;
        int slot = order[offset + (int)r];
        long yOff = (long)(slot / topK) * hidden, eOff = r * hidden;
        float w = weights[slot], dot = 0f;
        for (int d = Group.IdxX; d < hidden; d += Group.DimX)
        {
            float g = dY[yOff + d];
            dot += g * ye[eOff + d];
            dYe[eOff + d] = w * g;
        }
        dot = Reduce.GroupSum(dot, scratch);
        if (Group.IdxX == 0) dWeights[slot] = dot;
    }

    // Per token row: rowProbs[t, e] = m_t p_te, rowCounts[t, e] = m_t #{k: experts[t,k] = e}; column sums follow.
    static void AuxRowsKernel(Index1D t, FloatView logits, IntView experts, FloatView mask, int e, int topK, FloatView rowProbs,
        FloatView rowCounts)
    {
        long off = (long)t.X * e;
        float mt = mask.Length == 0 ? 1f : mask[t];
        var (m, inv) = SoftmaxRow(logits, off, e);
        for (int i = 0; i < e; i++)
        {
            rowProbs[off + i] = mt * (MathF.Exp(logits[off + i] - m) * inv);
            rowCounts[off + i] = 0f;
        }
        for (int k = 0; k < topK; k++) rowCounts[off + experts[(long)t.X * topK + k]] += mt;
    }

    static void AuxBackwardKernel(Index1D t, FloatView logits, FloatView mask, FloatView grad, int e, FloatView dLogits)
    {
        long off = (long)t.X * e;
        float mt = mask.Length == 0 ? 1f : mask[t];
        var (m, inv) = SoftmaxRow(logits, off, e);
        float dot = 0f;
        for (int i = 0; i < e; i++) dot += MathF.Exp(logits[off + i] - m) * inv * grad[i] * mt;
        for (int i = 0; i < e; i++)
        {
            float p = MathF.Exp(logits[off + i] - m) * inv;
            dLogits[off + i] = p * (grad[i] * mt - dot);
        }
    }

    // ---- launchers ----

    // logits[T, E] -> weights[T, K] (fp32), experts[T, K] (int)
    public static void RouterForward(KernelRegistry k, FloatView logits, int tokens, int numExperts, int topK, bool normalize,
        FloatView weights, IntView experts)
    {
        CheckRouter(tokens, numExperts, topK);
        Launch.Need(logits, (long)tokens * numExperts, nameof(logits));
        Launch.Need(weights, (long)tokens * topK, nameof(weights)); Launch.Need(experts, (long)tokens * topK, nameof(experts));
        if (tokens == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, int, int, int, FloatView, IntView>>(new("moe.router.forward", RouterForwardKernel));
        kernel(tokens, logits, numExperts, topK, normalize ? 1 : 0, weights, experts);
    }

    // dWeights[T, K], logits[T, E], experts[T, K] -> dLogits[T, E] (overwritten)
    public static void RouterBackward(KernelRegistry k, FloatView dWeights, FloatView logits, IntView experts, int tokens, int numExperts,
        int topK, bool normalize, FloatView dLogits)
    {
        CheckRouter(tokens, numExperts, topK);
        Launch.Need(logits, (long)tokens * numExperts, nameof(logits)); Launch.Need(dLogits, (long)tokens * numExperts, nameof(dLogits));
        Launch.Need(dWeights, (long)tokens * topK, nameof(dWeights)); Launch.Need(experts, (long)tokens * topK, nameof(experts));
        if (tokens == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, FloatView, IntView, int, int, int, FloatView>>(
            new("moe.router.backward", RouterBackwardKernel));
        kernel(tokens, dWeights, logits, experts, numExperts, topK, normalize ? 1 : 0, dLogits);
    }

    // experts[slots] (values in [0, E)) -> counts[E], order[slots]
    public static void Sort(KernelRegistry k, IntView experts, int slots, int numExperts, IntView counts, IntView order)
    {
        if (numExperts <= 0 || slots < 0) throw new ArgumentException($"moe sort: {slots} slots over {numExperts} experts");
        Launch.Need(experts, slots, nameof(experts)); Launch.Need(order, slots, nameof(order)); Launch.Need(counts, numExperts, nameof(counts));
        int threads = k.IsEmulated ? 32 : SortThreads, chunk = Math.Max(1, (slots + threads - 1) / threads);
        var count = k.Get<Action<KernelConfig, IntView, int, int, IntView>>(new("moe.sort.count", SortCountKernel));
        count(new KernelConfig(numExperts, threads), experts, slots, chunk, counts);
        var place = k.Get<Action<KernelConfig, IntView, IntView, int, int, IntView>>(new("moe.sort.place", SortPlaceKernel));
        place(new KernelConfig(numExperts, threads), experts, counts, slots, chunk, order);
    }

    // x[T, H], order[>= offset + rows] -> xe[rows, H]
    public static void Gather(KernelRegistry k, FloatView x, IntView order, int offset, int rows, int topK, int hidden, FloatView xe)
    {
        CheckRows(order, offset, rows, hidden); Launch.Need(xe, (long)rows * hidden, nameof(xe));
        if (rows == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, IntView, int, int, int, FloatView>>(new("moe.gather", GatherKernel));
        kernel(checked(rows * hidden), x, order, offset, topK, hidden, xe);
    }

    // dXe[rows, H] -> dX[T, H] (accumulates)
    public static void GatherBackward(KernelRegistry k, FloatView dXe, IntView order, int offset, int rows, int topK, int hidden, FloatView dX)
    {
        CheckRows(order, offset, rows, hidden); Launch.Need(dXe, (long)rows * hidden, nameof(dXe));
        if (rows == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, IntView, int, int, int, FloatView>>(new("moe.gather.backward", GatherBackwardKernel));
        kernel(checked(rows * hidden), dXe, order, offset, topK, hidden, dX);
    }

    // ye[rows, H], weights[T*K] -> y[T, H] (accumulates)
    public static void Combine(KernelRegistry k, FloatView ye, FloatView weights, IntView order, int offset, int rows, int topK, int hidden,
        FloatView y)
    {
        CheckRows(order, offset, rows, hidden); Launch.Need(ye, (long)rows * hidden, nameof(ye));
        if (rows == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, FloatView, IntView, int, int, int, FloatView>>(new("moe.combine", CombineKernel));
        kernel(checked(rows * hidden), ye, weights, order, offset, topK, hidden, y);
    }

    // dY[T, H], ye[rows, H], weights[T*K] -> dYe[rows, H] (overwritten), dWeights[T*K] (this expert's slots written)
    public static void CombineBackward(KernelRegistry k, FloatView dY, FloatView ye, FloatView weights, IntView order, int offset, int rows,
        int topK, int hidden, FloatView dYe, FloatView dWeights)
    {
        CheckRows(order, offset, rows, hidden); Launch.Need(ye, (long)rows * hidden, nameof(ye)); Launch.Need(dYe, (long)rows * hidden, nameof(dYe));
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, IntView, int, int, int, FloatView, FloatView>>(
            new("moe.combine.backward", CombineBackwardKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), dY, ye, weights, order, offset, topK, hidden, dYe, dWeights);
    }

    // logits[T, E], experts[T, K], mask[T] or empty; rowProbs, rowCounts: scratch [T, E]; counts, probs[E] accumulate.
    public static void AuxStats(KernelRegistry k, FloatView logits, IntView experts, FloatView mask, int tokens, int numExperts, int topK,
        FloatView rowProbs, FloatView rowCounts, FloatView counts, FloatView probs)
    {
        CheckRouter(tokens, numExperts, topK);
        long n = (long)tokens * numExperts;
        Launch.Need(logits, n, nameof(logits)); Launch.Need(rowProbs, n, nameof(rowProbs)); Launch.Need(rowCounts, n, nameof(rowCounts));
        if (mask.Length != 0) Launch.Need(mask, tokens, nameof(mask));
        if (tokens == 0) return;
        var rows = k.Get<Action<Index1D, FloatView, IntView, FloatView, int, int, FloatView, FloatView>>(new("moe.aux.rows", AuxRowsKernel));
        rows(tokens, logits, experts, mask, numExperts, topK, rowProbs, rowCounts);
        Elementwise.SumRows(k, rowProbs, tokens, numExperts, probs);
        Elementwise.SumRows(k, rowCounts, tokens, numExperts, counts);
    }

    // logits[T, E], mask[T] or empty, grad[E] -> dLogits[T, E] (overwritten)
    public static void AuxBackward(KernelRegistry k, FloatView logits, FloatView mask, FloatView grad, int tokens, int numExperts,
        FloatView dLogits)
    {
        CheckRouter(tokens, numExperts, 1);
        Launch.Need(logits, (long)tokens * numExperts, nameof(logits)); Launch.Need(dLogits, (long)tokens * numExperts, nameof(dLogits));
        Launch.Need(grad, numExperts, nameof(grad));
        if (tokens == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, FloatView, FloatView, int, FloatView>>(new("moe.aux.backward", AuxBackwardKernel));
        kernel(tokens, logits, mask, grad, numExperts, dLogits);
    }

    static void CheckRouter(int tokens, int numExperts, int topK)
    {
        if (tokens < 0 || numExperts <= 0 || numExperts > MaxExperts || topK <= 0 || topK > numExperts)
            throw new ArgumentException($"moe: {tokens} tokens, {numExperts} experts (1..{MaxExperts}), top-{topK} (1..experts)");
    }

    static void CheckRows(IntView order, int offset, int rows, int hidden)
    {
        if (offset < 0 || rows < 0 || hidden <= 0) throw new ArgumentException($"moe: rows {offset}..+{rows} of hidden {hidden}");
        Launch.Need(order, (long)offset + rows, nameof(order));
    }

    // ---- CPU reference: the spec, and the managed CPU path ----

    static (T Max, T Inv) SoftmaxRowCpu<T>(ReadOnlySpan<T> l) where T : IFloatingPointIeee754<T>
    {
        T m = T.NegativeInfinity;
        foreach (var v in l) m = T.Max(m, v);
        T sum = T.Zero;
        foreach (var v in l) sum += T.Exp(v - m);
        return (m, T.One / sum);
    }

    // logits[T, E] -> weights[T, K], experts[T, K]
    public static void RouterForwardCpu<T>(ReadOnlySpan<T> logits, int numExperts, int topK, bool normalize, Span<T> weights, Span<int> experts)
        where T : IFloatingPointIeee754<T>
    {
        int tokens = logits.Length / numExperts;
        CheckRouter(tokens, numExperts, topK);
        var p = new T[numExperts];
        var taken = new bool[numExperts];
        for (int t = 0; t < tokens; t++)
        {
            var l = logits.Slice(t * numExperts, numExperts);
            var (m, inv) = SoftmaxRowCpu(l);
            for (int i = 0; i < numExperts; i++) p[i] = T.Exp(l[i] - m) * inv;
            Array.Clear(taken);
            T sum = T.Zero;
            for (int k = 0; k < topK; k++)
            {
                int best = -1;
                for (int i = 0; i < numExperts; i++)
                    if (!taken[i] && (best < 0 || p[i] > p[best])) best = i; // strict: ties keep the lower expert
                taken[best] = true;
                weights[t * topK + k] = p[best];
                experts[t * topK + k] = best;
                sum += p[best];
            }
            if (normalize)
                for (int k = 0; k < topK; k++) weights[t * topK + k] /= sum;
        }
    }

    // dWeights[T, K], logits[T, E], experts[T, K] -> dLogits[T, E] (overwritten)
    public static void RouterBackwardCpu<T>(ReadOnlySpan<T> dWeights, ReadOnlySpan<T> logits, ReadOnlySpan<int> experts, int numExperts,
        int topK, bool normalize, Span<T> dLogits) where T : IFloatingPointIeee754<T>
    {
        int tokens = logits.Length / numExperts;
        CheckRouter(tokens, numExperts, topK);
        var dp = new T[numExperts];
        for (int t = 0; t < tokens; t++)
        {
            var l = logits.Slice(t * numExperts, numExperts);
            var (m, inv) = SoftmaxRowCpu(l);
            var sel = experts.Slice(t * topK, topK);
            var dw = dWeights.Slice(t * topK, topK);
            T s = T.One, wd = T.Zero;
            if (normalize)
            {
                s = T.Zero;
                foreach (int e in sel) s += T.Exp(l[e] - m) * inv;
                for (int k = 0; k < topK; k++) wd += dw[k] * (T.Exp(l[sel[k]] - m) * inv / s);
            }
            Array.Clear(dp);
            for (int k = 0; k < topK; k++) dp[sel[k]] = (dw[k] - wd) / s;
            T dot = T.Zero;
            for (int i = 0; i < numExperts; i++) dot += T.Exp(l[i] - m) * inv * dp[i];
            for (int i = 0; i < numExperts; i++) dLogits[t * numExperts + i] = T.Exp(l[i] - m) * inv * (dp[i] - dot);
        }
    }

    // experts[slots] -> counts[E], order[slots]: stable counting sort
    public static void SortCpu(ReadOnlySpan<int> experts, int numExperts, Span<int> counts, Span<int> order)
    {
        counts[..numExperts].Clear();
        foreach (int e in experts)
        {
            if ((uint)e >= (uint)numExperts) throw new ArgumentOutOfRangeException(nameof(experts), $"expert {e} outside 0..{numExperts - 1}");
            counts[e]++;
        }
        var next = new int[numExperts];
        for (int e = 1; e < numExperts; e++) next[e] = next[e - 1] + counts[e - 1];
        for (int s = 0; s < experts.Length; s++) order[next[experts[s]]++] = s;
    }

    // x[T, H] -> xe[rows, H] with rows = xe.Length / H
    public static void GatherCpu<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> order, int offset, int topK, int hidden, Span<T> xe)
    {
        for (int r = 0; r < xe.Length / hidden; r++) x.Slice(order[offset + r] / topK * hidden, hidden).CopyTo(xe.Slice(r * hidden, hidden));
    }

    // dXe[rows, H] -> dX[T, H] (accumulates)
    public static void GatherBackwardCpu<T>(ReadOnlySpan<T> dXe, ReadOnlySpan<int> order, int offset, int topK, int hidden, Span<T> dX)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < dXe.Length / hidden; r++)
        {
            var row = dX.Slice(order[offset + r] / topK * hidden, hidden);
            for (int d = 0; d < hidden; d++) row[d] += dXe[r * hidden + d];
        }
    }

    // ye[rows, H], weights[T*K] -> y[T, H] (accumulates)
    public static void CombineCpu<T>(ReadOnlySpan<T> ye, ReadOnlySpan<T> weights, ReadOnlySpan<int> order, int offset, int topK, int hidden,
        Span<T> y) where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < ye.Length / hidden; r++)
        {
            int slot = order[offset + r];
            var row = y.Slice(slot / topK * hidden, hidden);
            for (int d = 0; d < hidden; d++) row[d] += weights[slot] * ye[r * hidden + d];
        }
    }

    // dY[T, H], ye[rows, H], weights[T*K] -> dYe[rows, H] (overwritten), dWeights[slot] for this expert's slots
    public static void CombineBackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> ye, ReadOnlySpan<T> weights, ReadOnlySpan<int> order, int offset,
        int topK, int hidden, Span<T> dYe, Span<T> dWeights) where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < ye.Length / hidden; r++)
        {
            int slot = order[offset + r];
            var g = dY.Slice(slot / topK * hidden, hidden);
            T dot = T.Zero;
            for (int d = 0; d < hidden; d++)
            {
                dot += g[d] * ye[r * hidden + d];
                dYe[r * hidden + d] = weights[slot] * g[d];
            }
            dWeights[slot] = dot;
        }
    }

    // logits[T, E], experts[T, K], mask[T] or empty -> counts[E], probs[E] (accumulate)
    public static void AuxStatsCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<int> experts, ReadOnlySpan<T> mask, int numExperts, int topK,
        Span<T> counts, Span<T> probs) where T : IFloatingPointIeee754<T>
    {
        int tokens = logits.Length / numExperts;
        for (int t = 0; t < tokens; t++)
        {
            T mt = mask.IsEmpty ? T.One : mask[t];
            var l = logits.Slice(t * numExperts, numExperts);
            var (m, inv) = SoftmaxRowCpu(l);
            for (int i = 0; i < numExperts; i++) probs[i] += mt * (T.Exp(l[i] - m) * inv);
            for (int k = 0; k < topK; k++) counts[experts[t * topK + k]] += mt;
        }
    }

    // logits[T, E], mask[T] or empty, grad[E] -> dLogits[T, E] (overwritten)
    public static void AuxBackwardCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<T> mask, ReadOnlySpan<T> grad, int numExperts, Span<T> dLogits)
        where T : IFloatingPointIeee754<T>
    {
        int tokens = logits.Length / numExperts;
        for (int t = 0; t < tokens; t++)
        {
            T mt = mask.IsEmpty ? T.One : mask[t];
            var l = logits.Slice(t * numExperts, numExperts);
            var (m, inv) = SoftmaxRowCpu(l);
            T dot = T.Zero;
            for (int i = 0; i < numExperts; i++) dot += T.Exp(l[i] - m) * inv * grad[i] * mt;
            for (int i = 0; i < numExperts; i++) dLogits[t * numExperts + i] = T.Exp(l[i] - m) * inv * (grad[i] * mt - dot);
        }
    }
}
