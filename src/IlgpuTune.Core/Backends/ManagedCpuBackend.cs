// The managed CPU backend: every op is its CPU reference from kernels/IlgpuTune.Kernels/<Op>.cs (the spec), on host
// spans (TensorPrimitives + Parallel.For inside the references). Matrix products are fp32; a frozen weight may stay BF16/F16
// and is widened row by row inside the product (ManagedCpuBackend.HalfWeights.cs).
using System.Numerics.Tensors;
using IlgpuTune.Kernels;
using K = IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class ManagedCpuBackend : IOpBackend
{
    public void Fill(Tensor y, float value) => y.F32.Fill(value);

    public void Accumulate(Tensor x, Tensor y) => TensorPrimitives.Add(y.F32, x.F32, y.F32);

    public void Add(Tensor a, Tensor b, Tensor y) => Elementwise.AddCpu<float>(a.F32, b.F32, y.F32);

    public void Mul(Tensor a, Tensor b, Tensor y) => Elementwise.MulCpu<float>(a.F32, b.F32, y.F32);

    public void Scale(Tensor x, float alpha, Tensor y) => Elementwise.ScaleCpu<float>(x.F32, alpha, y.F32);

    public void SumRows(Tensor dY, Tensor dBias)
    {
        int cols = dBias.Dim(0);
        Elementwise.SumRowsCpu<float>(dY.F32, (int)(dY.Length / cols), cols, dBias.F32);
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        int size = src.DType.Size();
        src.RawHostBytes.Slice(checked((int)(srcOffset * size)), checked((int)(count * size)))
            .CopyTo(dst.RawHostBytes[checked((int)(dstOffset * size))..]);
    }

    public void SiluForward(Tensor x, Tensor y) => Activation.SiluForwardCpu<float>(x.F32, y.F32);

    public void SiluBackward(Tensor dY, Tensor x, Tensor dX) => Activation.SiluBackwardCpu<float>(dY.F32, x.F32, dX.F32);

    public void SwiGluForward(Tensor gate, Tensor up, Tensor y) => Activation.SwiGluForwardCpu<float>(gate.F32, up.F32, y.F32);

    public void SwiGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) =>
        Activation.SwiGluBackwardCpu<float>(dY.F32, gate.F32, up.F32, dGate.F32, dUp.F32);

    public void GeGluForward(Tensor gate, Tensor up, Tensor y) => Activation.GeGluForwardCpu<float>(gate.F32, up.F32, y.F32);

    public void GeGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) =>
        Activation.GeGluBackwardCpu<float>(dY.F32, gate.F32, up.F32, dGate.F32, dUp.F32);

    public void Cast(Tensor x, Tensor y)
    {
        switch (x.DType, y.DType)
        {
            case (DType.F32, DType.BF16): K.Cast.ToBf16Cpu(x.F32, y.Span<ushort>()); break;
            case (DType.F32, DType.F16): K.Cast.ToF16Cpu(x.F32, y.Span<ushort>()); break;
            case (DType.BF16, DType.F32): K.Cast.FromBf16Cpu(x.Span<ushort>(), y.F32); break;
            case (DType.F16, DType.F32): K.Cast.FromF16Cpu(x.Span<ushort>(), y.F32); break;
            default: throw new NotSupportedException($"cast: {x.DType} -> {y.DType} (go through F32)");
        }
    }

    public void ColumnGatherForward(Tensor x, Tensor index, Tensor y)
    {
        int inCols = x.Dim(-1), outCols = index.Dim(0);
        K.ColumnGather.ForwardCpu<float>(x.F32, index.I32, (int)(x.Length / inCols), inCols, outCols, y.F32);
    }

    public void ColumnGatherBackward(Tensor dY, Tensor index, Tensor dX)
    {
        int inCols = dX.Dim(-1), outCols = index.Dim(0);
        K.ColumnGather.BackwardCpu<float>(dY.F32, index.I32, (int)(dX.Length / inCols), inCols, outCols, dX.F32);
    }

    public void Dropout(Tensor x, float p, ulong seed, Tensor y) => K.Dropout.ForwardCpu<float>(x.F32, p, seed, y.F32);

    public void EmbeddingForward(Tensor ids, Tensor table, Tensor y)
    {
        int hidden = table.Dim(1);
        if (table.DType == DType.F32) K.Embedding.ForwardCpu<float>(ids.I32, table.F32, hidden, y.F32);
        else K.Embedding.ForwardHalfCpu(ids.I32, table.Span<ushort>(), Precision.HalfOf(table.DType), hidden, y.F32);
    }

    public void EmbeddingBackward(Tensor dY, Tensor ids, Tensor dTable) =>
        K.Embedding.BackwardCpu<float>(dY.F32, ids.I32, dTable.Dim(1), dTable.F32);

    public void RmsNormForward(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        int dim = weight.Dim(0);
        K.RmsNorm.ForwardCpu<float>(x.F32, weight.F32, (int)(x.Length / dim), dim, eps, y.F32, rstd.F32);
    }

    public void RmsNormBackward(Tensor dY, Tensor x, Tensor weight, Tensor rstd, Tensor dX, Tensor dW)
    {
        int dim = weight.Dim(0);
        K.RmsNorm.BackwardCpu<float>(dY.F32, x.F32, weight.F32, rstd.F32, (int)(x.Length / dim), dim, dX.F32, dW.F32);
    }

    public void RopeForward(Tensor x, Tensor cos, Tensor sin, int heads, int headDim, Tensor y) =>
        K.Rope.ForwardCpu<float>(x.F32, cos.F32, sin.F32, Tokens(x, heads, headDim), heads, headDim, y.F32);

    public void RopeBackward(Tensor dY, Tensor cos, Tensor sin, int heads, int headDim, Tensor dX) =>
        K.Rope.BackwardCpu<float>(dY.F32, cos.F32, sin.F32, Tokens(dY, heads, headDim), heads, headDim, dX.F32);

    internal static int Tokens(Tensor x, int heads, int headDim) => (int)(x.Length / ((long)heads * headDim));

    public void CrossEntropyForward(Tensor logits, Tensor targets, Tensor lossPerRow, Tensor logSumExp)
    {
        int vocab = logits.Dim(-1);
        K.CrossEntropy.ForwardCpu<float>(logits.F32, targets.I32, (int)(logits.Length / vocab), vocab, lossPerRow.F32, logSumExp.F32);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, Tensor logSumExp, float gradScale, Tensor dLogits)
    {
        int vocab = logits.Dim(-1);
        K.CrossEntropy.BackwardCpu<float>(logits.F32, targets.I32, logSumExp.F32, (int)(logits.Length / vocab), vocab, gradScale, dLogits.F32);
    }

    public void MatMul(GemmLayout layout, MatMulShape s, Tensor a, Tensor b, Tensor? bias, float alpha, bool accumulate, Tensor c)
    {
        if (a.DType == DType.F32 && b.DType is (DType.BF16 or DType.F16) && c.DType == DType.F32)
            MatMulHalfWeight(layout, s, a, b, alpha, accumulate, c);
        else if (a.DType != DType.F32 || b.DType != DType.F32 || c.DType != DType.F32)
            throw new NotSupportedException($"matmul: the managed CPU path multiplies in F32 (b may be a frozen 16-bit weight), not {a.DType} x {b.DType} -> {c.DType}");
        else switch (layout)
        {
            case GemmLayout.NT: K.MatMul.NTCpu<float>(a.F32, b.F32, s.M, s.N, s.K, alpha, accumulate, c.F32); break;
            case GemmLayout.NN: K.MatMul.NNCpu<float>(a.F32, b.F32, s.M, s.N, s.K, alpha, accumulate, c.F32); break;
            default: K.MatMul.TNCpu<float>(a.F32, b.F32, s.M, s.N, s.K, alpha, accumulate, c.F32); break;
        }
        if (bias is not null) Elementwise.AddBiasCpu<float>(c.F32, bias.F32, s.M, s.N, c.F32);
    }

    public double LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale, Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        bool record = dH is not null || dW is not null;
        double sum = 0;
        using var logits = Tensor.Empty(h.Device, DType.F32, chunk, vocab);
        using var lossRows = Tensor.Empty(h.Device, DType.F32, chunk);
        using var lse = Tensor.Empty(h.Device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = h.F32.Slice(r0 * hidden, n * hidden);
            var lg = logits.F32[..(n * vocab)];
            var tg = targets.I32.Slice(r0, n);
            WeightProduct(GemmLayout.NT, hc, weight, n, vocab, hidden, lg);
            K.CrossEntropy.ForwardCpu<float>(lg, tg, n, vocab, lossRows.F32, lse.F32);
            foreach (var l in lossRows.F32[..n]) sum += l;
            if (!record) continue;
            K.CrossEntropy.BackwardCpu<float>(lg, tg, lse.F32, n, vocab, gradScale, lg);
            if (dH is not null) WeightProduct(GemmLayout.NN, lg, weight, n, hidden, vocab, dH.F32.Slice(r0 * hidden, n * hidden));
            if (dW is not null) K.MatMul.TNCpu<float>(lg, hc, vocab, hidden, n, 1f, true, dW.F32);
        }
        return sum;
    }

    public void LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, Tensor logp)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        using var logits = Tensor.Empty(h.Device, DType.F32, chunk, vocab);
        using var lse = Tensor.Empty(h.Device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var lg = logits.F32[..(n * vocab)];
            WeightProduct(GemmLayout.NT, h.F32.Slice(r0 * hidden, n * hidden), weight, n, vocab, hidden, lg);
            K.SequenceLogProb.ForwardCpu<float>(lg, targets.I32.Slice(r0, n), n, vocab, logp.F32.Slice(r0, n), lse.F32);
        }
    }

    public void LinearLogProbsBackward(Tensor h, Tensor weight, Tensor targets, Tensor dLogp, int chunk, Precision precision, Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        using var logits = Tensor.Empty(h.Device, DType.F32, chunk, vocab);
        using var lse = Tensor.Empty(h.Device, DType.F32, chunk);
        using var unused = Tensor.Empty(h.Device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = h.F32.Slice(r0 * hidden, n * hidden);
            var lg = logits.F32[..(n * vocab)];
            var tg = targets.I32.Slice(r0, n);
            WeightProduct(GemmLayout.NT, hc, weight, n, vocab, hidden, lg);
            K.SequenceLogProb.ForwardCpu<float>(lg, tg, n, vocab, unused.F32, lse.F32);
            K.SequenceLogProb.BackwardCpu<float>(lg, tg, lse.F32, dLogp.F32.Slice(r0, n), n, vocab, lg);
            if (dH is not null) WeightProduct(GemmLayout.NN, lg, weight, n, hidden, vocab, dH.F32.Slice(r0 * hidden, n * hidden));
            if (dW is not null) K.MatMul.TNCpu<float>(lg, hc, vocab, hidden, n, 1f, true, dW.F32);
        }
    }

    // The reference keeps q, k, v and the segments; backward recomputes each softmax row (as flash does).
    public AttentionSaved? AttentionForward(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? segments, bool segmentsSorted,
        Precision precision, Tensor o, bool keep)
    {
        K.Attention.ForwardCpu<float>(q.F32, k.F32, v.F32, segments is null ? ReadOnlySpan<int>.Empty : segments.I32, Sizes(s), o.F32,
            default);
        return keep ? new AttentionSaved(s, "reference", q.Alias(), k.Alias(), v.Alias(), segments?.Alias()) : null;
    }

    public void AttentionBackward(AttentionSaved saved, Tensor dO, Tensor dQ, Tensor dK, Tensor dV)
    {
        var (s, t) = (saved.Shape, saved.Tensors);
        K.Attention.BackwardCpu<float>(dO.F32, t[0]!.F32, t[1]!.F32, t[2]!.F32, t[3] is null ? ReadOnlySpan<int>.Empty : t[3]!.I32,
            Sizes(s),
            dQ.F32, dK.F32, dV.F32);
    }

    internal static K.Attention.Sizes Sizes(AttentionShape s) =>
        new(s.Batch, s.Seq, s.NumHeads, s.NumKvHeads, s.HeadDim, Window: s.SlidingWindow, Scale: s.Scale);

    public void AttentionWithCache(Tensor q, Tensor keys, Tensor values, int start, int numHeads, int numKvHeads, int headDim, Tensor o,
        int slidingWindow = 0, float? scale = null)
    {
        int n = Tokens(q, numHeads, headDim);
        using var probs = Tensor.Empty(q.Device, DType.F32, n, numHeads, start + n);
        K.Attention.ForwardWithCacheCpu<float>(q.F32, keys.F32, values.F32, start, n, numHeads, numKvHeads, headDim, probs.F32, o.F32,
            slidingWindow, scale);
    }

    public void Nf4Quantize(Tensor x, int blockSize, QuantType type, Tensor packed, Tensor absmax) =>
        Nf4Codec.QuantizeCpu(x.F32, blockSize, type, packed.Span<byte>(), absmax.F32);

    public void Nf4DoubleQuantize(Tensor absmax, Tensor code8, Tensor qabsmax, Tensor absmax2, Tensor offset) =>
        offset.F32[0] = Nf4Codec.DoubleQuantizeCpu(absmax.F32, code8.F32, qabsmax.Span<byte>(), absmax2.F32);

    public void Nf4Dequantize(Nf4Weight w, Tensor y)
    {
        var absmax = w.Absmax?.F32.ToArray() ?? new float[w.Blocks];
        if (w.DoubleQuant) Nf4Codec.DequantizeAbsmaxCpu(w.QAbsmax!.Span<byte>(), w.Absmax2!.F32, w.Offset!.F32[0], w.Code8!.F32, absmax);
        var packed = w.Packed.Span<byte>();
        switch (y.DType)
        {
            case DType.F32: Nf4Codec.DequantizeCpu(packed, absmax, w.Code4.F32, w.BlockSize, y.F32); break;
            case DType.BF16: Nf4.DequantizeBf16Cpu(packed, absmax, w.Code4.F32, w.BlockSize, y.Span<ushort>()); break;
            default: Nf4.DequantizeF16Cpu(packed, absmax, w.Code4.F32, w.BlockSize, y.Span<ushort>()); break;
        }
    }

    public bool UnscaleAndCheck(IReadOnlyList<Tensor> grads, float factor)
    {
        bool found = false;
        foreach (var g in grads) found |= K.AdamW.UnscaleCpu(g.F32, factor);
        return found;
    }

    public double[] SumsOfSquares(IReadOnlyList<Tensor> grads)
    {
        var sums = new double[grads.Count];
        for (int i = 0; i < grads.Count; i++) sums[i] = K.AdamW.SumOfSquaresCpu<float>(grads[i].F32);
        return sums;
    }

    // Host memory is all the managed path has: paging does not apply.
    public IAdamWState CreateAdamWState(long total, bool paged, long pagedChunkElements) => new HostAdamWState(total);

    private sealed class HostAdamWState(long total) : IAdamWState
    {
        private readonly float[] _avg = new float[total], _avgSq = new float[total];

        public bool IsPaged => false;

        public void Step(IReadOnlyList<AdamWGroup> groups)
        {
            foreach (var (hyper, members) in groups)
                foreach (var (p, offset) in members)
                {
                    int off = checked((int)offset), n = checked((int)p.Length);
                    K.AdamW.StepCpu<float>(p.Grad!.F32, hyper, p.F32, _avg.AsSpan(off, n), _avgSq.AsSpan(off, n));
                }
        }

        public void Export(float[] avg, float[] avgSq)
        {
            _avg.CopyTo(avg, 0);
            _avgSq.CopyTo(avgSq, 0);
        }

        public void Import(float[] avg, float[] avgSq)
        {
            avg.CopyTo(_avg, 0);
            avgSq.CopyTo(_avgSq, 0);
        }

        public void Dispose()
        {
        }
    }
}
