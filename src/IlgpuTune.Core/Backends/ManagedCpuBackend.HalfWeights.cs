// Frozen 16-bit weights on the managed CPU path: the weight stays BF16/F16 as stored (often a view of the mapped
// safetensors file) and each product widens one weight row at a time into a small fp32 buffer, then runs the very
// TensorPrimitives calls of the fp32 references (MatMul.NTCpu / NNCpu) on it, so the results are bit-for-bit those of
// expanding the whole weight to fp32 first, at half (bf16) the memory and without a model-sized copy.
using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using K = IlgpuTune.Kernels;

namespace IlgpuTune.Core;

internal sealed partial class ManagedCpuBackend
{
    private const int HalfRowBlock = 16;   // rows of a per task: each widened weight row is used this many times
    private const int HalfColBlock = 64;   // weight rows (NT) per task: a decode step (m = 1) still spreads over the cores
    private const int HalfNNColBlock = 1024; // output columns (NN) per task
    private const long HalfParallelWork = 100_000;

    /// <summary>c = alpha·op(a)·op(b) (+ c) for an F32 a and a 16-bit frozen b: NT (a[M,K], b[N,K]) or NN (a[M,K], b[K,N]).</summary>
    private static void MatMulHalfWeight(GemmLayout layout, MatMulShape s, Tensor a, Tensor b, float alpha, bool accumulate, Tensor c)
    {
        var half = Precision.HalfOf(b.DType);
        switch (layout)
        {
            case GemmLayout.NT: NTHalfB(a.F32, b.Span<ushort>(), half, s.M, s.N, s.K, alpha, accumulate, c.F32); break;
            case GemmLayout.NN: NNHalfB(a.F32, b.Span<ushort>(), half, s.M, s.N, s.K, alpha, accumulate, c.F32); break;
            default: throw new NotSupportedException($"matmul: a {b.DType} weight {b.Name} is frozen; TN (a weight gradient) needs F32");
        }
    }

    // The fused output projections' products with the head weight [vocab, hidden], F32 or a frozen 16-bit one:
    // NT: a[m,k]·weightᵀ -> c[m,n]; NN: a[m,k]·weight -> c[m,n] (overwritten).
    private static void WeightProduct(GemmLayout layout, ReadOnlySpan<float> a, Tensor weight, int m, int n, int k, Span<float> c)
    {
        if (weight.DType == DType.F32)
        {
            if (layout == GemmLayout.NT) K.MatMul.NTCpu<float>(a, weight.F32, m, n, k, 1f, false, c);
            else K.MatMul.NNCpu<float>(a, weight.F32, m, n, k, 1f, false, c);
            return;
        }
        var half = Precision.HalfOf(weight.DType);
        if (layout == GemmLayout.NT) NTHalfB(a, weight.Span<ushort>(), half, m, n, k, 1f, false, c);
        else NNHalfB(a, weight.Span<ushort>(), half, m, n, k, 1f, false, c);
    }

    // a[m,k] F32, b[n,k] 16-bit -> c[m,n]: tasks over (16 rows of a) x (64 rows of b); each b row is widened once per task.
    private static unsafe void NTHalfB(ReadOnlySpan<float> a, ReadOnlySpan<ushort> b, HalfType half, int m, int n, int k,
        float alpha, bool accumulate, Span<float> c)
    {
        int rowBlocks = (m + HalfRowBlock - 1) / HalfRowBlock, colBlocks = (n + HalfColBlock - 1) / HalfColBlock;
        fixed (float* pa = a, pc = c)
        fixed (ushort* pb = b)
        {
            nint ia = (nint)pa, ib = (nint)pb, ic = (nint)pc;
            void Task(int t)
            {
                int r0 = t / colBlocks * HalfRowBlock, r1 = Math.Min(m, r0 + HalfRowBlock);
                int j0 = t % colBlocks * HalfColBlock, j1 = Math.Min(n, j0 + HalfColBlock);
                var buffer = ArrayPool<float>.Shared.Rent(k);
                var row = buffer.AsSpan(0, k);
                var av = new ReadOnlySpan<float>((void*)ia, m * k);
                var bv = new ReadOnlySpan<ushort>((void*)ib, n * k);
                var cv = new Span<float>((void*)ic, m * n);
                for (int j = j0; j < j1; j++)
                {
                    Widen(bv.Slice(j * k, k), half, row);
                    for (int i = r0; i < r1; i++)
                    {
                        float v = alpha * TensorPrimitives.Dot(av.Slice(i * k, k), row);
                        cv[i * n + j] = accumulate ? cv[i * n + j] + v : v;
                    }
                }
                ArrayPool<float>.Shared.Return(buffer);
            }
            Run(rowBlocks * colBlocks, (long)m * n * k, Task);
        }
    }

