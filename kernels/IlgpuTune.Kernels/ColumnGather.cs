// Column gather: picks (and reorders) columns of a row-major matrix. Used to split InternLM2's fused wqkv output
// into q, k and v, whose columns interleave per key-value group.
//   x[rows, inCols], index[outCols] (int32) -> y[rows, outCols]:  y[r, c] = x[r, index[c]]
// Backward: dX[r, index[c]] += dY[r, c]. It ACCUMULATES, unlike other input grads: the q, k and v gathers of one
// wqkv output write disjoint columns of one shared dX, which the caller zeroes once.
// The kernels need the entries of one index distinct (true of every split): the backward then writes each dX
// element from one thread at most, without atomics. The CPU reference also sums repeated entries.
// Out-of-range entries: the kernels skip them (forward writes zero); the CPU references throw.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class ColumnGather
{
    // ---- device kernels: grid-stride over rows * outCols ----

    static void ForwardKernel(FloatView x, IntView index, int inCols, int outCols, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            long r = i / outCols;
            int src = index[i - r * outCols];
            y[i] = (uint)src < (uint)inCols ? x[r * inCols + src] : 0f;
        }
    }

    static void BackwardKernel(FloatView dY, IntView index, int inCols, int outCols, long n, FloatView dX)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            long r = i / outCols;
            int src = index[i - r * outCols];
            if ((uint)src < (uint)inCols) dX[r * inCols + src] += dY[i];
        }
    }

    // ---- launchers ----

    // x[rows, inCols], index[outCols] -> y[rows, outCols]
    public static void Forward(KernelRegistry k, FloatView x, IntView index, int rows, int inCols, int outCols, FloatView y)
    {
        long n = CheckSizes(x, index, rows, inCols, outCols, y);
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, int, int, long, FloatView>>(new("columngather.forward", ForwardKernel));
        kernel(Launch.Flat(k, n), x, index, inCols, outCols, n, y);
    }

    // dY[rows, outCols], index[outCols] -> dX[rows, inCols] (accumulates)
    public static void Backward(KernelRegistry k, FloatView dY, IntView index, int rows, int inCols, int outCols, FloatView dX)
    {
        long n = CheckSizes(dX, index, rows, inCols, outCols, dY);
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, IntView, int, int, long, FloatView>>(
            new("columngather.backward", BackwardKernel));
        kernel(Launch.Flat(k, n), dY, index, inCols, outCols, n, dX);
    }

    static long CheckSizes(FloatView wide, IntView index, int rows, int inCols, int outCols, FloatView narrow)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(inCols);
        ArgumentOutOfRangeException.ThrowIfNegative(outCols);
        Launch.Need(wide, (long)rows * inCols, "x or dX");
        Launch.Need(index, outCols, nameof(index));
        Launch.Need(narrow, (long)rows * outCols, "y or dY");
        return (long)rows * outCols;
    }

    // ---- CPU reference ----

    // x[rows, inCols], index[outCols] -> y[rows, outCols]
    public static void ForwardCpu<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> index, int rows, int inCols, int outCols, Span<T> y)
        where T : IFloatingPointIeee754<T>
    {
        CheckIndex(index[..outCols], inCols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < outCols; c++)
                y[r * outCols + c] = x[r * inCols + index[c]];
    }

    // dY[rows, outCols], index[outCols] -> dX[rows, inCols] (accumulates)
    public static void BackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<int> index, int rows, int inCols, int outCols, Span<T> dX)
        where T : IFloatingPointIeee754<T>
    {
        CheckIndex(index[..outCols], inCols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < outCols; c++)
                dX[r * inCols + index[c]] += dY[r * outCols + c];
    }

    static void CheckIndex(ReadOnlySpan<int> index, int inCols)
    {
        for (int c = 0; c < index.Length; c++)
            if ((uint)index[c] >= (uint)inCols)
                throw new ArgumentOutOfRangeException(nameof(index), index[c], $"index[{c}] = {index[c]} is outside the {inCols} input columns");
    }
}
