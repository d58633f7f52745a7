// Per-token log-probabilities of the targets for preference losses (DPO, ORPO), fused with the chunked output projection
// so [tokens, vocab] logits are never resident: the forward is CrossEntropy.Forward's (logp = -lossPerRow, lse saved),
// the backward recomputes a chunk's logits and turns them into dLogits with a gradient per row instead of one scale:
//   logp[r] = logits[r, t] - lse[r]                           (0 where t == -100)
//   dLogits[r, c] = dLogp[r] * ([c == t] - exp(logits[r, c] - lse[r]))   for supervised rows, 0 for ignored rows
// The caller sums logp per sequence and hands back dLogp[r] = dLoss/dlogp(sequence of r) (/ tokens for a mean log-prob).
// BackwardHalf writes the same dLogits rounded to bf16/f16, the operand of the tensor-core GEMMs that follow.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class SequenceLogProb
{
    // ---- device kernels: one group per row ----

    // Each thread reads an element before writing it, so dLogits may alias logits.
    static void BackwardKernel(FloatView logits, IntView targets, FloatView logSumExp, FloatView dLogp, int vocab, FloatView dLogits)
    {
        long row = Grid.IdxX;
        long start = row * vocab;
        int t = targets[row];
        bool supervised = t >= 0 && t < vocab;
        float lse = logSumExp[row], g = dLogp[row];
        for (int c = Group.IdxX; c < vocab; c += Group.DimX)
            dLogits[start + c] = DLogit(logits[start + c], lse, c == t, supervised, g);
    }

    static float DLogit(float x, float lse, bool target, bool supervised, float g) =>
        supervised ? g * ((target ? 1f : 0f) - MathF.Exp(x - lse)) : 0f;

    static void BackwardHalfKernel(FloatView logits, IntView targets, FloatView logSumExp, FloatView dLogp, int vocab, int isF16,
        ArrayView<ushort> dLogits)
    {
        long row = Grid.IdxX;
        long start = row * vocab;
        int t = targets[row];
        bool supervised = t >= 0 && t < vocab;
        float lse = logSumExp[row], g = dLogp[row];
        for (int c = Group.IdxX; c < vocab; c += Group.DimX)
        {
            float d = DLogit(logits[start + c], lse, c == t, supervised, g);
            dLogits[start + c] = isF16 != 0 ? Cast.FloatToF16(d) : Cast.FloatToBf16(d);
        }
    }

    // ---- launchers ----

    // logits, dLogits[rows, vocab], targets, logSumExp, dLogp[rows]; dLogits is overwritten (may be logits)
    public static void Backward(KernelRegistry k, FloatView logits, IntView targets, FloatView logSumExp, FloatView dLogp, int rows, int vocab,
        FloatView dLogits)
    {
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, FloatView, FloatView, int, FloatView>>(
            new("sequence_logprob.backward", BackwardKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), logits, targets, logSumExp, dLogp, vocab, dLogits);
    }

    // logits[rows, vocab], targets, logSumExp, dLogp[rows] -> dLogits[rows, vocab] as 16-bit bits of `type`
    public static void BackwardHalf(KernelRegistry k, FloatView logits, IntView targets, FloatView logSumExp, FloatView dLogp, int rows, int vocab,
        HalfType type, ArrayView<ushort> dLogits)
    {
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, FloatView, FloatView, int, int, ArrayView<ushort>>>(
            new("sequence_logprob.backward_half", BackwardHalfKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), logits, targets, logSumExp, dLogp, vocab, type == HalfType.Float16 ? 1 : 0, dLogits);
    }

    // ---- CPU reference: the spec ----

    // logits[rows, vocab], targets[rows] -> logp[rows], logSumExp[rows]
    public static void ForwardCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<int> targets, int rows, int vocab, Span<T> logp, Span<T> logSumExp)
        where T : IFloatingPointIeee754<T>
    {
        CrossEntropy.ForwardCpu(logits, targets, rows, vocab, logp, logSumExp);
        for (int r = 0; r < rows; r++) logp[r] = -logp[r];
    }

    // logits, dLogits[rows, vocab], targets, logSumExp, dLogp[rows]; dLogits is overwritten (may be logits)
    public static void BackwardCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<int> targets, ReadOnlySpan<T> logSumExp, ReadOnlySpan<T> dLogp,
        int rows, int vocab, Span<T> dLogits) where T : IFloatingPointIeee754<T>
    {
        // CrossEntropy's backward with gradScale = -dLogp[r], one row at a time.
        for (int r = 0; r < rows; r++)
            CrossEntropy.BackwardCpu(logits.Slice(r * vocab, vocab), targets.Slice(r, 1), logSumExp.Slice(r, 1), 1, vocab, -dLogp[r],
                dLogits.Slice(r * vocab, vocab));
    }

    // BackwardCpu in fp32, rounded to 16 bits
    public static void BackwardHalfCpu(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> dLogp,
        int rows, int vocab, HalfType type, Span<ushort> dLogits)
    {
        var d = new float[(long)rows * vocab];
        BackwardCpu(logits, targets, logSumExp, dLogp, rows, vocab, d);
        if (type == HalfType.Float16) Cast.ToF16Cpu(d, dLogits);
        else Cast.ToBf16Cpu(d, dLogits);
    }
}
