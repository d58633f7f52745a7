// Token embedding lookup (HF nn.Embedding as embed_tokens). T = tokens, H = hidden, V = vocab.
//   ids[T] (int32), table[V, H] -> y[T, H]:  y[t,:] = table[ids[t],:]
// Backward: dTable[ids[t],:] += dY[t,:]  (accumulates; ids carry no gradient). One thread per column j walks the
// tokens in order, so repeated ids add up deterministically without atomics; the cost is T sequential steps per thread.
// ForwardHalf: the same lookup from a frozen 16-bit table (bf16/f16 bits), widened exactly to fp32 (LoRA keeps the base,
// embeddings included, in 16 bits; a frozen table has no backward).
// Out-of-range ids: launchers cannot read device ids cheaply, so the kernels skip them (forward writes a zero row,
// backward adds nothing); the CPU references throw ArgumentOutOfRangeException naming the token position and id.
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class Embedding
{
    // ---- device kernels ----

    static void ForwardKernel(IntView ids, FloatView table, int hidden, int vocab, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            long t = i / hidden;
            int id = ids[t];
            y[i] = (uint)id < (uint)vocab ? table[(long)id * hidden + (i - t * hidden)] : 0f;
        }
    }

    static void ForwardHalfKernel(IntView ids, ArrayView<ushort> table, int hidden, int vocab, long n, int isF16, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            long t = i / hidden;
            int id = ids[t];
            if ((uint)id >= (uint)vocab)
            {
                y[i] = 0f;
                continue;
            }
            ushort h = table[(long)id * hidden + (i - t * hidden)];
            y[i] = isF16 != 0 ? Cast.F16ToFloat(h) : Cast.Bf16ToFloat(h);
        }
    }

    static void BackwardKernel(Index1D j, FloatView dY, IntView ids, int tokens, int hidden, int vocab, FloatView dTable)
    {
        for (int t = 0; t < tokens; t++)
        {
            int id = ids[t];
            if ((uint)id < (uint)vocab) dTable[(long)id * hidden + j] += dY[(long)t * hidden + j];
        }
    }

    // ---- launchers ----

    // ids[T], table[V, H] -> y[T, H]; V = table.Length / H
    public static void Forward(KernelRegistry k, IntView ids, FloatView table, int tokens, int hidden, FloatView y)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        long n = (long)tokens * hidden;
        Launch.Need(ids, tokens, nameof(ids)); Launch.Need(y, n, nameof(y));
        int vocab = (int)Math.Min(table.Length / hidden, int.MaxValue);
        var kernel = k.Get<Action<KernelConfig, IntView, FloatView, int, int, long, FloatView>>(new("embedding.forward", ForwardKernel));
        kernel(Launch.Flat(k, n), ids, table, hidden, vocab, n, y);
    }

    // ids[T], table[V, H] as 16-bit bits of `type` -> y[T, H] fp32
    public static void ForwardHalf(KernelRegistry k, IntView ids, ArrayView<ushort> table, HalfType type, int tokens, int hidden, FloatView y)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        long n = (long)tokens * hidden;
        Launch.Need(ids, tokens, nameof(ids)); Launch.Need(y, n, nameof(y));
        int vocab = (int)Math.Min(table.Length / hidden, int.MaxValue);
        var kernel = k.Get<Action<KernelConfig, IntView, ArrayView<ushort>, int, int, long, int, FloatView>>(
            new("embedding.forward_half", ForwardHalfKernel));
        kernel(Launch.Flat(k, n), ids, table, hidden, vocab, n, type == HalfType.Float16 ? 1 : 0, y);
    }

    // dY[T, H], ids[T] -> dTable[V, H] (accumulates)
    public static void Backward(KernelRegistry k, FloatView dY, IntView ids, int tokens, int hidden, int vocab, FloatView dTable)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfNegative(hidden);
        ArgumentOutOfRangeException.ThrowIfNegative(vocab);
        Launch.Need(dY, (long)tokens * hidden, nameof(dY)); Launch.Need(ids, tokens, nameof(ids));
        Launch.Need(dTable, (long)vocab * hidden, nameof(dTable));
        if (hidden == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, IntView, int, int, int, FloatView>>(new("embedding.backward", BackwardKernel));
        kernel(hidden, dY, ids, tokens, hidden, vocab, dTable);
    }

    // ---- CPU reference ----

    // ids[T], table[V, H] -> y[T, H]; T = ids.Length, V = table.Length / H
    public static void ForwardCpu<T>(ReadOnlySpan<int> ids, ReadOnlySpan<T> table, int hidden, Span<T> y) where T : IFloatingPointIeee754<T>
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        CheckIds(ids, table.Length / hidden);
        for (int t = 0; t < ids.Length; t++) table.Slice(ids[t] * hidden, hidden).CopyTo(y.Slice(t * hidden, hidden));
    }

    // ids[T], table[V, H] 16-bit bits of `type` -> y[T, H] fp32
    public static void ForwardHalfCpu(ReadOnlySpan<int> ids, ReadOnlySpan<ushort> table, HalfType type, int hidden, Span<float> y)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        CheckIds(ids, table.Length / hidden);
        for (int t = 0; t < ids.Length; t++)
        {
            var row = table.Slice(ids[t] * hidden, hidden);
            var dst = y.Slice(t * hidden, hidden);
            if (type == HalfType.Float16) Cast.FromF16Cpu(row, dst);
            else Cast.FromBf16Cpu(row, dst);
        }
    }

    // dY[T, H], ids[T] -> dTable[V, H] (accumulates); V = dTable.Length / H
    public static void BackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<int> ids, int hidden, Span<T> dTable) where T : IFloatingPointIeee754<T>
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        CheckIds(ids, dTable.Length / hidden); // before any write, so a bad batch leaves dTable untouched
        for (int t = 0; t < ids.Length; t++)
        {
            var row = dTable.Slice(ids[t] * hidden, hidden);
            TensorPrimitives.Add(row, dY.Slice(t * hidden, hidden), row);
        }
    }

    static void CheckIds(ReadOnlySpan<int> ids, int vocab)
    {
        for (int t = 0; t < ids.Length; t++)
            if ((uint)ids[t] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[t], $"token {t} has id {ids[t]}, outside the vocabulary [0, {vocab})");
    }
}
