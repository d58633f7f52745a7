using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class RmsNormTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(5, 64)]
    [InlineData(2, 100)]
    [InlineData(130, 3)] // several 64-row blocks of the dWeight partial sums
    [InlineData(2, 13000)] // too wide to cache the row in shared memory: the two-read path
    public void Kernel_MatchesCpuReference(int rows, int dim)
    {
        var x = Rand.Floats(1, rows * dim, 2f);
        var w = Rand.Floats(2, dim);
        var dY = Rand.Floats(3, rows * dim);
        var y = new float[rows * dim];
        var rstd = new float[rows];
        var dX = new float[rows * dim];
        var dW = Rand.Floats(4, dim); // backward accumulates into dWeight
        var dW0 = (float[])dW.Clone();
        RmsNorm.ForwardCpu<float>(x, w, rows, dim, 1e-6f, y, rstd);
        RmsNorm.BackwardCpu<float>(dY, x, w, rstd, rows, dim, dX, dW);

        using var gx = gpu.Upload(x); using var gw = gpu.Upload(w); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(rows * dim); using var grstd = gpu.Zeros(rows); using var gdX = gpu.Zeros(rows * dim);
        using var gdW = gpu.Upload(dW0);
        RmsNorm.Forward(gpu.Kernels, gx.View, gw.View, rows, dim, 1e-6f, gy.View, grstd.View);
        RmsNorm.Backward(gpu.Kernels, gdY.View, gx.View, gw.View, grstd.View, rows, dim, gdX.View, gdW.View);
        gpu.Accelerator.Synchronize();

        Close.Assert("y", y, gy.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("rstd", rstd, grstd.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dWeight", dW, gdW.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from rows in Gen.Choose(1, 4) from dim in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (rows, dim, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (rows, dim, seed) = s;
            var x = Rand.Doubles(seed, rows * dim, 2);
            var w = Rand.Doubles(seed + 1, dim);
            var g = Rand.Doubles(seed + 2, rows * dim);
            double Loss(double[] xx, double[] ww)
            {
                var y = new double[rows * dim];
                RmsNorm.ForwardCpu<double>(xx, ww, rows, dim, 1e-6, y, new double[rows]);
                double l = 0;
                for (int i = 0; i < y.Length; i++) l += g[i] * y[i];
                return l;
            }
            var rstd = new double[rows];
            RmsNorm.ForwardCpu<double>(x, w, rows, dim, 1e-6, new double[rows * dim], rstd);
            var dX = new double[rows * dim];
            var dW = new double[dim];
            RmsNorm.BackwardCpu<double>(g, x, w, rstd, rows, dim, dX, dW);
            FiniteDifference.Check("dX", x, dX, xx => Loss(xx, w));
            FiniteDifference.Check("dWeight", w, dW, ww => Loss(x, ww));
        });
    }
}
