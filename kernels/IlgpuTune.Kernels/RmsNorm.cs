// RMSNorm over the last dim, HF LlamaRMSNorm numerics: normalize in fp32, cast to the input dtype, then * weight.
//   x[rows, dim], weight[dim] -> y[rows, dim]; rstd[rows] = 1/sqrt(mean(x^2) + eps) is saved for backward.
// Backward with n = x*rstd, g = dY*weight:
//   dX = rstd * (g - n * mean(g*n))          (overwrites dX)
//   dWeight += sum_rows dY * n                (column sums over row blocks, then over blocks: deterministic, no atomics)
// Vector path (dim % 4 == 0, dim <= 16 * 1024, all views 16-byte aligned): each thread keeps up to 4 Float4 of a row in
// registers (16-byte loads, one global read per element); the backward fuses dX and the dWeight partial sums so dY and
// x are read once. Other shapes take the scalar path (row cached in shared memory when it fits).
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Util;

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

    // ---- vector path: a row of dim/4 Float4 spread over the group, Slots.Count per thread ----

    // Thread t of T holds Float4 columns t, t+T, t+2T, t+3T of a row; slots past the row read as 0 and are not stored.
    struct Slots
    {
        public const int Count = 4;
        public Float4 A, B, C, D;

        public static Slots Load(ArrayView<Float4> v, long start, int t, int T, int dim4)
        {
            Slots s = default;
            if (t < dim4) s.A = v[start + t];
            if (t + T < dim4) s.B = v[start + t + T];
            if (t + 2 * T < dim4) s.C = v[start + t + 2 * T];
            if (t + 3 * T < dim4) s.D = v[start + t + 3 * T];
            return s;
        }

        public readonly void Store(ArrayView<Float4> v, long start, int t, int T, int dim4)
        {
            if (t < dim4) v[start + t] = A;
            if (t + T < dim4) v[start + t + T] = B;
            if (t + 2 * T < dim4) v[start + t + 2 * T] = C;
            if (t + 3 * T < dim4) v[start + t + 3 * T] = D;
        }

        public static Slots operator *(Slots a, Slots b) => new() { A = a.A * b.A, B = a.B * b.B, C = a.C * b.C, D = a.D * b.D };
        public static Slots operator *(Slots a, float f) => new() { A = a.A * f, B = a.B * f, C = a.C * f, D = a.D * f };
        public static Slots operator +(Slots a, Slots b) => new() { A = a.A + b.A, B = a.B + b.B, C = a.C + b.C, D = a.D + b.D };
        public static Slots operator -(Slots a, Slots b) => new() { A = a.A - b.A, B = a.B - b.B, C = a.C - b.C, D = a.D - b.D };

        public readonly float Sum() => Sum4(A) + Sum4(B) + Sum4(C) + Sum4(D);
        static float Sum4(Float4 v) => v.X + v.Y + v.Z + v.W;
    }

    static void ForwardVecKernel(ArrayView<Float4> x, ArrayView<Float4> weight, int dim, float eps, ArrayView<Float4> y, FloatView rstd)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        int dim4 = dim / 4, t = Group.IdxX, T = Group.DimX;
        long start = (long)Grid.IdxX * dim4;
        var v = Slots.Load(x, start, t, T, dim4);
        float r = 1f / MathF.Sqrt(Reduce.GroupSum((v * v).Sum(), scratch) / dim + eps);
        (Slots.Load(weight, 0, t, T, dim4) * (v * r)).Store(y, start, t, T, dim4);
        if (t == 0) rstd[Grid.IdxX] = r;
    }

    // Group g takes rows [g*VecRows, (g+1)*VecRows): dX per row, and its dWeight column sums over those rows into
    // partials[g, dim] (reduced by ReduceColumnsKernel). Weight stays in registers for all the group's rows.
    const int VecRows = 16;

    static void BackwardVecKernel(ArrayView<Float4> dY, ArrayView<Float4> x, ArrayView<Float4> weight, FloatView rstd, int rows, int dim,
        ArrayView<Float4> dX, ArrayView<Float4> partials)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        int dim4 = dim / 4, t = Group.IdxX, T = Group.DimX;
        var w = Slots.Load(weight, 0, t, T, dim4);
        Slots acc = default;
        int end = Math.Min(rows, (Grid.IdxX + 1) * VecRows);
        for (int row = Grid.IdxX * VecRows; row < end; row++)
        {
            long start = (long)row * dim4;
            float r = rstd[row];
            var dy = Slots.Load(dY, start, t, T, dim4);
            var n = Slots.Load(x, start, t, T, dim4) * r;
            var g = dy * w;
            float mean = Reduce.GroupSum((g * n).Sum(), scratch) / dim;
            ((g - n * mean) * r).Store(dX, start, t, T, dim4);
            acc += dy * n;
        }
        acc.Store(partials, (long)Grid.IdxX * dim4, t, T, dim4);
    }

    // dWeight[j] += sum_b partials[b, j]: a group per 32 columns, warp w adds blocks w, w+W, ... in order, then the
    // warps' sums are added in warp order (deterministic for a given group size).
    static void ReduceColumnsKernel(FloatView partials, int blocks, int dim, FloatView dWeight)
    {
        var sums = SharedMemory.Allocate<float>(1024);
        int lane = Warp.LaneIdx, w = Warp.WarpIdx, warps = Group.DimX / Warp.WarpSize;
        int j = Grid.IdxX * Warp.WarpSize + lane;
        float acc = 0f;
        if (j < dim)
            for (int b = w; b < blocks; b += warps) acc += partials[(long)b * dim + j];
        sums[w * Warp.WarpSize + lane] = acc;
        Group.Barrier();
        if (w == 0 && j < dim)
        {
            float total = 0f;
            for (int i = 0; i < warps; i++) total += sums[i * Warp.WarpSize + lane];
            dWeight[j] += total;
        }
    }

    // ---- launchers ----

    // Rows are cached in shared memory when they fit the 48 KB every group gets without opting in (less the reduce scratch).
    static bool RowFits(int floats) => (long)floats * sizeof(float) <= 48 * 1024 - 1024;

    // Threads per row on the vector path: Slots.Count Float4 each, a multiple of the warp size; 0 when the row is too
    // wide for one group (the CPU accelerator's groups are kept small).
    static int VecThreads(LaunchTarget t, int dim)
    {
        int threads = ((dim / 4 + Slots.Count - 1) / Slots.Count + 31) / 32 * 32;
        return dim % 4 == 0 && threads <= (t.Emulated ? 64 : 1024) ? Math.Max(threads, 32) : 0;
    }

    /// <summary>Forward's kernel and shape: the vector kernel when x, weight, y are 16-byte aligned and a row fits a group.</summary>
    internal static (string Kernel, KernelConfig Config, int Cached) ForwardPlan(LaunchTarget t, int rows, int dim, bool aligned16)
    {
        int threads = VecThreads(t, dim);
        if (threads > 0 && aligned16) return ("rmsnorm.forward.v4", new KernelConfig(rows, threads), 0);
        bool cached = RowFits(dim);
        return ("rmsnorm.forward", new KernelConfig(rows, t.RowGroupSize, SharedMemoryConfig.RequestDynamic<float>(cached ? dim : 1)), cached ? 1 : 0);
    }

    /// <summary>
    /// Backward's kernels and shapes: the vector kernel (dX and per-block partials) or the input kernel (Cached as in forward) plus
    /// the implicitly grouped partial kernel (PartialExtent threads); then the column reduce. Partials: Blocks x dim workspace floats.
    /// </summary>
    internal readonly record struct BackwardPlanned(bool Vector, KernelConfig Main, int Cached, int Blocks, int PartialExtent, KernelConfig Reduce);

    internal static BackwardPlanned BackwardPlan(LaunchTarget t, int rows, int dim, bool aligned16)
    {
        int threads = VecThreads(t, dim);
        // Up to 32 warps share the blocks of 32 columns (the reduce kernel's shared sums hold 32 x 32).
        var reduce = new KernelConfig((dim + 31) / 32, Math.Min(4 * t.RowGroupSize, 1024));
        if (threads > 0 && aligned16)
            return new(true, new KernelConfig((rows + VecRows - 1) / VecRows, threads), 0, (rows + VecRows - 1) / VecRows, 0, reduce);
        bool cached = RowFits(2 * dim);
        int blocks = (rows + WeightRows - 1) / WeightRows;
        return new(false, new KernelConfig(rows, t.RowGroupSize, SharedMemoryConfig.RequestDynamic<float>(cached ? 2 * dim : 1)), cached ? 1 : 0,
            blocks, blocks * dim, reduce);
    }

    // x, y[rows, dim]; weight[dim]; rstd[rows]
    public static void Forward(KernelRegistry k, FloatView x, FloatView weight, int rows, int dim, float eps, FloatView y, FloatView rstd)
    {
        if (rows == 0) return;
        var (name, config, cached) = ForwardPlan(k.Target, rows, dim, Launch.Aligned16(x, weight, y));
        if (name == "rmsnorm.forward.v4")
        {
            var vec = k.Get<Action<KernelConfig, ArrayView<Float4>, ArrayView<Float4>, int, float, ArrayView<Float4>, FloatView>>(
                new("rmsnorm.forward.v4", ForwardVecKernel));
            vec(config, x.Cast<Float4>(), weight.Cast<Float4>(), dim, eps, y.Cast<Float4>(), rstd);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, int, float, int, FloatView, FloatView>>(
            new("rmsnorm.forward", ForwardKernel));
        kernel(config, x, weight, dim, eps, cached, y, rstd);
    }

    // dY, x, dX[rows, dim]; weight, dWeight[dim]; rstd[rows]; dX is overwritten, dWeight accumulated
    public static void Backward(KernelRegistry k, FloatView dY, FloatView x, FloatView weight, FloatView rstd, int rows, int dim,
        FloatView dX, FloatView dWeight)
    {
        if (rows == 0) return;
        var plan = BackwardPlan(k.Target, rows, dim, Launch.Aligned16(dY, x, weight, dX));
        var partials = k.Workspace((long)plan.Blocks * dim); // the workspace buffer starts at offset 0: aligned
        if (plan.Vector)
        {
            var vec = k.Get<Action<KernelConfig, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, FloatView, int, int,
                    ArrayView<Float4>, ArrayView<Float4>>>(
                new("rmsnorm.backward.v4", BackwardVecKernel));
            vec(plan.Main, dY.Cast<Float4>(), x.Cast<Float4>(), weight.Cast<Float4>(), rstd, rows, dim,
                dX.Cast<Float4>(), partials.Cast<Float4>());
        }
        else
        {
            var input = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, FloatView, int, int, FloatView>>(
                new("rmsnorm.backward.input", BackwardInputKernel));
            input(plan.Main, dY, x, weight, rstd, dim, plan.Cached, dX);
            var partial = k.Get<Action<Index1D, FloatView, FloatView, FloatView, int, int, FloatView>>(
                new("rmsnorm.backward.weight.partial", BackwardWeightPartialKernel));
            partial(plan.PartialExtent, dY, x, rstd, rows, dim, partials);
        }
        var reduce = k.Get<Action<KernelConfig, FloatView, int, int, FloatView>>(
            new("rmsnorm.backward.weight.reduce", ReduceColumnsKernel));
        reduce(plan.Reduce, partials, plan.Blocks, dim, dWeight);
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
