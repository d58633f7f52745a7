using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class MatMulTests(IlgpuCpuFixture gpu)
{
    public enum Op { NT, NN, TN }

    // A and B sizes are m*k and k*n in every layout; only how they are indexed differs.
    static double Naive(Op op, double[] a, double[] b, int m, int n, int kDim, int i, int j)
    {
        double s = 0;
        for (int p = 0; p < kDim; p++)
        {
            double av = op == Op.TN ? a[p * m + i] : a[i * kDim + p];
            double bv = op == Op.NT ? b[j * kDim + p] : b[p * n + j];
            s += av * bv;
        }
        return s;
    }

    static void Cpu<T>(Op op, ReadOnlySpan<T> a, ReadOnlySpan<T> b, int m, int n, int kDim, T alpha, bool accumulate, Span<T> c)
        where T : System.Numerics.IFloatingPointIeee754<T>
    {
        switch (op)
        {
            case Op.NT: MatMul.NTCpu(a, b, m, n, kDim, alpha, accumulate, c); break;
            case Op.NN: MatMul.NNCpu(a, b, m, n, kDim, alpha, accumulate, c); break;
            default: MatMul.TNCpu(a, b, m, n, kDim, alpha, accumulate, c); break;
        }
    }

    [Theory]
    [InlineData(Op.NT, 1, 1, 1, false)]
    [InlineData(Op.NT, 3, 5, 7, true)]
    [InlineData(Op.NT, 17, 18, 33, false)]
    [InlineData(Op.NN, 1, 1, 1, true)]
    [InlineData(Op.NN, 5, 3, 16, false)]
    [InlineData(Op.NN, 18, 17, 35, true)]
    [InlineData(Op.TN, 1, 2, 1, false)]
    [InlineData(Op.TN, 7, 4, 9, true)]
    [InlineData(Op.TN, 17, 16, 31, false)]
    public void Kernel_MatchesCpuReference(Op op, int m, int n, int kDim, bool accumulate)
    {
        var a = Rand.Floats(1, m * kDim);
        var b = Rand.Floats(2, kDim * n);
        var c = Rand.Floats(3, m * n); // prior contents: kept when accumulating, ignored otherwise
        using var ga = gpu.Upload(a); using var gb = gpu.Upload(b); using var gc = gpu.Upload(c);
        Cpu<float>(op, a, b, m, n, kDim, 0.5f, accumulate, c);

        switch (op)
        {
            case Op.NT: MatMul.NT(gpu.Kernels, ga.View, gb.View, m, n, kDim, 0.5f, accumulate, gc.View); break;
            case Op.NN: MatMul.NN(gpu.Kernels, ga.View, gb.View, m, n, kDim, 0.5f, accumulate, gc.View); break;
            default: MatMul.TN(gpu.Kernels, ga.View, gb.View, m, n, kDim, 0.5f, accumulate, gc.View); break;
        }
        gpu.Accelerator.Synchronize();

        Close.Assert(op.ToString(), c, gc.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Theory]
    [InlineData(Op.NT, 37, 29, 130)] // m*n*k > 1e5: the Parallel.For path
    [InlineData(Op.NN, 40, 33, 101)]
    [InlineData(Op.TN, 35, 41, 99)]
    [InlineData(Op.NT, 3, 4, 5)]
    [InlineData(Op.TN, 1, 1, 0)]     // k = 0: C = 0, or C unchanged when accumulating
    public void CpuReference_MatchesNaiveLoops(Op op, int m, int n, int kDim)
    {
        var a = Rand.Doubles(4, m * kDim);
        var b = Rand.Doubles(5, kDim * n);
        var c0 = Rand.Doubles(6, m * n);
        foreach (bool accumulate in new[] { false, true })
        {
            var c = (double[])c0.Clone();
            Cpu<double>(op, a, b, m, n, kDim, 1.5, accumulate, c);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double want = 1.5 * Naive(op, a, b, m, n, kDim, i, j) + (accumulate ? c0[i * n + j] : 0);
                    Assert.True(Math.Abs(c[i * n + j] - want) < 1e-12 * (1 + Math.Abs(want)), $"{op} c[{i},{j}] {c[i * n + j]} vs {want}");
                }
        }
    }

    [Fact]
    public void Launcher_RejectsShortViews()
    {
        using var small = gpu.Zeros(5);
        Assert.Throws<ArgumentException>(() => MatMul.NT(gpu.Kernels, small.View, small.View, 2, 2, 3, 1f, false, small.View));
    }

    // y = x·Wᵀ (NT); dX = dY·W (NN), dW = dYᵀ·x (TN).
    [Property(MaxTest = 25)]
    public Property LinearBackward_MatchesFiniteDifferences()
    {
        var shapes = from m in Gen.Choose(1, 5) from n in Gen.Choose(1, 5) from kDim in Gen.Choose(1, 6) from seed in Gen.Choose(0, 10000)
                     select (m, n, kDim, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (m, n, kDim, seed) = s;
            var x = Rand.Doubles(seed, m * kDim);
            var w = Rand.Doubles(seed + 1, n * kDim);
            var g = Rand.Doubles(seed + 2, m * n);
            double Loss(double[] xx, double[] ww)
            {
                var y = new double[m * n];
                MatMul.NTCpu<double>(xx, ww, m, n, kDim, 1.0, false, y);
                double l = 0;
                for (int i = 0; i < y.Length; i++) l += g[i] * y[i];
                return l;
            }
            var dX = new double[m * kDim];
            var dW = new double[n * kDim];
            MatMul.NNCpu<double>(g, w, m, kDim, n, 1.0, false, dX);
            MatMul.TNCpu<double>(g, x, n, kDim, m, 1.0, false, dW);
            FiniteDifference.Check("dX", x, dX, xx => Loss(xx, w));
            FiniteDifference.Check("dW", w, dW, ww => Loss(x, ww));
        });
    }
}
