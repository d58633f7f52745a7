using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class ActivationTests(IlgpuCpuFixture gpu)
{
    static readonly float[] Extremes = [-1000f, -100f, -88.8f, -80f, -20f, -1e-30f, 0f, 1e-30f, 20f, 80f, 88.8f, 100f, 1000f];

    [Theory]
    [InlineData(1, 3f)]
    [InlineData(37, 8f)]
    [InlineData(700, 4f)]
    [InlineData(0, 0f)] // only the extreme values
    [InlineData(3, 2f)] // n % 4 == 0: Float4 quads only, no tail
    [InlineData(2, 2f)] // a 3-element tail
    public void Kernels_MatchCpuReference(int n, float scale)
    {
        var x = Rand.Floats(1, n, scale).Concat(Extremes).ToArray();
        n = x.Length;
        var up = Rand.Floats(2, n, 2f);
        var dY = Rand.Floats(3, n);
        using var gx = gpu.Upload(x); using var gup = gpu.Upload(up); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(n); using var gdX = gpu.Zeros(n);
        using var gsw = gpu.Zeros(n); using var gdGate = gpu.Zeros(n); using var gdUp = gpu.Zeros(n);

        Activation.SiluForward(gpu.Kernels, gx.View, n, gy.View);
        Activation.SiluBackward(gpu.Kernels, gdY.View, gx.View, n, gdX.View);
        Activation.SwiGluForward(gpu.Kernels, gx.View, gup.View, n, gsw.View);
        Activation.SwiGluBackward(gpu.Kernels, gdY.View, gx.View, gup.View, n, gdGate.View, gdUp.View);
        gpu.Accelerator.Synchronize();

        var y = new float[n]; var dX = new float[n]; var sw = new float[n]; var dGate = new float[n]; var dUp = new float[n];
        Activation.SiluForwardCpu<float>(x, y);
        Activation.SiluBackwardCpu<float>(dY, x, dX);
        Activation.SwiGluForwardCpu<float>(x, up, sw);
        Activation.SwiGluBackwardCpu<float>(dY, x, up, dGate, dUp);
        foreach (var v in y.Concat(dX).Concat(sw).Concat(dGate).Concat(dUp)) Assert.True(float.IsFinite(v));

        Close.Assert("silu", y, gy.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("swiglu", sw, gsw.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dGate", dGate, gdGate.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dUp", dUp, gdUp.GetAsArray1D(), 1e-6, 1e-5);
    }

    [Theory]
    [InlineData(1)] // views off a 16-byte boundary: scalar path
    [InlineData(4)] // 16-byte aligned sub-views: Float4 path
    public void SwiGlu_OnSubViews_MatchesCpuReference_WithDUpAliasingUp(int offset)
    {
        int n = 45;
        var gate = Rand.Floats(1, n, 6f);
        var up = Rand.Floats(2, n, 2f);
        var dY = Rand.Floats(3, n);
        var sw = new float[n]; var dGate = new float[n]; var dUp = new float[n];
        Activation.SwiGluForwardCpu<float>(gate, up, sw);
        Activation.SwiGluBackwardCpu<float>(dY, gate, up, dGate, dUp);

        float[] Pad(float[] a) => new float[offset].Concat(a).ToArray();
        using var ggate = gpu.Upload(Pad(gate)); using var gup = gpu.Upload(Pad(up)); using var gdY = gpu.Upload(Pad(dY));
        using var gsw = gpu.Zeros(offset + n); using var gdGate = gpu.Zeros(offset + n);
        ILGPU.ArrayView<float> V(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> b) => b.View.SubView(offset, n);
        Activation.SwiGluForward(gpu.Kernels, V(ggate), V(gup), n, V(gsw));
        Activation.SwiGluBackward(gpu.Kernels, V(gdY), V(ggate), V(gup), n, V(gdGate), V(gup)); // dUp overwrites up
        gpu.Accelerator.Synchronize();

        Close.Assert("swiglu", sw, gsw.GetAsArray1D()[offset..], 1e-6, 1e-5);
        Close.Assert("dGate", dGate, gdGate.GetAsArray1D()[offset..], 1e-6, 1e-5);
        Close.Assert("dUp", dUp, gup.GetAsArray1D()[offset..], 1e-6, 1e-5);
    }

    [Fact]
    public void CpuReference_HasTheLimitsAtLargeInputs()
    {
        var x = new[] { -80f, 80f, -1000f, 1000f };
        var y = new float[4]; var dX = new float[4];
        Activation.SiluForwardCpu<float>(x, y);
        Activation.SiluBackwardCpu<float>([1f, 1f, 1f, 1f], x, dX);
        Assert.Equal([-80f * MathF.Exp(-80f), 80f, -0f, 1000f], y, (a, b) => Math.Abs(a - b) <= 1e-6f * Math.Abs(b) + 1e-40f);
        Assert.Equal([-79f * MathF.Exp(-80f), 1f, 0f, 1f], dX, (a, b) => Math.Abs(a - b) <= 1e-6f * Math.Abs(b) + 1e-40f);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var cases = from n in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (n, seed);
        return Prop.ForAll(cases.ToArbitrary(), s =>
        {
            var (n, seed) = s;
            var x = Rand.Doubles(seed, n, 6);
            var up = Rand.Doubles(seed + 1, n, 2);
            var g = Rand.Doubles(seed + 2, n);
            double Loss(Action<double[]> forward)
            {
                var y = new double[n];
                forward(y);
                double l = 0;
                for (int i = 0; i < n; i++) l += g[i] * y[i];
                return l;
            }
            var dX = new double[n];
            Activation.SiluBackwardCpu<double>(g, x, dX);
            FiniteDifference.Check("silu dX", x, dX, xx => Loss(y => Activation.SiluForwardCpu<double>(xx, y)));

            var dGate = new double[n]; var dUp = new double[n];
            Activation.SwiGluBackwardCpu<double>(g, x, up, dGate, dUp);
            FiniteDifference.Check("dGate", x, dGate, xx => Loss(y => Activation.SwiGluForwardCpu<double>(xx, up, y)));
            FiniteDifference.Check("dUp", up, dUp, uu => Loss(y => Activation.SwiGluForwardCpu<double>(x, uu, y)));
        });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(37)]
    [InlineData(1000)] // several grid strides on the emulator
    public void GeGlu_Kernel_MatchesCpuReference(int n)
    {
        var gate = Rand.Floats(41, n, 8f); // far tails: tanh saturates to +-1
        var up = Rand.Floats(42, n, 2f);
        var dY = Rand.Floats(43, n);
        var (y, dGate, dUp) = (new float[n], new float[n], new float[n]);
        Activation.GeGluForwardCpu<float>(gate, up, y);
        Activation.GeGluBackwardCpu<float>(dY, gate, up, dGate, dUp);
        using var gg = gpu.Upload(gate); using var gu = gpu.Upload(up); using var gd = gpu.Upload(dY);
        using var gy = gpu.Zeros(n); using var gdg = gpu.Zeros(n);
        Activation.GeGluForward(gpu.Kernels, gg.View, gu.View, n, gy.View);
        Activation.GeGluBackward(gpu.Kernels, gd.View, gg.View, gu.View, n, gdg.View, gu.View); // dUp overwrites up
        gpu.Accelerator.Synchronize();
        Close.Assert("y", y, gy.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dGate", dGate, gdg.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dUp", dUp, gu.GetAsArray1D(), 1e-5, 1e-5);
    }

    [Fact]
    public void GeGlu_MatchesTorchGeluTanhValues()
    {
        // PyTorch's tanh formula (gelu(x, approximate="tanh")) in float64 at x = -3, -1, 0.5, 2.
        double[] x = [-3, -1, 0.5, 2], expect = [-0.0036373920817729943, -0.15880800939172324, 0.34571400982514394, 1.954597694087775];
        var y = new double[4];
        Activation.GeGluForwardCpu<double>(x, [1, 1, 1, 1], y);
        for (int i = 0; i < 4; i++) Assert.Equal(expect[i], y[i], 1e-12);
    }

    [Property(MaxTest = 25)]
    public Property GeGlu_Backward_MatchesFiniteDifferences()
    {
        var shapes = from n in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (n, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (n, seed) = s;
            var x = Rand.Doubles(seed, n, 4);
            var up = Rand.Doubles(seed + 1, n, 2);
            var g = Rand.Doubles(seed + 2, n);
            double Loss(double[] gg, double[] uu)
            {
                var y = new double[n];
                Activation.GeGluForwardCpu<double>(gg, uu, y);
                double l = 0;
                for (int i = 0; i < n; i++) l += g[i] * y[i];
                return l;
            }
            var (dGate, dUp) = (new double[n], new double[n]);
            Activation.GeGluBackwardCpu<double>(g, x, up, dGate, dUp);
            FiniteDifference.Check("geglu dGate", x, dGate, xx => Loss(xx, up));
            FiniteDifference.Check("geglu dUp", up, dUp, uu => Loss(x, uu));
        });
    }
}
