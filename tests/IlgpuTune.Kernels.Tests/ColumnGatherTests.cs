using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class ColumnGatherTests(IlgpuCpuFixture gpu)
{
    // outCols distinct columns of [0, inCols) in random order.
    static int[] Index(int seed, int inCols, int outCols)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, inCols).OrderBy(_ => r.Next()).Take(outCols).ToArray();
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 7, 4)]
    [InlineData(5, 12, 12)]
    [InlineData(9, 40, 17)]
    public void Kernels_MatchCpuReference(int rows, int inCols, int outCols)
    {
        var index = Index(1, inCols, outCols);
        var x = Rand.Floats(2, rows * inCols);
        var dY = Rand.Floats(3, rows * outCols);
        var dX = Rand.Floats(4, rows * inCols); // backward accumulates
        using var gx = gpu.Upload(x); using var gindex = gpu.Upload(index); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(rows * outCols); using var gdX = gpu.Upload(dX);

        ColumnGather.Forward(gpu.Kernels, gx.View, gindex.View, rows, inCols, outCols, gy.View);
        ColumnGather.Backward(gpu.Kernels, gdY.View, gindex.View, rows, inCols, outCols, gdX.View);
        gpu.Accelerator.Synchronize();

        var y = new float[rows * outCols];
        ColumnGather.ForwardCpu<float>(x, index, rows, inCols, outCols, y);
        ColumnGather.BackwardCpu<float>(dY, index, rows, inCols, outCols, dX);
        Close.Assert("y", y, gy.GetAsArray1D(), 0, 0);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 0, 0);
    }

    // A fused [rows, 12] output split into q (6 columns), k and v (3 each), as a wqkv split does: the three
    // backward calls fill disjoint columns of one zeroed dX, which then equals the concatenated grads put back.
    [Fact]
    public void QkvSplit_BackwardsAccumulateIntoOneGrad()
    {
        const int rows = 3, inCols = 12;
        int[][] parts = [[0, 1, 4, 5, 8, 9], [2, 6, 10], [3, 7, 11]];
        var dX = new float[rows * inCols];
        var expected = new float[rows * inCols];
        using var gdX = gpu.Zeros(rows * inCols);
        for (int p = 0; p < parts.Length; p++)
        {
            int outCols = parts[p].Length;
            var dY = Rand.Floats(10 + p, rows * outCols);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < outCols; c++) expected[r * inCols + parts[p][c]] = dY[r * outCols + c];
            using var gdY = gpu.Upload(dY); using var gindex = gpu.Upload(parts[p]);
            ColumnGather.Backward(gpu.Kernels, gdY.View, gindex.View, rows, inCols, outCols, gdX.View);
            ColumnGather.BackwardCpu<float>(dY, parts[p], rows, inCols, outCols, dX);
        }
        gpu.Accelerator.Synchronize();
        Close.Assert("dX cpu", expected, dX, 0, 0);
        Close.Assert("dX kernel", expected, gdX.GetAsArray1D(), 0, 0);
    }

    [Fact]
    public void OutOfRangeIndex_KernelsSkipIt_CpuReferenceThrows()
    {
        const int rows = 2, inCols = 3;
        int[] index = [2, 3, 0];
        var x = Rand.Floats(1, rows * inCols);
        var dY = Rand.Floats(2, rows * index.Length);
        using var gx = gpu.Upload(x); using var gindex = gpu.Upload(index); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Upload(Rand.Floats(3, rows * index.Length)); using var gdX = gpu.Zeros(rows * inCols);

        ColumnGather.Forward(gpu.Kernels, gx.View, gindex.View, rows, inCols, index.Length, gy.View);
        ColumnGather.Backward(gpu.Kernels, gdY.View, gindex.View, rows, inCols, index.Length, gdX.View);
        gpu.Accelerator.Synchronize();

        float[] y = [x[2], 0f, x[0], x[5], 0f, x[3]];
        float[] dX = [dY[2], 0f, dY[0], dY[5], 0f, dY[3]];
        Close.Assert("y", y, gy.GetAsArray1D(), 0, 0);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 0, 0);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ColumnGather.ForwardCpu<float>(x, index, rows, inCols, 3, new float[6]));
        Assert.Contains("index[1] = 3", e.Message);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from rows in Gen.Choose(1, 4) from inCols in Gen.Choose(1, 7) from seed in Gen.Choose(0, 10000)
                     from outCols in Gen.Choose(1, 2 * inCols) select (rows, inCols, outCols, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (rows, inCols, outCols, seed) = s;
            // Repeated columns allowed here: the CPU reference must sum them.
            var r = new Random(seed);
            var index = Enumerable.Range(0, outCols).Select(_ => r.Next(inCols)).ToArray();
            var x = Rand.Doubles(seed + 1, rows * inCols);
            var g = Rand.Doubles(seed + 2, rows * outCols);
            double Loss(double[] xx)
            {
                var y = new double[rows * outCols];
                ColumnGather.ForwardCpu<double>(xx, index, rows, inCols, outCols, y);
                double l = 0;
                for (int i = 0; i < y.Length; i++) l += g[i] * y[i];
                return l;
            }
            var dX = new double[rows * inCols];
            ColumnGather.BackwardCpu<double>(g, index, rows, inCols, outCols, dX);
            FiniteDifference.Check("dX", x, dX, Loss);
        });
    }
}
