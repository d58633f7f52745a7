// The ILGPU backend: every op is its launcher from kernels/IlgpuTune.Kernels/<Op>.cs, on CUDA or on ILGPU's CPU
// accelerator (the emulator the kernel tests run on). Matrix products take fp32 (MatMul) or 16-bit tensor-core (Gemm)
// operands; attention is FlashAttention-2 (fp32, or FlashAttentionHalf on tensor cores at a 16-bit precision).
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using K = IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend(Device device, KernelRegistry kernels) : IOpBackend
{
    private readonly KernelRegistry _k = kernels;

    public void Fill(Tensor y, float value) => Elementwise.Fill(_k, value, (int)y.Length, y.F32View);

    public void Accumulate(Tensor x, Tensor y) => Elementwise.Accumulate(_k, x.F32View, (int)x.Length, y.F32View);

    public void Add(Tensor a, Tensor b, Tensor y) => Elementwise.Add(_k, a.F32View, b.F32View, a.Length, y.F32View);

    public void Mul(Tensor a, Tensor b, Tensor y) => Elementwise.Mul(_k, a.F32View, b.F32View, (int)a.Length, y.F32View);

    public void Scale(Tensor x, float alpha, Tensor y) => Elementwise.Scale(_k, x.F32View, alpha, (int)x.Length, y.F32View);

    public void SumRows(Tensor dY, Tensor dBias)
    {
        int cols = dBias.Dim(0);
        Elementwise.SumRows(_k, dY.F32View, (int)(dY.Length / cols), cols, dBias.F32View);
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        long size = src.DType.Size();
        if (count == 0) return;
        src.RawDeviceBytes.SubView(srcOffset * size, count * size).CopyTo(_k.Stream, dst.RawDeviceBytes.SubView(dstOffset * size, count * size));
    }

    public void GeGluForward(Tensor gate, Tensor up, Tensor y) => Activation.GeGluForward(_k, gate.F32View, up.F32View, gate.Length, y.F32View);

    public void GeGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) =>
        Activation.GeGluBackward(_k, dY.F32View, gate.F32View, up.F32View, gate.Length, dGate.F32View, dUp.F32View);

    public void SiluForward(Tensor x, Tensor y) => Activation.SiluForward(_k, x.F32View, (int)x.Length, y.F32View);

    public void SiluBackward(Tensor dY, Tensor x, Tensor dX) => Activation.SiluBackward(_k, dY.F32View, x.F32View, (int)x.Length, dX.F32View);

    public void SwiGluForward(Tensor gate, Tensor up, Tensor y) =>
        Activation.SwiGluForward(_k, gate.F32View, up.F32View, (int)gate.Length, y.F32View);

    public void SwiGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) =>
        Activation.SwiGluBackward(_k, dY.F32View, gate.F32View, up.F32View, (int)gate.Length, dGate.F32View, dUp.F32View);

    public void Cast(Tensor x, Tensor y)
    {
        int n = (int)x.Length;
        switch (x.DType, y.DType)
        {
            case (DType.F32, DType.BF16): K.Cast.ToBf16(_k, x.F32View, n, y.View<ushort>()); break;
            case (DType.F32, DType.F16): K.Cast.ToF16(_k, x.F32View, n, y.View<ushort>()); break;
            case (DType.BF16, DType.F32): K.Cast.FromBf16(_k, x.View<ushort>(), n, y.F32View); break;
            case (DType.F16, DType.F32): K.Cast.FromF16(_k, x.View<ushort>(), n, y.F32View); break;
            default: throw new NotSupportedException($"cast: {x.DType} -> {y.DType} (go through F32)");
        }
    }

    public void ColumnGatherForward(Tensor x, Tensor index, Tensor y)
    {
        int inCols = x.Dim(-1), outCols = index.Dim(0);
        K.ColumnGather.Forward(_k, x.F32View, index.I32View, (int)(x.Length / inCols), inCols, outCols, y.F32View);
    }

    public void ColumnGatherBackward(Tensor dY, Tensor index, Tensor dX)
    {
        int inCols = dX.Dim(-1), outCols = index.Dim(0);
        K.ColumnGather.Backward(_k, dY.F32View, index.I32View, (int)(dX.Length / inCols), inCols, outCols, dX.F32View);
    }

    public void Dropout(Tensor x, float p, ulong seed, Tensor y) => K.Dropout.Forward(_k, x.F32View, x.Length, p, seed, y.F32View);

    public void EmbeddingForward(Tensor ids, Tensor table, Tensor y)
    {
        int hidden = table.Dim(1), tokens = (int)ids.Length;
        if (table.DType == DType.F32) K.Embedding.Forward(_k, ids.I32View, table.F32View, tokens, hidden, y.F32View);
        else K.Embedding.ForwardHalf(_k, ids.I32View, table.View<ushort>(), Precision.HalfOf(table.DType), tokens, hidden, y.F32View);
    }

    public void EmbeddingBackward(Tensor dY, Tensor ids, Tensor dTable) =>
        K.Embedding.Backward(_k, dY.F32View, ids.I32View, (int)ids.Length, dTable.Dim(1), dTable.Dim(0), dTable.F32View);

    public void RmsNormForward(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        int dim = weight.Dim(0);
        K.RmsNorm.Forward(_k, x.F32View, weight.F32View, (int)(x.Length / dim), dim, eps, y.F32View, rstd.F32View);
    }

    public void RmsNormBackward(Tensor dY, Tensor x, Tensor weight, Tensor rstd, Tensor dX, Tensor dW)
    {
        int dim = weight.Dim(0);
        K.RmsNorm.Backward(_k, dY.F32View, x.F32View, weight.F32View, rstd.F32View, (int)(x.Length / dim), dim, dX.F32View, dW.F32View);
    }

    public void RopeForward(Tensor x, Tensor cos, Tensor sin, int heads, int headDim, Tensor y) =>
        K.Rope.Forward(_k, x.F32View, cos.F32View, sin.F32View, ManagedCpuBackend.Tokens(x, heads, headDim), heads, headDim, y.F32View);

    public void RopeBackward(Tensor dY, Tensor cos, Tensor sin, int heads, int headDim, Tensor dX) =>
        K.Rope.Backward(_k, dY.F32View, cos.F32View, sin.F32View, ManagedCpuBackend.Tokens(dY, heads, headDim), heads, headDim, dX.F32View);

    public void CrossEntropyForward(Tensor logits, Tensor targets, Tensor lossPerRow, Tensor logSumExp)
    {
        int vocab = logits.Dim(-1);
        K.CrossEntropy.Forward(_k, logits.F32View, targets.I32View, (int)(logits.Length / vocab), vocab, lossPerRow.F32View, logSumExp.F32View);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, Tensor logSumExp, float gradScale, Tensor dLogits)
    {
        int vocab = logits.Dim(-1);
        K.CrossEntropy.Backward(_k, logits.F32View, targets.I32View, logSumExp.F32View, (int)(logits.Length / vocab), vocab, gradScale,
            dLogits.F32View);
    }

    public void MatMul(GemmLayout layout, MatMulShape s, Tensor a, Tensor b, Tensor? bias, float alpha, bool accumulate, Tensor c)
    {
        if (a.DType == DType.F32)
        {
            if (b.DType != DType.F32 || c.DType != DType.F32)
                throw new NotSupportedException($"matmul: F32 x {b.DType} -> {c.DType}; fp32 products take and give F32");
            switch (layout)
            {
                case GemmLayout.NT: K.MatMul.NT(_k, a.F32View, b.F32View, s.M, s.N, s.K, alpha, accumulate, c.F32View); break;
                case GemmLayout.NN: K.MatMul.NN(_k, a.F32View, b.F32View, s.M, s.N, s.K, alpha, accumulate, c.F32View); break;
                default: K.MatMul.TN(_k, a.F32View, b.F32View, s.M, s.N, s.K, alpha, accumulate, c.F32View); break;
            }
            if (bias is not null) Elementwise.AddBias(_k, c.F32View, bias.F32View, s.M, s.N, c.F32View);
            return;
        }
        if (b.DType != a.DType) throw new NotSupportedException($"matmul: {a.DType} x {b.DType}; tensor cores take one 16-bit type");
        var half = Precision.HalfOf(a.DType);
        ArrayView<float> biasView = bias is null ? default : bias.F32View;
        if (c.DType == DType.F32)
            Gemm.Batched(_k, layout, half, a.View<ushort>(), b.View<ushort>(), biasView, 1, s.M, s.N, s.K, 0, 0, 0, alpha, accumulate, c.F32View);
        else
            Gemm.Run(_k, layout, half, a.View<ushort>(), b.View<ushort>(), biasView, s.M, s.N, s.K, alpha, accumulate, Precision.HalfOf(c.DType),
                c.View<ushort>());
    }

    public double LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale, Tensor? dH, Tensor? dW) =>
        precision.IsHalf
            ? LinearCrossEntropyHalf(h, weight, targets, chunk, precision, gradScale, dH, dW)
            : LinearCrossEntropyF32(h, weight, targets, chunk, gradScale, dH, dW);

    // Returns the summed loss; fills dH (overwritten per chunk) and dW (accumulated) when given.
    private double LinearCrossEntropyF32(Tensor h, Tensor weight, Tensor targets, int chunk, float gradScale, Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        bool record = dH is not null || dW is not null;
        double sum = 0;
        using var logits = Tensor.Empty(device, DType.F32, chunk, vocab);
        using var lossRows = Tensor.Empty(device, DType.F32, chunk);
        using var lse = Tensor.Empty(device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = h.F32View.SubView((long)r0 * hidden, (long)n * hidden);
            var lg = logits.F32View.SubView(0, (long)n * vocab);
            var tg = targets.I32View.SubView(r0, n);
            K.MatMul.NT(_k, hc, weight.F32View, n, vocab, hidden, 1f, false, lg);
            K.CrossEntropy.Forward(_k, lg, tg, n, vocab, lossRows.F32View, lse.F32View);
            foreach (var l in lossRows.ToFloatArray().AsSpan(0, n)) sum += l;
            if (!record) continue;
            K.CrossEntropy.Backward(_k, lg, tg, lse.F32View, n, vocab, gradScale, lg);
            if (dH is not null) K.MatMul.NN(_k, lg, weight.F32View, n, hidden, vocab, 1f, false, dH.F32View.SubView((long)r0 * hidden, (long)n * hidden));
            if (dW is not null) K.MatMul.TN(_k, lg, hc, vocab, hidden, n, 1f, true, dW.F32View);
        }
        return sum;
    }

    // Tensor-core path: logits = h·Wᵀ in fp32 from 16-bit operands, cross-entropy in fp32, dLogits written in 16 bits by the
    // backward kernel, then dH = dLogits·W and dW += dLogitsᵀ·h on tensor cores.
    private double LinearCrossEntropyHalf(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale,
        Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        var (dtype, half) = (precision.Matmul, precision.Half);
        bool record = dH is not null || dW is not null;
        double sum = 0;
        using var hb = Ops.CastRaw(h, dtype);
        using var wb = weight.DType == dtype ? weight.Alias() : Ops.CastRaw(weight, dtype);
        using var logits = Tensor.Empty(device, DType.F32, chunk, vocab);
        using var dLogits = record ? Tensor.Empty(device, dtype, chunk, vocab) : null;
        using var lossRows = Tensor.Empty(device, DType.F32, chunk);
        using var lse = Tensor.Empty(device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = hb.View<ushort>().SubView((long)r0 * hidden, (long)n * hidden);
            var lg = logits.F32View.SubView(0, (long)n * vocab);
            var tg = targets.I32View.SubView(r0, n);
            Gemm.NT(_k, half, hc, wb.View<ushort>(), default, n, vocab, hidden, 1f, false, lg);
            K.CrossEntropy.Forward(_k, lg, tg, n, vocab, lossRows.F32View, lse.F32View);
            foreach (var l in lossRows.ToFloatArray().AsSpan(0, n)) sum += l;
            if (dLogits is null) continue;
            var dl = dLogits.View<ushort>().SubView(0, (long)n * vocab);
            K.CrossEntropy.BackwardHalf(_k, lg, tg, lse.F32View, n, vocab, gradScale, half, dl);
            if (dH is not null)
                Gemm.NN(_k, half, dl, wb.View<ushort>(), default, n, hidden, vocab, 1f, false, dH.F32View.SubView((long)r0 * hidden, (long)n * hidden));
            if (dW is not null) Gemm.TN(_k, half, dl, hc, default, vocab, hidden, n, 1f, true, dW.F32View);
        }
        return sum;
    }

    public void Nf4Quantize(Tensor x, int blockSize, QuantType type, Tensor packed, Tensor absmax) =>
        Nf4.Quantize(_k, x.F32View, x.Length, blockSize, type, packed.View<byte>(), absmax.F32View);

    public void Nf4DoubleQuantize(Tensor absmax, Tensor code8, Tensor qabsmax, Tensor absmax2, Tensor offset) =>
        Nf4.DoubleQuantize(_k, absmax.F32View, code8.F32View, (int)absmax.Length, qabsmax.View<byte>(), absmax2.F32View, offset.F32View);

    public void Nf4Dequantize(Nf4Weight w, Tensor y)
    {
        var dtype = y.DType;
        if (w.DoubleQuant && dtype != DType.F32 && Nf4.DequantizeHalfNested(_k, w.Packed.View<byte>(), w.QAbsmax!.View<byte>(), w.Absmax2!.F32View,
                w.Offset!.F32View, w.Code8!.F32View, w.Code4.F32View, w.Length, w.BlockSize, dtype == DType.F16, y.View<ushort>()))
            return;
        int blocks = (int)w.Blocks;
        // The absmax of a double-quantized weight is rebuilt per use (bnb does the same): keeping it would cost 0.5 bit/weight.
        using var scratch = w.DoubleQuant ? Tensor.Empty(device, DType.F32, blocks) : null;
        if (w.DoubleQuant)
            Nf4.DequantizeAbsmax(_k, w.QAbsmax!.View<byte>(), w.Absmax2!.F32View, w.Offset!.F32View, w.Code8!.F32View, blocks, scratch!.F32View);
        var a = (scratch ?? w.Absmax!).F32View;
        switch (dtype)
        {
            case DType.F32: Nf4.Dequantize(_k, w.Packed.View<byte>(), a, w.Code4.F32View, w.Length, w.BlockSize, y.F32View); break;
            case DType.BF16: Nf4.DequantizeBf16(_k, w.Packed.View<byte>(), a, w.Code4.F32View, w.Length, w.BlockSize, y.View<ushort>()); break;
            default: Nf4.DequantizeF16(_k, w.Packed.View<byte>(), a, w.Code4.F32View, w.Length, w.BlockSize, y.View<ushort>()); break;
        }
    }

    public bool UnscaleAndCheck(IReadOnlyList<Tensor> grads, float factor)
    {
        using var flag = Tensor.Zeros(device, DType.F32, 1);
        K.AdamW.Unscale(_k, grads.Select(g => g.F32View).ToList(), factor, flag.F32View);
        return flag.Item() != 0f;
    }

    public double[] SumsOfSquares(IReadOnlyList<Tensor> grads)
    {
        var sums = new double[grads.Count];
        int per = K.AdamW.PartialsPerTensor(_k);
        using var partials = Tensor.Empty(device, DType.F32, grads.Count * per);
        K.AdamW.SumOfSquares(_k, grads.Select(g => g.F32View).ToList(), partials.F32View);
        var host = partials.ToFloatArray();
        for (int i = 0; i < grads.Count; i++)
            for (int j = 0; j < per; j++) sums[i] += host[i * per + j];
        return sums;
    }
}
