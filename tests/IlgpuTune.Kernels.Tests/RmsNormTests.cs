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
    [InlineData(3, 8)] // vector path from here on (dim % 4 == 0): one Float4 slot per thread in use
    [InlineData(37, 12)] // three 16-row blocks of the fused dWeight partials, the last one short
    [InlineData(130, 8)] // nine 16-row blocks
    [InlineData(3, 516)] // 129 Float4 over 64 threads: the last slot used by one thread only
    [InlineData(2, 1024)] // every slot of 64 threads
    [InlineData(2, 1028)] // dim % 4 == 0 but wider than the emulator's vector groups: scalar path
    public void Kernel_MatchesCpuReference(int rows, int dim) => Check(rows, dim, offset: 0);

    [Theory]
    [InlineData(3, 8, 1)] // row starts off a 16-byte boundary: scalar path
    [InlineData(5, 64, 2)]
    [InlineData(3, 8, 4)] // 16-byte aligned sub-views: vector path
    [InlineData(17, 36, 8)]
    public void Kernel_OnSubViews_MatchesCpuReference(int rows, int dim, int offset) => Check(rows, dim, offset);

    [Fact]
    public void TestBuffers_Are16ByteAligned()
    {
        // The vector-path cases above rely on this: a misaligned buffer would silently test the scalar path instead.
        using var a = gpu.Zeros(5); using var b = gpu.Zeros(7);
        Assert.True(Launch.Aligned16(a.View, b.View, b.View.SubView(4, 3)));
        Assert.False(Launch.Aligned16(a.View, b.View.SubView(1, 3)));
    }

    // Every tensor is a sub-view starting `offset` floats into its buffer.
    void Check(int rows, int dim, int offset)
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

        float[] Pad(float[] a) => new float[offset].Concat(a).ToArray();
        using var gx = gpu.Upload(Pad(x)); using var gw = gpu.Upload(Pad(w)); using var gdY = gpu.Upload(Pad(dY));
        using var gy = gpu.Zeros(offset + rows * dim); using var grstd = gpu.Zeros(offset + rows);
        using var gdX = gpu.Upload(Pad(Rand.Floats(5, rows * dim))); // dX is overwritten
        using var gdW = gpu.Upload(Pad(dW0));
        ILGPU.ArrayView<float> V(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> b) => b.View.SubView(offset, b.Length - offset);
        RmsNorm.Forward(gpu.Kernels, V(gx), V(gw), rows, dim, 1e-6f, V(gy), V(grstd));
        RmsNorm.Backward(gpu.Kernels, V(gdY), V(gx), V(gw), V(grstd), rows, dim, V(gdX), V(gdW));
        gpu.Accelerator.Synchronize();

        Close.Assert("y", y, gy.GetAsArray1D()[offset..], 1e-5, 1e-5);
        Close.Assert("rstd", rstd, grstd.GetAsArray1D()[offset..], 1e-5, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D()[offset..], 1e-5, 1e-4);
        Close.Assert("dWeight", dW, gdW.GetAsArray1D()[offset..], 1e-5, 1e-4);
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
