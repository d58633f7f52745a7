// Ops.LinearLogProbs on ILGPU: per chunk of rows, logits = h·Wᵀ (fp32 MatMul, or tensor-core Gemm from 16-bit operands at
// a 16-bit precision), CrossEntropy.Forward for lse and -logp; the backward recomputes the chunk's logits and turns them
// into dLogits with SequenceLogProb.Backward(Half), then dH = dLogits·W and dW += dLogitsᵀ·h.
using K = IlgpuTune.Kernels;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend
{
    public void LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, Tensor logp)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        using var hb = precision.IsHalf ? Ops.CastRaw(h, precision.Matmul) : null;
        using var wb = !precision.IsHalf ? null : weight.DType == precision.Matmul ? weight.Alias() : Ops.CastRaw(weight, precision.Matmul);
        using var logits = Tensor.Empty(device, DType.F32, chunk, vocab);
        using var lse = Tensor.Empty(device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var lg = logits.F32View.SubView(0, (long)n * vocab);
            ChunkLogits(h, weight, hb, wb, precision, r0, n, lg);
            var lp = logp.F32View.SubView(r0, n);
            K.CrossEntropy.Forward(_k, lg, targets.I32View.SubView(r0, n), n, vocab, lp, lse.F32View);
            Elementwise.Scale(_k, lp, -1f, n, lp);
        }
    }

    public void LinearLogProbsBackward(Tensor h, Tensor weight, Tensor targets, Tensor dLogp, int chunk, Precision precision, Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        bool half = precision.IsHalf;
        using var hb = half ? Ops.CastRaw(h, precision.Matmul) : null;
        using var wb = !half ? null : weight.DType == precision.Matmul ? weight.Alias() : Ops.CastRaw(weight, precision.Matmul);
        using var logits = Tensor.Empty(device, DType.F32, chunk, vocab);
        using var dLogits = half ? Tensor.Empty(device, precision.Matmul, chunk, vocab) : null;
        using var lse = Tensor.Empty(device, DType.F32, chunk);
        using var unused = Tensor.Empty(device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var lg = logits.F32View.SubView(0, (long)n * vocab);
            var tg = targets.I32View.SubView(r0, n);
            var g = dLogp.F32View.SubView(r0, n);
            ChunkLogits(h, weight, hb, wb, precision, r0, n, lg);
            K.CrossEntropy.Forward(_k, lg, tg, n, vocab, unused.F32View, lse.F32View);
            var dHc = dH?.F32View.SubView((long)r0 * hidden, (long)n * hidden);
            if (half)
            {
                var dl = dLogits!.View<ushort>().SubView(0, (long)n * vocab);
                K.SequenceLogProb.BackwardHalf(_k, lg, tg, lse.F32View, g, n, vocab, precision.Half, dl);
                var hc = hb!.View<ushort>().SubView((long)r0 * hidden, (long)n * hidden);
                if (dHc is { } dh) Gemm.NN(_k, precision.Half, dl, wb!.View<ushort>(), default, n, hidden, vocab, 1f, false, dh);
                if (dW is not null) Gemm.TN(_k, precision.Half, dl, hc, default, vocab, hidden, n, 1f, true, dW.F32View);
            }
            else
            {
                K.SequenceLogProb.Backward(_k, lg, tg, lse.F32View, g, n, vocab, lg);
                var hc = h.F32View.SubView((long)r0 * hidden, (long)n * hidden);
                if (dHc is { } dh) K.MatMul.NN(_k, lg, weight.F32View, n, hidden, vocab, 1f, false, dh);
                if (dW is not null) K.MatMul.TN(_k, lg, hc, vocab, hidden, n, 1f, true, dW.F32View);
            }
        }
    }

    // logits[n, vocab] of rows [r0, r0 + n): fp32 from h and weight, or tensor cores from their 16-bit copies hb, wb.
    private void ChunkLogits(Tensor h, Tensor weight, Tensor? hb, Tensor? wb, Precision precision, int r0, int n, ILGPU.ArrayView<float> logits)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1);
        if (hb is null) K.MatMul.NT(_k, h.F32View.SubView((long)r0 * hidden, (long)n * hidden), weight.F32View, n, vocab, hidden, 1f, false, logits);
        else Gemm.NT(_k, precision.Half, hb.View<ushort>().SubView((long)r0 * hidden, (long)n * hidden), wb!.View<ushort>(), default, n, vocab, hidden,
            1f, false, logits);
    }
}
