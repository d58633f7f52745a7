// The naive GPU attention kernels: scores, softmax and probs[batch, numHeads, seq, seq] materialized, one thread per
// output element, every sum a plain loop. Not a product path (training uses FlashAttention / FlashAttentionHalf); they are
// the second, independent GPU spelling of Attention.ForwardCpu/BackwardCpu that the tests and the GPU bench check against.
//   q[batch*seq, numHeads, headDim], k, v[batch*seq, numKvHeads, headDim]; query head h reads kv head h / (numHeads/numKvHeads).
//   Key j is visible to query i iff j <= i and, when segmentIds[batch*seq] is given (packed samples), seg[j] == seg[i].
// Backward (dQ, dK, dV overwritten), per query row i of head h with dP_ij = dO_i . v_j:
//   dS_ij = P_ij * (dP_ij - sum_j' P_ij' dP_ij')       (0 at masked keys because P is; probs carries the mask)
//   dQ_i  = scale * sum_j dS_ij k_j
//   dK_j  = scale * sum_{h in group} sum_i dS_ij q_i ;  dV_j = sum_{h in group} sum_i P_ij dO_i
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using FloatView = ILGPU.ArrayView<float>;
using IntView = ILGPU.ArrayView<int>;

namespace IlgpuTune.Kernels.Tests;

public static class NaiveAttention
{
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
    static void ForwardOutputKernel(Index1D idx, FloatView probs, FloatView v, int seq, int numHeads, int numKvHeads, int headDim,
        FloatView o)
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

    // q, o[batch*seq, numHeads, headDim]; kk, v[batch*seq, numKvHeads, headDim]; segmentIds[batch*seq] or an empty view
    // (one segment per row); probs[batch, numHeads, seq, seq]
    public static void Forward(KernelRegistry k, FloatView q, FloatView kk, FloatView v, IntView segmentIds, int batch, int seq,
        int numHeads,
        int numKvHeads, int headDim, FloatView probs, FloatView o)
    {
        var s = new Attention.Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Attention.Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Attention.Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length));
        Attention.Need(s.Probs, (nameof(probs), probs.Length));
        if (segmentIds.Length != 0) Attention.Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        if (s.Tokens == 0) return;
        var scores = k.Get<Action<KernelConfig, FloatView, FloatView, IntView, int, int, int, int, float, FloatView>>(
            new("attention.forward.probs", ForwardProbsKernel));
        scores(new KernelConfig(s.ScoreRows, k.RowGroupSize), q, kk, segmentIds, seq, numHeads, numKvHeads, headDim,
            Attention.Scale(headDim), probs);
        var output = k.Get<Action<Index1D, FloatView, FloatView, int, int, int, int, FloatView>>(
            new("attention.forward.output", ForwardOutputKernel));
        output(s.QueryElements, probs, v, seq, numHeads, numKvHeads, headDim, o);
    }

    // dO, q, dQ[batch*seq, numHeads, headDim]; kk, v, dK, dV[batch*seq, numKvHeads, headDim]; probs from Forward and
    // dScores (scratch, overwritten) [batch, numHeads, seq, seq]. dQ, dK, dV are overwritten.
    public static void Backward(KernelRegistry k, FloatView dO, FloatView q, FloatView kk, FloatView v, FloatView probs, int batch, int seq,
        int numHeads, int numKvHeads, int headDim, FloatView dScores, FloatView dQ, FloatView dK, FloatView dV)
    {
        var s = new Attention.Sizes(batch, seq, numHeads, numKvHeads, headDim).Validate();
        Attention.Need(s.QueryElements, (nameof(dO), dO.Length), (nameof(q), q.Length), (nameof(dQ), dQ.Length));
        Attention.Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length), (nameof(dK), dK.Length), (nameof(dV),
            dV.Length));
        Attention.Need(s.Probs, (nameof(probs), probs.Length), (nameof(dScores), dScores.Length));
        if (s.Tokens == 0) return;
        float scale = Attention.Scale(headDim);
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
}
