// Causal-LM cross-entropy as HF computes it: fp32 logits, ignore_index -100, mean over the supervised tokens.
//   logits[rows, vocab], targets[rows] (already shifted by the caller: row r predicts targets[r])
//   -> lossPerRow[rows] = lse[r] - logits[r, t]  (0 where t == -100), logSumExp[rows] = lse saved for backward.
// The caller sums lossPerRow on the host and divides by the number of supervised rows.
// Backward with gradScale = dLoss / count (overwrites dLogits; dLogits may be the logits buffer itself):
//   dLogits[r, c] = gradScale * (exp(logits[r, c] - lse[r]) - [c == t])   for supervised rows, 0 for ignored rows
// BackwardHalf writes the same dLogits rounded to bf16/f16 (nearest even): the 16-bit operand of the tensor-core GEMMs
// that follow in the fused linear + cross-entropy, without an fp32 dLogits pass.
// A kernel cannot throw, so kernels treat targets outside [0, vocab) as ignored; the CPU reference rejects them.
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class CrossEntropy
{
    public const int IgnoreIndex = -100;

    // ---- device kernels: one group per row, group reductions ----

    static void ForwardKernel(FloatView logits, IntView targets, int vocab, FloatView lossPerRow, FloatView logSumExp)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        long start = row * vocab;
        // One pass over the row (online softmax): each thread keeps its running max and its sum of exp(x - max),
        // rescaled when the max grows; the group then combines them against the row max.
        float max = float.NegativeInfinity, sum = 0f;
        for (int c = Group.IdxX; c < vocab; c += Group.DimX)
        {
            float x = logits[start + c];
            if (x > max)
            {
                sum = sum * MathF.Exp(max - x) + 1f;
                max = x;
            }
            else sum += MathF.Exp(x - max);
        }
        float rowMax = Reduce.GroupMax(max, scratch);
        float mine = max == float.NegativeInfinity ? 0f : sum * MathF.Exp(max - rowMax);
        float lse = rowMax + MathF.Log(Reduce.GroupSum(mine, scratch));
        if (Group.IdxX == 0)
        {
            int t = targets[row];
            logSumExp[row] = lse;
            lossPerRow[row] = t >= 0 && t < vocab ? lse - logits[start + t] : 0f;
        }
    }

    static void BackwardKernel(FloatView logits, IntView targets, FloatView logSumExp, int vocab, float gradScale, FloatView dLogits)
    {
        long row = Grid.IdxX;
        long start = row * vocab;
        int t = targets[row];
        bool supervised = t >= 0 && t < vocab;
        float lse = logSumExp[row];
        // Each thread reads an element before writing it, so dLogits may alias logits.
        for (int c = Group.IdxX; c < vocab; c += Group.DimX)
            dLogits[start + c] = DLogit(logits[start + c], lse, c == t, supervised, gradScale);
    }

    static float DLogit(float x, float lse, bool target, bool supervised, float gradScale) =>
        supervised ? gradScale * (MathF.Exp(x - lse) - (target ? 1f : 0f)) : 0f;

    static void BackwardHalfKernel(FloatView logits, IntView targets, FloatView logSumExp, int vocab, float gradScale, int isF16,
        ArrayView<ushort> dLogits)
    {
        long row = Grid.IdxX;
        long start = row * vocab;
        int t = targets[row];
        bool supervised = t >= 0 && t < vocab;
        float lse = logSumExp[row];
        for (int c = Group.IdxX; c < vocab; c += Group.DimX)
        {
            float d = DLogit(logits[start + c], lse, c == t, supervised, gradScale);
            dLogits[start + c] = isF16 != 0 ? Cast.FloatToF16(d) : Cast.FloatToBf16(d);
        }
    }

    // ---- launchers ----

    // logits[rows, vocab], targets[rows] -> lossPerRow[rows], logSumExp[rows]
    public static void Forward(KernelRegistry k, FloatView logits, IntView targets, int rows, int vocab, FloatView lossPerRow, FloatView logSumExp)
    {
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, int, FloatView, FloatView>>(new("crossentropy.forward", ForwardKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), logits, targets, vocab, lossPerRow, logSumExp);
    }

    // logits, dLogits[rows, vocab], targets[rows], logSumExp[rows]; dLogits is overwritten
    public static void Backward(KernelRegistry k, FloatView logits, IntView targets, FloatView logSumExp, int rows, int vocab, float gradScale,
        FloatView dLogits)
    {
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, FloatView, int, float, FloatView>>(
            new("crossentropy.backward", BackwardKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), logits, targets, logSumExp, vocab, gradScale, dLogits);
    }

    // logits[rows, vocab], targets[rows], logSumExp[rows] -> dLogits[rows, vocab] as 16-bit bits of `type`
    public static void BackwardHalf(KernelRegistry k, FloatView logits, IntView targets, FloatView logSumExp, int rows, int vocab,
        float gradScale, HalfType type, ArrayView<ushort> dLogits)
    {
        if (rows == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, FloatView, int, float, int, ArrayView<ushort>>>(
            new("crossentropy.backward_half", BackwardHalfKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), logits, targets, logSumExp, vocab, gradScale, type == HalfType.Float16 ? 1 : 0, dLogits);
    }

    // ---- CPU reference: the spec ----

    // logits[rows, vocab], targets[rows] -> lossPerRow[rows], logSumExp[rows]
    public static void ForwardCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<int> targets, int rows, int vocab, Span<T> lossPerRow, Span<T> logSumExp)
        where T : IFloatingPointIeee754<T>
    {
        var shifted = new T[vocab];
        for (int r = 0; r < rows; r++)
        {
            int t = Target(targets, r, vocab);
            var row = logits.Slice(r * vocab, vocab);
            T max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, shifted);
            TensorPrimitives.Exp<T>(shifted, shifted);
            T lse = max + T.Log(TensorPrimitives.Sum<T>(shifted));
            logSumExp[r] = lse;
            lossPerRow[r] = t == IgnoreIndex ? T.Zero : lse - row[t];
        }
    }

    // logits, dLogits[rows, vocab], targets[rows], logSumExp[rows]; dLogits is overwritten
    public static void BackwardCpu<T>(ReadOnlySpan<T> logits, ReadOnlySpan<int> targets, ReadOnlySpan<T> logSumExp, int rows, int vocab, T gradScale,
        Span<T> dLogits) where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
        {
            int t = Target(targets, r, vocab);
            var d = dLogits.Slice(r * vocab, vocab);
            if (t == IgnoreIndex)
            {
                d.Clear();
                continue;
            }
            TensorPrimitives.Subtract(logits.Slice(r * vocab, vocab), logSumExp[r], d);
            TensorPrimitives.Exp<T>(d, d);
            TensorPrimitives.Multiply<T>(d, gradScale, d);
            d[t] -= gradScale;
        }
    }

    // BackwardCpu in fp32, rounded to 16 bits
    public static void BackwardHalfCpu(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, ReadOnlySpan<float> logSumExp, int rows, int vocab,
        float gradScale, HalfType type, Span<ushort> dLogits)
    {
        var d = new float[(long)rows * vocab];
        BackwardCpu(logits, targets, logSumExp, rows, vocab, gradScale, d);
        if (type == HalfType.Float16) Cast.ToF16Cpu(d, dLogits);
        else Cast.ToBf16Cpu(d, dLogits);
    }

    static int Target(ReadOnlySpan<int> targets, int row, int vocab)
    {
        int t = targets[row];
        if (t != IgnoreIndex && (t < 0 || t >= vocab))
            throw new ArgumentOutOfRangeException(nameof(targets), t,
                $"targets[{row}] = {t} is outside [0, {vocab}) and is not the ignore index {IgnoreIndex}");
        return t;
    }
}
