using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class RopeTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1, 2)]
    [InlineData(3, 2, 6)]
    [InlineData(5, 3, 10)]
    [InlineData(3, 2, 8)] // vector path from here on (D/2 % 4 == 0)
    [InlineData(2, 3, 24)]
    [InlineData(2, 4, 64)]
    public void Kernel_MatchesCpuReference(int tokens, int heads, int headDim) => Check(tokens, heads, headDim, offset: 0);

    [Theory]
    [InlineData(2, 3, 8, 1)] // views off a 16-byte boundary: scalar path
    [InlineData(2, 3, 16, 6)]
    [InlineData(2, 3, 16, 4)] // 16-byte aligned sub-views: vector path
    public void Kernel_OnSubViews_MatchesCpuReference(int tokens, int heads, int headDim, int offset) => Check(tokens, heads, headDim, offset);

    // Every tensor is a sub-view starting `offset` floats into its buffer.
    void Check(int tokens, int heads, int headDim, int offset)
    {
        var positions = Enumerable.Range(0, tokens).Select(t => 7 * t + 3).ToArray();
        var inv = Rope.InverseFrequencies(headDim, 10000);
        var cos = new float[tokens * headDim / 2];
        var sin = new float[tokens * headDim / 2];
        Rope.CosSinCpu(positions, inv, cos, sin);
        var x = Rand.Floats(1, tokens * heads * headDim, 2f);
        var dY = Rand.Floats(2, tokens * heads * headDim);
        var y = new float[x.Length];
        var dX = new float[x.Length];
        Rope.ForwardCpu<float>(x, cos, sin, tokens, heads, headDim, y);
        Rope.BackwardCpu<float>(dY, cos, sin, tokens, heads, headDim, dX);

        float[] Pad(float[] a) => new float[offset].Concat(a).ToArray();
        using var gx = gpu.Upload(Pad(x)); using var gcos = gpu.Upload(Pad(cos)); using var gsin = gpu.Upload(Pad(sin));
        using var gdY = gpu.Upload(Pad(dY));
        using var gy = gpu.Zeros(offset + x.Length); using var gdX = gpu.Upload(Pad(Rand.Floats(3, x.Length))); // dX is overwritten
        ILGPU.ArrayView<float> V(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> b) => b.View.SubView(offset, b.Length - offset);
        Rope.Forward(gpu.Kernels, V(gx), V(gcos), V(gsin), tokens, heads, headDim, V(gy));
        Rope.Backward(gpu.Kernels, V(gdY), V(gcos), V(gsin), tokens, heads, headDim, V(gdX));
        gpu.Accelerator.Synchronize();

        Close.Assert("y", y, gy.GetAsArray1D()[offset..], 1e-6, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D()[offset..], 1e-6, 1e-5);
    }

    [Fact]
    public void Forward_PairsIWithIPlusHalf()
    {
        // D = 4, one token at an angle where cos = 0, sin = 1 for j = 0 and cos = 1, sin = 0 for j = 1:
        // y = [x0*0 - x2*1, x1, x2*0 + x0*1, x3]
        float[] x = [1, 2, 3, 4];
        float[] cos = [0, 1], sin = [1, 0];
        var y = new float[4];
        Rope.ForwardCpu<float>(x, cos, sin, 1, 1, 4, y);
        Assert.Equal([-3f, 2f, 1f, 4f], y);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from tokens in Gen.Choose(1, 3) from heads in Gen.Choose(1, 3) from half in Gen.Choose(1, 4)
                     from seed in Gen.Choose(0, 10000) select (tokens, heads, headDim: 2 * half, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (tokens, heads, headDim, seed) = s;
            var angles = Rand.Doubles(seed, tokens * headDim / 2, 5);
            var cos = angles.Select(Math.Cos).ToArray();
            var sin = angles.Select(Math.Sin).ToArray();
            var x = Rand.Doubles(seed + 1, tokens * heads * headDim, 2);
            var g = Rand.Doubles(seed + 2, x.Length);
            double Loss(double[] xx)
            {
                var y = new double[xx.Length];
                Rope.ForwardCpu<double>(xx, cos, sin, tokens, heads, headDim, y);
                double l = 0;
                for (int i = 0; i < y.Length; i++) l += g[i] * y[i];
                return l;
            }
            var dX = new double[x.Length];
            Rope.BackwardCpu<double>(g, cos, sin, tokens, heads, headDim, dX);
            FiniteDifference.Check("dX", x, dX, Loss);
        });
    }

    [Fact]
    public void InverseFrequencies_Default_MatchesFormula()
    {
        var inv = Rope.InverseFrequencies(128, 10000);
        Assert.Equal(64, inv.Length);
        Assert.Equal(1f, inv[0]);
        for (int j = 0; j < 64; j++)
            Assert.Equal(1 / Math.Pow(10000, 2.0 * j / 128), inv[j], 1e-6 * inv[j]);
    }

    [Fact]
    public void CosSin_UsesFp32PositionTimesFrequency()
    {
        var inv = Rope.InverseFrequencies(8, 10000);
        int[] positions = [0, 5, 1000];
        var cos = new float[12];
        var sin = new float[12];
        Rope.CosSinCpu(positions, inv, cos, sin);
        for (int t = 0; t < 3; t++)
            for (int j = 0; j < 4; j++)
            {
                float freq = positions[t] * inv[j];
                Assert.Equal(MathF.Cos(freq), cos[t * 4 + j]);
                Assert.Equal(Math.Sin(positions[t] * (double)inv[j]), sin[t * 4 + j], 1e-4);
            }
        Assert.Equal(1f, cos[0]);
        Assert.Equal(0f, sin[0]);
    }
}