    // a[m,k] F32, b[k,n] 16-bit -> c[m,n]: C row i = Σ_p alpha·a[i,p]·B row p, p ascending (as AxpyRows), over tasks of
    // (16 rows of c) x (1024 columns); each task widens its piece of every b row once.
    private static unsafe void NNHalfB(ReadOnlySpan<float> a, ReadOnlySpan<ushort> b, HalfType half, int m, int n, int k,
        float alpha, bool accumulate, Span<float> c)
    {
        int rowBlocks = (m + HalfRowBlock - 1) / HalfRowBlock, colBlocks = (n + HalfNNColBlock - 1) / HalfNNColBlock;
        fixed (float* pa = a, pc = c)
        fixed (ushort* pb = b)
        {
            nint ia = (nint)pa, ib = (nint)pb, ic = (nint)pc;
            void Task(int t)
            {
                int r0 = t / colBlocks * HalfRowBlock, r1 = Math.Min(m, r0 + HalfRowBlock);
                int j0 = t % colBlocks * HalfNNColBlock, width = Math.Min(n, j0 + HalfNNColBlock) - j0;
                var buffer = ArrayPool<float>.Shared.Rent(width);
                var piece = buffer.AsSpan(0, width);
                var av = new ReadOnlySpan<float>((void*)ia, m * k);
                var bv = new ReadOnlySpan<ushort>((void*)ib, k * n);
                var cv = new Span<float>((void*)ic, m * n);
                if (!accumulate)
                    for (int i = r0; i < r1; i++) cv.Slice(i * n + j0, width).Clear();
                for (int p = 0; p < k; p++)
                {
                    Widen(bv.Slice(p * n + j0, width), half, piece);
                    for (int i = r0; i < r1; i++)
                    {
                        var ci = cv.Slice(i * n + j0, width);
                        TensorPrimitives.MultiplyAdd(piece, alpha * av[i * k + p], ci, ci);
                    }
                }
                ArrayPool<float>.Shared.Return(buffer);
            }
            Run(rowBlocks * colBlocks, (long)m * n * k, Task);
        }
    }

    private static void Run(int tasks, long work, Action<int> task)
    {
        if (work <= HalfParallelWork || tasks == 1)
            for (int t = 0; t < tasks; t++) task(t);
        else Parallel.For(0, tasks, task);
    }

    /// <summary>16-bit bits -> fp32, exact: bf16 is the top half of an fp32 (a 16-bit shift); f16 as System.Half widens.</summary>
    internal static void Widen(ReadOnlySpan<ushort> x, HalfType half, Span<float> y)
    {
        if (half == HalfType.Float16)
        {
            TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(x), y);
            return;
        }
        int i = 0;
        ref ushort src = ref MemoryMarshal.GetReference(x);
        ref float dst = ref MemoryMarshal.GetReference(y);
        if (Vector256.IsHardwareAccelerated)
            for (; i + Vector256<ushort>.Count <= x.Length; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref src, (nuint)i));
                Vector256.ShiftLeft(lo, 16).AsSingle().StoreUnsafe(ref dst, (nuint)i);
                Vector256.ShiftLeft(hi, 16).AsSingle().StoreUnsafe(ref dst, (nuint)(i + Vector256<uint>.Count));
            }
        for (; i < x.Length; i++) Unsafe.Add(ref dst, i) = HalfBits.Bf16ToFloat(Unsafe.Add(ref src, i));
    }
}
