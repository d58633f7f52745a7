using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class DropoutTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 0.1f)]
    [InlineData(1000, 0.5f)] // more elements than the emulated grid has threads: the grid-stride loop
    public void Kernel_MatchesCpuReference(int n, float p)
    {
        var x = Rand.Floats(1, n);
        using var gx = gpu.Upload(x); using var gy = gpu.Zeros(n); using var gd = gpu.Zeros(n);
        Dropout.Forward(gpu.Kernels, gx.View, n, p, 12345UL, gy.View);
        Dropout.Backward(gpu.Kernels, gx.View, n, p, 12345UL, gd.View);
        gpu.Accelerator.Synchronize();
        var want = new float[n];
        Dropout.ForwardCpu<float>(x, p, 12345UL, want);
        Close.Assert("forward", want, gy.GetAsArray1D(), 0, 0);
        Close.Assert("backward", want, gd.GetAsArray1D(), 0, 0);
    }

    [Theory]
    [InlineData(0.1f)]
    [InlineData(0.5f)]
    public void KeepsOneMinusP_ScalesTheKept_AndSeedsDiffer(float p)
    {
        const int n = 200_000;
        var ones = Enumerable.Repeat(1.0, n).ToArray();
        var a = new double[n]; var b = new double[n];
        Dropout.ForwardCpu<double>(ones, p, 1UL, a);
        Dropout.ForwardCpu<double>(ones, p, 2UL, b);
        int kept = a.Count(v => v != 0);
        double sigma = Math.Sqrt(n * p * (1 - p));
        Assert.InRange(kept, n * (1 - p) - 5 * sigma, n * (1 - p) + 5 * sigma);
        Assert.All(a.Where(v => v != 0), v => Assert.Equal((double)Dropout.Scale(p), v));
        int same = Enumerable.Range(0, n).Count(i => (a[i] != 0) == (b[i] != 0));
        Assert.True(same < n - 1000, "two seeds gave (nearly) the same mask");
    }

    // Dropout is linear and its backward is its adjoint: <g, D(x)> = <D'(g), x>.
    [Property(MaxTest = 25)]
    public Property Backward_IsTheAdjoint() => Prop.ForAll(Gen.Choose(1, 300).ToArbitrary(), Gen.Choose(0, 90).ToArbitrary(), (n, pct) =>
    {
        float p = pct / 100f;
        var x = Array.ConvertAll(Rand.Floats(n, n), v => (double)v);
        var g = Array.ConvertAll(Rand.Floats(n + 1, n), v => (double)v);
        var y = new double[n]; var dx = new double[n];
        Dropout.ForwardCpu<double>(x, p, (ulong)n * 31, y);
        Dropout.BackwardCpu<double>(g, p, (ulong)n * 31, dx);
        double lhs = 0, rhs = 0;
        for (int i = 0; i < n; i++) { lhs += g[i] * y[i]; rhs += dx[i] * x[i]; }
        Assert.True(Math.Abs(lhs - rhs) <= 1e-9 * (1 + Math.Abs(lhs)), $"{lhs} vs {rhs}");
    });

    [Fact]
    public void Launcher_RejectsBadInput()
    {
        using var small = gpu.Zeros(4);
        Assert.Throws<ArgumentException>(() => Dropout.Forward(gpu.Kernels, small.View, 5, 0.1f, 1, small.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => Dropout.Forward(gpu.Kernels, small.View, 4, 1f, 1, small.View));
    }
}
