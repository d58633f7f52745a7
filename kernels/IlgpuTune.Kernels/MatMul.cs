// Row-major fp32 matrix products in the three layouts training needs. accumulate: C += result (beta 1), else C = result.
//   NT: C[m,n] = alpha * A[m,k] · B[n,k]ᵀ   forward of a linear layer, y = x·Wᵀ
//   NN: C[m,n] = alpha * A[m,k] · B[k,n]    its input grad, dX = dY·W
//   TN: C[m,n] = alpha * A[k,m]ᵀ · B[k,n]   its weight grad, dW += dYᵀ·x
// So NT's backward is NN (dA) and TN (dB); NN and TN need no backward of their own in training.
// GPU: one shared-memory tiled kernel; a Layout of strides turns the three layouts into one body,
// A(i,p) = a[i*Ai + p*Ap] and B(p,j) = b[p*Bp + j*Bj]. Each 16x16 group computes one 16x16 tile of C, one element a
// thread. That is 256 OS threads per group on the CPU accelerator, so tests keep m and n near one or two tiles.
// CPU: TensorPrimitives rows (Dot for NT, axpy for NN and TN) in blocks of rows, over Parallel.For when the product
// is large; it is the CPU training path, not only a test oracle.
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class MatMul
{
    const int Tile = 16;
    const int Pad = Tile + 1; // padded tile rows: the transposed tile stores hit distinct shared-memory banks

    /// <summary>Element strides of A(i,p) and B(p,j) in their flat views.</summary>
    internal readonly struct Layout(long ai, long ap, long bp, long bj)
    {
        public readonly long Ai = ai, Ap = ap, Bp = bp, Bj = bj;
    }

    // ---- device kernel: grid (n/16, m/16) of 16x16 groups ----

    static void TiledKernel(FloatView a, FloatView b, int m, int n, int kDim, Layout s, float alpha, int accumulate, FloatView c)
    {
        var aTile = SharedMemory.Allocate<float>(Tile * Pad); // aTile[r*Pad + q] = A(i0 + r, p0 + q)
        var bTile = SharedMemory.Allocate<float>(Tile * Pad); // bTile[q*Pad + col] = B(p0 + q, j0 + col)
        int tx = Group.IdxX, ty = Group.IdxY;
        int i0 = Grid.IdxY * Tile, j0 = Grid.IdxX * Tile;
        float acc = 0f;
        for (int p0 = 0; p0 < kDim; p0 += Tile)
        {
            // Consecutive lanes (tx) read consecutive addresses: along whichever index has stride 1.
            if (s.Ap == 1) aTile[ty * Pad + tx] = Load(a, i0 + ty, p0 + tx, m, kDim, s.Ai, s.Ap);
            else aTile[tx * Pad + ty] = Load(a, i0 + tx, p0 + ty, m, kDim, s.Ai, s.Ap);
            if (s.Bj == 1) bTile[ty * Pad + tx] = Load(b, p0 + ty, j0 + tx, kDim, n, s.Bp, s.Bj);
            else bTile[tx * Pad + ty] = Load(b, p0 + tx, j0 + ty, kDim, n, s.Bp, s.Bj);
            Group.Barrier();
            for (int q = 0; q < Tile; q++) acc += aTile[ty * Pad + q] * bTile[q * Pad + tx];
            Group.Barrier();
        }
        int i = i0 + ty, j = j0 + tx;
        if (i < m && j < n)
        {
            long o = (long)i * n + j;
            c[o] = accumulate != 0 ? c[o] + alpha * acc : alpha * acc;
        }
    }

    // Zero outside the matrix, so tail tiles need no other special case.
    static float Load(FloatView v, int r, int col, int rows, int cols, long sR, long sC) =>
        r < rows && col < cols ? v[r * sR + col * sC] : 0f;

    // ---- launchers ----

    // a[m,k], b[n,k] -> c[m,n]
    public static void NT(KernelRegistry k, FloatView a, FloatView b, int m, int n, int kDim, float alpha, bool accumulate, FloatView c) =>
        Run(k, a, b, m, n, kDim, Strides(GemmLayout.NT, m, n, kDim), alpha, accumulate, c);

    // a[m,k], b[k,n] -> c[m,n]
    public static void NN(KernelRegistry k, FloatView a, FloatView b, int m, int n, int kDim, float alpha, bool accumulate, FloatView c) =>
        Run(k, a, b, m, n, kDim, Strides(GemmLayout.NN, m, n, kDim), alpha, accumulate, c);

    // a[k,m], b[k,n] -> c[m,n]
    public static void TN(KernelRegistry k, FloatView a, FloatView b, int m, int n, int kDim, float alpha, bool accumulate, FloatView c) =>
        Run(k, a, b, m, n, kDim, Strides(GemmLayout.TN, m, n, kDim), alpha, accumulate, c);

    /// <summary>The element strides of a layout (the kernel's Layout argument).</summary>
    internal static Layout Strides(GemmLayout layout, int m, int n, int kDim) => layout switch
    {
        GemmLayout.NT => new Layout(kDim, 1, 1, kDim),
        GemmLayout.NN => new Layout(kDim, 1, n, 1),
        _ => new Layout(1, m, n, 1),
    };

    /// <summary>matmul.tiled's shape: a 16x16 group per output tile, grid (n/16, m/16).</summary>
    internal static KernelConfig Plan(int m, int n) =>
        new(new Index2D((n + Tile - 1) / Tile, (m + Tile - 1) / Tile), new Index2D(Tile, Tile));

    static void Run(KernelRegistry k, FloatView a, FloatView b, int m, int n, int kDim, Layout s, float alpha, bool accumulate, FloatView c)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(kDim);
        Launch.Need(a, (long)m * kDim, nameof(a));
        Launch.Need(b, (long)kDim * n, nameof(b));
        Launch.Need(c, (long)m * n, nameof(c));
        if (m == 0 || n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, int, int, int, Layout, float, int, FloatView>>(
            new("matmul.tiled", TiledKernel));
        kernel(Plan(m, n), a, b, m, n, kDim, s, alpha, accumulate ? 1 : 0, c);
    }

    // ---- CPU reference (and CPU training path) ----

    const int RowBlock = 16;          // output rows per block: each B row is read once per block, not once per row
    const long ParallelWork = 100_000; // m*n*k above which blocks run on the thread pool

    delegate void RowBlockBody<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> c, int rowStart, int rowEnd);

    // a[m,k], b[n,k] -> c[m,n]
    public static void NTCpu<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, int m, int n, int kDim, T alpha, bool accumulate, Span<T> c)
        where T : IFloatingPointIeee754<T>
    {
        ForEachRowBlock(a[..(m * kDim)], b[..(n * kDim)], c[..(m * n)], m, (long)m * n * kDim, (a, b, c, r0, r1) =>
        {
            for (int j = 0; j < n; j++)
            {
                var bj = b.Slice(j * kDim, kDim);
                for (int i = r0; i < r1; i++)
                {
                    T v = alpha * TensorPrimitives.Dot(a.Slice(i * kDim, kDim), bj);
                    c[i * n + j] = accumulate ? c[i * n + j] + v : v;
                }
            }
        });
    }

    // a[m,k], b[k,n] -> c[m,n]
    public static void NNCpu<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, int m, int n, int kDim, T alpha, bool accumulate, Span<T> c)
        where T : IFloatingPointIeee754<T> =>
        AxpyRows(a[..(m * kDim)], kDim, 1, b, m, n, kDim, alpha, accumulate, c);

    // a[k,m], b[k,n] -> c[m,n]
    public static void TNCpu<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, int m, int n, int kDim, T alpha, bool accumulate, Span<T> c)
        where T : IFloatingPointIeee754<T> =>
        AxpyRows(a[..(kDim * m)], 1, m, b, m, n, kDim, alpha, accumulate, c);

    // C row i = sum_p alpha * A(i,p) * B row p, with A(i,p) = a[i*sAi + p*sAp] and B[k,n] row-major.
    static void AxpyRows<T>(ReadOnlySpan<T> a, int sAi, int sAp, ReadOnlySpan<T> b, int m, int n, int kDim, T alpha, bool accumulate,
        Span<T> c) where T : IFloatingPointIeee754<T>
    {
        ForEachRowBlock(a, b[..(kDim * n)], c[..(m * n)], m, (long)m * n * kDim, (a, b, c, r0, r1) =>
        {
            if (!accumulate) c[(r0 * n)..(r1 * n)].Clear();
            for (int p = 0; p < kDim; p++)
            {
                var bp = b.Slice(p * n, n);
                for (int i = r0; i < r1; i++)
                {
                    var ci = c.Slice(i * n, n);
                    TensorPrimitives.MultiplyAdd(bp, alpha * a[i * sAi + p * sAp], ci, ci);
                }
            }
        });
    }

    static unsafe void ForEachRowBlock<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> c, int m, long work, RowBlockBody<T> body)
    {
        int blocks = (m + RowBlock - 1) / RowBlock;
        if (work <= ParallelWork)
        {
            for (int blk = 0; blk < blocks; blk++) body(a, b, c, blk * RowBlock, Math.Min(m, (blk + 1) * RowBlock));
            return;
        }
        // A lambda cannot capture spans: pin them and rebuild them on each worker.
        fixed (byte* pa = &Bytes(a), pb = &Bytes(b), pc = &Bytes(c))
        {
            nint ia = (nint)pa, ib = (nint)pb, ic = (nint)pc;
            int la = a.Length, lb = b.Length, lc = c.Length;
            Parallel.For(0, blocks, blk => body(new ReadOnlySpan<T>((void*)ia, la), new ReadOnlySpan<T>((void*)ib, lb),
                new Span<T>((void*)ic, lc), blk * RowBlock, Math.Min(m, (blk + 1) * RowBlock)));
        }
    }

    static ref byte Bytes<T>(ReadOnlySpan<T> s) => ref Unsafe.As<T, byte>(ref MemoryMarshal.GetReference(s));
}
