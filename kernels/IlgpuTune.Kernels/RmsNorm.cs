// RMSNorm over the last dim, HF LlamaRMSNorm numerics: normalize in fp32, cast to the input dtype, then * weight.
//   x[rows, dim], weight[dim] -> y[rows, dim]; rstd[rows] = 1/sqrt(mean(x^2) + eps) is saved for backward.
// Backward with n = x*rstd, g = dY*weight:
//   dX = rstd * (g - n * mean(g*n))          (overwrites dX)
//   dWeight += sum_rows dY * n                (column sums over row blocks, then over blocks: deterministic, no atomics)
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class RmsNorm
{
    // ---- device kernels: one group per row, group reductions ----

    // With `cached`, each thread keeps the elements it read in dynamic shared memory (the row, dim floats) and the second
    // pass reads them back from there instead of from global memory; rows too wide for 48 KB read twice.
    static void ForwardKernel(FloatView x, FloatView weight, int dim, float eps, int cached, FloatView y, FloatView rstd)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        var rowBuf = SharedMemory.GetDynamic<float>();
        long row = Grid.IdxX;
        long start = row * dim;
        float sumSq = 0f;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
        {
            float v = x[start + j];
            if (cached != 0) rowBuf[j] = v;
            sumSq += v * v;
        }
        float r = 1f / MathF.Sqrt(Reduce.GroupSum(sumSq, scratch) / dim + eps);
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
            y[start + j] = weight[j] * ((cached != 0 ? rowBuf[j] : x[start + j]) * r);
        if (Group.IdxX == 0) rstd[row] = r;
    }

    // `cached` as in the forward: dY and x of the row (2*dim floats) stay in shared memory for the second pass.
    static void BackwardInputKernel(FloatView dY, FloatView x, FloatView weight, FloatView rstd, int dim, int cached, FloatView dX)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        var rowBuf = SharedMemory.GetDynamic<float>();
        long row = Grid.IdxX;
        long start = row * dim;
        float r = rstd[row];
        float dot = 0f;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
        {
            float dy = dY[start + j], xv = x[start + j];
            if (cached != 0)
            {
                rowBuf[j] = dy;
                rowBuf[dim + j] = xv;
            }
            dot += dy * weight[j] * xv * r;
        }
        float mean = Reduce.GroupSum(dot, scratch) / dim;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
        {
            float dy = cached != 0 ? rowBuf[j] : dY[start + j];
            float n = (cached != 0 ? rowBuf[dim + j] : x[start + j]) * r;
            dX[start + j] = r * (dy * weight[j] - n * mean);
        }
    }

    // dWeight in two deterministic passes: partial column sums over blocks of WeightRows rows (threads along columns, so a
    // warp reads one row contiguously), then each column adds its partials in block order.
    const int WeightRows = 64;

    static void BackwardWeightPartialKernel(Index1D i, FloatView dY, FloatView x, FloatView rstd, int rows, int dim, FloatView partials)
    {
        int block = i / dim, j = i % dim;
        int end = Math.Min(rows, (block + 1) * WeightRows);
        float acc = 0f;
        for (int row = block * WeightRows; row < end; row++)
        {
            long at = (long)row * dim + j;
            acc += dY[at] * x[at] * rstd[row];
        }
        partials[i] = acc;
    }

    static void BackwardWeightReduceKernel(Index1D j, FloatView partials, int blocks, int dim, FloatView dWeight)
    {
        float acc = 0f;
        for (int b = 0; b < blocks; b++) acc += partials[(long)b * dim + j];
        dWeight[j] += acc;
    }

    // ---- launchers ----

    // Rows are cached in shared memory when they fit the 48 KB every group gets without opting in (less the reduce scratch).
    static bool RowFits(int floats) => (long)floats * sizeof(float) <= 48 * 1024 - 1024;

    public static void Forward(KernelRegistry k, FloatView x, FloatView weight, int rows, int dim, float eps, FloatView y, FloatView rstd)
    {
        var kernel = k.Get("rmsnorm.forward", a => a.LoadStreamKernel<FloatView, FloatView, int, float, int, FloatView, FloatView>(ForwardKernel));
        bool cached = RowFits(dim);
        kernel(new KernelConfig(rows, k.RowGroupSize, SharedMemoryConfig.RequestDynamic<float>(cached ? dim : 1)), x, weight, dim, eps,
            cached ? 1 : 0, y, rstd);
    }

    public static void Backward(KernelRegistry k, FloatView dY, FloatView x, FloatView weight, FloatView rstd, int rows, int dim,
        FloatView dX, FloatView dWeight)
    {
        var input = k.Get("rmsnorm.backward.input",
            a => a.LoadStreamKernel<FloatView, FloatView, FloatView, FloatView, int, int, FloatView>(BackwardInputKernel));
        bool cached = RowFits(2 * dim);
        input(new KernelConfig(rows, k.RowGroupSize, SharedMemoryConfig.RequestDynamic<float>(cached ? 2 * dim : 1)), dY, x, weight, rstd, dim,
            cached ? 1 : 0, dX);
        int blocks = (rows + WeightRows - 1) / WeightRows;
        var partials = k.Workspace((long)blocks * dim);
        var partial = k.Get("rmsnorm.backward.weight.partial",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, FloatView, FloatView, int, int, FloatView>(BackwardWeightPartialKernel));
        partial(blocks * dim, dY, x, rstd, rows, dim, partials);
        var reduce = k.Get("rmsnorm.backward.weight.reduce",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, int, int, FloatView>(BackwardWeightReduceKernel));
        reduce(dim, partials, blocks, dim, dWeight);
    }

    // ---- CPU reference: the spec ----

    public static void ForwardCpu<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> weight, int rows, int dim, T eps, Span<T> y, Span<T> rstd)
        where T : IFloatingPointIeee754<T>
    {
        for (int row = 0; row < rows; row++)
        {
            var xr = x.Slice(row * dim, dim);
            T sumSq = T.Zero;
            foreach (var v in xr) sumSq += v * v;
            T r = T.One / T.Sqrt(sumSq / T.CreateChecked(dim) + eps);
            for (int j = 0; j < dim; j++) y[row * dim + j] = weight[j] * (xr[j] * r);
            rstd[row] = r;
        }
    }

    public static void BackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> x, ReadOnlySpan<T> weight, ReadOnlySpan<T> rstd, int rows, int dim,
        Span<T> dX, Span<T> dWeight) where T : IFloatingPointIeee754<T>
    {
        for (int row = 0; row < rows; row++)
        {
            int start = row * dim;
            T r = rstd[row];
            T dot = T.Zero;
            for (int j = 0; j < dim; j++) dot += dY[start + j] * weight[j] * x[start + j] * r;
            T mean = dot / T.CreateChecked(dim);
            for (int j = 0; j < dim; j++)
            {
                T n = x[start + j] * r;
                dX[start + j] = r * (dY[start + j] * weight[j] - n * mean);
                dWeight[j] += dY[start + j] * n;
            }
        }
    }
}
