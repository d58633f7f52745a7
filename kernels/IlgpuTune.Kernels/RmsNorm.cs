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

    static void ForwardKernel(FloatView x, FloatView weight, int dim, float eps, FloatView y, FloatView rstd)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        long start = row * dim;
        float sumSq = 0f;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
        {
            float v = x[start + j];
            sumSq += v * v;
        }
        float r = 1f / MathF.Sqrt(Reduce.GroupSum(sumSq, scratch) / dim + eps);
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
            y[start + j] = weight[j] * (x[start + j] * r);
        if (Group.IdxX == 0) rstd[row] = r;
    }

    static void BackwardInputKernel(FloatView dY, FloatView x, FloatView weight, FloatView rstd, int dim, FloatView dX)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        long row = Grid.IdxX;
        long start = row * dim;
        float r = rstd[row];
        float dot = 0f;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
            dot += dY[start + j] * weight[j] * x[start + j] * r;
        float mean = Reduce.GroupSum(dot, scratch) / dim;
        for (int j = Group.IdxX; j < dim; j += Group.DimX)
        {
            float n = x[start + j] * r;
            dX[start + j] = r * (dY[start + j] * weight[j] - n * mean);
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

    public static void Forward(KernelRegistry k, FloatView x, FloatView weight, int rows, int dim, float eps, FloatView y, FloatView rstd)
    {
        var kernel = k.Get("rmsnorm.forward", a => a.LoadStreamKernel<FloatView, FloatView, int, float, FloatView, FloatView>(ForwardKernel));
        kernel(new KernelConfig(rows, k.RowGroupSize), x, weight, dim, eps, y, rstd);
    }

    public static void Backward(KernelRegistry k, FloatView dY, FloatView x, FloatView weight, FloatView rstd, int rows, int dim,
        FloatView dX, FloatView dWeight)
    {
        var input = k.Get("rmsnorm.backward.input",
            a => a.LoadStreamKernel<FloatView, FloatView, FloatView, FloatView, int, FloatView>(BackwardInputKernel));
        input(new KernelConfig(rows, k.RowGroupSize), dY, x, weight, rstd, dim, dX);
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
